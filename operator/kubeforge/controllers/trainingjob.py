"""The TrainingJob controller: read, call the policy, apply, write status.

Every decision lives in `kubeforge.policy.training` (phases, restarts, suspend, deadline, status) and
`kubeforge.policy.capacity` (gang admission); the children are built by `kubeforge.builders.trainingjob`.
This module only gathers what the policy needs and carries out its plan in the order the plan says.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from kubeforge.api.names import GPU_RESOURCE, MANAGED_BY, MANAGED_BY_VALUE
from kubeforge.api.objective import PodPolicy
from kubeforge.api.trainingjob import (
    KIND,
    PHASES,
    PREEMPT_ANNOTATION,
    TRAININGJOB_LABEL,
    TrainingJobSpec,
    TrainingJobStatus,
    WorkerCounts,
)
from kubeforge.builders.trainingjob import (
    Owner,
    build_job,
    build_pod_template,
    build_service,
    resize_patch,
)
from kubeforge.controllers import lending
from kubeforge.controllers.facts import ClusterFactsMemo
from kubeforge.controllers.ownership import (
    PRIORITY_CLASS_NOT_ALLOWED,
    clear_conflict,
    priority_class_refusal,
    refuse,
    warn_owner,
)
from kubeforge.controllers.runtime import Key, OperatorConfig, Watch, label_keys, owner_keys
from kubeforge.controllers.usage import held_gpus
from kubeforge.kube.client import Kube, Obj, is_not_found
from kubeforge.kube.informer import Reader, controller_uid
from kubeforge.kube.kinds import (
    INFERENCEFLEET,
    JOB,
    NODE,
    POD,
    PRIORITY_CLASS,
    RESOURCE_QUOTA,
    SERVICE,
    TRAININGJOB,
    Kind,
)
from kubeforge.kube.rejections import ChildRejectedError, child_write
from kubeforge.metrics import exposition
from kubeforge.metrics.promql import PrometheusSource
from kubeforge.policy import arbitration, capacity, checkpoint, elastic, gangs, training
from kubeforge.policy import objective as objectives
from kubeforge.policy import usage as usage_policy
from kubeforge.policy.conditions import transitions
from kubeforge.policy.rejection import REASON as REJECTED
from kubeforge.policy.rejection import rejected_trainingjob_status, rejection_message
from kubeforge.policy.status import status_diff

log = logging.getLogger(__name__)

MANUAL_PREEMPTION = "Manual"
WAITING_RECHECK_SECONDS = 60.0
"""A gang waiting for GPUs is woken by capacity events; this is only the safety net."""


def _now() -> datetime:
    return datetime.now(UTC)


class UsageSource(Protocol):
    """What the controller needs from a metric backend (PrometheusSource, or a fake in tests)."""

    async def training_usage(self, namespace: str, name: str, seconds: float) -> usage_policy.UsageReading:
        """What the job's GPUs drew over the last `seconds` (None fields: not measured)."""
        ...


