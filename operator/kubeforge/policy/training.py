"""TrainingJob decisions, in pure functions: what phase the job is in, whether to admit, restart, suspend
or fail it, which Jobs to create or delete, and the status to write.

The controller reads the TrainingJob, its Jobs, its pods (and, when it matters, the nodes), turns them
into the small views below, calls `decide()`, and carries out the `Plan` in the order it says. Every
decision is recorded in `status` before the action that would lose information (a restart bumps
`status.restarts` *before* the failed attempt's Job is deleted), so an operator killed at any line
resumes from the status and the children it finds, and never double-counts or forgets a restart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from kubeforge.api.names import COMPLETION_INDEX_ANNOTATION as COMPLETION_INDEX_ANNOTATION
from kubeforge.api.names import WORKER_CONTAINER as WORKER_CONTAINER
from kubeforge.api.objective import PolicyEntry
from kubeforge.api.trainingjob import (
    ATTEMPT_LABEL,
    FINISHED_PHASES,
    GPU_RESOURCE,
    MAX_PREEMPTIONS_KEPT,
    RESIZE_REASON_ANNOTATION,
    CheckpointStatus,
    Phase,
    Preemption,
    PreemptionInProgress,
    PreemptionOutcome,
    PreemptionState,
    Resize,
    TrainingJobSpec,
    TrainingJobStatus,
    WorkerCounts,
    job_name,
)
from kubeforge.api.usage import Usage
from kubeforge.policy import checkpoint as checkpoints
from kubeforge.policy import elastic
from kubeforge.policy import status as status_model
from kubeforge.policy import usage as accounting
from kubeforge.policy.capacity import Admission
from kubeforge.policy.conditions import ConditionUpdate, Status, format_time, merge_conditions, parse_time
from kubeforge.policy.events import Event as Event

MAX_BACKOFF_SECONDS = 600.0
# While only the GPU-hours counter moves, the status is written at most this often.
GPU_HOURS_WRITE_INTERVAL = timedelta(seconds=60)
# Waiting for a deleted Job to go away before its name is reused.
DELETION_POLL_SECONDS = 1.0
# After the first worker of an attempt failed, how long to wait for the reports of its peers before
# judging: kubelets report on their own schedules, so the first report is not always the first failure.
FAILURE_SETTLE_SECONDS = 10.0
# While workers are being stopped from outside (deleted, evicted) and the Job has not said why yet.
STOPPING_RECHECK_SECONDS = 5.0
# 128 + SIGKILL and 128 + SIGTERM: what a container that was killed exits with.
SIGNAL_EXIT_CODES = frozenset({137, 143})
# The reason of a job suspended because its cost reached `spec.budget.maxCost`.
BUDGET_EXCEEDED = "BudgetExceeded"
# Phases in which `activeDeadlineSeconds` runs.
ACTIVE_PHASES = frozenset({"Pending", "Running", "Restarting"})
# The Job controller's own reason for a suspended Job; anything else there was written by whoever
# suspended it (Kueue), and is passed on.
JOB_SUSPENDED_REASON = "JobSuspended"


# ---------------------------------------------------------------------------------------------------
# Views of the objects the policy reads.


@dataclass(frozen=True)
class PodView:
    name: str
    index: int | None
    attempt: int | None
    job_uid: str | None
    phase: str
    node: str | None
    ready: bool
    deleting: bool
    exit_code: int | None
    reason: str | None
    start: datetime | None
    end: datetime | None
    gpus: int = 0
    unschedulable: str | None = None
    """The scheduler's message while the pod cannot be placed."""
    finished: datetime | None = None
    """When the worker container terminated (`finishedAt`), if it did."""
    started: datetime | None = None
    """When the worker container started (`startedAt`), if known."""
    disruption: str | None = None
    """Reason of a true `DisruptionTarget` condition: the pod is being stopped from outside (preemption,
    eviction, taint manager, kubelet shutdown)."""
    report: str | None = None
    """The worker's checkpoint report (`kubeforge.dev/checkpoint` annotation), raw."""
    final_report: str | None = None
    """The worker's termination message (a report left as it stopped), raw."""
    checkpoint_request: str | None = None
    """The operator's checkpoint request on the pod (`kubeforge.dev/checkpoint-request`)."""

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def stopped_from_outside(self) -> bool:
        """Deleted or disrupted: whatever it exits with says nothing about the training code."""
        return self.deleting or self.disruption is not None

    @property
    def signalled(self) -> bool:
        """Exited 137/143 (SIGKILL/SIGTERM) other than by the kernel's OOM killer."""
        return self.exit_code in SIGNAL_EXIT_CODES and self.reason != "OOMKilled"


@dataclass(frozen=True)
class JobView:
    name: str
    uid: str
    owned: bool
    deleting: bool = False
    suspended: bool = False
    complete: bool = False
    failed: bool = False
    failure_message: str = ""
    start_time: datetime | None = None
    created: datetime | None = None
    completion_time: datetime | None = None
    failed_at: datetime | None = None
    """When the Job controller declared the Job failed."""
    suspended_at: datetime | None = None
    """When the Job controller recorded the suspension (its `Suspended` condition), once it has."""
    suspend_reason: str = ""
    suspend_message: str = ""
    parallelism: int | None = None
    """`spec.parallelism`: an elastic attempt's current size."""
    resize_reason: str = ""
    """Why the operator last resized the Job (its resize-reason annotation)."""


