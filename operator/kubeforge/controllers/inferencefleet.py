"""InferenceFleet controller: children, status, autoscaler and rollout of each fleet, in one pass.

`reconcile()` is the only entry point (watch events of the fleet, its Deployments, Services, PDB and
pods; freed GPUs while a rollout waits for capacity; requeues). It reads everything from the caches, and:

- runs the autoscaler when its evaluation is due (every `intervalSeconds`): reads Prometheus, takes a
  decision (`policy.autoscaler.decide`), and remembers it; between evaluations the replica count is the
  last decision (in memory, else `status.autoscaler.desiredReplicas`, else what the Deployments run);
- applies the Service, the PodDisruptionBudget and the revision Deployments the rollout plan asks for
  (each only when it differs from the cached child), removes drained revisions, and writes status only
  when it changed;
- returns when it wants to run again: the next autoscaler evaluation, the end of a rollout pause, the
  next analysis measurement. The runtime schedules it; nothing here sleeps or loops.

Everything a decision needs from the past is in `status`, so a restarted operator resumes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from lightkube import ApiError
from pydantic import ValidationError

from kubeforge.api.common import gpu_products
from kubeforge.api.inferencefleet import KIND, AutoscalerStatus, Autoscaling, InferenceFleetSpec
from kubeforge.api.names import INFERENCEFLEET_LABEL
from kubeforge.api.rollout import AnalysisRun, AnalysisSpec, RolloutStatus
from kubeforge.builders import inferencefleet as build
from kubeforge.controllers.runtime import Key, OperatorConfig, Watch, label_keys, owner_keys
from kubeforge.kube.client import Kube, Obj
from kubeforge.kube.informer import Reader
from kubeforge.kube.kinds import (
    CONTROLLER_REVISION,
    DEPLOYMENT,
    HTTPROUTE,
    INFERENCEFLEET,
    NODE,
    PDB,
    POD,
    SERVICE,
    Kind,
)
from kubeforge.metrics import exposition
from kubeforge.metrics.promql import MetricsError, PrometheusSource
from kubeforge.policy import analysis as analysis_policy
from kubeforge.policy import autoscaler as policy
from kubeforge.policy import capacity
from kubeforge.policy import rollout as rollouts
from kubeforge.policy.analysis import MetricSample
from kubeforge.policy.conditions import ConditionUpdate, transitions
from kubeforge.policy.fleet_status import (
    MetricsHealth,
    RevisionState,
    RolloutConditions,
    compute_status,
    invalid_status,
    merge_patch,
    summarize_deployment,
    summarize_pods,
)

log = logging.getLogger(__name__)

FLEET = INFERENCEFLEET
_WARNING_WHEN_TRUE = frozenset({"Degraded", "CapacityLimited", "MetricsUnavailable"})
_WARNING_WHEN_FALSE = frozenset({"TrafficRouted"})
_ROLLOUT_REASONS = frozenset({"RolledBack", "RolloutAborted", "RevisionNotFound", "RolloutInProgress"})
"""Condition reasons whose transitions the rollout announces with events of its own."""

# Event reasons that end a rollout, and the outcome each counts as in kubeforge_rollout_outcomes_total.
ROLLOUT_OUTCOMES: Mapping[str, str] = {
    "Promoted": "Promoted",
    "RolledBack": "RolledBack",
    "RolloutAborted": "Aborted",
    "ProgressDeadlineExceeded": "Aborted",
}


class MetricSource(Protocol):
    """What the controller needs from a metric backend (PrometheusSource, or a fake in tests)."""

    async def read(self, spec: Autoscaling, namespace: str, name: str) -> policy.Reading: ...

    async def sample(self, spec: AnalysisSpec, namespace: str, name: str, revision: str) -> MetricSample:
        """One revision's analysis metrics; raises MetricsError when they cannot be read."""
        ...