class TrainingJobController:
    """Reconciles TrainingJobs into a headless Service and one Indexed Job per attempt."""

    kind: Kind = TRAININGJOB

    def __init__(
        self, kube: Kube, caches: Reader, config: OperatorConfig, *, source: UsageSource | None = None
    ) -> None:
        self.kube = kube
        self.caches = caches
        self.config = config
        if source is None and config.prometheus_url:
            source = PrometheusSource(config.prometheus_url)
        self.source = source
        """Where `status.usage` reads what the job's GPUs drew (DCGM); None: estimated from the TDP."""
        self._waiting = WaitingGangs()
        """Gangs that did not fit at their last admission, and elastic jobs below their maximum: a freed
        GPU, a node or a quota change wakes those it may admit."""
        self._reserved: dict[str, tuple[capacity.Demand, int]] = {}
        """Gangs this process admitted whose Admitted condition the cache may not show yet: admission
        runs without awaiting, and this covers the writes still in flight."""
        self._sized: dict[str, tuple[str, int]] = {}
        """Elastic jobs this process resized, (Job, workers), until the Job cache shows the new size: a
        pass woken before the Job's watch event must not see the old size and resize again."""
        self._cluster_facts = ClusterFactsMemo()
        self._preempt: dict[Key, str] = {}
        """Preemptions asked for by the operator itself (`preempt()`), until the next pass of the job
        records them in its status (or finds nothing to take)."""
        self._rejected: dict[str, tuple[int, str]] = {}
        """Jobs whose children the API server refused as invalid (422), with that generation and the
        message: until the spec changes, passes report it instead of sending the same write again."""
        self.watches: tuple[Watch, ...] = (
            Watch(JOB, owner_keys(TRAININGJOB)),
            Watch(SERVICE, owner_keys(TRAININGJOB)),
            Watch(POD, self._pod_keys),
            Watch(NODE, self._capacity_keys),
            Watch(RESOURCE_QUOTA, self._quota_keys),
            Watch(INFERENCEFLEET, _lender_keys),
            # An admitted gang that gives its GPUs back before its workers hold them frees room no pod
            # event reports.
            Watch(TRAININGJOB, self._admission_keys),
            # Queue order is by priority: a class created or removed reorders every waiting gang.
            Watch(PRIORITY_CLASS, lambda old, new: self._waiting.all()),
        )

    async def warn(self, obj: Obj, reason: str, message: str) -> None:
        await warn_owner(self.kube, TRAININGJOB, obj, reason, message)

    def preempt(self, namespace: str, name: str, reason: str) -> None:
        """Take a running job's GPUs, checkpoint first: the one path arbitration and budgets use.

        Call it, then wake the job (`Runtime.request(namespace, name)`). Its next pass records the
        request in `status.preemption` (so an operator restart resumes it), asks the workers for a
        checkpoint and requeues until it arrives or `spec.checkpoint.gracePeriodSeconds` ends; then it
        stops the attempt and the job waits for gang admission again (see `policy.training`). A job
        without running workers has nothing to give: the request is dropped. `reason` is a short
        CamelCase word; it labels the status record, the Event and the preemptions metric."""
        self._preempt[(namespace, name)] = reason

    def wakes(self) -> Iterable[Key]:
        """Gangs a gang that left the admission queue (admitted, deleted, changed, refused) kept asleep."""
        return self._waiting.newly_woken()

    async def forget(self, namespace: str, name: str) -> None:
        self._preempt.pop((namespace, name), None)
        self._waiting.discard((namespace, name))
        self._release(f"{namespace}/{name}")
        self._sized.pop(f"{namespace}/{name}", None)
        self._rejected.pop(f"{namespace}/{name}", None)

    # -- what wakes whom -----------------------------------------------------------------------------

    def _release(self, key: str) -> None:
        """This process's record of the gang's admission goes (`_reserved`: admitted, perhaps before its
        status said so): room the gangs waiting may use, and no capacity event will say so."""
        if self._reserved.pop(key, None) is not None:
            self._waiting.freed()

    def _admission_keys(self, old: Obj | None, new: Obj | None) -> Iterable[Key]:
        if self._waiting and gangs.gave_back_admission(old, new):
            return self._waiting.woken()
        return ()

    def _pod_keys(self, old: Obj | None, new: Obj | None) -> Iterable[Key]:
        keys = set(label_keys(TRAININGJOB_LABEL)(old, new))
        if self._waiting and (_frees_gpus(old, new) or capacity.claim_changed(old, new)):
            keys |= self._waiting.woken()
        return keys

    def _quota_keys(self, old: Obj | None, new: Obj | None) -> Iterable[Key]:
        """A quota changed: gangs of its namespace waiting for it (or for GPUs) look again."""
        namespace = ((new or old or {}).get("metadata") or {}).get("namespace")
        return {key for key in self._waiting.woken() if key[0] == namespace}

    def _capacity_keys(self, old: Obj | None, new: Obj | None) -> Iterable[Key]:
        if old is not None and new is not None and _node_capacity(old) == _node_capacity(new):
            return ()
        return self._waiting.woken()

    # -- one pass ------------------------------------------------------------------------------------

    async def reconcile(self, obj: Obj) -> float | None:
        """One pass; a spec the models refuse, or a child the API server refuses as invalid, stops the
        passes at `InvalidSpec` until the spec changes (see `kubeforge.policy.rejection`)."""
        meta = obj["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        generation = int(meta.get("generation") or 0)
        rejected = self._rejected.get(key)
        if rejected is not None and rejected[0] != generation:
            del self._rejected[key]
            rejected = None
        # A gang waits for capacity while its last pass said so: whichever way a pass leaves (admitted,
        # refused, suspended, no longer a gang, an error), it stops waiting unless that pass kept it.
        with self._waiting.passing((str(meta["namespace"]), str(meta["name"]))):
            return await self._reconcile_or_refuse(obj, key, generation, rejected)

    async def _reconcile_or_refuse(
        self, obj: Obj, key: str, generation: int, rejected: tuple[int, str] | None
    ) -> float | None:
        if rejected is None:
            try:
                return await self._reconcile(obj)
            except ChildRejectedError as error:
                rejected = (generation, rejection_message(error.message))
            except _UnreadableSpecError as error:
                rejected = (generation, str(error))
            self._rejected[key] = rejected
            self._release(key)
        status = training.parse_status(obj.get("status"))
        new = rejected_trainingjob_status(status, rejected[1], generation=generation, now=_now())
        patch = status_diff(status, new)
        if patch is not None:
            log.warning("TrainingJob %s: %s", key, rejected[1])
            await self._write_status(obj, patch)
            await self.kube.event(obj, type_="Warning", reason=REJECTED, message=rejected[1])
        return None

    async def _reconcile(self, obj: Obj) -> float | None:
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            # Garbage collection removes the children; admission already counts it as gone (`gangs_of`),
            # and so must this process's own record (a finalizer may keep the object for long).
            self._release(f"{meta['namespace']}/{meta['name']}")
            return None
        namespace, name = meta["namespace"], meta["name"]
        try:
            spec = TrainingJobSpec.model_validate(obj.get("spec") or {})
        except ValidationError as error:
            # The CRD refuses invalid specs; this is one stored before a rule of it existed (say a
            # reserved pod label): reported as InvalidSpec, never built.
            problem = error.errors()[0].get("msg", str(error))
            raise _UnreadableSpecError(f"spec is invalid: {problem}"[:512]) from error
        refused = priority_class_refusal(spec.priority_class_name, self.config.allowed_priority_classes)
        if refused is not None:
            await refuse(self.kube, TRAININGJOB, obj, PRIORITY_CLASS_NOT_ALLOWED, refused)
            return None
        owner = Owner.of(obj)
        status = training.parse_status(obj.get("status"))
        derived = objectives.derive_training(
            spec, self.config.catalog, self._cluster_facts(self.caches.list(NODE), self.config.catalog)
        )
        if status.phase not in ("Succeeded", "Failed"):
            service = build_service(spec, owner)
            with child_write():
                await self.kube.apply_if_changed(service, self.caches.get(SERVICE, name, namespace))
        selector = {MANAGED_BY: MANAGED_BY_VALUE, TRAININGJOB_LABEL: name}
        jobs = self.caches.list(JOB, namespace, labels=selector)
        # Pods by their Job's UID, never by label: a tenant's pod copying the labels is not a worker.
        job_uids = [str(j["metadata"].get("uid")) for j in jobs if controller_uid(j) == owner.uid]
        pod_views = [training.pod_view(p) for p in self.caches.controlled(POD, namespace, job_uids)]
        nodes = None
        if any(p.node is not None and not p.terminal for p in pod_views):
            nodes = {n.name: n for n in (training.node_view(o) for o in self.caches.list(NODE))}
        key = f"{namespace}/{name}"
        lenders = self._lenders(key)
        ceiling = _ceiling(spec, lenders)
        observed = training.Observed(
            name=name,
            namespace=namespace,
            generation=int(meta.get("generation") or 0),
            spec=spec,
            status=status,
            jobs=self._job_views(key, jobs, owner.uid),
            pods=pod_views,
            nodes=nodes,
            now=_now(),
            max_schedule_timeout_seconds=self.config.max_schedule_timeout_seconds,
            held=held_gpus(self.caches, pod_views, spec.resources.gpu_type, self.config),
            currency=self.config.catalog.currency,
            usage_checkpoint=usage_policy.spread(
                timedelta(seconds=self.config.usage_checkpoint_seconds), key
            ),
            policy=derived.entries,
            ceiling=ceiling,
            lent_to=tuple(sorted(lenders)) if ceiling is not None else (),
            preempt=self._preempt_request(obj, status, ceiling),
            measures_usage=self.source is not None,
        )
        plan = training.decide(observed)
        if plan.needs_usage is not None and self.source is not None:
            reading = await self.source.training_usage(namespace, name, plan.needs_usage)
            # The same instant as the pods were seen: a later `now` would charge them past it (and a pod
            # that started meanwhile only from there on).
            observed = replace(observed, usage_reading=reading)
            plan = training.decide(observed)
        if plan.needs_admission:
            held = self._reserved.pop(key, None)
            # Decided and recorded without an await in between: no other pass can admit into the same
            # GPUs before `_reserved` holds this gang.
            admission = self._admit_size(obj, spec, owner, status.restarts, derived, observed.ceiling)
            plan = training.decide(replace(observed, admission=admission))
            if admission.fits:
                size = plan.create_workers or spec.workers
                self._reserved[key] = (_demand(key, spec, derived, size), plan.create_attempt or 0)
                # Its demand goes from ahead of the gangs behind it to admitted: nothing freed for them.
                self._waiting.admitted((namespace, name))
            else:
                if held is not None:
                    self._waiting.freed()  # a previous attempt's admission, given back
                self._waiting.add(
                    (namespace, name), self._queued(obj, spec, owner, status.restarts, derived, pod_views)
                )
        elif plan.wants_room:
            # Growth is admission of more workers: decided and reserved without an await in between.
            room = self._room(obj, spec, owner, status.restarts, plan.status.workers, derived)
            plan = training.decide(replace(observed, room=room))
            # Still below its maximum: any freed GPU or node change wakes it, as it wakes queued gangs.
            self._waiting.add((namespace, name))
        elif plan.status.phase not in ("Pending", "Running"):
            self._release(key)
        if plan.resize is not None:
            # What other admissions count for this job until its status shows the new size, grown or
            # shrunk (a stale larger promise would hold GPUs it gave back).
            self._reserved[key] = (_demand(key, spec, derived, plan.resize[1]), status.restarts)
        await self._execute(obj, spec, owner, plan, derived.pod)
        # Recorded in the status now (or moot): the status carries it from here.
        self._preempt.pop((namespace, name), None)
        await clear_conflict(self.kube, TRAININGJOB, self.caches.get(TRAININGJOB, name, namespace))
        if self._waiting.rechecked((namespace, name)):
            return min(plan.requeue_after or WAITING_RECHECK_SECONDS, WAITING_RECHECK_SECONDS)
        return plan.requeue_after

    def _lenders(self, key: str) -> dict[str, list[arbitration.Held]]:
        return lending.records(self.caches).get(key, {})

    def _preempt_request(
        self, obj: Obj, status: TrainingJobStatus, ceiling: int | None
    ) -> training.PreemptionRequest | None:
        """A preemption asked for by the operator (`preempt()`, or a fleet holding the job whole: ceiling
        0, asked again every pass until the attempt is stopped, so a restart picks it up from the fleet's
        record) or by a user: a new value of the job's `kubeforge.dev/preempt` annotation (the operator
        never writes the object's metadata back; the status remembers the value it acted on)."""
        meta = obj["metadata"]
        reason = self._preempt.get((meta["namespace"], meta["name"]))
        if reason is None and ceiling == 0:
            reason = elastic.LENT_TO_FLEET
        if reason is not None:
            return training.PreemptionRequest(reason)
        value = (meta.get("annotations") or {}).get(PREEMPT_ANNOTATION)
        if isinstance(value, str) and value and len(value) <= 63 and value != status.preempt_trigger:
            return training.PreemptionRequest(MANUAL_PREEMPTION, trigger=value)
        return None

    def _admitted(self, found: gangs.Gangs, key: str) -> dict[str, tuple[capacity.Demand, int]]:
        """The admitted gangs the objects show, and those this process admitted or grew whose status the
        cache may not show yet (for the same attempt the larger promise wins: an elastic job just grew)."""
        admitted = dict(found.admitted)
        for reserved_key, held in self._reserved.items():
            if reserved_key == key:
                continue
            seen = admitted.get(reserved_key)
            if seen is None or (seen[1] == held[1] and held[0].workers > seen[0].workers):
                admitted[reserved_key] = held
        return admitted

    def _job_views(self, key: str, jobs: Iterable[Obj], owner_uid: str) -> list[training.JobView]:
        views = [training.job_view(j, owner_uid) for j in jobs]
        sized = self._sized.get(key)
        if sized is None:
            return views
        cached = next((v for v in views if v.name == sized[0]), None)
        if cached is None or cached.parallelism == sized[1]:
            del self._sized[key]  # the cache caught up (or the Job is gone)
            return views
        return [replace(v, parallelism=sized[1]) if v.name == sized[0] else v for v in views]

    def _admit_size(
        self,
        obj: Obj,
        spec: TrainingJobSpec,
        owner: Owner,
        attempt: int,
        derived: objectives.TrainingPolicy,
        ceiling: int | None = None,
    ) -> capacity.Admission:
        """`_admit()`; for an elastic job, once its `minWorkers` fit, the most workers up to `maxWorkers`
        (and the `ceiling` fleets that borrowed from it leave it) that are admitted together (admission
        is monotone in the count: a binary search)."""
        admission = self._admit(obj, spec, owner, attempt, derived, spec.min_workers)
        if spec.elastic is None or not admission.fits or spec.max_workers == spec.min_workers:
            return admission
        low, high = spec.min_workers, spec.max_workers
        if ceiling is not None:
            high = max(low, min(high, ceiling))
        best = admission
        while low < high:
            mid = (low + high + 1) // 2
            trial = self._admit(obj, spec, owner, attempt, derived, mid)
            if trial.fits:
                low, best = mid, trial
            else:
                high = mid - 1
        return capacity.Admission(True, low, best.message)

    def _room(
        self,
        obj: Obj,
        spec: TrainingJobSpec,
        owner: Owner,
        attempt: int,
        workers: WorkerCounts | None,
        derived: objectives.TrainingPolicy,
    ) -> int:
        """More whole workers a running elastic attempt may add now (`Ledger.room`), within the
        namespace's GPU quota. Gangs queued for GPUs go first: growth only takes what none of them could
        use (the same best-effort order as admission)."""
        meta = obj["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        current = (workers.current if workers is not None else None) or spec.min_workers
        want = max(0, spec.max_workers - current)
        demand = _demand(key, spec, derived, want)
        if want == 0 or demand.gpus <= 0:
            return want
        ledger = self.caches.capacity()
        found = gangs.gangs_of(
            self.caches.list(TRAININGJOB), self._priority, skip=key, catalog=self.config.catalog
        )
        admitted = self._admitted(found, key)
        others = {k: ledger.unplaced(whole, n) for k, (whole, n) in admitted.items()}
        ahead = [d for _, d in sorted(found.queued, key=lambda q: q[0]) if d.key not in admitted]
        tolerations = _tolerations(spec, owner, attempt, derived)
        room = ledger.room(demand, others.values(), ahead=ahead, tolerations=tolerations)
        quotas = [q for q in map(capacity.quota_of, self.caches.list(RESOURCE_QUOTA, meta["namespace"])) if q]
        for quota in quotas:
            room = min(room, max(0, quota.hard - quota.used) // demand.gpus)
        return room

    def _admit(
        self,
        obj: Obj,
        spec: TrainingJobSpec,
        owner: Owner,
        attempt: int,
        derived: objectives.TrainingPolicy,
        workers: int | None = None,
    ) -> capacity.Admission:
        """Whether all workers are sure to fit now (`policy.capacity`): after what pods hold, whatever
        nodes the unplaced workers of admitted gangs and unbound pods land on, and the gangs queued before
        this one (oldest first) that fit; within the namespace's GPU quota and reservation limit."""
        meta = obj["metadata"]
        namespace = meta["namespace"]
        key = f"{namespace}/{meta['name']}"
        size = spec.workers if workers is None else workers
        demand = _demand(key, spec, derived, size)
        if demand.gpus <= 0:
            return capacity.Admission(True, size, "needs no GPUs")
        ledger = self.caches.capacity()
        found = gangs.gangs_of(
            self.caches.list(TRAININGJOB), self._priority, skip=key, catalog=self.config.catalog
        )
        admitted = self._admitted(found, key)
        others = {k: ledger.unplaced(whole, n) for k, (whole, n) in admitted.items()}
        refused = self._namespace_limits(ledger, demand, namespace, admitted, others)
        if refused is not None:
            return refused
        mine = self._order(obj, spec)
        # A gang this process just admitted may still show Queued in the cache: counted admitted, not
        # also ahead (twice, it kept a gang out that fits, and nothing would wake that gang again).
        queued = [(order, d) for order, d in found.queued if d.key not in admitted]
        ahead = [d for order, d in sorted(queued, key=lambda q: q[0]) if order < mine]
        tolerations = _tolerations(spec, owner, attempt, derived)
        gpu_type = spec.resources.gpu_type or (derived.pod.gpu_name if derived.products else None)
        return ledger.admit(demand, others.values(), gpu_type=gpu_type, ahead=ahead, tolerations=tolerations)

    def _queued(
        self,
        obj: Obj,
        spec: TrainingJobSpec,
        owner: Owner,
        attempt: int,
        derived: objectives.TrainingPolicy,
        pods: Sequence[training.PodView],
    ) -> gangs.Waiting:
        """The gang as wake-ups compare it with the other waiting ones (`gangs.woken_by_capacity`)."""
        meta = obj["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        # Like no other, so it sleeps behind nobody: a gang with pods of its own (admission does not
        # count them against it, so it may fit where a like gang cannot), and one whose GPU product its
        # objective chooses from the cluster as it is now (a like gang's choice, made at its own pass,
        # may differ).
        chosen = not spec.resources.gpu_type and derived.products is not None
        alone = chosen or any(not p.terminal for p in pods)
        demand = _demand(key, spec, derived, spec.min_workers)
        tolerations = _tolerations(spec, owner, attempt, derived)
        return gangs.Waiting(
            order=self._order(obj, spec),
            shape=(meta["namespace"], demand.gpus, demand.products, tolerations, key if alone else ""),
            workers=demand.workers,
        )

    def _order(self, obj: Obj, spec: TrainingJobSpec) -> gangs.QueueOrder:
        meta = obj["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        return gangs.queue_order(self._priority(spec), meta, training.parse_status(obj.get("status")), key)

    def _namespace_limits(
        self,
        ledger: capacity.Ledger,
        demand: capacity.Demand,
        namespace: str,
        admitted: Mapping[str, tuple[capacity.Demand, int]],
        unplaced: Mapping[str, capacity.Demand],
    ) -> capacity.Admission | None:
        """The operator owner's cap on GPUs a namespace holds reserved but unplaced, and the namespace's
        ResourceQuotas on GPU requests; None when both leave room for the whole gang."""
        needs = demand.workers * demand.gpus
        mine = [k for k in admitted if k.split("/", 1)[0] == namespace]
        cap = self.config.max_unplaced_gpus_per_namespace
        if cap:
            reserved = sum(unplaced[k].workers * unplaced[k].gpus for k in mine)
            if reserved + needs > cap:
                return capacity.Admission(
                    False,
                    0,
                    f"the namespace may hold at most {cap} GPUs admitted but not yet placed (the operator's "
                    f"--max-unplaced-gpus-per-namespace); {reserved} are, and this gang needs {needs}",
                    "NamespaceReservationLimit",
                )
        quotas = [q for q in map(capacity.quota_of, self.caches.list(RESOURCE_QUOTA, namespace)) if q]
        if not quotas:
            return None
        # Admitted gangs whose pods the Job controller has not created yet are not in `used` yet.
        promised = sum(
            max(0, whole.workers - ledger.created(k, attempt)) * whole.gpus
            for k, (whole, attempt) in admitted.items()
            if k in mine
        )
        why = capacity.quota_verdict(quotas, needs, ledger.held(namespace, demand.key), promised)
        if why is None:
            return None
        return capacity.Admission(False, 0, why, "QuotaExceeded")

    def _priority(self, spec: TrainingJobSpec) -> int:
        """The gang's PriorityClass value (the cluster's global default when it names none), as the
        scheduler would give its pods; 0 without either."""
        classes = self.caches.list(PRIORITY_CLASS)
        if spec.priority_class_name:
            named = next((c for c in classes if c["metadata"]["name"] == spec.priority_class_name), None)
            return int(named["value"]) if named is not None else 0
        default = next((c for c in classes if c.get("globalDefault")), None)
        return int(default["value"]) if default is not None else 0

    async def _execute(
        self, obj: Obj, spec: TrainingJobSpec, owner: Owner, plan: training.Plan, pod_policy: PodPolicy
    ) -> None:
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        old_raw = obj.get("status")
        patch = status_diff(training.parse_status(old_raw), plan.status)
        written = False
        if plan.status_first and patch is not None:
            obj = await self._write_status(obj, patch)
            written = True
        for job_name in plan.delete_jobs:
            cached = self.caches.get(JOB, job_name, namespace)
            if cached is not None and (cached.get("metadata") or {}).get("deletionTimestamp"):
                continue  # already going
            if await self.kube.delete(
                JOB.api_version, JOB.kind, job_name, namespace, foreground=plan.foreground
            ):
                log.info("TrainingJob %s/%s: deleted Job %s", namespace, name, job_name)
        if plan.resize is not None:
            job_name, workers, reason = plan.resize
            # parallelism and completions together, with the reason, in one write (see build_job).
            await self.kube.patch(
                JOB.api_version, JOB.kind, job_name, namespace, resize_patch(workers, reason)
            )
            self._sized[f"{namespace}/{name}"] = (job_name, workers)
            log.info(
                "TrainingJob %s/%s: resized Job %s to %d workers (%s)",
                namespace,
                name,
                job_name,
                workers,
                reason,
            )
        if plan.checkpoint_request is not None:
            # The trainer sees this in its downward-API annotations file (builders.trainingjob).
            body = {"metadata": {"annotations": {checkpoint.REQUEST_ANNOTATION: plan.checkpoint_request}}}
            for pod_name in plan.request_pods:
                try:
                    await self.kube.patch(POD.api_version, POD.kind, pod_name, namespace, body)
                except Exception as error:
                    if not is_not_found(error):
                        raise
                    # A worker that is gone has nothing left to checkpoint; the wait goes on without it.
        if plan.create_attempt is not None:
            resume = checkpoint.resume_env(training.stored_checkpoint(plan.status))
            job = build_job(spec, owner, plan.create_attempt, plan.create_workers, pod_policy, resume)
            # A Job is created once per attempt; its template is immutable afterwards.
            with child_write():
                await self.kube.apply_if_changed(
                    job, self.caches.get(JOB, job["metadata"]["name"], namespace)
                )
            log.info("TrainingJob %s/%s: created Job %s", namespace, name, job["metadata"]["name"])
        if patch is not None and not written:
            obj = await self._write_status(obj, patch)
        if patch is not None:
            await self._record(obj, old_raw, plan)
        if plan.resize is not None and plan.resize[2] == "LentToFleet":
            lenders = sorted(self._lenders(f"{namespace}/{name}"))
            log.info(
                "TrainingJob %s/%s: lent workers to InferenceFleet %s", namespace, name, ", ".join(lenders)
            )
        # Every pass, so a restarted operator exports the current state at once.
        exposition.record_conditions(KIND, namespace, name, [c.to_wire() for c in plan.status.conditions])
        exposition.record_phase(KIND, namespace, name, plan.status.phase or "Pending", PHASES)
        exposition.TRAINING_GPU_HOURS.labels(namespace, name).set(plan.status.gpu_hours)
        budget = training.BUDGET_EXCEEDED if spec.budget is not None else None
        exposition.record_usage(KIND, namespace, name, plan.status.usage, plan.status.conditions, budget)
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
        if plan.preempted is not None:
            exposition.TRAINING_PREEMPTIONS.labels(
                namespace, plan.preempted.reason, plan.preempted.outcome
            ).inc()
        resize = plan.status.last_resize
        if resize is not None and resize != training.parse_status(old_raw).last_resize:
            direction = "up" if resize.to > resize.from_ else "down"
            exposition.TRAINING_RESIZES.labels(namespace, direction, resize.reason).inc()


def _ceiling(spec: TrainingJobSpec, lenders: Mapping[str, Sequence[arbitration.Held]]) -> int | None:
    """The most workers fleets that borrowed from this job leave it, from their records
    (`status.borrowed`, read from the fleet cache: a restarted operator derives the same); 0 while a
    fleet holds it whole (a rigid job lends nothing else)."""
    top = arbitration.ceiling([h for entries in lenders.values() for h in entries])
    return top if spec.elastic is not None or top == 0 else None


def _lender_keys(old: Obj | None, new: Obj | None) -> Iterable[Key]:
    """A fleet's borrowed record changed: the jobs it names (before or after) look at their ceiling."""

    def named(obj: Obj | None) -> set[str]:
        status = (obj or {}).get("status") or {}
        return {str(e.get("job")) for e in status.get("borrowed") or () if isinstance(e, Mapping)}

    before, after = named(old), named(new)
    if before == after and ((old or {}).get("status") or {}).get("borrowed") == (
        (new or {}).get("status") or {}
    ).get("borrowed"):
        return ()
    keys: set[Key] = set()
    for job in before | after:
        namespace, _, name = job.partition("/")
        if namespace and name:
            keys.add((namespace, name))
    return keys


class _UnreadableSpecError(Exception):
    """A stored spec the models refuse; the message says why."""


def _frees_gpus(old: Obj | None, new: Obj | None) -> bool:
    """A GPU pod stops holding GPUs on its node, or claiming them while it waits for one (finished,
    deleted, evicted): admission counts an unbound pod as taking the most room it could take."""
    if old is None:
        return False
    before = capacity.pod_info(old)
    if before.terminal or before.gpus <= 0:
        return False
    return new is None or capacity.pod_info(new).terminal


def _node_capacity(node: Mapping[str, Any]) -> tuple[Any, ...]:
    info = capacity.node_info(node)
    return (
        info.schedulable,
        info.taints,
        info.gpus,
        info.product,
        (node.get("status") or {}).get("allocatable", {}).get(GPU_RESOURCE),
    )


def _tolerations(
    spec: TrainingJobSpec, owner: Owner, attempt: int, derived: objectives.TrainingPolicy
) -> tuple[capacity.Toleration, ...]:
    """The nodes a worker may use are judged by the tolerations its pods really carry."""
    template = build_pod_template(spec, owner, attempt, derived.pod)
    return capacity.tolerations_of(template["spec"].get("tolerations") or [])


class WaitingGangs:
    """The gangs capacity events wake, and the few of them each event is for (`gangs.woken_by_capacity`,
    worked out again only when the set changes: pod events are many); and the gangs that joined those
    woken since the last look without a pass of their own, which the caller must wake."""

    def __init__(self) -> None:
        self._gangs: dict[Key, gangs.Waiting | None] = {}
        self._woken: set[Key] = set()
        self._stale = False
        self._passed: set[Key] = set()
        """Added since the front was last worked out: their own pass just ran."""
        self._unannounced: set[Key] = set()
        self._kept: set[Key] = set()
        """Added again by the pass running for them."""
        self._freed = False
        """Room went that no capacity event reports (a queued gang ahead left, an admission was given
        back): every woken gang, not only those new to the front, must look again."""

    @contextlib.contextmanager
    def passing(self, key: Key) -> Iterator[None]:
        """A pass of `key`: unless it adds `key` again, `key` stops waiting when the pass ends. A pass
        that fails leaves it as it was: it is retried with backoff, and capacity events keep waking it
        meanwhile (the others count it ahead of them all the same)."""
        self._kept.discard(key)
        try:
            yield
        except BaseException:
            self._kept.discard(key)
            raise
        if key not in self._kept:
            self.discard(key)
        self._kept.discard(key)

    def add(self, key: Key, gang: gangs.Waiting | None = None) -> None:
        """In `key`'s pass. `gang`: how it waits in the admission queue; None (growth of a running
        elastic job): always woken."""
        self._kept.add(key)
        if key not in self._gangs or self._gangs[key] != gang:
            # Changed while queued (fewer workers, lower priority, another product): the gangs that
            # counted it ahead of them must look again.
            self._freed = self._freed or self._gangs.get(key) is not None
            self._gangs[key] = gang
            self._stale = True
            self._passed.add(key)
        self._unannounced.discard(key)

    def all(self) -> set[Key]:
        return set(self._gangs)

    def admitted(self, key: Key) -> None:
        """In `key`'s pass: it was admitted. It leaves the queue, and the gangs behind it count its demand
        as admitted instead of ahead of them: nothing freed (its pods binding wake them)."""
        if key in self._gangs:
            del self._gangs[key]
            self._stale = True

    def discard(self, key: Key) -> None:
        if key in self._gangs:
            # A queued gang that leaves but not by admission (deleted, suspended, no longer a gang, refused)
            # was ahead of the gangs behind it, whatever their shape: their last verdict counted it.
            self._freed = self._freed or self._gangs[key] is not None
            del self._gangs[key]
            self._stale = True
        self._passed.discard(key)
        self._unannounced.discard(key)

    def woken(self) -> set[Key]:
        return set(self._front())

    def rechecked(self, key: Key) -> bool:
        """The pass of `key` kept it waiting and it is among the woken: the periodic recheck is its
        safety net (gangs asleep behind a like one are not rechecked: it wakes them when it leaves)."""
        return key in self._kept and key in self._front()

    def freed(self) -> None:
        """Room was given back that no capacity event reports: wake every woken gang once."""
        self._freed = True

    def newly_woken(self) -> set[Key]:
        """Gangs to wake that no event named: after room was freed that no capacity event reports (see
        `freed`), every woken gang; otherwise those that joined the woken ones without a pass of their
        own since (a gang that left the queue kept them asleep). Each is returned once."""
        front = self._front()
        new, self._unannounced = self._unannounced, set()
        if self._freed:
            self._freed = False
            new |= front
        return new

    def _front(self) -> set[Key]:
        if self._stale:
            woken = gangs.woken_by_capacity(self._gangs)
            self._unannounced |= woken - self._woken - self._passed
            self._woken, self._stale = woken, False
            self._passed.clear()
        return self._woken

    def __contains__(self, key: object) -> bool:
        return key in self._gangs

    def __bool__(self) -> bool:
        return bool(self._gangs)


def _demand(
    key: str, spec: TrainingJobSpec, derived: objectives.TrainingPolicy, workers: int
) -> capacity.Demand:
    """`workers` of the gang as admission counts them: on the GPU type its workers require, the spec's
    or the one its objective chose."""
    demand = capacity.demand_of(key, workers, spec.resources.gpus, spec.resources.gpu_type)
    if spec.resources.gpu_type or derived.products is None:
        return demand
    return replace(demand, products=derived.products)