@dataclass(frozen=True)
class NodeView:
    name: str
    ready: bool
    since: datetime | None = None
    """When the Ready condition last changed."""


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _conditions_true(obj: Mapping[str, Any], *types: str) -> Mapping[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") in types and condition.get("status") == "True":
            return condition  # type: ignore[no-any-return]
    return None


def pod_view(pod: Mapping[str, Any]) -> PodView:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    annotations = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    job_uid = next(
        (ref.get("uid") for ref in meta.get("ownerReferences") or [] if ref.get("kind") == "Job"), None
    )
    statuses = [s for s in status.get("containerStatuses") or [] if isinstance(s, Mapping)]
    worker = next(
        (s for s in statuses if s.get("name") == WORKER_CONTAINER), statuses[0] if statuses else None
    )
    terminated = ((worker or {}).get("state") or {}).get("terminated") or (
        ((worker or {}).get("lastState") or {}).get("terminated")
    )
    exit_code = _int(terminated.get("exitCode")) if terminated else None
    running = ((worker or {}).get("state") or {}).get("running") or {}
    started = parse_time((terminated or {}).get("startedAt") or running.get("startedAt"))
    ends = [
        parse_time(s.get("state", {}).get("terminated", {}).get("finishedAt"))
        for s in statuses
        if (s.get("state") or {}).get("terminated")
    ]
    end = max((e for e in ends if e is not None), default=None)
    phase = str(status.get("phase") or "Pending")
    if end is None and meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed"):
        end = parse_time(meta.get("deletionTimestamp"))
    if end is None and phase in ("Succeeded", "Failed"):
        # Finished without a container end time (e.g. its node was lost): the last condition change.
        changes = [parse_time(c.get("lastTransitionTime")) for c in status.get("conditions") or []]
        end = max((c for c in changes if c is not None), default=None) or parse_time(status.get("startTime"))
    gpus = 0
    for container in spec.get("containers") or []:
        amounts = (container.get("resources") or {}).get("limits") or {}
        gpus += _int(amounts.get(GPU_RESOURCE)) or 0
    return PodView(
        name=str(meta.get("name", "")),
        index=_int(annotations.get(COMPLETION_INDEX_ANNOTATION)),
        attempt=_int(labels.get(ATTEMPT_LABEL)),
        job_uid=str(job_uid) if job_uid else None,
        phase=phase,
        node=spec.get("nodeName") or None,
        ready=_conditions_true(pod, "Ready") is not None,
        deleting=bool(meta.get("deletionTimestamp")),
        exit_code=exit_code,
        reason=(terminated or {}).get("reason") or status.get("reason"),
        start=parse_time(status.get("startTime")),
        end=end,
        gpus=gpus,
        unschedulable=_unschedulable(pod),
        finished=parse_time((terminated or {}).get("finishedAt")),
        started=started,
        disruption=_disruption(pod),
        report=_text(annotations.get(checkpoints.REPORT_ANNOTATION)),
        final_report=_text((terminated or {}).get("message")),
        checkpoint_request=_text(annotations.get(checkpoints.REQUEST_ANNOTATION)),
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _disruption(pod: Mapping[str, Any]) -> str | None:
    condition = _conditions_true(pod, "DisruptionTarget")
    if condition is None:
        return None
    return str(condition.get("reason") or "DisruptionTarget")


def _unschedulable(pod: Mapping[str, Any]) -> str | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return str(condition.get("message") or condition.get("reason") or "unschedulable")[:300]
    return None


def job_view(job: Mapping[str, Any], owner_uid: str) -> JobView:
    meta = job.get("metadata") or {}
    status = job.get("status") or {}
    owned = any(
        ref.get("uid") == owner_uid and ref.get("controller") for ref in meta.get("ownerReferences") or []
    )
    failed = _conditions_true(job, "Failed", "FailureTarget")
    suspended = _conditions_true(job, "Suspended") or {}
    return JobView(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        owned=owned,
        deleting=bool(meta.get("deletionTimestamp")),
        suspended=bool((job.get("spec") or {}).get("suspend")),
        complete=_conditions_true(job, "Complete", "SuccessCriteriaMet") is not None,
        failed=failed is not None,
        failure_message=str((failed or {}).get("message") or (failed or {}).get("reason") or ""),
        start_time=parse_time(status.get("startTime")),
        created=parse_time(meta.get("creationTimestamp")),
        completion_time=parse_time(status.get("completionTime")),
        failed_at=parse_time((failed or {}).get("lastTransitionTime")),
        suspended_at=parse_time(suspended.get("lastTransitionTime")),
        suspend_reason=str(suspended.get("reason") or ""),
        suspend_message=str(suspended.get("message") or ""),
        parallelism=_int((job.get("spec") or {}).get("parallelism")),
        resize_reason=str((meta.get("annotations") or {}).get(RESIZE_REASON_ANNOTATION) or ""),
    )


def node_view(node: Mapping[str, Any]) -> NodeView:
    ready = None
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            ready = condition
    return NodeView(
        name=str((node.get("metadata") or {}).get("name", "")),
        ready=ready is not None and ready.get("status") == "True",
        since=parse_time((ready or {}).get("lastTransitionTime")),
    )


def parse_status(raw: Mapping[str, Any] | None) -> TrainingJobStatus:
    """The stored status; fields that do not read are dropped (they are recomputed anyway)."""
    return status_model.parse_status(TrainingJobStatus, raw)


# ---------------------------------------------------------------------------------------------------
# Decisions.


@dataclass(frozen=True)
class Observed:
    """Everything one reconcile pass saw."""

    name: str
    namespace: str
    generation: int
    spec: TrainingJobSpec
    status: TrainingJobStatus
    jobs: Sequence[JobView]
    pods: Sequence[PodView]
    now: datetime
    nodes: Mapping[str, NodeView] | None = None
    """None when the nodes were not listed (no worker is on a node)."""
    admission: Admission | None = None
    """The gang admission verdict, once the controller computed it for a plan that asked for it."""
    max_schedule_timeout_seconds: int | None = None
    """The operator owner's bound on `spec.policy.scheduleTimeoutSeconds`."""
    room: int | None = None
    """Elastic jobs: more whole workers the capacity ledger says fit now, once a plan asked for it."""
    ceiling: int | None = None
    """The most workers fleets that borrowed from the job leave it (None: no lender; see
    `policy.elastic`); 0 when a fleet took it whole: it is preempted and stays `Queued` until given back."""
    lent_to: tuple[str, ...] = ()
    """The fleets (`<namespace>/<name>`) holding what the job lent, for its message."""
    held: Sequence[accounting.Held] = ()
    """The GPUs the job's pods hold or held, priced by their nodes (`policy.usage.held_of`)."""
    currency: str = "USD"
    usage_checkpoint: timedelta = accounting.DEFAULT_CHECKPOINT
    policy: tuple[PolicyEntry, ...] = ()
    """What the objective derived (`policy.objective.derive_training`): `status.policy`."""
    preempt: PreemptionRequest | None = None
    """Someone wants the job's GPUs back (see `PreemptionRequest`)."""
    measures_usage: bool = False
    """The operator can ask Prometheus what the job's GPUs drew (DCGM): a fold of `status.usage` then
    asks for it (`Plan.needs_usage`)."""
    usage_reading: accounting.UsageReading | None = None
    """What Prometheus measured over the segment being folded, once a plan asked for it."""


@dataclass(frozen=True)
class PreemptionRequest:
    """A request to take a running job's GPUs, checkpoint first: from the `kubeforge.dev/preempt`
    annotation (`trigger` is its value, acted on once) or from the operator itself (arbitration, budgets:
    `TrainingJobController.preempt`). A job without running workers has nothing to give: the request is
    dropped (an annotation's value is still recorded as handled)."""

    reason: str
    trigger: str | None = None


@dataclass(frozen=True)
class Failure:
    permanent: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    """What the controller does, in this order: write the status first when `status_first` (a decision
    that must survive the deletes), delete Jobs, create the attempt's Job, write the status (if not yet),
    record events, delete the TrainingJob itself when its TTL ran out."""

    status: TrainingJobStatus
    status_first: bool = False
    delete_jobs: tuple[str, ...] = ()
    create_attempt: int | None = None
    needs_admission: bool = False
    delete_self: bool = False
    requeue_after: float | None = None
    events: tuple[Event, ...] = ()
    restarted: bool = False
    create_workers: int | None = None
    """Workers of the attempt to create (an elastic job's admitted size; None: `spec.workers`)."""
    resize: tuple[str, int, str] | None = None
    """Elastic jobs: (Job, workers, reason): resize the running attempt's Job in place."""
    wants_room: bool = False
    """Elastic jobs: the attempt may grow; decide again with `Observed.room` filled in."""
    checkpoint_request: str | None = None
    """The request time to annotate `request_pods` with (`kubeforge.dev/checkpoint-request`)."""
    request_pods: tuple[str, ...] = ()
    preempted: Preemption | None = None
    """A preemption this pass recorded (for its Event and metric)."""
    foreground: bool = False
    """Delete `delete_jobs` in the foreground (see `_Verdict.foreground`)."""
    needs_usage: float | None = None
    """`status.usage` folds a segment of this many seconds: decide again with `Observed.usage_reading`
    (nothing else in this plan is to be carried out)."""


@dataclass(frozen=True)
class _Verdict:
    phase: Phase
    reason: str
    message: str
    admitted: tuple[Status, str, str]
    restarts: int
    start_time: datetime | None
    completion_time: datetime | None = None
    next_attempt_time: datetime | None = None
    requeued_at: datetime | None = None
    """Set when the gang gives its placement back for want of scheduling (see the status field)."""
    job: str | None = None
    delete_jobs: tuple[str, ...] = ()
    create_attempt: int | None = None
    status_first: bool = False
    needs_admission: bool = False
    requeue_after: float | None = None
    counts: WorkerCounts | None = None
    event: Event | None = None
    """The Event for this transition, when a better one than "<phase>: <message>" exists."""
    size: int | None = None
    """Workers of the current attempt after this pass (None: no attempt)."""
    resize: elastic.Resize | None = None
    wants_room: bool = False
    kueue_stop: bool = False
    """Kueue just suspended the running attempt: recorded as a preemption nobody could answer."""
    extra_events: tuple[Event, ...] = ()
    """Events besides the phase change's."""
    foreground: bool = False
    """Delete the Jobs in the foreground: they stay (deleting) until their workers are gone, so the
    checkpoints the workers leave as termination messages are seen before the attempt starts again."""


def backoff_seconds(spec: TrainingJobSpec, restart: int) -> float:
    """Wait before restart number `restart` (1-based): doubling from `backoffSeconds`, capped at
    10 minutes."""
    if restart < 1 or spec.policy.backoff_seconds <= 0:
        return 0.0
    return float(min(MAX_BACKOFF_SECONDS, spec.policy.backoff_seconds * 2 ** min(restart - 1, 20)))


def worker_counts(spec: TrainingJobSpec, pods: Iterable[PodView], size: int | None = None) -> WorkerCounts:
    pods = list(pods)
    active = [p for p in pods if not p.terminal and not p.deleting]
    return WorkerCounts(
        desired=spec.workers if size is None else size,
        active=len(active),
        ready=sum(1 for p in active if p.ready and p.phase == "Running"),
        succeeded=sum(1 for p in pods if p.phase == "Succeeded"),
        failed=sum(1 for p in pods if p.phase == "Failed"),
    )


def _worker(pod: PodView) -> str:
    return f"worker {pod.index}" if pod.index is not None else f"pod {pod.name}"


@dataclass(frozen=True)
class Settling:
    """Workers of the attempt are ending, but the verdict is not in yet: wait (keep the phase) and look
    again after `recheck_after` seconds, or sooner when a pod or the Job changes."""

    recheck_after: float


_LATE = datetime.max.replace(tzinfo=UTC)


def failure_order(pods: Iterable[PodView]) -> list[PodView]:
    """Failed workers, the first to fail first: by the worker container's `finishedAt`, a worker that
    ended on its own before one that was killed (timestamps have second precision, so the worker whose
    failure made the Job controller kill its peers often shares their second), then by `startedAt`, then
    by rank. A worker without `finishedAt` (never started, its node lost) comes after those with one."""

    def key(p: PodView) -> tuple[Any, ...]:
        return (
            p.finished or _LATE,
            p.stopped_from_outside or p.signalled,
            p.started or _LATE,
            p.index is None,
            p.index or 0,
            p.name,
        )

    return sorted((p for p in pods if p.phase == "Failed"), key=key)


def suspend_casualty(pod: PodView, job: JobView) -> bool:
    """A worker of a suspended Job that ended because of the suspend: stopped from outside or by a
    signal, or finished no earlier than the suspension (second precision: the same second counts as the
    suspend's). Only a worker that failed on its own before the suspension is a failure."""
    if not job.suspended:
        return False
    if pod.stopped_from_outside or pod.signalled:
        return True
    if job.suspended_at is None:
        return False
    return pod.finished is None or pod.finished >= job.suspended_at


def classify_failure(
    spec: TrainingJobSpec,
    job: JobView,
    pods: Sequence[PodView],
    nodes: Mapping[str, NodeView] | None,
    now: datetime,
) -> Failure | Settling | None:
    """Why the current attempt is over without success, `Settling` while that is not known yet, or None
    while it is healthy.

    The verdict is judged on the first worker to fail (`failure_order`), never on the peers the Job
    controller or torchrun killed afterwards: its exit code decides whether the failure is permanent
    (`permanentExitCodes`), and one failed attempt is one restart. A worker that was stopped from outside
    (deleted, `DisruptionTarget`) is a retryable failure whatever it exited with, and only once the Job
    says it failed; before that it may be a suspension in progress. Workers that ended because Kueue (or
    anyone) suspended the Job are no failure at all. A failed Job, or a worker whose node is gone or
    NotReady for longer than `nodeLossTimeoutSeconds`, is a retryable failure too."""
    if job.complete:
        return None
    failed = [p for p in failure_order(pods) if not suspend_casualty(p, job)]
    if failed:
        first = failed[0]
        waiting = _settling(job, pods, first, now)
        if waiting is None:
            return _judge(spec, first)
        # A lost node does not wait for reports that will never come.
        return _node_loss(spec, pods, nodes, now) or waiting
    failure = _node_loss(spec, pods, nodes, now)
    if failure is not None:
        return failure
    if job.failed and not job.suspended:
        # The Job failed because a worker did; if the pod cache has not caught up with the Job's, wait
        # (a little) for that worker's report rather than judge without it.
        since = job.failed_at or now
        left = (since + timedelta(seconds=FAILURE_SETTLE_SECONDS) - now).total_seconds()
        if left > 0 and any(_unaware(p) for p in pods):
            return Settling(left)
        return Failure(False, "WorkerFailed", f"the attempt's Job {job.name} failed: {job.failure_message}")
    if not job.suspended and any(p.stopped_from_outside and not p.terminal and p.node for p in pods):
        # Workers are being deleted or evicted and the Job has not said why: Kueue's suspension is on its
        # way, or the Job controller is about to fail the Job. Either way it is not ours to judge yet.
        return Settling(STOPPING_RECHECK_SECONDS)
    return None


def _settling(job: JobView, pods: Sequence[PodView], first: PodView, now: datetime) -> Settling | None:
    """Wait for the peers' reports before judging, unless everything is in: a failure is judged once no
    worker is still running unaware of it (every other worker has ended or is being stopped), or
    `FAILURE_SETTLE_SECONDS` after the first failure."""
    if first.stopped_from_outside and not job.failed:
        return Settling(STOPPING_RECHECK_SECONDS)  # see classify_failure: not ours to judge yet
    if not any(_unaware(p) for p in pods):
        return None
    since = first.finished or first.end
    if since is None:
        return None
    left = (since + timedelta(seconds=FAILURE_SETTLE_SECONDS) - now).total_seconds()
    return Settling(left) if left > 0 else None


def _unaware(pod: PodView) -> bool:
    """A worker still running as if nothing happened: its report may still be on its way."""
    return not pod.terminal and not pod.stopped_from_outside and pod.node is not None


def _judge(spec: TrainingJobSpec, first: PodView) -> Failure:
    if first.stopped_from_outside:
        how = f"DisruptionTarget: {first.disruption}" if first.disruption else "deleted"
        return Failure(
            False, "WorkerDisrupted", f"{_worker(first)} ({first.name}) was stopped from outside ({how})"
        )
    if first.exit_code is not None and first.exit_code in set(spec.policy.permanent_exit_codes):
        return Failure(
            True,
            "PermanentExitCode",
            f"{_worker(first)} ({first.name}) exited with code {first.exit_code}, listed in "
            "spec.policy.permanentExitCodes: not retried",
        )
    if first.exit_code is not None and first.exit_code != 0:
        return Failure(
            False, "WorkerFailed", f"{_worker(first)} ({first.name}) exited with code {first.exit_code}"
        )
    why = first.reason or "failed"
    return Failure(False, "WorkerFailed", f"{_worker(first)} ({first.name}) failed: {why}")


def _node_loss(
    spec: TrainingJobSpec, pods: Sequence[PodView], nodes: Mapping[str, NodeView] | None, now: datetime
) -> Failure | None:
    if nodes is None:
        return None
    timeout = timedelta(seconds=spec.policy.node_loss_timeout_seconds)
    for pod in sorted(pods, key=lambda p: (p.index is None, p.index or 0, p.name)):
        if pod.terminal or pod.node is None:
            continue
        node = nodes.get(pod.node)
        if node is None:
            return Failure(
                False, "NodeLost", f"{_worker(pod)} ({pod.name}) lost its node {pod.node} (deleted)"
            )
        if not node.ready and (node.since is None or now - node.since >= timeout):
            return Failure(
                False,
                "NodeLost",
                f"{_worker(pod)} ({pod.name}) lost its node {pod.node} "
                f"(NotReady for more than {spec.policy.node_loss_timeout_seconds}s)",
            )
    return None


def _holds_its_own_failure(job: JobView, pods: Sequence[PodView]) -> bool:
    """A Job that failed, or has a failed worker, stops its other workers itself (backoffLimit 0) and is
    kept for its logs; any other unfinished Job must be deleted to free its GPUs."""
    return job.complete or job.failed or any(p.phase == "Failed" for p in pods)


def _finished_verdict(
    o: Observed, current: JobView | None, stale: tuple[str, ...], pods: Sequence[PodView]
) -> _Verdict:
    """Succeeded or Failed stays so; only leftovers that still hold pods are removed."""
    st = o.status
    phase: Phase = "Succeeded" if st.phase == "Succeeded" else "Failed"
    previous = next((c for c in st.conditions if c.type == phase and c.status == "True"), None)
    delete = stale
    if current is not None and not _holds_its_own_failure(current, pods):
        delete = (*stale, current.name)  # e.g. a deadline hit while workers still ran
    return _Verdict(
        phase=phase,
        reason=previous.reason if previous else phase,
        message=st.message or phase,
        admitted=("False", "Finished", "the job has finished"),
        restarts=st.restarts,
        start_time=parse_time(st.start_time),
        completion_time=parse_time(st.completion_time) or o.now,
        job=st.job_name,
        delete_jobs=delete,
    )


def _verdict(o: Observed) -> _Verdict:
    spec, st, now = o.spec, o.status, o.now
    restarts = st.restarts
    current_name = job_name(o.name, restarts)
    owned = [j for j in o.jobs if j.owned]
    current = next((j for j in owned if j.name == current_name and not j.deleting), None)
    stale = tuple(sorted(j.name for j in owned if j.name != current_name and not j.deleting))
    pods = [p for p in o.pods if current is not None and p.job_uid == current.uid]
    size = attempt_size(spec, current)
    if spec.elastic is not None:
        # Workers above the attempt's size were shed by a shrink: the Job controller removes them, and
        # how they end says nothing about the training.
        pods = [p for p in pods if p.index is None or p.index < size]
    # Workers stopped by a suspension did not fail: they are not counted as failed.
    counts = worker_counts(
        spec, [p for p in pods if current is None or not suspend_casualty(p, current)], size
    )
    start = parse_time(st.start_time)
    base: dict[str, Any] = {"restarts": restarts, "start_time": start, "counts": counts, "size": size}
    gang_ours = spec.gang and not spec.queue_name

    # 1. Finished is final.
    if st.phase in FINISHED_PHASES:
        return replace(_finished_verdict(o, current, stale, pods), counts=counts)

    # 2. The current attempt completed: the work is done, whatever else changed meanwhile.
    if current is not None and current.complete:
        return _Verdict(
            phase="Succeeded",
            reason="Succeeded",
            message=f"all {size} workers completed"
            + (f" after {restarts} restart{'s' if restarts != 1 else ''}" if restarts else ""),
            admitted=("False", "Finished", "the job has finished"),
            completion_time=current.completion_time or now,
            job=current.name,
            delete_jobs=stale,
            **base,
        )

    everything = tuple(sorted({*stale, *((current.name,) if current is not None else ())}))

    # 3. The deadline counts active time only, across restarts (not the time queued or suspended).
    deadline = spec.active_deadline_seconds
    used = active_seconds(st, now, current)
    if deadline is not None and not spec.suspend and used >= deadline:
        return _Verdict(
            phase="Failed",
            reason="DeadlineExceeded",
            message=f"the job ran longer than spec.activeDeadlineSeconds ({deadline}s)",
            admitted=("False", "Finished", "the job has finished"),
            completion_time=now,
            job=current.name if current is not None else None,
            delete_jobs=everything,
            status_first=True,
            **base,
        )

    # 4. Suspend (asked for, or the budget is spent): the pods go, the job and its restart count stay;
    # the deadline clock stops.
    over_budget = accounting.training_over_budget(spec.budget, st.usage, now)
    if spec.suspend or over_budget:
        why = "spec.suspend is true" if spec.suspend else str(over_budget)
        return _Verdict(
            phase="Suspended",
            reason="Suspended" if spec.suspend else BUDGET_EXCEEDED,
            message="suspended: the workers were removed; set spec.suspend to false to resume"
            if spec.suspend
            else f"suspended: {over_budget}",
            admitted=("False", "Suspended" if spec.suspend else BUDGET_EXCEEDED, why),
            restarts=restarts,
            start_time=None,
            delete_jobs=everything,
            status_first=True,
            counts=counts,
            size=size,
        )

    # 4b. A preemption decided to stop the attempt (the status says so): stop it, whatever else happens.
    stopping = st.preemption is not None and st.preemption.state == "Stopping"
    if stopping and current is not None:
        return _Verdict(
            phase="Queued",
            reason=PREEMPTED,
            message=st.message or "preempted: stopping the workers",
            admitted=_admitted_of(st),
            delete_jobs=everything,
            foreground=True,
            **(base | {"size": None}),
        )

    # 5. The current attempt failed, or lost a node: fail, or restart the whole gang.
    if current is not None:
        failure = classify_failure(spec, current, pods, o.nodes, now)
        if isinstance(failure, Settling):
            held = st.phase or "Pending"
            return _Verdict(
                phase=held,
                reason=_reason_of(st, held),
                message=st.message or "",
                admitted=_admitted_of(st),
                job=current.name,
                delete_jobs=stale,
                requeue_after=failure.recheck_after,
                **base,
            )
        if failure is not None:
            if failure.permanent or restarts >= spec.policy.max_restarts:
                reason = failure.reason if failure.permanent else "BackoffLimitExceeded"
                message = (
                    failure.message
                    if failure.permanent
                    else f"{failure.message}; no restarts left "
                    f"(spec.policy.maxRestarts: {spec.policy.max_restarts})"
                )
                # A failed Job has stopped its pods; one that only lost a node still runs the others.
                return _Verdict(
                    phase="Failed",
                    reason=reason,
                    message=message,
                    admitted=("False", "Finished", "the job has finished"),
                    completion_time=now,
                    job=current.name,
                    delete_jobs=stale if _holds_its_own_failure(current, pods) else everything,
                    status_first=True,
                    **base,
                )
            restart = restarts + 1
            wait = backoff_seconds(spec, restart)
            return _Verdict(
                phase="Restarting",
                reason=failure.reason,
                message=f"{failure.message}; restarting the whole gang "
                f"(restart {restart} of {spec.policy.max_restarts}) in {wait:g}s",
                admitted=("False", "Restarting", f"attempt {restart} starts after a {wait:g}s backoff"),
                restarts=restart,
                start_time=start,
                next_attempt_time=now + timedelta(seconds=wait),
                delete_jobs=everything,
                status_first=True,
                requeue_after=wait,
                counts=counts,
                size=size,
            )

    # 6. A gang we admitted that the scheduler could not place in time gives its GPUs back (an elastic
    # job whose first `minWorkers` are placed only gives back the workers it added).
    stranded = 0
    if current is not None and gang_ours and not current.suspended:
        since = _placing_since(o, current, now)
        placed = {p.index for p in pods if p.node is not None or p.terminal}
        timeout = schedule_timeout(o)
        if len(placed) < size:
            remaining = (since + timedelta(seconds=timeout) - now).total_seconds()
            prefix = _placed_prefix(placed, size)
            if remaining <= 0 and spec.elastic is not None and prefix >= spec.elastic.min_workers:
                stranded = size - prefix
            elif remaining <= 0:
                unplaced = size - len(placed)
                message = (
                    f"{unplaced} of {size} workers were not scheduled within {timeout}s; "
                    "released the placement"
                )
                # A gang that cannot place is not left to hold GPUs forever: the timeout is a restart.
                if restarts >= spec.policy.max_restarts:
                    return _Verdict(
                        phase="Failed",
                        reason="ScheduleTimeout",
                        message=f"{message}; no restarts left (spec.policy.maxRestarts: "
                        f"{spec.policy.max_restarts})",
                        admitted=("False", "Finished", "the job has finished"),
                        completion_time=now,
                        job=current.name,
                        delete_jobs=everything,
                        status_first=True,
                        **base,
                    )
                message += (
                    f" and queued again behind the gangs waiting now (restart {restarts + 1} of "
                    f"{spec.policy.max_restarts})"
                )
                return _Verdict(
                    phase="Queued",
                    reason="ScheduleTimeout",
                    message=message,
                    admitted=("False", "ScheduleTimeout", message),
                    delete_jobs=everything,
                    status_first=True,
                    requeued_at=now,
                    **(base | {"restarts": restarts + 1, "size": None}),
                )

    # 7. The attempt is there: waiting for Kueue, starting, or running.
    if current is not None:
        if current.suspended and _ran(st):
            stopped_now = st.phase in ("Pending", "Running")
            return replace(_requeued_by_kueue(spec, current, stale, base), kueue_stop=stopped_now)
        if current.suspended:
            return _Verdict(
                phase="Queued",
                reason="WaitingForKueue",
                message=_kueue_wait(spec),
                admitted=_kueue_admitted(spec),
                job=current.name,
                delete_jobs=stale,
                restarts=restarts,
                start_time=start,
                counts=counts,
            )
        started = start or current.start_time or current.created or now
        running = sum(1 for p in pods if p.phase in ("Running", "Succeeded") and not p.deleting)
        if spec.queue_name:
            admitted: tuple[Status, str, str] = (
                "True",
                "KueueAdmitted",
                f"admitted by Kueue queue {spec.queue_name!r}",
            )
        elif spec.gang:
            admitted = _gang_admitted(spec, st)
        else:
            admitted = _CREATED
        requeue: float | None = None
        if gang_ours and running < size:
            since = _placing_since(o, current, now)
            requeue = max(0.0, (since + timedelta(seconds=schedule_timeout(o)) - now).total_seconds())
        if deadline is not None:
            left = max(0.0, deadline - used)
            requeue = left if requeue is None else min(requeue, left)
        resize, wants_room = None, False
        if spec.elastic is not None:
            resize, wants_room, cooling = _elastic_resize(o, size, pods, stranded)
            if cooling is not None:
                requeue = cooling if requeue is None else min(requeue, cooling)
        if resize is not None:
            size, counts = resize.to, counts.model_copy(update={"desired": resize.to})
        if running >= size or (spec.elastic is not None and running >= spec.elastic.min_workers):
            attempt_note = f" (attempt {restarts + 1})" if restarts else ""
            more = "" if running >= size else f"; {size - running} more being placed"
            return _Verdict(
                phase="Running",
                reason="Running",
                message=f"{'all ' if running >= size else ''}{running}"
                f"{'' if running >= size else f' of {size}'} workers running{more}{attempt_note}"
                if spec.elastic is not None
                else f"all {size} workers running{attempt_note}",
                admitted=admitted,
                restarts=restarts,
                start_time=started,
                job=current.name,
                delete_jobs=stale,
                requeue_after=requeue,
                counts=counts,
                size=size,
                resize=resize,
                wants_room=wants_room,
            )
        return _Verdict(
            phase="Pending",
            reason="WorkersStarting",
            message=_starting(running, size) + _placement_problem(pods),
            admitted=admitted,
            restarts=restarts,
            start_time=started,
            job=current.name,
            delete_jobs=stale,
            requeue_after=requeue,
            counts=counts,
            size=size,
            resize=resize,
        )

    # 8. No attempt yet. A Job of the same name that is still going away must be gone first.
    if any(j.name == current_name and (j.deleting or not j.owned) for j in o.jobs):
        held = st.phase or "Pending"
        return _Verdict(
            phase=held,
            reason=_reason_of(st, held),
            message=st.message or f"waiting for the previous Job {current_name} to be deleted",
            admitted=_admitted_of(st),
            delete_jobs=stale,
            requeue_after=DELETION_POLL_SECONDS,
            next_attempt_time=parse_time(st.next_attempt_time),
            **base,
        )
    next_attempt = parse_time(st.next_attempt_time)
    if st.phase == "Restarting" and next_attempt is not None and next_attempt > now:
        return _Verdict(
            phase="Restarting",
            reason=_reason_of(st, "Restarting"),
            message=st.message or "restarting",
            admitted=_admitted_of(st),
            next_attempt_time=next_attempt,
            delete_jobs=stale,
            requeue_after=(next_attempt - now).total_seconds(),
            **base,
        )
    # A resumed job starts its deadline clock again, as a resumed Job does.
    start_after = now if start is None or st.phase == "Suspended" else start
    if o.ceiling == 0 and not spec.queue_name:
        # Taken whole by a fleet (after its checkpoint): not admitted again until it is given back.
        held_by = ", ".join(o.lent_to) or "a fleet"
        why = (
            f"its GPUs are lent to InferenceFleet {held_by}; it resumes from its last checkpoint once "
            "they are given back"
        )
        return _Verdict(
            phase="Queued",
            reason=elastic.LENT_TO_FLEET,
            message=why,
            admitted=("False", elastic.LENT_TO_FLEET, why),
            delete_jobs=stale,
            next_attempt_time=None,
            restarts=restarts,
            start_time=start,
            counts=counts,
        )
    if gang_ours:
        if o.admission is None:
            return _Verdict(
                phase=st.phase or "Pending",
                reason=_reason_of(st, st.phase or "Pending"),
                message=st.message or "",
                admitted=_admitted_of(st),
                needs_admission=True,
                **base,
            )
        if not o.admission.fits:
            return _Verdict(
                phase="Queued",
                reason=o.admission.reason,
                message=f"{_WAITING_FOR.get(o.admission.reason, 'waiting for GPUs')}: {o.admission.message}",
                admitted=("False", o.admission.reason, o.admission.message),
                delete_jobs=stale,
                next_attempt_time=None,
                restarts=restarts,
                start_time=start,
                counts=counts,
            )
        if spec.elastic is not None:
            size = max(spec.elastic.min_workers, min(spec.elastic.max_workers, o.admission.placeable))
            admitted = (
                "True",
                "GangAdmitted",
                f"{size} workers fit (elastic {spec.elastic.min_workers}-{spec.elastic.max_workers}): "
                f"{o.admission.message}",
            )
        else:
            admitted = ("True", "GangAdmitted", f"all {spec.workers} workers fit: {o.admission.message}")
        why = f"admitted: {o.admission.message}"
    elif spec.queue_name:
        admitted = _kueue_admitted(spec)
        why = f"Kueue queue {spec.queue_name!r} admits it by unsuspending it"
    else:
        admitted = _CREATED
        why = "no gang admission"
    attempt_note = f" for attempt {restarts + 1}" if restarts else ""
    event_reason = admitted[1] if admitted[0] == "True" else "JobCreated"
    # The status says what the next pass will also say (no second write); the Event says what happened.
    return _Verdict(
        phase="Queued" if spec.queue_name else "Pending",
        reason="WaitingForKueue" if spec.queue_name else "WorkersStarting",
        message=_kueue_wait(spec) if spec.queue_name else _starting(0, size),
        admitted=admitted,
        restarts=restarts,
        start_time=None if spec.queue_name else start_after,
        job=current_name,
        delete_jobs=stale,
        create_attempt=restarts,
        counts=WorkerCounts(desired=size),
        size=size,
        event=Event("Normal", event_reason, f"created Job {current_name}{attempt_note} ({why})"),
    )


def attempt_size(spec: TrainingJobSpec, job: JobView | None) -> int:
    """Workers of the current attempt: `spec.workers`, or an elastic Job's `parallelism` (the truth the
    operator resized; `minWorkers` before it is known)."""
    if spec.elastic is None:
        return spec.workers
    if job is not None and job.parallelism is not None and job.parallelism > 0:
        return job.parallelism
    return spec.elastic.min_workers


def _placed_prefix(placed: set[int | None], size: int) -> int:
    """How many of the lowest indexes are placed: a shrink removes the highest, so only those can stay."""
    n = 0
    while n < size and n in placed:
        n += 1
    return n


def _placing_since(o: Observed, job: JobView, now: datetime) -> datetime:
    """Since when the attempt's unplaced workers have been waiting: the attempt's start, or the last
    growth of this attempt (added workers get their own schedule timeout)."""
    since = job.start_time or job.created or now
    grown = o.status.last_resize
    if (
        o.spec.elastic is not None
        and grown is not None
        and grown.to > grown.from_
        and o.status.attempt == o.status.restarts
        and o.status.job_name == job.name
    ):
        at = parse_time(grown.time)
        if at is not None and at > since:
            return at
    return since


def _cooling(o: Observed) -> float | None:
    """Seconds left before an attempt that gave back added workers it could not place may grow again:
    the ledger counts GPUs only, so workers kept off by CPU, memory or another scheduler would be added
    and given back in a loop; one try per schedule timeout bounds that."""
    last = o.status.last_resize
    if last is None or last.reason != elastic.CAPACITY_RECLAIMED or last.to >= last.from_:
        return None
    at = parse_time(last.time)
    if at is None:
        return None
    left = (at + timedelta(seconds=schedule_timeout(o)) - o.now).total_seconds()
    return left if left > 0 else None


def _elastic_resize(
    o: Observed, size: int, pods: Sequence[PodView], stranded: int
) -> tuple[elastic.Resize | None, bool, float | None]:
    """The resize of a running elastic attempt, whether the ledger's room is wanted first, and when to
    look again if growth is cooling down. Growth is asked for only once every worker of the attempt is
    placed, so it goes one step at a time and the ledger never counts the job's own unplaced workers
    twice."""
    spec = o.spec
    assert spec.elastic is not None
    if o.ceiling == 0:
        # Taken whole: the preemption stops every worker after the checkpoint; no resize meanwhile.
        return None, False, None
    bounds = elastic.Bounds(spec.elastic.min_workers, spec.elastic.max_workers)
    placed = {p.index for p in pods if p.node is not None or p.terminal}
    settled = _placed_prefix(placed, size) >= size and not any(p.deleting for p in pods)
    cooling = _cooling(o)
    grow = settled and size < elastic.allowed(bounds, o.ceiling) and cooling is None
    if grow and o.room is None and stranded == 0:
        # Shrinks never wait for the ledger; growth does.
        shrink = elastic.decide_size(size, bounds, room=None, ceiling=o.ceiling)
        return shrink, shrink is None, None
    room = o.room if grow else None
    decided = elastic.decide_size(
        size, bounds, room=room, stranded=stranded, ceiling=o.ceiling, timeout=schedule_timeout(o)
    )
    return decided, False, cooling


_CREATED: tuple[Status, str, str] = ("True", "Created", "the workers were created without gang admission")
PREEMPTED = "Preempted"
KUEUE_REASON = "Kueue"
SUSPENDED_BY_KUEUE = "SuspendedByKueue"
_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")


def _ran(status: TrainingJobStatus) -> bool:
    """Whether Kueue had admitted the current attempt (so a suspended Job now is Kueue taking it back)."""
    return status.phase in ("Pending", "Running") or _admitted_of(status)[1] in (
        "KueueAdmitted",
        SUSPENDED_BY_KUEUE,
    )


def _requeued_by_kueue(
    spec: TrainingJobSpec, job: JobView, stale: tuple[str, ...], base: dict[str, Any]
) -> _Verdict:
    """Kueue suspended a Job it had admitted (preemption, a quota change, a deactivated workload): the
    Job controller stops the workers, and the workload waits in its queue again. Not a failure: no
    restart is counted and the same attempt resumes when Kueue admits it again. Kueue writes why on its
    Workload; the Job's `Suspended` condition is passed on when it says more than the Job controller's
    default."""
    own = (
        job.suspend_reason not in ("", JOB_SUSPENDED_REASON) and _REASON.match(job.suspend_reason) is not None
    )
    reason = job.suspend_reason if own else SUSPENDED_BY_KUEUE
    detail = f" ({job.suspend_reason}: {job.suspend_message})" if own and job.suspend_message else ""
    # Without queueName, Kueue still manages the Job when it runs with manageJobsWithoutQueueName.
    queue = f"queue {spec.queue_name!r}" if spec.queue_name else "its queue"
    message = (
        f"Kueue suspended the Job {job.name}{detail}: its workers were stopped and the workload waits in "
        f"{queue} to be admitted again (not a failure; `kubectl get workloads` says why)"
    )
    return _Verdict(
        phase="Queued",
        reason=reason,
        message=message,
        admitted=("False", reason, message),
        job=job.name,
        delete_jobs=stale,
        **base,
    )


_WAITING_FOR = {
    "QuotaExceeded": "waiting for room in the namespace's GPU quota",
    "NamespaceReservationLimit": "waiting for the namespace's admitted gangs to be placed",
}


def schedule_timeout(o: Observed) -> int:
    """`spec.policy.scheduleTimeoutSeconds`, bounded by the operator owner's maximum."""
    timeout = o.spec.policy.schedule_timeout_seconds
    cap = o.max_schedule_timeout_seconds
    return timeout if cap is None else min(timeout, cap)


def _starting(running: int, workers: int) -> str:
    return f"{running} of {workers} workers running; waiting for the rest to be scheduled and start"


def _placement_problem(pods: Sequence[PodView]) -> str:
    """What the scheduler says about the first worker it cannot place, if any."""
    for pod in sorted(pods, key=lambda p: (p.index is None, p.index or 0)):
        if pod.unschedulable and pod.node is None:
            return f"; {_worker(pod)} is unschedulable: {pod.unschedulable}"
    return ""


def _kueue_wait(spec: TrainingJobSpec) -> str:
    return f"waiting for Kueue queue {spec.queue_name!r} to admit the workload"


def _kueue_admitted(spec: TrainingJobSpec) -> tuple[Status, str, str]:
    return (
        "False",
        "WaitingForKueue",
        f"the Job is suspended until Kueue queue {spec.queue_name!r} admits it",
    )


def _gang_admitted(spec: TrainingJobSpec, status: TrainingJobStatus) -> tuple[Status, str, str]:
    """Keep the admission message (it says what fitted) once the gang was admitted."""
    for condition in status.conditions:
        if condition.type == "Admitted" and condition.status == "True" and condition.reason == "GangAdmitted":
            return ("True", "GangAdmitted", condition.message)
    return ("True", "GangAdmitted", f"all {spec.workers} workers fit when the attempt was admitted")


def _reason_of(status: TrainingJobStatus, phase: str) -> str:
    for condition in status.conditions:
        if condition.type == "Reconciling" and condition.status == "True":
            return condition.reason
    return phase


def _admitted_of(status: TrainingJobStatus) -> tuple[Status, str, str]:
    for condition in status.conditions:
        if condition.type == "Admitted":
            return (condition.status, condition.reason, condition.message)
    return ("Unknown", "Pending", "not evaluated yet")


# ---------------------------------------------------------------------------------------------------
# Status.


UNDER_WAY_PHASES: frozenset[str] = frozenset({"Pending", "Queued", "Running", "Restarting"})
"""Phases in which the job is `Reconciling`: the gang is starting, waiting or running towards its end."""


def _condition_updates(v: _Verdict, counts: WorkerCounts) -> list[ConditionUpdate]:
    phase = v.phase
    all_ready = phase == "Running" and counts.active > 0 and counts.ready >= counts.active
    if phase == "Succeeded":
        ready = ConditionUpdate("Ready", "True", "Succeeded", v.message)
    elif all_ready:
        ready = ConditionUpdate(
            "Ready", "True", "AllWorkersReady", f"{counts.ready} of {counts.desired} workers ready"
        )
    else:
        ready = ConditionUpdate(
            "Ready", "False", v.reason if phase != "Running" else "WorkersNotReady", v.message
        )
    # kstatus (Flux) reads a TrainingJob the way it reads a batch Job: InProgress until it finishes,
    # Current once Succeeded, Failed once Failed. A suspended job is InProgress through `Ready=False`.
    # Failed is not under way, so Reconciling and Stalled are never both True (kstatus would take the
    # first in list order).
    under_way = phase in UNDER_WAY_PHASES
    return [
        ready,
        ConditionUpdate(
            "Reconciling",
            "True" if under_way else "False",
            v.reason if under_way else phase,
            v.message if under_way else "",
        ),
        ConditionUpdate(
            "Stalled",
            "True" if phase == "Failed" else "False",
            v.reason if phase == "Failed" else phase,
            v.message if phase == "Failed" else "",
        ),
        ConditionUpdate("Admitted", *v.admitted),
        ConditionUpdate(
            "Running",
            "True" if phase == "Running" else "False",
            v.reason,
            v.message if phase == "Running" else "",
        ),
        ConditionUpdate(
            "Succeeded",
            "True" if phase == "Succeeded" else "False",
            v.reason if phase == "Succeeded" else phase,
            v.message if phase == "Succeeded" else "",
        ),
        ConditionUpdate(
            "Failed",
            "True" if phase == "Failed" else "False",
            v.reason if phase == "Failed" else phase,
            v.message if phase == "Failed" else "",
        ),
    ]


def gpu_seconds(pods: Iterable[PodView], since: datetime | None, now: datetime) -> float:
    """GPU-seconds held by the pods in (since, now]: each pod holds its GPUs from its start until it ends
    (or now). Pods are intervals in absolute time, so any pod seen twice is counted once."""
    total = 0.0
    for pod in pods:
        if pod.gpus <= 0 or pod.start is None:
            continue
        begin = pod.start if since is None else max(pod.start, since)
        end = min(pod.end or now, now)
        if end > begin:
            total += pod.gpus * (end - begin).total_seconds()
    return total


def _accounting(o: Observed) -> tuple[float, str | None]:
    """GPU-hours and the time they are accounted up to; moved only when it grew, and while nothing else
    changes at most every GPU_HOURS_WRITE_INTERVAL (the caller decides that)."""
    since = parse_time(o.status.gpu_hours_as_of)
    now = o.now.replace(microsecond=0)
    added = gpu_seconds(o.pods, since, now)
    if added <= 0:
        return o.status.gpu_hours, o.status.gpu_hours_as_of
    return round(o.status.gpu_hours + added / 3600.0, 6), format_time(now)


def _time(value: datetime | None) -> str | None:
    return format_time(value) if value is not None else None


def _active_since(status: TrainingJobStatus) -> datetime | None:
    since = parse_time(status.active_since)
    if since is None and status.phase in ACTIVE_PHASES and not status.active_seconds:
        # A status written before `activeSince` existed: the stretch began at `startTime`.
        since = parse_time(status.start_time)
    return since


def _stretch_end(now: datetime, since: datetime, job: JobView | None) -> datetime:
    """Where the current active stretch ends if it ends now: at the Job's suspension when Kueue suspended
    it (the operator may see that late), else now."""
    if job is not None and job.suspended and job.suspended_at is not None and since <= job.suspended_at:
        return min(job.suspended_at, now)
    return now


def active_seconds(status: TrainingJobStatus, now: datetime, job: JobView | None = None) -> float:
    """Seconds the job has been active so far: the stored total plus the current stretch."""
    since = _active_since(status)
    if since is None:
        return float(status.active_seconds)
    return status.active_seconds + max(0.0, (_stretch_end(now, since, job) - since).total_seconds())


def _active_clock(o: Observed, phase: str) -> tuple[int, str | None]:
    """`activeSeconds` and `activeSince` after this pass: a stretch starts when the job becomes active
    and is added to the total when it stops (queued, suspended, finished)."""
    st = o.status
    since = _active_since(st)
    if phase in ACTIVE_PHASES:
        return st.active_seconds, format_time(since or o.now)
    if since is None:
        return st.active_seconds, None
    current = next((j for j in o.jobs if j.owned and j.name == job_name(o.name, st.restarts)), None)
    return int(active_seconds(st, o.now, current)), None


def decide(o: Observed) -> Plan:
    """The plan for one reconcile pass. Pure: the same observation gives the same plan."""
    v = _verdict(o)
    if v.needs_admission:
        return Plan(status=o.status, needs_admission=True, delete_jobs=v.delete_jobs)
    preempting = _preemption(o, v)
    v = preempting.verdict
    counts = v.counts or WorkerCounts(desired=o.spec.workers)
    last_resize = _last_resize(o, v)
    workers = counts.to_wire()
    ready = f"{counts.ready}/{counts.desired}"
    if o.spec.elastic is not None:
        bounds = o.spec.elastic
        running = v.job is not None and v.phase in ("Pending", "Running") and v.size is not None
        workers |= {
            "current": v.size if running else 0,
            "min": bounds.min_workers,
            "max": bounds.max_workers,
        }
        ready += f" ({bounds.min_workers}-{bounds.max_workers})"
    gpu_hours, as_of = _accounting(o)
    active_total, active_since = _active_clock(o, v.phase)
    # A budget removed takes its condition with it (a type not computed is otherwise kept as it was).
    stored = [
        c.to_wire() for c in o.status.conditions if o.spec.budget is not None or c.type != BUDGET_EXCEEDED
    ]
    conditions = merge_conditions(
        stored,
        [*_condition_updates(v, counts), *_budget_condition(o)],
        now=o.now,
        generation=o.generation,
    )
    status = TrainingJobStatus.model_validate(
        {
            "phase": v.phase,
            "message": v.message or None,
            "conditions": conditions,
            "workers": workers,
            "workersReady": ready,
            "lastResize": last_resize.to_wire() if last_resize is not None else None,
            "restarts": v.restarts,
            "attempt": v.restarts,
            "jobName": v.job,
            "startTime": _time(v.start_time),
            "completionTime": _time(v.completion_time) if v.phase in FINISHED_PHASES else None,
            "nextAttemptTime": _time(v.next_attempt_time) if v.phase == "Restarting" else None,
            # Only while it waits for the place it gave back: admitted again, it is an ordinary gang.
            "requeuedAt": _time(v.requeued_at)
            if v.requeued_at is not None
            else (o.status.requeued_at if v.phase == "Queued" else None),
            "gpuHours": gpu_hours,
            "gpuHoursAsOf": as_of,
            "activeSeconds": active_total,
            "activeSince": active_since,
            "observedGeneration": o.generation,
            "policy": [e.to_wire() for e in o.policy],
            **_preemption_status(o, preempting),
        }
    )
    status = _throttle_accounting(o, status)
    ledger = accounting.account(
        o.status.usage,
        o.held,
        o.now,
        currency=o.currency,
        checkpoint=o.usage_checkpoint,
        reading=o.usage_reading,
    )
    since = parse_time(o.status.usage.accounted_until) if o.status.usage is not None else None
    # Asked for on the first decision of a pass only: one that carries an admission or room verdict
    # must be carried out as decided (that segment is then estimated from the TDP, as without DCGM).
    first = o.admission is None and o.room is None
    if ledger.folded and o.measures_usage and o.usage_reading is None and since is not None and first:
        return Plan(status=o.status, needs_usage=max(1.0, (o.now - since).total_seconds()))
    status = status.model_copy(update={"usage": ledger.usage})
    events: list[Event] = []
    old_reason = _reason_of(o.status, o.status.phase or "")
    if v.phase != o.status.phase or (v.phase in ("Queued", "Restarting") and v.reason != old_reason):
        events.append(v.event or _event(v))
    if last_resize is not None and last_resize != o.status.last_resize:
        events.append(Event("Normal", last_resize.reason, last_resize.message or last_resize.reason))
    events.extend(v.extra_events)
    asked = preempting.in_progress
    if asked is not None and asked.state == "WaitingForCheckpoint" and o.status.preemption is None:
        events.append(
            Event(
                "Normal",
                "CheckpointRequested",
                f"asked the workers for a checkpoint before a preemption ({asked.reason}); waiting up to "
                f"{grace_seconds(o.spec):g}s",
            )
        )
    delete_self = False
    requeue = v.requeue_after
    for wait in (ledger.requeue_after, _budget_runs_out(o.spec, ledger.usage, o.now)):
        if wait is not None and v.phase in ACTIVE_PHASES:
            requeue = wait if requeue is None else min(requeue, wait)
    ttl = o.spec.ttl_seconds_after_finished
    if v.phase in FINISHED_PHASES and ttl is not None and v.completion_time is not None:
        left = (v.completion_time + timedelta(seconds=ttl) - o.now).total_seconds()
        if left <= 0 and o.status.phase in FINISHED_PHASES:
            delete_self = True
        else:
            requeue = max(left, 0.0) if requeue is None else min(requeue, max(left, 0.0))
    return Plan(
        status=status,
        status_first=v.status_first,
        delete_jobs=v.delete_jobs,
        create_attempt=v.create_attempt,
        delete_self=delete_self,
        requeue_after=requeue,
        events=tuple(events),
        restarted=v.restarts > o.status.restarts,
        create_workers=v.size if v.create_attempt is not None and o.spec.elastic is not None else None,
        resize=(v.job, v.resize.to, v.resize.reason) if v.resize is not None and v.job is not None else None,
        wants_room=v.wants_room,
        checkpoint_request=preempting.request if preempting.request_pods else None,
        request_pods=preempting.request_pods,
        preempted=preempting.record,
        foreground=v.foreground,
    )


def _last_resize(o: Observed, v: _Verdict) -> Resize | None:
    """`status.lastResize`: a new one when the running attempt's size differs from the one the status
    recorded for the same attempt, whether this pass resizes it or an earlier pass did and was killed
    before it wrote the status (the Job's annotation then says why); else the stored one."""
    old = o.status
    before = old.workers.current if old.workers is not None else None
    same_attempt = (
        v.job is not None
        and old.job_name == v.job
        and old.attempt == v.restarts
        and v.phase in ("Pending", "Running")
    )
    if o.spec.elastic is None or not same_attempt or not before or v.size is None or v.size == before:
        return old.last_resize
    if v.resize is not None:
        reason, message = v.resize.reason, v.resize.message
    else:
        job = next((j for j in o.jobs if j.name == v.job), None)
        grew = v.size > before
        noted = job.resize_reason if job is not None else ""
        # The Job's annotation says why, when it agrees with the direction: a lend's shrink recorded as
        # `CapacityReclaimed` would make growth cool down once the GPUs came back.
        fitting = (elastic.CAPACITY_FREED,) if grew else (elastic.CAPACITY_RECLAIMED, elastic.LENT_TO_FLEET)
        reason = next((r for r in fitting if r == noted), fitting[0])
        message = f"{'grew' if grew else 'shrank'} from {before} to {v.size} workers"
    return Resize.model_validate(
        {"time": format_time(o.now), "from": before, "to": v.size, "reason": reason, "message": message}
    )


def _budget_condition(o: Observed) -> list[ConditionUpdate]:
    """`BudgetExceeded`, for a job with a budget: True once its cost reached `maxCost`."""
    if o.spec.budget is None:
        return []
    over = accounting.training_over_budget(o.spec.budget, o.status.usage, o.now)
    if over is not None:
        return [ConditionUpdate(BUDGET_EXCEEDED, "True", "MaxCostReached", over)]
    return [ConditionUpdate(BUDGET_EXCEEDED, "False", "WithinBudget", f"maxCost {o.spec.budget.max_cost:g}")]


def _budget_runs_out(spec: TrainingJobSpec, usage: Usage | None, now: datetime) -> float | None:
    """Seconds until the job's cost reaches `spec.budget.maxCost` at the rate it spends now."""
    if spec.budget is None or usage is None or usage.cost_per_hour <= 0:
        return None
    left = spec.budget.max_cost - accounting.extrapolate(usage, now).cost
    return max(1.0, left / usage.cost_per_hour * 3600.0)


def _event(v: _Verdict) -> Event:
    warning = v.phase in ("Failed", "Restarting") or v.reason in ("ScheduleTimeout", BUDGET_EXCEEDED)
    return Event("Warning" if warning else "Normal", v.reason, f"{v.phase}: {v.message}")


def _throttle_accounting(o: Observed, status: TrainingJobStatus) -> TrainingJobStatus:
    """Keep the stored GPU-hours when they are the only change and were written less than a minute ago:
    a running job then costs one status write a minute, not one per pod event."""
    old = o.status
    if status.gpu_hours == old.gpu_hours:
        return status
    same_otherwise = status.model_copy(
        update={"gpu_hours": old.gpu_hours, "gpu_hours_as_of": old.gpu_hours_as_of}
    )
    if same_otherwise != old:
        return status
    as_of = parse_time(old.gpu_hours_as_of)
    if as_of is not None and o.now - as_of < GPU_HOURS_WRITE_INTERVAL:
        return same_otherwise
    return status


# ---------------------------------------------------------------------------------------------------
# Checkpoints and preemption (the protocol is in `policy.checkpoint`).


@dataclass(frozen=True)
class _Preempting:
    verdict: _Verdict
    checkpoint: checkpoints.Checkpoint | None
    in_progress: PreemptionInProgress | None
    record: Preemption | None = None
    request: str | None = None
    request_pods: tuple[str, ...] = ()


def stored_checkpoint(status: TrainingJobStatus) -> checkpoints.Checkpoint | None:
    """`status.checkpoint`, the one a new attempt resumes from."""
    stored = status.checkpoint
    when = parse_time(stored.time) if stored is not None else None
    if stored is None or when is None:
        return None
    return checkpoints.Checkpoint(stored.step, stored.path, when)


def checkpoint_status(found: checkpoints.Checkpoint | None) -> CheckpointStatus | None:
    if found is None:
        return None
    return CheckpointStatus(step=found.step, path=found.path, time=format_time(found.time))


def grace_seconds(spec: TrainingJobSpec) -> float:
    """How long a preemption waits for a checkpoint: nothing when the job declares no `spec.checkpoint`."""
    return float(spec.checkpoint.grace_period_seconds) if spec.checkpoint is not None else 0.0


def _attempt_pods(o: Observed, job: JobView | None) -> list[PodView]:
    return [p for p in o.pods if job is not None and p.job_uid == job.uid]


def _holding(pods: Iterable[PodView]) -> list[PodView]:
    return [p for p in pods if not p.terminal and not p.deleting]


def _first_start(pods: Iterable[PodView]) -> datetime | None:
    starts = [p.started or p.start for p in pods]
    return min((s for s in starts if s is not None), default=None)


def _begin(
    reason: str, state: PreemptionState, pods: Sequence[PodView], at: datetime
) -> PreemptionInProgress:
    started = _first_start(pods)
    return PreemptionInProgress(
        reason=reason[:63],
        requested_at=format_time(at),
        state=state,
        gpus=sum(max(0, p.gpus) for p in pods),
        workers_started=_time(started),
    )


def _record(
    p: PreemptionInProgress,
    *,
    outcome: PreemptionOutcome,
    last: checkpoints.Checkpoint | None,
    stopped: datetime,
) -> Preemption:
    requested = parse_time(p.requested_at) or stopped
    lost = checkpoints.lost_gpu_seconds(
        gpus=p.gpus, stopped=stopped, started=parse_time(p.workers_started), last=last
    )
    return Preemption(
        time=format_time(stopped),
        reason=p.reason,
        outcome=outcome,
        checkpoint_step=last.step if last is not None else None,
        checkpoint_path=last.path if last is not None else None,
        waited_seconds=int(max(0.0, (stopped - requested).total_seconds())),
        lost_gpu_hours=round(lost / 3600.0, 6),
    )


def _preemption(o: Observed, v: _Verdict) -> _Preempting:
    """The checkpoint to keep, and where a preemption stands after this pass: asked for (the workers get
    the request), answered or timed out (the attempt is stopped the way a Kueue suspension stops it, and
    the job waits for admission again), or seen after the fact (Kueue stopped the workers)."""
    st, now = o.status, o.now
    seen = [checkpoints.parse_report(t, seen=now) for p in o.pods for t in (p.report, p.final_report)]
    best = checkpoints.remember(stored_checkpoint(st), seen)
    live = next(
        (j for j in o.jobs if j.owned and not j.deleting and j.name == job_name(o.name, st.restarts)), None
    )
    pods = _attempt_pods(o, live)
    current = st.preemption

    if current is not None and current.state == "Stopping":
        # 4b in `_verdict` deletes the attempt; the record waits until its workers are gone, for the
        # checkpoints they leave as they stop (a trainer without API access answers that way).
        going = next((j for j in o.jobs if j.owned and j.name == job_name(o.name, st.restarts)), None)
        if going is not None and (not going.deleting or any(not p.terminal for p in _attempt_pods(o, going))):
            return _Preempting(v, best, current)
        return _stopped(o, v, current, best)

    if current is not None and current.state == "Settling":
        # Workers being deleted are still stopping: their termination messages are yet to come.
        still = live is not None and live.suspended and any(not p.terminal for p in pods)
        if still:
            return _Preempting(v, best, current)
        stopped = parse_time(current.requested_at) or now
        return _Preempting(v, best, None, _record(current, outcome="stopped", last=best, stopped=stopped))

    if v.kueue_stop and live is not None:
        # Kueue took the attempt without asking: the record waits for what the workers leave behind.
        at = min(live.suspended_at or now, now)
        holding = [p for p in pods if p.start is not None and (p.end is None or p.end >= at)]
        settling = _begin(KUEUE_REASON, "Settling", holding, at)
        if any(not p.terminal for p in pods):
            return _Preempting(v, best, settling)
        return _Preempting(v, best, None, _record(settling, outcome="stopped", last=best, stopped=at))

    active = v.phase in ("Pending", "Running") and live is not None and not live.suspended
    if not active:
        # Nothing to take, or the attempt ended another way while the request waited.
        return _Preempting(v, best, None)
    if current is None:
        if o.preempt is None:
            return _Preempting(v, best, None)
        current = _begin(o.preempt.reason, "WaitingForCheckpoint", _holding(pods), now)
    requested = parse_time(current.requested_at) or now
    progress = checkpoints.progress(
        requested=requested, reports=[best], now=now, grace_seconds=grace_seconds(o.spec)
    )
    if progress.state == "waiting":
        wait = max(1.0, progress.seconds_left)
        requeue = wait if v.requeue_after is None else min(v.requeue_after, wait)
        asked = tuple(sorted(p.name for p in _holding(pods) if p.checkpoint_request != current.requested_at))
        note = (
            f"; checkpoint requested at {current.requested_at} for a preemption ({current.reason}), "
            f"waiting up to {grace_seconds(o.spec):g}s"
        )
        waiting = replace(v, message=v.message + note, requeue_after=requeue)
        return _Preempting(waiting, best, current, request=current.requested_at, request_pods=asked)
    answered: PreemptionOutcome = "checkpointed" if progress.state == "checkpointed" else "timedOut"
    waited = int(max(0.0, (now - requested).total_seconds()))
    message = f"preempting ({current.reason}): stopping the workers after {waited}s, " + (
        "the checkpoint they were asked for came in"
        if answered == "checkpointed"
        else f"no checkpoint came within {grace_seconds(o.spec):g}s"
    )
    stopping = current.model_copy(
        update={"state": "Stopping", "outcome": answered, "stopped_at": format_time(now)}
    )
    stop = replace(
        v,
        phase="Queued",
        reason=PREEMPTED,
        message=message,
        admitted=("False", PREEMPTED, message),
        delete_jobs=tuple(sorted({*v.delete_jobs, live.name})) if live is not None else v.delete_jobs,
        foreground=True,
        status_first=True,
        requeue_after=DELETION_POLL_SECONDS,
        resize=None,
        wants_room=False,
        size=None,
        event=Event("Normal", "Preempting", message),
    )
    return _Preempting(stop, best, stopping)


def _stopped(
    o: Observed, v: _Verdict, stopping: PreemptionInProgress, best: checkpoints.Checkpoint | None
) -> _Preempting:
    """The stopped attempt's workers are gone: the preemption is recorded with the checkpoint the job
    resumes from, which may be one the workers left as they stopped (then nothing was lost)."""
    requested = parse_time(stopping.requested_at) or o.now
    stopped = parse_time(stopping.stopped_at) or o.now
    # The stop itself may have been decided on an answer: that verdict stands. (Re-judging it from the
    # stored checkpoint would not: status times have second precision, and an answer that came in the
    # request's second reads as no later than the request once stored.)
    answered = stopping.outcome == "checkpointed" or (best is not None and best.time > requested)
    outcome: PreemptionOutcome = "checkpointed" if answered else "timedOut"
    record = _record(stopping, outcome=outcome, last=best, stopped=stopped)
    where = f" at step {record.checkpoint_step}" if record.checkpoint_step is not None else ""
    message = (
        f"preempted ({stopping.reason}) after {record.waited_seconds}s: "
        + (
            f"the workers checkpointed{where}"
            if answered
            else f"no checkpoint within {grace_seconds(o.spec):g}s, last checkpoint{where or ': none'}"
        )
        + f"; {record.lost_gpu_hours:g} GPU-hours lost; resumes when GPUs are free"
    )
    event = Event("Normal" if answered else "Warning", PREEMPTED, message)
    # The Event goes with the record, whatever the phase does on this pass.
    return _Preempting(replace(v, extra_events=(*v.extra_events, event)), best, None, record)


def _preemption_status(o: Observed, p: _Preempting) -> dict[str, Any]:
    """The status fields the checkpoint protocol owns."""
    st = o.status
    kept = list(st.preemptions)
    lost = st.lost_gpu_hours
    if p.record is not None:
        kept = [*kept, p.record][-MAX_PREEMPTIONS_KEPT:]
        lost = round(lost + p.record.lost_gpu_hours, 6)
    trigger = st.preempt_trigger
    if o.preempt is not None and o.preempt.trigger is not None:
        trigger = o.preempt.trigger
    found = checkpoint_status(p.checkpoint)
    return {
        "checkpoint": found.to_wire() if found is not None else None,
        "preemption": p.in_progress.to_wire() if p.in_progress is not None else None,
        "preemptions": [r.to_wire() for r in kept],
        "lostGpuHours": lost,
        "preemptTrigger": trigger,
    }