@dataclass
class _Fleet:
    """What the operator remembers of one fleet between passes (all of it can be lost: status has it)."""

    decision: policy.Decision | None = None
    record: dict[str, Any] | None = None
    metrics: MetricsHealth | None = None
    next_evaluation: float | None = None
    """When (monotonic) the autoscaler evaluates next."""
    due: float | None = None
    """When (monotonic) the rollout wants its next pass: a pause ends, a measurement is due."""
    measured: tuple[str, float] | None = None
    """The revision last measured and when (monotonic): the next measurement is due an interval after
    it, whatever passes ran in between."""


class InferenceFleetController:
    kind: Kind = FLEET

    def __init__(
        self,
        kube: Kube,
        caches: Reader,
        config: OperatorConfig,
        *,
        source: MetricSource | None = None,
        clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self.kube = kube
        self.caches = caches
        self.config = config
        if source is None and config.prometheus_url:
            source = PrometheusSource(config.prometheus_url)
        self.source = source
        self._now = clock or (lambda: datetime.now(UTC))
        self._monotonic = monotonic or time.monotonic
        self._fleets: dict[Key, _Fleet] = {}
        self._waiting: set[Key] = set()
        """Fleets in a rollout: freed GPUs may let their surge go on."""
        self.watches: tuple[Watch, ...] = (
            Watch(DEPLOYMENT, owner_keys(FLEET)),
            Watch(SERVICE, owner_keys(FLEET)),
            Watch(PDB, owner_keys(FLEET)),
            Watch(POD, self._pod_keys),
            Watch(NODE, lambda old, new: set(self._waiting)),
        )

    def _pod_keys(self, old: Obj | None, new: Obj | None) -> Iterable[Key]:
        keys = set(label_keys(INFERENCEFLEET_LABEL)(old, new))
        if self._waiting and old is not None and (new is None or capacity.pod_info(new).terminal):
            keys |= self._waiting
        return keys

    # -- the Controller protocol -------------------------------------------------------------------

    async def reconcile(self, obj: Obj) -> float | None:
        meta = obj["metadata"]
        key = (str(meta["namespace"]), str(meta["name"]))
        fleet = self._fleets.setdefault(key, _Fleet())
        spec = _spec_or_none(obj)
        auto = spec.autoscaling if spec is not None and spec.autoscaler_on else None
        scaled: policy.Decision | None = None
        if auto is None:
            fleet.decision = fleet.record = fleet.metrics = None
            fleet.next_evaluation = None
        elif fleet.next_evaluation is None or self._monotonic() >= fleet.next_evaluation:
            fleet.next_evaluation = self._monotonic() + float(auto.interval_seconds)
            scaled = await self._evaluate(obj, auto, fleet)
        await self._pass(obj, fleet)
        if scaled is not None and scaled.direction != "hold":
            verb = "ScaledUp" if scaled.direction == "up" else "ScaledDown"
            await self.kube.event(
                obj,
                type_="Normal",
                reason=verb,
                message=f"{scaled.previous} -> {scaled.desired} replicas ({scaled.reason}): {scaled.message}",
            )
        now = self._monotonic()
        waits = [t - now for t in (fleet.next_evaluation, fleet.due) if t is not None]
        return max(0.0, min(waits)) if waits else None

    async def forget(self, namespace: str, name: str) -> None:
        self._fleets.pop((namespace, name), None)
        self._waiting.discard((namespace, name))

    # -- reconcile ---------------------------------------------------------------------------------

    async def _pass(self, obj: Obj, fleet: _Fleet) -> InferenceFleetSpec | None:
        meta = obj["metadata"]
        namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])
        generation = meta.get("generation")
        current_status: Mapping[str, Any] = obj.get("status") or {}
        now = self._now()
        try:
            spec = InferenceFleetSpec.model_validate(obj.get("spec") or {})
        except ValidationError as error:
            message = f"spec is invalid: {error.errors()[0].get('msg', error)}"[:512]
            await self._write_status(
                obj,
                invalid_status(
                    "InvalidSpec", message, generation=generation, current_status=current_status, now=now
                ),
            )
            return None
        problem = build.name_problem(name)
        if problem is not None:
            await self._write_status(
                obj,
                invalid_status(
                    "InvalidName", problem, generation=generation, current_status=current_status, now=now
                ),
            )
            return None

        rev = build.revision(spec)
        labels = build.fleet_labels(name)
        deployments = self.caches.list(DEPLOYMENT, namespace, labels=labels)
        states = {
            s.revision: s
            for s in (summarize_deployment(d, build.REVISION_LABEL) for d in deployments if _owned_by(d, uid))
        }
        pod_objs = self.caches.list(POD, namespace, labels=labels)
        pods = summarize_pods(pod_objs)
        deployed = current_status.get("desiredReplicas")
        if not isinstance(deployed, int):
            deployed = sum(s.spec_replicas for s in states.values()) if states else None
        desired = self._desired(spec, current_status, fleet, deployed)

        for child in (
            build.build_service(spec, name=name, namespace=namespace, uid=uid),
            build.build_pdb(spec, name=name, namespace=namespace, uid=uid),
            build.build_controller_revision(spec, name=name, namespace=namespace, uid=uid, rev=rev),
        ):
            await self._ensure(child)

        plan = await self._plan(obj, spec, rev, desired, states, pod_objs, current_status, now, fleet)
        for event in plan.events:
            log.info("InferenceFleet %s/%s: %s: %s", namespace, name, event.reason, event.message)
            await self.kube.event(obj, type_=event.type, reason=event.reason, message=event.message)
            outcome = ROLLOUT_OUTCOMES.get(event.reason)
            if outcome is not None:
                exposition.ROLLOUTS.labels(namespace, outcome).inc()
        missing = await self._apply_revisions(obj, spec, rev, plan, states)
        for gone in plan.delete:
            state = states.pop(gone, None)
            if state is not None:
                log.info("%s/%s: revision %s drained, deleting %s", namespace, name, gone, state.name)
                await self.kube.delete(DEPLOYMENT.api_version, DEPLOYMENT.kind, state.name, namespace)
                await self.kube.delete(
                    SERVICE.api_version, SERVICE.kind, build.revision_service_name(name, gone), namespace
                )
        await self._trim_templates(namespace, name, uid, rev, plan.status)
        extra: list[ConditionUpdate] = []
        if spec.rollout is not None and spec.rollout.http_route is not None:
            routed = await self._route_traffic(obj, spec, plan)
            if routed is not None:
                extra.append(routed)
        if missing:
            extra.append(ConditionUpdate("Degraded", "True", "RevisionNotFound", missing))

        stable = plan.status.stable_revision or rev
        observed: list[RevisionState] = []
        for revision_name, wanted in plan.replicas.items():
            state = states.get(revision_name)
            if state is None:
                if revision_name != rev:
                    continue
                state = RevisionState(
                    revision=rev, name=build.deployment_name(name, rev), spec_replicas=wanted, current=False
                )
            if revision_name == stable or wanted or state.replicas or state.ready:
                observed.append(state)
        autoscaler_record: Mapping[str, Any] | None = None
        if spec.autoscaler_on:
            autoscaler_record = fleet.record if fleet.record is not None else current_status.get("autoscaler")
        active = plan.status.phase in rollouts.ACTIVE
        status = compute_status(
            spec,
            name=name,
            namespace=namespace,
            generation=generation,
            revision=rev,
            desired=desired,
            revisions=observed,
            pods=pods,
            metrics=fleet.metrics if spec.autoscaler_on else None,
            autoscaler=autoscaler_record,
            selector=build.selector_string(name),
            endpoint=build.endpoint(spec, name=name, namespace=namespace),
            current_status=current_status,
            now=now,
            serving=stable,
            rollout=RolloutConditions(
                active=active,
                message=plan.status.message,
                progressing=plan.progressing,
                degraded=plan.degraded,
            ),
            rollout_status=plan.status.model_dump(by_alias=True, mode="json"),
            extra=[c for c in extra if c.type != "Degraded" or plan.degraded is None],
        )
        await self._write_status(obj, status)
        now_mono = self._monotonic()
        fleet.due = None if plan.requeue_after is None else now_mono + plan.requeue_after
        limits = spec.rollout_spec.analysis
        measured = fleet.measured
        if (
            plan.analyze is not None
            and limits is not None
            and fleet.due is not None
            and measured is not None
            and measured[0] == plan.analyze
        ):
            fleet.due = min(fleet.due, measured[1] + limits.interval_seconds)
        key = (namespace, name)
        if active:
            self._waiting.add(key)
        else:
            self._waiting.discard(key)
        return spec

    # -- rollout -----------------------------------------------------------------------------------

    async def _plan(
        self,
        obj: Obj,
        spec: InferenceFleetSpec,
        rev: str,
        desired: int,
        states: Mapping[str, RevisionState],
        pod_objs: list[Obj],
        current_status: Mapping[str, Any],
        now: datetime,
        fleet: _Fleet,
    ) -> rollouts.RolloutPlan:
        """The rollout plan; measures the canary first when a measurement is due."""
        meta = obj["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        rollout = spec.rollout_spec
        previous = _rollout_status(current_status)
        # Pods without a node yet, and pods a Deployment was asked for that its controller has not made
        # yet: both are about to take free GPUs, which must not be counted twice for a surge.
        pending: dict[str, int] = {}
        alive: dict[str, int] = {}
        terminating: dict[str, int] = {}
        for pod in pod_objs:
            pmeta = pod.get("metadata") or {}
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            pod_rev = (pmeta.get("labels") or {}).get(build.REVISION_LABEL, "")
            if pmeta.get("deletionTimestamp"):
                # Not ready for its ReplicaSet any more, but still running until it is gone.
                terminating[pod_rev] = terminating.get(pod_rev, 0) + 1
                continue
            alive[pod_rev] = alive.get(pod_rev, 0) + 1
            if not (pod.get("spec") or {}).get("nodeName"):
                pending[pod_rev] = pending.get(pod_rev, 0) + 1
        revisions = {
            r: rollouts.RevisionState(
                replicas=s.spec_replicas,
                ready=s.ready,
                pending=pending.get(r, 0) + max(0, s.spec_replicas - alive.get(r, 0)),
                terminating=terminating.get(r, 0),
            )
            for r, s in states.items()
        }
        moving = (
            previous is None
            or previous.phase in rollouts.ACTIVE
            or previous.stable_revision != rev
            or len(states) > 1
            or rollout.target_revision is not None
        )
        inputs = rollouts.RolloutInputs(
            spec=rollout,
            status=previous,
            template_revision=rev,
            total_replicas=desired,
            now=now,
            revisions=revisions,
            template_image=spec.image,
            max_unavailable=rollouts.resolve_max_unavailable(spec.disruption.max_unavailable, desired),
            surge_capacity=self._surge_capacity(spec) if moving else None,
        )
        plan = rollouts.plan_rollout(inputs)
        limits = rollout.analysis
        if (
            limits is None
            or plan.analyze is None
            or not rollouts.analysis_due(plan.status, limits.interval_seconds, now)
        ):
            return plan
        fleet.measured = (plan.analyze, self._monotonic())
        run = await self._measure(limits, namespace, name, plan.analyze, plan.baseline, now)
        log.info(
            "InferenceFleet %s/%s: analysis of %s: %s (%s)",
            namespace,
            name,
            run.revision,
            run.verdict,
            run.message,
        )
        return rollouts.plan_rollout(replace(inputs, analysis=run))

    async def _measure(
        self,
        limits: AnalysisSpec,
        namespace: str,
        name: str,
        canary: str,
        baseline: str | None,
        now: datetime,
    ) -> AnalysisRun:
        thresholds = analysis_policy.Thresholds.from_spec(limits)
        if self.source is None:
            outcome = analysis_policy.unavailable("the operator runs without --prometheus-url")
        else:
            try:
                sample = await self.source.sample(limits, namespace, name, canary)
                base = await self.source.sample(limits, namespace, name, baseline) if baseline else None
            except MetricsError as error:
                outcome = analysis_policy.unavailable(error.message)
            else:
                outcome = analysis_policy.evaluate(sample, base, thresholds)
        return outcome.record(revision=canary, now=now)

    def _surge_capacity(self, spec: InferenceFleetSpec) -> int | None:
        """Pods of this fleet's shape that fit on the free GPUs now; None when it asks for no GPUs."""
        gpus = spec.resources.gpus
        if gpus <= 0:
            return None
        nodes = [capacity.node_info(n) for n in self.caches.list(NODE)]
        pods = [capacity.pod_info(p) for p in self.caches.list(POD)]
        products = gpu_products(spec.resources.gpu_type) if spec.resources.gpu_type else None
        matching = {n.name for n in nodes if capacity.matches(n, products)}
        free = capacity.free_gpus([n for n in nodes if n.name in matching], pods)
        return sum(count // gpus for count in free.values())

    async def _ensure(self, child: Obj) -> None:
        """Apply a child unless the cached one already is what we would write."""
        meta = child["metadata"]
        kind = _CHILD_KINDS[child["kind"]]
        cached = self.caches.get(kind, meta["name"], meta["namespace"]) if kind is not None else None
        await self.kube.apply_if_changed(child, cached)

    async def _apply_revisions(
        self,
        obj: Obj,
        spec: InferenceFleetSpec,
        rev: str,
        plan: rollouts.RolloutPlan,
        states: Mapping[str, RevisionState],
    ) -> str:
        """Every revision Deployment at the replicas the plan asks for. The template's revision is
        applied whole; others are scaled, or rebuilt from their ControllerRevision when gone. Returns
        a message naming revisions that could not be built ("" when none)."""
        meta = obj["metadata"]
        namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])
        problems: list[str] = []

        def shrinking_first(item: tuple[str, int]) -> tuple[bool, str]:
            # Scale-downs before scale-ups: the replicas asked for never exceed the plan's surge, not
            # even between two writes (and in a swap the old pod is deleted before the new one exists).
            state = states.get(item[0])
            return (item[1] >= (state.spec_replicas if state is not None else 0), item[0])

        for revision_name, replicas in sorted(plan.replicas.items(), key=shrinking_first):
            if revision_name == rev:
                await self._ensure(
                    build.build_deployment(
                        spec, name=name, namespace=namespace, uid=uid, rev=rev, replicas=replicas
                    )
                )
                continue
            state = states.get(revision_name)
            if state is not None:
                if state.spec_replicas != replicas:
                    await self.kube.patch(
                        DEPLOYMENT.api_version,
                        DEPLOYMENT.kind,
                        state.name,
                        namespace,
                        {"spec": {"replicas": replicas}},
                    )
                continue
            if replicas == 0:
                continue
            stored = await self.kube.get(
                CONTROLLER_REVISION.api_version,
                CONTROLLER_REVISION.kind,
                build.deployment_name(name, revision_name),
                namespace,
            )
            old_spec = build.spec_of_revision(spec, stored, revision_name) if stored else None
            if old_spec is None:
                problems.append(f"the template of revision {revision_name} is not kept; it cannot be rebuilt")
                continue
            await self._ensure(
                build.build_deployment(
                    old_spec, name=name, namespace=namespace, uid=uid, rev=revision_name, replicas=replicas
                )
            )
        return "; ".join(problems)

    async def _trim_templates(
        self, namespace: str, name: str, uid: str, rev: str, status: RolloutStatus
    ) -> None:
        """ControllerRevisions of revisions that left the history (and run nowhere) go."""
        keep = {rev, status.stable_revision, status.canary_revision, *(e.revision for e in status.history)}
        for item in self.caches.list(CONTROLLER_REVISION, namespace, labels=build.fleet_labels(name)):
            labels = (item.get("metadata") or {}).get("labels") or {}
            if not _owned_by(item, uid) or labels.get(build.REVISION_LABEL) in keep:
                continue
            await self.kube.delete(
                CONTROLLER_REVISION.api_version, CONTROLLER_REVISION.kind, item["metadata"]["name"], namespace
            )

    async def _route_traffic(
        self, obj: Obj, spec: InferenceFleetSpec, plan: rollouts.RolloutPlan
    ) -> ConditionUpdate | None:
        """Per-revision Services and the HTTPRoute's backend weights; the `TrafficRouted` condition."""
        assert spec.rollout is not None
        assert spec.rollout.http_route is not None
        meta = obj["metadata"]
        namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])
        route_name = spec.rollout.http_route.name
        serving = {r for r, w in plan.weights.items() if w > 0}
        serving |= {r for r in (plan.status.stable_revision, plan.status.canary_revision) if r}
        for revision_name in sorted(serving):
            problem = build.revision_service_problem(name, revision_name)
            if problem is not None:
                return ConditionUpdate("TrafficRouted", "False", "InvalidBackendName", problem)
            await self._ensure(
                build.build_revision_service(spec, name=name, namespace=namespace, uid=uid, rev=revision_name)
            )
        try:
            route = await self.kube.get(HTTPROUTE.api_version, HTTPROUTE.kind, route_name, namespace)
        except ApiError as error:
            return ConditionUpdate(
                "TrafficRouted",
                "False",
                "HTTPRouteUnreadable",
                f"HTTPRoute {route_name}: {error.status.message}",
            )
        if route is None:
            return ConditionUpdate(
                "TrafficRouted",
                "False",
                "HTTPRouteNotFound",
                f"HTTPRoute {route_name} not found (is the Gateway API installed?); traffic is split by"
                " ready replicas only",
            )
        weights = dict(plan.weights)
        patch = build.route_patch(
            route, name=name, port=spec.port, weights=weights, revisions=set(plan.replicas) | serving
        )
        text = ", ".join(f"{r}={w}%" for r, w in sorted(weights.items()) if w > 0)
        if patch is not None:
            try:
                await self.kube.patch(HTTPROUTE.api_version, HTTPROUTE.kind, route_name, namespace, patch)
            except ApiError as error:
                return ConditionUpdate(
                    "TrafficRouted",
                    "False",
                    "HTTPRoutePatchFailed",
                    f"HTTPRoute {route_name}: {error.status.message}",
                )
            log.info("InferenceFleet %s/%s: HTTPRoute %s weights %s", namespace, name, route_name, text)
        return ConditionUpdate("TrafficRouted", "True", "WeightsSet", f"HTTPRoute {route_name}: {text}")

    def _desired(
        self, spec: InferenceFleetSpec, status: Mapping[str, Any], fleet: _Fleet, deployed: int | None
    ) -> int:
        if not spec.autoscaler_on or spec.autoscaling is None:
            return spec.replicas
        memory = fleet.decision.memory if fleet.decision is not None else _memory_from(status)
        observed = policy.Observed(
            ready=0, current=deployed if deployed is not None else spec.autoscaling.min_replicas
        )
        return policy.baseline(spec.autoscaling, observed, memory)

    async def _write_status(self, obj: Obj, status: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        before: Mapping[str, Any] = obj.get("status") or {}
        patch = merge_patch(before, status)
        if not patch:
            return
        await self.kube.patch_status(FLEET.api_version, FLEET.kind, name, namespace, patch)
        after = list(status.get("conditions", []))
        exposition.record_conditions(KIND, namespace, name, after)
        for condition in transitions(list(before.get("conditions", []) or []), after):
            ctype, cstatus, reason = condition["type"], condition["status"], condition["reason"]
            exposition.TRANSITIONS.labels(KIND, ctype, cstatus, reason).inc()
            if ctype == "Progressing" or reason in _ROLLOUT_REASONS:
                continue
            warning = (
                (ctype in _WARNING_WHEN_TRUE and cstatus == "True")
                or (ctype in _WARNING_WHEN_FALSE and cstatus == "False")
                or (ctype == "Ready" and cstatus == "False")
            )
            known = any(c.get("type") == ctype for c in before.get("conditions", []) or [])
            if not known and (not warning or ctype == "Ready"):
                continue  # a condition's first, healthy value (or a new fleet not ready yet) is no news
            await self.kube.event(
                obj,
                type_="Warning" if warning else "Normal",
                reason=reason,
                message=f"{ctype}={cstatus}: {condition.get('message', '')}",
            )

    # -- the autoscaler --------------------------------------------------------------------------------

    async def _evaluate(self, obj: Obj, auto: Autoscaling, fleet: _Fleet) -> policy.Decision:
        """One autoscaler evaluation: read the metric, decide, remember the decision for this pass."""
        meta = obj["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        labels = build.fleet_labels(name)
        deployments = self.caches.list(DEPLOYMENT, namespace, labels=labels)
        # During a rollout the fleet's replicas are split between revisions: the autoscaler decides the
        # total, which is what the last pass asked for.
        asked = (obj.get("status") or {}).get("desiredReplicas")
        running = sum(summarize_deployment(d, build.REVISION_LABEL).spec_replicas for d in deployments)
        pods = summarize_pods(self.caches.list(POD, namespace, labels=labels))
        observed = policy.Observed(
            ready=pods.ready,
            current=asked if isinstance(asked, int) else (running if deployments else auto.min_replicas),
            scheduled=pods.scheduled,
            unschedulable=pods.unschedulable,
        )
        if self.source is None:
            reading = policy.Reading(
                error="PrometheusNotConfigured", message="the operator runs without --prometheus-url"
            )
        else:
            reading = policy.per_replica(auto, await self.source.read(auto, namespace, name), pods.ready)
        memory = (
            fleet.decision.memory if fleet.decision is not None else _memory_from(obj.get("status") or {})
        )
        last_reason = fleet.decision.reason if fleet.decision is not None else None
        now = self._now()
        decision = policy.decide(auto, reading, observed, memory, now)
        fleet.decision = decision
        fleet.record = policy.status_record(auto, decision, observed, now)
        fleet.metrics = MetricsHealth(
            unavailable=decision.metrics_unavailable,
            reason=decision.unavailable_reason or "MetricsAvailable",
            message=decision.message
            if decision.metrics_unavailable
            else f"{auto.metric or 'query'} read from Prometheus",
        )
        exposition.AUTOSCALER_DECISIONS.labels(namespace, decision.direction, decision.reason).inc()
        exposition.AUTOSCALER_DESIRED.labels(namespace, name).set(decision.desired)
        if decision.value is not None:
            exposition.AUTOSCALER_METRIC.labels(namespace, name).set(decision.value)
        log.log(
            logging.INFO if decision.direction != "hold" or decision.reason != last_reason else logging.DEBUG,
            "InferenceFleet %s/%s: autoscaler %s %d -> %d (%s): %s",
            namespace,
            name,
            decision.mode,
            decision.previous,
            decision.desired,
            decision.reason,
            decision.message,
        )
        return decision


_CHILD_KINDS: Mapping[str, Kind | None] = {
    "Service": SERVICE,
    "PodDisruptionBudget": PDB,
    "Deployment": DEPLOYMENT,
    "ControllerRevision": CONTROLLER_REVISION,
}


def _spec_or_none(obj: Obj) -> InferenceFleetSpec | None:
    try:
        return InferenceFleetSpec.model_validate(obj.get("spec") or {})
    except ValidationError:
        return None


def _rollout_status(status: Mapping[str, Any]) -> RolloutStatus | None:
    raw = status.get("rollout")
    if not isinstance(raw, Mapping):
        return None
    try:
        return RolloutStatus.model_validate(raw)
    except ValidationError:
        log.warning("status.rollout is unreadable; starting from what the cluster shows")
        return None


def _memory_from(status: Mapping[str, Any]) -> policy.Memory:
    raw = status.get("autoscaler")
    if not isinstance(raw, Mapping):
        return policy.Memory()
    try:
        return policy.memory_from_status(AutoscalerStatus.model_validate(raw))
    except ValidationError:
        return policy.Memory()


def _owned_by(obj: Obj, uid: str) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences", []) or []
    return any(ref.get("uid") == uid for ref in refs)
