"""The InferenceFleet controller: gather, call the policy, carry out its plan.

Every decision lives in `kubeforge.policy.fleet.decide` (and the policies it calls: autoscaler,
rollout, analysis, status, which changes are news); the children are built by
`kubeforge.builders.inferencefleet`. `reconcile()` (watch events of the fleet, its Deployments, Services,
PDB and pods; freed GPUs while a rollout waits for capacity; requeues):

- reads the autoscaler's metric from Prometheus when an evaluation is due (every `intervalSeconds`, on
  the monotonic clock; the runtime's requeue-after brings the pass, nothing here sleeps);
- gathers a `FleetObserved` from the caches and calls `decide`; when the plan asks for an input (free
  GPUs, a canary measurement, a drained revision's stored template, the HTTPRoute) it fetches it and
  decides again;
- carries out the plan in its order: children applied only when they differ from the cached ones,
  replicas patched, drained revisions deleted, the HTTPRoute's weights, the status patched only when it
  differs, then events and metrics;
- returns the plan's requeue-after.

Everything a decision needs from the past is in `status`, so a restarted operator resumes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from lightkube import ApiError
from pydantic import ValidationError

from kubeforge.api.common import gpu_products
from kubeforge.api.inferencefleet import KIND, Autoscaling, InferenceFleetSpec, InferenceFleetStatus
from kubeforge.api.names import INFERENCEFLEET_LABEL
from kubeforge.api.objective import PodPolicy
from kubeforge.api.rollout import AnalysisSpec
from kubeforge.builders import inferencefleet as build
from kubeforge.builders import kueue_claim
from kubeforge.controllers import lending
from kubeforge.controllers.facts import ClusterFactsMemo
from kubeforge.controllers.ownership import (
    clear_conflict,
    priority_class_refusal,
    route_not_opted_in,
    route_opts_in,
    warn_owner,
)
from kubeforge.controllers.runtime import Key, OperatorConfig, Watch, label_keys, owner_keys, together
from kubeforge.controllers.usage import held_gpus
from kubeforge.kube.client import Kube, NotOursError, Obj, is_conflict
from kubeforge.kube.informer import Reader, controller_uid
from kubeforge.kube.kinds import (
    CONTROLLER_REVISION,
    DEPLOYMENT,
    HTTPROUTE,
    INFERENCEFLEET,
    KUEUE_WORKLOAD,
    NETWORK_POLICY,
    NODE,
    PDB,
    POD,
    PRIORITY_CLASS,
    REPLICASET,
    SERVICE,
    TRAININGJOB,
    Kind,
)
from kubeforge.kube.rejections import ChildRejectedError, child_write
from kubeforge.metrics import exposition
from kubeforge.metrics.promql import MetricsError, PrometheusSource
from kubeforge.policy import arbitration, autoscaler, capacity, gangs, kueue_claims, training
from kubeforge.policy import fleet as policy
from kubeforge.policy import objective as objectives
from kubeforge.policy import usage as usage_policy
from kubeforge.policy.analysis import MetricSample
from kubeforge.policy.events import Event
from kubeforge.policy.fleet_events import SCALE_REASONS
from kubeforge.policy.fleet_status import count_revision_pods, summarize_deployment, summarize_pods
from kubeforge.policy.rejection import rejection_message
from kubeforge.policy.status import parse_status, status_diff

log = logging.getLogger(__name__)

FLEET = INFERENCEFLEET
NO_PROMETHEUS = "the operator runs without --prometheus-url"


class MetricSource(Protocol):
    """What the controller needs from a metric backend (PrometheusSource, or a fake in tests)."""

    async def read(self, spec: Autoscaling, namespace: str, name: str) -> autoscaler.Reading: ...

    async def sample(self, spec: AnalysisSpec, namespace: str, name: str, revision: str) -> MetricSample:
        """One revision's analysis metrics; raises MetricsError when they cannot be read."""
        ...


@runtime_checkable
class UsageSource(Protocol):
    """A metric source that can also measure a fleet's GPUs and traffic over a segment (for
    `status.usage`: energy from DCGM, cost per request and per token)."""

    async def usage(self, namespace: str, name: str, seconds: float) -> usage_policy.UsageReading: ...


