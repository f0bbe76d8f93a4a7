"""InferenceFleet controller: reconcile children and status; run each fleet's autoscaler on its own
cadence.

Two paths write to a fleet, both under one per-fleet lock:

- `reconcile()` (watch events and the resync timer): applies the Service, the PodDisruptionBudget and
  the current revision's Deployment, removes old revisions once the new one is available, and writes
  status. It never queries Prometheus; with the autoscaler on, the replica count is the last decision
  (in memory, else `status.autoscaler.desiredReplicas`, else what the Deployment runs).
- the autoscaler task (one per fleet with `spec.autoscaling.enabled`): every `intervalSeconds` it reads
  Prometheus, takes a decision (`policy.autoscaler.decide`), and runs the same reconcile pass with it.
  Everything a decision needs from the past is in `status.autoscaler`, so a restarted operator resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from kubeforge.api import API_VERSION
from kubeforge.api.inferencefleet import KIND, AutoscalerStatus, Autoscaling, InferenceFleetSpec
from kubeforge.builders import inferencefleet as build
from kubeforge.controllers.runtime import OperatorConfig
from kubeforge.kube.client import KINDS, Kind, Kube, Obj
from kubeforge.metrics import exposition
from kubeforge.metrics.promql import PrometheusSource
from kubeforge.policy import autoscaler as policy
from kubeforge.policy.conditions import transitions
from kubeforge.policy.fleet_status import (
    MetricsHealth,
    RevisionState,
    compute_status,
    invalid_status,
    merge_patch,
    summarize_deployment,
    summarize_pods,
)

log = logging.getLogger(__name__)

Key = tuple[str, str]
FLEET = KINDS[(API_VERSION, KIND)]
DEPLOYMENT = KINDS[("apps/v1", "Deployment")]
POD = KINDS[("v1", "Pod")]
SERVICE = KINDS[("v1", "Service")]
PDB = KINDS[("policy/v1", "PodDisruptionBudget")]
_WARNING_WHEN_TRUE = frozenset({"Degraded", "CapacityLimited", "MetricsUnavailable"})


class MetricSource(Protocol):
    """What the controller needs from a metric backend (PrometheusSource, or a fake in tests)."""

    async def read(self, spec: Autoscaling, namespace: str, name: str) -> policy.Reading: ...


@dataclass
class _Fleet:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None
    interval: float = 10.0
    decision: policy.Decision | None = None
    record: dict[str, Any] | None = None
    metrics: MetricsHealth | None = None
    spec_key: str = ""


class InferenceFleetController:
    kind: Kind = FLEET
    child_kinds: tuple[Kind, ...] = (DEPLOYMENT, POD, SERVICE, PDB)

    def __init__(
        self,
        kube: Kube,
        config: OperatorConfig,
        *,
        source: MetricSource | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.kube = kube
        self.config = config
        if source is None and config.prometheus_url:
            source = PrometheusSource(config.prometheus_url)
        self.source = source
        self._now = clock or (lambda: datetime.now(UTC))
        self._fleets: dict[Key, _Fleet] = {}

    # -- the Controller protocol -------------------------------------------------------------------

    async def reconcile(self, obj: Obj) -> None:
        meta = obj["metadata"]
        key = (str(meta["namespace"]), str(meta["name"]))
        fleet = self._fleets.setdefault(key, _Fleet())
        async with fleet.lock:
            current = await self.kube.get(FLEET.api_version, FLEET.kind, key[1], key[0]) or obj
            spec = await self._reconcile_locked(current, fleet)
        if spec is not None and spec.autoscaler_on and spec.autoscaling is not None:
            fleet.interval = float(spec.autoscaling.interval_seconds)
            self._ensure_task(key, fleet)
        else:
            await self._stop_task(fleet)
            fleet.decision = fleet.record = fleet.metrics = None

    async def forget(self, namespace: str, name: str) -> None:
        fleet = self._fleets.pop((namespace, name), None)
        if fleet is not None:
            await self._stop_task(fleet)

    # -- reconcile ---------------------------------------------------------------------------------

    async def _reconcile_locked(self, obj: Obj, fleet: _Fleet) -> InferenceFleetSpec | None:
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
        deployments = await self.kube.list(DEPLOYMENT.api_version, DEPLOYMENT.kind, namespace, labels=labels)
        states = [summarize_deployment(d, build.REVISION_LABEL) for d in deployments if _owned_by(d, uid)]
        current_state = next((s for s in states if s.revision == rev), None)
        desired = self._desired(
            spec, current_status, fleet, current_state.spec_replicas if current_state else None
        )

        await self.kube.apply(build.build_service(spec, name=name, namespace=namespace, uid=uid))
        await self.kube.apply(build.build_pdb(spec, name=name, namespace=namespace, uid=uid))
        await self.kube.apply(
            build.build_deployment(spec, name=name, namespace=namespace, uid=uid, rev=rev, replicas=desired)
        )

        remaining = await self._retire_old_revisions(namespace, name, rev, desired, current_state, states)
        if current_state is None:
            current_state = RevisionState(
                revision=rev, name=build.deployment_name(name, rev), spec_replicas=desired, current=False
            )
        revisions = [current_state, *remaining]

        pods = summarize_pods(await self.kube.list(POD.api_version, POD.kind, namespace, labels=labels))
        autoscaler_record: Mapping[str, Any] | None = None
        if spec.autoscaler_on:
            autoscaler_record = fleet.record if fleet.record is not None else current_status.get("autoscaler")
        status = compute_status(
            spec,
            name=name,
            namespace=namespace,
            generation=generation,
            revision=rev,
            desired=desired,
            revisions=revisions,
            pods=pods,
            metrics=fleet.metrics if spec.autoscaler_on else None,
            autoscaler=autoscaler_record,
            selector=build.selector_string(name),
            endpoint=build.endpoint(spec, name=name, namespace=namespace),
            current_status=current_status,
            now=now,
        )
        await self._write_status(obj, status)
        return spec

    async def _retire_old_revisions(
        self,
        namespace: str,
        name: str,
        rev: str,
        desired: int,
        current: RevisionState | None,
        states: list[RevisionState],
    ) -> list[RevisionState]:
        """Replace, for now: an old revision's Deployment goes once the current one has every replica
        available. This is the one step progressive rollouts (spec.rollout) will take over; it returns
        the old revisions still running."""
        new_ready = (
            current is not None
            and current.current
            and (desired == 0 or (current.available >= desired and current.updated >= desired))
        )
        remaining = []
        for state in states:
            if state.revision == rev:
                continue
            if new_ready:
                log.info("%s/%s: revision %s available, deleting %s", namespace, name, rev, state.name)
                await self.kube.delete(DEPLOYMENT.api_version, DEPLOYMENT.kind, state.name, namespace)
            else:
                remaining.append(state)
        return remaining

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
            if ctype == "Progressing":
                continue
            warning = (ctype in _WARNING_WHEN_TRUE and cstatus == "True") or (
                ctype == "Ready" and cstatus == "False"
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

    # -- the autoscaler task -----------------------------------------------------------------------

    def _ensure_task(self, key: Key, fleet: _Fleet) -> None:
        if fleet.task is not None and not fleet.task.done():
            return
        fleet.task = asyncio.get_running_loop().create_task(self._autoscale_forever(key, fleet))

    async def _stop_task(self, fleet: _Fleet) -> None:
        task, fleet.task = fleet.task, None
        if task is None or task is asyncio.current_task():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    async def _autoscale_forever(self, key: Key, fleet: _Fleet) -> None:
        while True:
            started = time.monotonic()
            try:
                if not await self.evaluate(key, fleet):
                    return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("InferenceFleet %s/%s: autoscaler evaluation failed", *key)
            await asyncio.sleep(max(0.05, fleet.interval - (time.monotonic() - started)))

    async def evaluate(self, key: Key, fleet: _Fleet | None = None) -> bool:
        """One autoscaler evaluation of a fleet; False when the fleet is gone or its autoscaler off."""
        namespace, name = key
        fleet = fleet or self._fleets.setdefault(key, _Fleet())
        obj = await self.kube.get(FLEET.api_version, FLEET.kind, name, namespace)
        if obj is None:
            return False
        try:
            spec = InferenceFleetSpec.model_validate(obj.get("spec") or {})
        except ValidationError:
            return False
        auto = spec.autoscaling
        if auto is None or not auto.enabled:
            return False
        fleet.interval = float(auto.interval_seconds)
        labels = build.fleet_labels(name)
        rev = build.revision(spec)
        deployments = await self.kube.list(DEPLOYMENT.api_version, DEPLOYMENT.kind, namespace, labels=labels)
        current = next(
            (
                summarize_deployment(d, build.REVISION_LABEL)
                for d in deployments
                if d["metadata"].get("labels", {}).get(build.REVISION_LABEL) == rev
            ),
            None,
        )
        pods = summarize_pods(await self.kube.list(POD.api_version, POD.kind, namespace, labels=labels))
        observed = policy.Observed(
            ready=pods.ready,
            current=current.spec_replicas if current is not None else auto.min_replicas,
            scheduled=pods.scheduled,
            unschedulable=pods.unschedulable,
        )
        if self.source is None:
            reading = policy.Reading(
                error="PrometheusNotConfigured", message="the operator runs without --prometheus-url"
            )
        else:
            reading = await self.source.read(auto, namespace, name)
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
        async with fleet.lock:
            fresh = await self.kube.get(FLEET.api_version, FLEET.kind, name, namespace)
            if fresh is None:
                return False
            await self._reconcile_locked(fresh, fleet)
        if decision.direction != "hold":
            verb = "ScaledUp" if decision.direction == "up" else "ScaledDown"
            await self.kube.event(
                obj,
                type_="Normal",
                reason=verb,
                message=f"{decision.previous} -> {decision.desired} replicas "
                f"({decision.reason}): {decision.message}",
            )
        return True


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
