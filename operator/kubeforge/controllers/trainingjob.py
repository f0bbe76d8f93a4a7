"""The TrainingJob controller: read, call the policy, apply, write status.

Every decision lives in `kubeforge.policy.training` (phases, restarts, suspend, deadline, status) and
`kubeforge.policy.capacity` (gang admission); the children are built by `kubeforge.builders.trainingjob`.
This module only gathers what the policy needs and carries out its plan in the order the plan says.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from lightkube import ApiError
from pydantic import ValidationError

from kubeforge.api.trainingjob import KIND, PHASES, TRAININGJOB_LABEL, TrainingJobSpec
from kubeforge.builders.common import MANAGED_BY, MANAGED_BY_VALUE
from kubeforge.builders.trainingjob import Owner, build_job, build_service
from kubeforge.controllers.runtime import OperatorConfig
from kubeforge.kube.client import KINDS, Kind, Kube, Obj
from kubeforge.metrics import exposition
from kubeforge.policy import capacity, training
from kubeforge.policy.conditions import transitions

log = logging.getLogger(__name__)

TRAININGJOB = KINDS[("kubeforge.dev/v1alpha1", "TrainingJob")]
JOB = KINDS[("batch/v1", "Job")]
POD = KINDS[("v1", "Pod")]
SERVICE = KINDS[("v1", "Service")]
NODE = KINDS[("v1", "Node")]

# Short waits (a backoff, a Job being deleted) are slept through inside the pass, so a restart starts on
# time; longer ones are left to the periodic resync.
MAX_INLINE_WAIT_SECONDS = 30.0
MAX_INLINE_PASSES = 20


def _now() -> datetime:
    return datetime.now(UTC)


class TrainingJobController:
    """Reconciles TrainingJobs into a headless Service and one Indexed Job per attempt."""

    kind: Kind = TRAININGJOB
    child_kinds: tuple[Kind, ...] = (JOB, POD, SERVICE)

    def __init__(self, kube: Kube, config: OperatorConfig) -> None:
        self.kube = kube
        self.config = config
        # Admission and the creation of the admitted Job happen under this lock, so two gangs are never
        # both admitted for the same free GPUs by this operator.
        self._admission = asyncio.Lock()
        # Never longer than a resync: a suspend arriving meanwhile waits at most that long.
        self._inline_wait = min(MAX_INLINE_WAIT_SECONDS, max(1.0, config.resync_seconds))

    async def forget(self, namespace: str, name: str) -> None:
        """Nothing is cached per object; metrics are dropped by the runtime."""

    async def reconcile(self, obj: Obj) -> None:
        for _ in range(MAX_INLINE_PASSES):
            delay = await self._pass(obj)
            if delay is None or delay > self._inline_wait:
                return
            await asyncio.sleep(max(delay, 0.05))
            meta = obj["metadata"]
            fresh = await self.kube.get(TRAININGJOB.api_version, KIND, meta["name"], meta["namespace"])
            if fresh is None:
                return
            obj = fresh

    async def _pass(self, obj: Obj) -> float | None:
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            return None  # garbage collection removes the children
        namespace, name = meta["namespace"], meta["name"]
        try:
            spec = TrainingJobSpec.model_validate(obj.get("spec") or {})
        except ValidationError as error:
            # The CRD schema refuses invalid specs; this only happens with a CRD older than the operator.
            log.error("TrainingJob %s/%s has a spec this operator cannot read: %s", namespace, name, error)
            return None
        owner = Owner.of(obj)
        status = training.parse_status(obj.get("status"))
        if status.phase not in ("Succeeded", "Failed"):
            await self.kube.apply(build_service(spec, owner))
        selector = {MANAGED_BY: MANAGED_BY_VALUE, TRAININGJOB_LABEL: name}
        jobs = await self.kube.list(JOB.api_version, JOB.kind, namespace, labels=selector)
        pods = await self.kube.list(POD.api_version, POD.kind, namespace, labels=selector)
        pod_views = [training.pod_view(p) for p in pods]
        nodes = None
        if any(p.node is not None and not p.terminal for p in pod_views):
            nodes = {n.name: n for n in (training.node_view(o) for o in await self._nodes())}
        observed = training.Observed(
            name=name,
            namespace=namespace,
            generation=int(meta.get("generation") or 0),
            spec=spec,
            status=status,
            jobs=[training.job_view(j, owner.uid) for j in jobs],
            pods=pod_views,
            nodes=nodes,
            now=_now(),
        )
        plan = training.decide(observed)
        if plan.needs_admission:
            async with self._admission:
                admission = await self._admit(obj, spec)
                plan = training.decide(replace(observed, admission=admission, now=_now()))
                await self._execute(obj, spec, owner, plan)
        else:
            await self._execute(obj, spec, owner, plan)
        return plan.requeue_after

    async def _nodes(self) -> list[Obj]:
        return await self.kube.list(NODE.api_version, NODE.kind)

    async def _admit(self, obj: Obj, spec: TrainingJobSpec) -> capacity.Admission:
        """Whether all workers fit now, counting what bound pods hold and what other admitted gangs have
        yet to place."""
        meta = obj["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        demand = capacity.demand_of(key, spec.workers, spec.resources.gpus, spec.resources.gpu_type)
        if demand.gpus <= 0:
            return capacity.Admission(True, spec.workers, "needs no GPUs")
        nodes = [capacity.node_info(n) for n in await self._nodes()]
        pods = [capacity.pod_info(p) for p in await self._scoped(POD)]
        others: list[capacity.Demand] = []
        for other in await self._scoped(TRAININGJOB):
            other_meta = other.get("metadata") or {}
            other_key = f"{other_meta.get('namespace')}/{other_meta.get('name')}"
            if other_key == key or other_meta.get("deletionTimestamp"):
                continue
            other_status = training.parse_status(other.get("status"))
            if other_status.phase not in ("Pending", "Running"):
                continue
            admitted = next((c for c in other_status.conditions if c.type == "Admitted"), None)
            if admitted is None or admitted.status != "True" or admitted.reason != "GangAdmitted":
                continue
            try:
                other_spec = TrainingJobSpec.model_validate(other.get("spec") or {})
            except ValidationError:
                continue
            whole = capacity.demand_of(
                other_key, other_spec.workers, other_spec.resources.gpus, other_spec.resources.gpu_type
            )
            others.append(capacity.unplaced(whole, other_status.attempt, pods))
        return capacity.admit(demand, nodes, pods, others, gpu_type=spec.resources.gpu_type)

    async def _scoped(self, kind: Kind) -> list[Obj]:
        """GPUs are shared by the whole cluster, so look at every namespace when allowed to; an operator
        restricted to some namespaces (a Role, not a ClusterRole) sees only those."""
        try:
            return await self.kube.list(kind.api_version, kind.kind)
        except ApiError as error:
            if error.status.code != 403 or not self.config.namespaces:
                raise
        found: list[Obj] = []
        for namespace in self.config.namespaces:
            found.extend(await self.kube.list(kind.api_version, kind.kind, namespace))
        return found

    async def _execute(self, obj: Obj, spec: TrainingJobSpec, owner: Owner, plan: training.Plan) -> None:
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        old_raw = obj.get("status")
        patch = training.status_patch(old_raw, plan.status)
        written = False
        if plan.status_first and patch is not None:
            obj = await self._write_status(obj, patch)
            written = True
        for job_name in plan.delete_jobs:
            if await self.kube.delete(JOB.api_version, JOB.kind, job_name, namespace):
                log.info("TrainingJob %s/%s: deleted Job %s", namespace, name, job_name)
        if plan.create_attempt is not None:
            job = build_job(spec, owner, plan.create_attempt)
            await self.kube.apply(job)
            log.info("TrainingJob %s/%s: created Job %s", namespace, name, job["metadata"]["name"])
        if patch is not None and not written:
            obj = await self._write_status(obj, patch)
        if patch is not None:
            await self._record(obj, old_raw, plan)
        # Every pass, so a restarted operator exports the current state at once.
        exposition.record_conditions(KIND, namespace, name, [c.to_wire() for c in plan.status.conditions])
        exposition.record_phase(KIND, namespace, name, plan.status.phase or "Pending", PHASES)
        exposition.TRAINING_GPU_HOURS.labels(namespace, name).set(plan.status.gpu_hours)
        if plan.delete_self:
            log.info("TrainingJob %s/%s: ttlSecondsAfterFinished passed, deleting it", namespace, name)
            await self.kube.event(
                obj,
                type_="Normal",
                reason="Deleted",
                message=f"deleting: spec.ttlSecondsAfterFinished ({spec.ttl_seconds_after_finished}s) "
                "passed since the job finished",
            )
            await self.kube.delete(TRAININGJOB.api_version, KIND, name, namespace)

    async def _write_status(self, obj: Obj, patch: dict[str, Any]) -> Obj:
        meta = obj["metadata"]
        return await self.kube.patch_status(
            TRAININGJOB.api_version, KIND, meta["name"], meta["namespace"], patch
        )

    async def _record(self, obj: Obj, old_raw: Any, plan: training.Plan) -> None:
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        for event in plan.events:
            log.info("TrainingJob %s/%s: %s %s", namespace, name, event.reason, event.message)
            await self.kube.event(obj, type_=event.type, reason=event.reason, message=event.message)
        new_conditions = [c.to_wire() for c in plan.status.conditions]
        old_conditions = (old_raw or {}).get("conditions") or []
        for changed in transitions(old_conditions, new_conditions):
            exposition.TRANSITIONS.labels(KIND, changed["type"], changed["status"], changed["reason"]).inc()
        if plan.restarted:
            exposition.TRAINING_RESTARTS.labels(namespace).inc()