@dataclass
class _Fleet:
    """What the operator remembers of one fleet between passes (all of it can be lost: status has it)."""

    memory: policy.FleetMemory = field(default_factory=policy.FleetMemory)
    next_evaluation: float | None = None
    """When (monotonic) the autoscaler evaluates next."""
    measured: tuple[str, float] | None = None
    """The revision last measured and when (monotonic): the next measurement is due an interval after
    it, whatever passes ran in between."""
    rejected: tuple[int | None, str] | None = None
    """The generation whose children the API server refused as invalid (422), and the message: until
    the spec changes, passes report `InvalidSpec` instead of sending the same writes again."""
    unsent: tuple[int | None, Event] | None = None
    """The `ScaledUp`/`ScaledDown` of a pass whose writes failed, and the generation it was decided at:
    the retry carries the remembered decision out without evaluating again (Prometheus is read once an
    interval), so the Event would otherwise be lost while the Deployment is scaled. Only that Event:
    the retry's own conditions say what is true then, and a spec changed meanwhile drops it."""


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
        self._cluster_facts = ClusterFactsMemo()
        self._monotonic = monotonic or time.monotonic
        self._fleets: dict[Key, _Fleet] = {}
        self._waiting: set[Key] = set()
        """Fleets in a rollout: freed GPUs may let their surge go on."""
        self._lending = asyncio.Lock()
        """Held by a pass that may borrow GPUs, from its decision to its status write."""
        self.watches: tuple[Watch, ...] = (
            Watch(DEPLOYMENT, owner_keys(FLEET)),
            Watch(SERVICE, owner_keys(FLEET)),
            Watch(PDB, owner_keys(FLEET)),
            Watch(NETWORK_POLICY, owner_keys(FLEET)),
            Watch(POD, self._pod_keys),
            Watch(NODE, lambda old, new: set(self._waiting)),
            Watch(TRAININGJOB, self._gang_keys),
        )
        if caches.serves(KUEUE_WORKLOAD):
            # Kueue admitting (or evicting) a claim of the fleet.
            self.watches += (Watch(KUEUE_WORKLOAD, label_keys(INFERENCEFLEET_LABEL)),)

    def _gang_keys(self, old: Obj | None, new: Obj | None) -> Iterable[Key]:
        """A gang that gives its admission up before its workers hold the GPUs frees room for a surge that
        no pod event reports."""
        return set(self._waiting) if self._waiting and gangs.gave_back_admission(old, new) else ()

    def _pod_keys(self, old: Obj | None, new: Obj | None) -> Iterable[Key]:
        keys = set(label_keys(INFERENCEFLEET_LABEL)(old, new))
        # GPUs freed, or a claim on them became exact (a pod bound), may let a surge go on.
        freed = old is not None and (new is None or capacity.pod_info(new).terminal)
        if self._waiting and (freed or capacity.claim_changed(old, new)):
            keys |= self._waiting
        return keys

    # -- the Controller protocol -------------------------------------------------------------------

    async def reconcile(self, obj: Obj) -> float | None:
        meta = obj["metadata"]
        key = (str(meta["namespace"]), str(meta["name"]))
        fleet = self._fleets.setdefault(key, _Fleet())
        spec, invalid = _parse_spec(obj, self.config.allowed_priority_classes)
        if fleet.rejected is not None and fleet.rejected[0] != meta.get("generation"):
            fleet.rejected = None
        if spec is not None and fleet.rejected is not None:
            spec, invalid = None, fleet.rejected[1]
        derived = None
        if spec is not None:
            # The objective's settings fill in what the user left at its default; from here on the
            # fleet's policy reads the spec with them (`policy.objective`).
            derived = objectives.derive_fleet(spec, self.config.catalog, self._facts())
            spec = derived.spec
        auto = spec.autoscaling if spec is not None and spec.autoscaler_on else None
        reading: autoscaler.Reading | None = None
        if auto is None:
            fleet.next_evaluation = None
        elif fleet.next_evaluation is None or self._monotonic() >= fleet.next_evaluation:
            fleet.next_evaluation = self._monotonic() + float(auto.interval_seconds)
            reading = await self._read(auto, *key)
        observed_at = self._monotonic()

        def gather(observed_at: float) -> policy.FleetObserved:
            observed = self._observe(obj, spec, invalid, reading, fleet, observed_at)
            if derived is None:
                return observed
            guard = self.caches.get(NETWORK_POLICY, key[1], key[0])
            observed = replace(
                observed,
                gpu_products=derived.products,
                policy=derived.entries,
                network_policy=guard is not None and _owned_by(guard, str(meta["uid"])),
            )
            if observed.borrowing is not None and derived.products is not None:
                # Borrow GPUs of the type the objective chose, the one the fleet's pods require.
                observed = replace(observed, borrowing=replace(observed.borrowing, products=derived.products))
            return observed

        observed = gather(observed_at)
        if observed.borrowing is None or not any(j.lending != "none" for j in observed.borrowing.jobs):
            return await self._carry_out(obj, observed, fleet, auto, observed_at)
        # Passes of different fleets run at once: two that may take GPUs could both take the same
        # worker before either had written its take. One such pass at a time, each deciding on what the
        # caches show once the previous one's status (with its take) is in them. A fleet that nothing
        # is offered to cannot take, and does not wait here.
        async with self._lending:
            observed_at = self._monotonic()
            return await self._carry_out(obj, gather(observed_at), fleet, auto, observed_at)

    async def _carry_out(
        self,
        obj: Obj,
        observed: policy.FleetObserved,
        fleet: _Fleet,
        auto: Autoscaling | None,
        observed_at: float,
    ) -> float | None:
        """Decide on what was gathered (fetching what the plan asks for), then carry the plan out; the
        requeue-after, counted from `observed_at`."""
        meta = obj["metadata"]
        key = (str(meta["namespace"]), str(meta["name"]))
        plan = policy.decide(observed)
        for _ in range(policy.MAX_ROUNDS):
            if plan.complete:
                break
            observed = await self._fetch(observed, plan, fleet, observed_at)
            plan = policy.decide(observed)
        else:
            raise RuntimeError(f"InferenceFleet {key[0]}/{key[1]}: the plan still asks for {plan}")
        if plan.evaluation is not None:
            self._record_evaluation(*key, plan.evaluation, fleet.memory.decision, auto)
        # Remembered before the writes: a failed write retries the pass, not the evaluation.
        fleet.memory = plan.memory
        unsent, fleet.unsent = fleet.unsent, None
        if unsent is not None and unsent[0] == meta.get("generation") and auto is not None:
            plan = replace(plan, events=(unsent[1], *(e for e in plan.events if e != unsent[1])))
        try:
            await self._execute(obj, observed, plan)
        except ChildRejectedError as error:
            # Decided again as a spec the operator cannot build: only the status and its Event go out.
            fleet.rejected = (meta.get("generation"), rejection_message(error.message))
            observed = replace(observed, spec=None, invalid=fleet.rejected[1], policy=())
            await self._execute(obj, observed, policy.decide(observed))
            return None
        except Exception:
            scaled = next((e for e in plan.events if e.reason in SCALE_REASONS), None)
            if scaled is not None:
                fleet.unsent = (meta.get("generation"), scaled)
            raise
        await clear_conflict(self.kube, FLEET, self.caches.get(FLEET, key[1], key[0]))
        if plan.requeue_after is None:
            return None
        # The plan's waits count from when the pass observed; the I/O since has taken some of them.
        return max(0.0, plan.requeue_after - (self._monotonic() - observed_at))

    async def warn(self, obj: Obj, reason: str, message: str) -> None:
        await warn_owner(self.kube, FLEET, obj, reason, message)

    def wakes(self) -> Iterable[Key]:
        return ()

    async def forget(self, namespace: str, name: str) -> None:
        # Claims have no owner reference for the garbage collector to follow (see builders.kueue_claim):
        # a deleted fleet's claims go here, also those found after a restart (their fleet key is
        # reconciled from the claims' watch, finds no fleet, and lands here).
        for claim in self._claims(namespace, name):
            await self.kube.delete(KUEUE_WORKLOAD.api_version, KUEUE_WORKLOAD.kind, claim, namespace)
        self._fleets.pop((namespace, name), None)
        self._waiting.discard((namespace, name))

    def _claims(self, namespace: str, name: str) -> list[str]:
        """Names of the claim Workloads of any fleet of this name that are not being deleted."""
        if not self.caches.serves(KUEUE_WORKLOAD):
            return []
        return [
            str(w["metadata"]["name"])
            for w in self.caches.list(KUEUE_WORKLOAD, namespace, labels=build.fleet_labels(name))
            if not w["metadata"].get("deletionTimestamp")
        ]

    # -- gather ------------------------------------------------------------------------------------

    def _observe(
        self,
        obj: Obj,
        spec: InferenceFleetSpec | None,
        invalid: str,
        reading: autoscaler.Reading | None,
        fleet: _Fleet,
        now_mono: float,
    ) -> policy.FleetObserved:
        meta = obj["metadata"]
        namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])
        measured = fleet.measured
        observed = policy.FleetObserved(
            name=name,
            namespace=namespace,
            generation=meta.get("generation"),
            status=parse_status(InferenceFleetStatus, obj.get("status")),
            now=self._now(),
            spec=spec,
            invalid=invalid,
            memory=fleet.memory,
            reading=reading,
            next_evaluation_in=None if fleet.next_evaluation is None else fleet.next_evaluation - now_mono,
            measured=None if measured is None else (measured[0], now_mono - measured[1]),
            catalog=self.config.catalog,
            usage_checkpoint=usage_policy.spread(
                timedelta(seconds=self.config.usage_checkpoint_seconds), f"{namespace}/{name}"
            ),
            measures_usage=isinstance(self.source, UsageSource),
        )
        if spec is None:
            return observed
        labels = build.fleet_labels(name)
        ours = [d for d in self.caches.list(DEPLOYMENT, namespace, labels=labels) if _owned_by(d, uid)]
        deployments = (summarize_deployment(d, build.REVISION_LABEL) for d in ours)
        # The fleet's pods are those its Deployments' ReplicaSets control, by UID: a pod that only
        # copies the fleet's labels (anyone who can create a pod in the namespace can) is not counted.
        replica_sets = self.caches.controlled(
            REPLICASET, namespace, [str(d["metadata"].get("uid")) for d in ours]
        )
        pods = self.caches.controlled(POD, namespace, [str(r["metadata"].get("uid")) for r in replica_sets])
        kept = {
            str(c["metadata"]["name"]): (c["metadata"].get("labels") or {}).get(build.REVISION_LABEL)
            for c in self.caches.list(CONTROLLER_REVISION, namespace, labels=labels)
            if _owned_by(c, uid)
        }
        deployed = {s.revision: s for s in deployments}
        rollout = observed.status.rollout
        known = [*deployed, *kept.values()]
        if rollout is not None:
            known += [rollout.stable_revision, rollout.canary_revision]
            known += [e.revision for e in rollout.history]
        summary = summarize_pods(pods)
        claims = self._claim_views(namespace, name, uid, spec)
        borrowing = None
        if spec.autoscaler_on and (
            summary.unschedulable or observed.status.borrowed or observed.status.kueue_claim or claims
        ):
            borrowing = self._borrowing(namespace, name, spec)
        return replace(
            observed,
            revision=build.template_revision(spec, known),
            deployments=deployed,
            pods=summary,
            revision_pods=count_revision_pods(pods, build.REVISION_LABEL),
            templates_kept=kept,
            held=held_gpus(self.caches, map(training.pod_view, pods), spec.resources.gpu_type, self.config),
            borrowing=borrowing,
            kueue_claims=claims,
            kueue_served=self.caches.serves(KUEUE_WORKLOAD),
            kueue_blind=self.caches.forbidden(KUEUE_WORKLOAD),
            # The other claims of this name: an older fleet's, still holding quota (deleted in `_execute`).
            kueue_names_in_use=frozenset(self._claims(namespace, name)) - {c.name for c in claims},
        )

    def _claim_views(
        self, namespace: str, name: str, uid: str, spec: InferenceFleetSpec
    ) -> tuple[kueue_claims.Claim, ...]:
        """The fleet's claim Workloads as `policy.kueue_claims` reads them."""
        if not self.caches.serves(KUEUE_WORKLOAD):
            return ()
        workloads = self.caches.list(KUEUE_WORKLOAD, namespace, labels=build.fleet_labels(name))
        if not workloads:
            return ()
        now = kueue_claim.claim_hash(self._claim_body("", spec, namespace, name, uid, ""))
        views = []
        for w in workloads:
            meta = w["metadata"]
            labels = meta.get("labels") or {}
            if labels.get(kueue_claim.FLEET_UID_LABEL) != uid:
                continue
            conditions = {c.get("type"): c for c in (w.get("status") or {}).get("conditions") or []}
            admitted = (conditions.get("Admitted") or {}).get("status") == "True"
            evicted = conditions.get("Evicted") or {}
            reserved = conditions.get("QuotaReserved") or {}
            word = ""
            if evicted.get("status") == "True":
                word = str(evicted.get("message") or "")
            elif reserved.get("status") == "False":
                word = str(reserved.get("message") or "")
            views.append(
                kueue_claims.Claim(
                    str(meta["name"]),
                    admitted,
                    "" if admitted else word,
                    deleting=bool(meta.get("deletionTimestamp")),
                    current=labels.get(kueue_claim.CLAIM_HASH_LABEL) == now,
                )
            )
        return tuple(views)

    def _claim_body(
        self, claim: str, spec: InferenceFleetSpec, namespace: str, name: str, uid: str, revision: str
    ) -> Obj:
        """Claim Workload `claim` as the fleet would make it now (`builders.kueue_claim`)."""
        priority = lending.priority_of(
            spec.priority_class_name, lending.priorities(self.caches.list(PRIORITY_CLASS))
        )
        return kueue_claim.claim(
            claim,
            fleet=name,
            namespace=namespace,
            uid=uid,
            queue=spec.kueue_queue_name or "",
            priority=priority,
            pod=build.pod_template(spec, name, revision, self._pod_policy(spec)),
        )

    def _borrowing(self, namespace: str, name: str, spec: InferenceFleetSpec) -> arbitration.Borrowing:
        """The running training a fleet may borrow GPUs from, from the caches (see `policy.arbitration`)."""
        key = f"{namespace}/{name}"
        priorities = lending.priorities(self.caches.list(PRIORITY_CLASS))
        others = {
            job: [h for fleet, held in by_fleet.items() if fleet != key for h in held]
            for job, by_fleet in lending.records(self.caches).items()
        }
        jobs, present = lending.trainings(self.caches, priorities, self._now())
        ledger = self.caches.capacity()
        gpu_type = spec.resources.gpu_type
        return arbitration.Borrowing(
            fleet=key,
            priority=lending.priority_of(spec.priority_class_name, priorities),
            gpus=spec.resources.gpus,
            products=gpu_products(gpu_type) if gpu_type else None,
            wanted=0,
            unschedulable=0,
            jobs=jobs,
            held_by_others=others,
            present=present,
            free=ledger.free(),
            node_products={n.name: n.product for n in ledger.nodes},
            return_after=self.config.gpu_return_after_seconds,
        )

    async def _read(self, auto: Autoscaling, namespace: str, name: str) -> autoscaler.Reading:
        if self.source is None:
            return autoscaler.Reading(error="PrometheusNotConfigured", message=NO_PROMETHEUS)
        return await self.source.read(auto, namespace, name)

    def _capacity(self, o: policy.FleetObserved) -> policy.Capacity:
        """The capacity gang admission reads: free GPUs, the unplaced workers of admitted gangs and other
        fleets' unbound pods, judged with the tolerations the fleet's pods really carry."""
        assert o.spec is not None
        ledger = self.caches.capacity()
        admitted = gangs.gangs_of(
            self.caches.list(TRAININGJOB), lambda _: 0, catalog=self.config.catalog
        ).admitted
        unplaced = [ledger.unplaced(whole, attempt) for whole, attempt in admitted.values()]
        claims = capacity.claims_of(unplaced, ledger.claiming, skip=f"{o.namespace}/{o.name}")
        template = build.pod_template(o.spec, o.name, o.revision or "", self._pod_policy(o.spec))
        tolerations = capacity.tolerations_of(template["spec"].get("tolerations") or [])
        return policy.Capacity(
            tuple(ledger.nodes), ledger.free(), tuple(claims), tolerations, scope=tuple(ledger.scope)
        )

    async def _fetch(
        self, o: policy.FleetObserved, plan: policy.FleetPlan, fleet: _Fleet, observed_at: float
    ) -> policy.FleetObserved:
        """The input the plan asks for."""
        assert o.spec is not None
        if plan.needs_capacity:
            return replace(o, capacity=self._capacity(o))
        if plan.measure is not None:
            fleet.measured = (plan.measure.revision, self._monotonic())
            measurement = await self._measure(o.namespace, o.name, plan.measure)
            ago = observed_at - fleet.measured[1]  # as the other inputs: counted from the observation
            return replace(o, measurement=measurement, measured=(plan.measure.revision, ago))
        if plan.needs_usage is not None:
            reading = usage_policy.UsageReading()
            if isinstance(self.source, UsageSource):
                reading = await self.source.usage(o.namespace, o.name, plan.needs_usage)
            return replace(o, usage_reading=reading)
        if plan.needs_templates:
            templates = dict(o.templates)
            for rev in plan.needs_templates:
                stored = await self.kube.get(
                    CONTROLLER_REVISION.api_version,
                    CONTROLLER_REVISION.kind,
                    build.deployment_name(o.name, rev),
                    o.namespace,
                )
                templates[rev] = build.spec_of_revision(o.spec, stored, rev) if stored else None
            return replace(o, templates=templates)
        assert plan.needs_route is not None
        try:
            route = await self.kube.get(HTTPROUTE.api_version, HTTPROUTE.kind, plan.needs_route, o.namespace)
        except ApiError as error:
            return replace(o, route=policy.RouteRead(read_error=str(error.status.message)))
        if route is not None and not route_opts_in(route, o.name):
            return replace(o, route=policy.RouteRead(read_error=route_not_opted_in(o.name)))
        return replace(o, route=policy.RouteRead(route=route))

    async def _measure(self, namespace: str, name: str, measure: policy.Measure) -> policy.Measurement:
        if self.source is None:
            return policy.Measurement(measure.revision, error=NO_PROMETHEUS)
        try:
            canary = await self.source.sample(measure.spec, namespace, name, measure.revision)
            baseline = None
            if measure.baseline:
                baseline = await self.source.sample(measure.spec, namespace, name, measure.baseline)
        except MetricsError as error:
            return policy.Measurement(measure.revision, error=error.message)
        return policy.Measurement(measure.revision, canary, baseline)

    # -- carry out ---------------------------------------------------------------------------------

    async def _execute(self, obj: Obj, o: policy.FleetObserved, plan: policy.FleetPlan) -> None:
        namespace, name = o.namespace, o.name
        # The fleet-wide children (Service, PDB, revision templates and Services) depend on nothing the
        # revision writes do, and a reconcile's time is its round trips: they all go out at once, beside
        # the revision writes, which keep the plan's order (scale-downs before scale-ups). A new fleet
        # costs two round trips (its children, then its status); Events go out in the background.
        alongside = [w for w in plan.writes if isinstance(w, policy.Apply) and w.kind != "Deployment"]
        in_order = [w for w in plan.writes if w not in alongside]

        async def ordered() -> None:
            for write in in_order:
                await self._write(obj, write)

        await together(ordered(), *(self._write(obj, w) for w in alongside))
        if plan.route is not None:
            plan = await self._set_weights(o, plan, plan.route)
        patch = status_diff(o.status, plan.status)
        if patch is not None:
            await self.kube.patch_status(FLEET.api_version, FLEET.kind, name, namespace, patch)
        # Every pass, so a restarted operator exports the current state at once.
        exposition.record_conditions(KIND, namespace, name, [c.to_wire() for c in plan.status.conditions])
        if o.spec is None or not o.spec.autoscaler_on:
            exposition.forget_autoscaler(namespace, name)
        budgeted = o.spec is not None and o.spec.budget is not None
        exposition.record_usage(
            KIND,
            namespace,
            name,
            plan.status.usage,
            plan.status.conditions,
            "BudgetLimited" if budgeted else None,
        )
        for changed in plan.transitions:
            exposition.TRANSITIONS.labels(KIND, changed.type, changed.status, changed.reason).inc()
        if o.measurement is not None and plan.status.rollout and plan.status.rollout.last_analysis:
            run = plan.status.rollout.last_analysis
            exposition.ANALYSIS.labels(namespace, run.verdict).inc()
            log.info(
                "InferenceFleet %s/%s: analysis of %s: %s (%s)",
                namespace,
                name,
                run.revision,
                run.verdict,
                run.message,
            )
        for event in plan.events:
            log.info("InferenceFleet %s/%s: %s: %s", namespace, name, event.reason, event.message)
            await self.kube.event(obj, type_=event.type, reason=event.reason, message=event.message)
        for outcome in plan.outcomes:
            exposition.ROLLOUTS.labels(namespace, outcome).inc()
        for direction, gpus in plan.lends:
            exposition.GPU_LENDS.labels(namespace, direction).inc(gpus)
        # Left by a deleted fleet of the same name while no operator ran: they hold Kueue quota.
        for stale in sorted(o.kueue_names_in_use):
            await self.kube.delete(KUEUE_WORKLOAD.api_version, KUEUE_WORKLOAD.kind, stale, namespace)
        if plan.claims_create or plan.claims_delete:
            await self._write_claims(obj, o, plan)
        if plan.in_rollout:
            self._waiting.add((namespace, name))
        else:
            self._waiting.discard((namespace, name))

    async def _write_claims(self, obj: Obj, o: policy.FleetObserved, plan: policy.FleetPlan) -> None:
        """Make and withdraw the fleet's claims on Kueue, after the status write that records (or
        forgets) them: a pass cut short in between leaves a record whose claims the next pass makes, or
        claims without a record, which it deletes; names are fixed, so nothing is asked twice."""
        assert o.spec is not None
        namespace, name, uid = o.namespace, o.name, str(obj["metadata"]["uid"])
        for claim in plan.claims_delete:
            await self.kube.delete(KUEUE_WORKLOAD.api_version, KUEUE_WORKLOAD.kind, claim, namespace)
        for claim in plan.claims_create:
            body = self._claim_body(claim, o.spec, namespace, name, uid, o.revision or "")
            try:
                await self.kube.create(body)
            except ApiError as error:
                if not is_conflict(error):
                    raise  # the pass is retried; names are fixed, so nothing is asked twice
                # Made by an earlier try whose answer was lost, or a Workload of that name that is not
                # this fleet's claim: never taken over, and said so rather than counted as asked.
                found = await self.kube.get(KUEUE_WORKLOAD.api_version, KUEUE_WORKLOAD.kind, claim, namespace)
                labels = ((found or {}).get("metadata") or {}).get("labels") or {}
                if found is not None and labels.get(kueue_claim.FLEET_UID_LABEL) != uid:
                    raise NotOursError(
                        f"Workload {namespace}/{claim} exists and is not a claim of this fleet; delete or "
                        "rename it so that the fleet can ask Kueue (its claims are named <fleet>-kueue-<n>)"
                    ) from error

    async def _write(self, obj: Obj, write: policy.Write) -> None:
        with child_write():
            await self._write_child(obj, write)

    async def _write_child(self, obj: Obj, write: policy.Write) -> None:
        meta = obj["metadata"]
        namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])
        if isinstance(write, policy.Scale):
            body = {"spec": {"replicas": write.replicas}}
            await self.kube.patch(DEPLOYMENT.api_version, DEPLOYMENT.kind, write.deployment, namespace, body)
        elif isinstance(write, policy.Delete):
            if write.kind == "Deployment":
                log.info(
                    "%s/%s: revision %s drained, deleting %s", namespace, name, write.revision, write.name
                )
            kind = _CHILD_KINDS[write.kind]
            cached = self.caches.get(kind, write.name, namespace)
            if cached is None or (cached.get("metadata") or {}).get("deletionTimestamp"):
                return  # never made (no HTTPRoute, no revision Service) or already going: no request
            await self.kube.delete(kind.api_version, kind.kind, write.name, namespace)
        else:
            child = _build(
                write, name=name, namespace=namespace, uid=uid, policy=self._pod_policy(write.spec)
            )
            cached = self.caches.get(_CHILD_KINDS[child["kind"]], str(child["metadata"]["name"]), namespace)
            await self.kube.apply_if_changed(child, cached)

    async def _set_weights(
        self, o: policy.FleetObserved, plan: policy.FleetPlan, weights: policy.RouteWeights
    ) -> policy.FleetPlan:
        """The HTTPRoute's backend weights, unless it already has them. A failed write is decided on
        again: the status then says so."""
        patch = build.route_patch(
            weights.route,
            name=o.name,
            port=weights.port,
            weights=weights.weights,
            revisions=set(weights.revisions),
        )
        if patch is None:
            return plan
        try:
            await self.kube.patch(HTTPROUTE.api_version, HTTPROUTE.kind, weights.name, o.namespace, patch)
        except ApiError as error:
            failed = policy.RouteRead(route=weights.route, patch_error=str(error.status.message))
            return policy.decide(replace(o, route=failed))
        text = ", ".join(f"{r}={w}%" for r, w in sorted(weights.weights.items()) if w > 0)
        log.info("InferenceFleet %s/%s: HTTPRoute %s weights %s", o.namespace, o.name, weights.name, text)
        return plan

    def _facts(self) -> objectives.ClusterFacts:
        """The GPU nodes an objective chooses between, from the node cache."""
        return self._cluster_facts(self.caches.list(NODE), self.config.catalog)

    def _pod_policy(self, spec: InferenceFleetSpec) -> PodPolicy:
        """What the objective of `spec` (the fleet's, or a revision's stored one) derives for its pods."""
        return objectives.derive_fleet(spec, self.config.catalog, self._facts()).pod

    def _record_evaluation(
        self,
        namespace: str,
        name: str,
        decision: autoscaler.Decision,
        last: autoscaler.Decision | None,
        spec: Autoscaling | None,
    ) -> None:
        exposition.AUTOSCALER_DECISIONS.labels(namespace, decision.direction, decision.reason).inc()
        exposition.AUTOSCALER_DESIRED.labels(namespace, name).set(decision.desired)
        if decision.value is not None:
            exposition.AUTOSCALER_METRIC.labels(namespace, name).set(decision.value)
        else:
            # No reading (MetricsUnavailable): the last value is not the metric now.
            exposition.forget_metric_value(namespace, name)
        if spec is not None:
            exposition.record_target(namespace, name, spec.metric or "query", float(spec.target))
        # A hold for the same reason as the last one is not worth a line at INFO every interval.
        news = decision.direction != "hold" or last is None or decision.reason != last.reason
        log.log(
            logging.INFO if news else logging.DEBUG,
            "InferenceFleet %s/%s: autoscaler %s %d -> %d (%s): %s",
            namespace,
            name,
            decision.mode,
            decision.previous,
            decision.desired,
            decision.reason,
            decision.message,
        )


_CHILD_KINDS: Mapping[str, Kind] = {
    "Service": SERVICE,
    "PodDisruptionBudget": PDB,
    "Deployment": DEPLOYMENT,
    "ControllerRevision": CONTROLLER_REVISION,
    "NetworkPolicy": NETWORK_POLICY,
}


def _build(step: policy.Apply, *, name: str, namespace: str, uid: str, policy: PodPolicy) -> dict[str, Any]:
    """The child an `Apply` names, from the spec it carries (`policy`: what its objective derived)."""
    spec, rev = step.spec, step.revision
    if step.kind == "Service":
        return build.build_service(spec, name=name, namespace=namespace, uid=uid)
    if step.kind == "PodDisruptionBudget":
        return build.build_pdb(spec, name=name, namespace=namespace, uid=uid)
    if step.kind == "ControllerRevision":
        return build.build_controller_revision(spec, name=name, namespace=namespace, uid=uid, rev=rev)
    if step.kind == "NetworkPolicy":
        return build.build_network_policy(spec, name=name, namespace=namespace, uid=uid)
    if step.kind == "RevisionService":
        return build.build_revision_service(spec, name=name, namespace=namespace, uid=uid, rev=rev)
    return build.build_deployment(
        spec, name=name, namespace=namespace, uid=uid, rev=rev, replicas=step.replicas, policy=policy
    )


def _parse_spec(
    obj: Obj, allowed_priority_classes: frozenset[str] | None
) -> tuple[InferenceFleetSpec | None, str]:
    """The spec, or None and why it does not validate (or names a PriorityClass the operator refuses)."""
    try:
        spec = InferenceFleetSpec.model_validate(obj.get("spec") or {})
    except ValidationError as error:
        return None, f"spec is invalid: {error.errors()[0].get('msg', error)}"[:512]
    refused = priority_class_refusal(spec.priority_class_name, allowed_priority_classes)
    if refused is not None:
        return None, refused[:512]
    return spec, ""


def _owned_by(obj: Obj, uid: str) -> bool:
    return controller_uid(obj) == uid
