"""TrainingJob: a distributed, GPU-scheduled training run, tuned for throughput.

The models below are the API: field docstrings become the CRD's descriptions, pydantic bounds and the
CEL rules in `x-kubernetes-validations` become the API server's validation, so an invalid TrainingJob
is refused by `kubectl apply` with a message naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from kubeforge.api.common import (
    MAX_ARGS_ITEMS,
    MAX_COMMAND_ITEMS,
    MAX_DURATION_SECONDS,
    MAX_ENV_VARS,
    Arg,
    Condition,
    EnvVar,
    KubeModel,
    PodMetadata,
    Resources,
    check_process_totals,
    condition_list_schema,
    process_rules,
)
from kubeforge.api.crdgen import KindInfo, PrinterColumn
from kubeforge.api.names import ATTEMPT_LABEL as ATTEMPT_LABEL
from kubeforge.api.names import GPU_PRODUCT_LABEL as GPU_PRODUCT_LABEL
from kubeforge.api.names import GPU_RESOURCE as GPU_RESOURCE
from kubeforge.api.names import TRAININGJOB_LABEL as TRAININGJOB_LABEL
from kubeforge.api.objective import Objective, PolicyEntry, Privacy, check_objective, objective_rules
from kubeforge.api.usage import TrainingBudget, Usage

KIND = "TrainingJob"

# Children are named `<name>` (headless Service) and `<name>-a<attempt>` (one Indexed Job per attempt);
# the Job controller gives each pod the hostname `<name>-a<attempt>-<index>`, which must be a DNS label
# (<= 63 characters). With attempts below 100 and at most 1000 workers that leaves 52 for the name.
MAX_NAME_LENGTH = 52
MAX_RESTARTS = 99
MAX_WORKERS = 1000
PREEMPT_ANNOTATION = "kubeforge.dev/preempt"
"""On a TrainingJob: a new value (any token up to 63 characters, `kubeforge preempt` writes the time)
asks the operator to preempt the job, checkpoint first; acted on once per value."""
RESIZE_REASON_ANNOTATION = "kubeforge.dev/resize-reason"
"""On an elastic job's attempt Job: why the operator last changed its size, written in the same patch as
`parallelism`, so a status that missed the resize (operator killed in between) still says why."""


def job_name(name: str, attempt: int) -> str:
    """The Job of one attempt: deterministic, so a retried reconcile finds the one it made."""
    return f"{name}-a{attempt}"


Phase = Literal["Pending", "Queued", "Running", "Restarting", "Succeeded", "Failed", "Suspended"]
PHASES: tuple[Phase, ...] = ("Pending", "Queued", "Running", "Restarting", "Succeeded", "Failed", "Suspended")
FINISHED_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed"})

ExitCode = Annotated[int, Field(ge=1, le=255)]

_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_LABEL_VALUE = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"


def _rules(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


class Distributed(KubeModel):
    """How the workers find each other. Immutable after creation."""

    framework: Literal["torchrun", "none"] = "torchrun"
    """`torchrun`: workers get torchrun's `PET_*` variables besides the generic ones; `none`: only the
    generic `MASTER_ADDR`, `MASTER_PORT`, `WORLD_SIZE`, `NNODES`, `NODE_RANK`, `NPROC_PER_NODE`."""
    procs_per_worker: int | None = Field(default=None, ge=1, le=64)
    """Processes per worker (`NPROC_PER_NODE`); defaults to `resources.gpus`, or 1 without GPUs.
    Must not exceed `resources.gpus` when GPUs are requested."""
    port: int = Field(default=29500, ge=1024, le=65535)
    """Rendezvous port of rank 0 (`MASTER_PORT`)."""


StopSignal = Literal["SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2"]

MAX_CHECKPOINT_GRACE_SECONDS = 3600
DEFAULT_CHECKPOINT_GRACE_SECONDS = 120


class Checkpoint(KubeModel):
    """How the workers checkpoint: where (an optional PersistentVolumeClaim mounted in every worker, its
    path handed over as `KUBEFORGE_CHECKPOINT_DIR`) and how long a preemption waits for a checkpoint
    before it takes the GPUs. Immutable after creation."""

    claim_name: str | None = Field(default=None, min_length=1, max_length=253, pattern=_DNS_SUBDOMAIN)
    """Name of a PersistentVolumeClaim in the TrainingJob's namespace (ReadWriteMany for several workers);
    unset when the trainer writes its checkpoints elsewhere (object storage)."""
    mount_path: str = Field(default="/checkpoints", min_length=2, max_length=1024, pattern=r"^/[^:]*[^/:]$")
    """Where the claim is mounted in each worker."""
    grace_period_seconds: int = Field(
        default=DEFAULT_CHECKPOINT_GRACE_SECONDS, ge=0, le=MAX_CHECKPOINT_GRACE_SECONDS
    )
    """How long a preemption waits for the checkpoint it asked for before it stops the workers anyway
    (the work since the last checkpoint is then recorded as lost), and the workers' termination grace
    period, so a trainer that checkpoints on its stop signal has that long too. At most 3600."""
    signal: StopSignal | None = None
    """The signal that stops a worker (default SIGTERM). Other signals need the API server's
    `ContainerStopSignals` feature gate; without it the signal is SIGTERM whatever this says."""


def _no_schema_default(schema: dict[str, Any]) -> None:
    # `workers` defaults to 1 in the models, but not in the CRD: a default stored by the API server could
    # not be told from a value the user wrote, and `workers` and `elastic` are exclusive.
    schema.pop("default", None)


class Elastic(KubeModel):
    """An elastic job: admitted once `minWorkers` fit, then grown by whole workers toward `maxWorkers` as
    GPUs free up, and shrunk back (never below `minWorkers`) when its room is reclaimed. The workers run
    torchrun's elastic rendezvous (`--nnodes=MIN:MAX`, c10d on rank 0), so a resize is a re-rendezvous of
    the running attempt, not a restart. Immutable after creation."""

    min_workers: int = Field(ge=1, le=MAX_WORKERS)
    """Fewest workers the job runs with: it waits in `Queued` until that many fit together."""
    max_workers: int = Field(ge=1, le=MAX_WORKERS)
    """Most workers the job runs with; more are never added, however many GPUs are free."""

    model_config = ConfigDict(
        **KubeModel.model_config,
        json_schema_extra=_rules(
            {
                "rule": "self.minWorkers <= self.maxWorkers",
                "message": "spec.elastic.minWorkers must not exceed spec.elastic.maxWorkers",
                "fieldPath": ".minWorkers",
            }
        ),
    )

    @model_validator(mode="after")
    def _ordered(self) -> Elastic:
        # The CEL rule above, for specs that did not come through the API server.
        if self.min_workers > self.max_workers:
            raise ValueError("spec.elastic.minWorkers must not exceed spec.elastic.maxWorkers")
        return self


class TrainingPolicy(KubeModel):
    """Placement and failure handling, throughput first. Changes apply from the next reconcile."""

    gang: bool | None = None
    """All workers are placed together or none is: kubeforge admits an attempt only when every worker fits
    on Ready nodes of the right GPU type, so two jobs never deadlock holding half the GPUs each. Default:
    on when `workers` > 1."""
    schedule_timeout_seconds: int = Field(default=300, ge=10, le=86400)
    """A gang attempt whose workers are not all scheduled within this time gives its placement back and
    waits in `Queued` again; this counts as a restart. The operator's `--max-schedule-timeout-seconds`
    caps it."""
    max_restarts: int = Field(default=3, ge=0, le=MAX_RESTARTS)
    """Whole-gang restarts after retryable failures (a worker's non-zero exit, a lost node)
    before `Failed`."""
    backoff_seconds: int = Field(default=10, ge=0, le=600)
    """Wait before restart n: `backoffSeconds * 2^(n-1)`, at most 10 minutes."""
    permanent_exit_codes: list[ExitCode] = Field(
        default_factory=list, max_length=32, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Worker exit codes that mean "do not retry" (a bad config, a code bug): the job fails at once."""
    node_loss_timeout_seconds: int = Field(default=60, ge=0, le=3600)
    """How long a worker's node may be NotReady or unreachable before the gang is restarted elsewhere."""


class WorkerSecurityContext(KubeModel):
    """The uid and gids workers run as, for images that need a specific user. Nothing here can make a pod
    privileged or run as root: the `restricted` Pod Security Standard always applies."""

    run_as_user: int | None = Field(default=None, ge=1, le=2147483647)
    """User id of the worker processes (never 0: workers run as non-root)."""
    run_as_group: int | None = Field(default=None, ge=0, le=2147483647)
    """Primary group id of the worker processes."""
    fs_group: int | None = Field(default=None, ge=0, le=2147483647)
    """Group that owns mounted volumes (the checkpoint claim), so the workers can write to them."""


_SPEC_RULES: tuple[dict[str, str], ...] = (
    {
        "rule": "!has(self.distributed) || !has(self.distributed.procsPerWorker) || !has(self.resources)"
        " || !has(self.resources.gpus) || self.resources.gpus == 0"
        " || self.distributed.procsPerWorker <= self.resources.gpus",
        "message": "spec.distributed.procsPerWorker must not exceed spec.resources.gpus",
        "fieldPath": ".distributed.procsPerWorker",
    },
    {
        "rule": "(has(self.workers) ? self.workers : 1) == (has(oldSelf.workers) ? oldSelf.workers : 1)",
        "message": "spec.workers is immutable: create a new TrainingJob to change the gang size",
        "fieldPath": ".workers",
    },
    {
        "rule": "!has(self.elastic) || !has(self.workers)",
        "message": "spec.workers and spec.elastic are exclusive: an elastic job runs between"
        " spec.elastic.minWorkers and spec.elastic.maxWorkers workers; remove spec.workers",
        "fieldPath": ".workers",
    },
    {
        "rule": "has(self.elastic) == has(oldSelf.elastic)"
        " && (!has(self.elastic) || self.elastic == oldSelf.elastic)",
        "message": "spec.elastic is immutable: create a new TrainingJob to change its bounds or to switch"
        " between a fixed and an elastic size",
        "fieldPath": ".elastic",
    },
    {
        "rule": "!has(self.elastic) || !has(self.queueName)",
        "message": "spec.elastic cannot be combined with spec.queueName: a Kueue queue admits a fixed size;"
        " use spec.workers with a queue",
        "fieldPath": ".elastic",
    },
    {
        "rule": "!has(self.elastic) || !has(self.distributed) || !has(self.distributed.framework)"
        " || self.distributed.framework == 'torchrun'",
        "message": "spec.elastic needs spec.distributed.framework torchrun: resizing relies on torchrun's"
        " elastic rendezvous",
        "fieldPath": ".distributed.framework",
    },
    {
        "rule": "!has(self.elastic) || !has(self.policy) || !has(self.policy.gang) || self.policy.gang",
        "message": "spec.policy.gang cannot be false with spec.elastic: an elastic job is admitted when"
        " spec.elastic.minWorkers fit together",
        "fieldPath": ".policy.gang",
    },
    {
        "rule": "has(self.resources) == has(oldSelf.resources)"
        " && (!has(self.resources) || self.resources == oldSelf.resources)",
        "message": "spec.resources is immutable: create a new TrainingJob to change GPUs, CPU or memory",
        "fieldPath": ".resources",
    },
    {
        "rule": "has(self.distributed) == has(oldSelf.distributed)"
        " && (!has(self.distributed) || self.distributed == oldSelf.distributed)",
        "message": "spec.distributed is immutable: create a new TrainingJob to change it",
        "fieldPath": ".distributed",
    },
    {
        "rule": "has(self.checkpoint) == has(oldSelf.checkpoint)"
        " && (!has(self.checkpoint) || self.checkpoint == oldSelf.checkpoint)",
        "message": "spec.checkpoint is immutable: create a new TrainingJob to change it",
        "fieldPath": ".checkpoint",
    },
    {
        "rule": "has(self.queueName) == has(oldSelf.queueName)"
        " && (!has(self.queueName) || self.queueName == oldSelf.queueName)",
        "message": "spec.queueName is immutable",
        "fieldPath": ".queueName",
    },
)


class TrainingJobSpec(KubeModel):
    """What to run and how to keep it running."""

    image: str = Field(min_length=1, max_length=1024, pattern=r"^\S+$")
    """Container image of every worker."""
    command: list[Arg] = Field(default_factory=list, max_length=MAX_COMMAND_ITEMS)
    """Entrypoint; the image's when empty. Pod template changes (image, command, args, env, podMetadata,
    securityContext, priorityClassName) apply from the next attempt; the running one is not disturbed."""
    args: list[Arg] = Field(default_factory=list, max_length=MAX_ARGS_ITEMS)
    """Arguments to the entrypoint. Each entry of `command` and `args` holds at most 4096 characters,
    all of them together at most 32768."""
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=MAX_ENV_VARS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Extra environment variables (at most 256, their values 32768 characters together). Variables
    kubeforge sets (MASTER_ADDR, WORLD_SIZE, NODE_RANK, PET_*, KUBEFORGE_*) cannot be overridden: a rank
    that disagrees with the pods would hang the job."""
    pod_metadata: PodMetadata = Field(default_factory=PodMetadata)
    """Labels and annotations added to every worker pod; reserved keys (kubeforge.dev/*, Kueue's,
    managed-by, AppArmor and seccomp, service-mesh injection) are refused."""
    workers: int = Field(default=1, ge=1, le=MAX_WORKERS, json_schema_extra=_no_schema_default)
    """Worker pods (torchrun's nodes); 1 when unset, exclusive with `elastic`. Immutable after creation."""
    elastic: Elastic | None = None
    """Run between `minWorkers` and `maxWorkers` workers, as many as fit (instead of `workers`)."""
    resources: Resources = Field(default_factory=Resources, json_schema_extra={"default": {}})
    """GPUs, GPU type, CPU and memory of each worker. Immutable after creation."""
    distributed: Distributed = Field(default_factory=Distributed, json_schema_extra={"default": {}})
    """Rendezvous settings. Immutable after creation."""
    checkpoint: Checkpoint | None = None
    """Checkpoint volume. Immutable after creation."""
    suspend: bool = False
    """True removes the workers and keeps the job (and its restart count); false starts it again."""
    active_deadline_seconds: int | None = Field(default=None, ge=1, le=MAX_DURATION_SECONDS)
    """Fail the job when it has been active (Pending, Running or Restarting) this long in total, across
    restarts; time Queued (for GPUs or Kueue) or Suspended does not count (`status.activeSeconds`). At
    most 366 days."""
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, le=MAX_DURATION_SECONDS)
    """Delete the TrainingJob (and its children) this long after it succeeded or failed (at most 366
    days)."""
    priority_class_name: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=_DNS_SUBDOMAIN
    )
    """PriorityClass of the worker pods."""
    queue_name: str | None = Field(default=None, min_length=1, max_length=63, pattern=_LABEL_VALUE)
    """Kueue LocalQueue: the Job is created suspended with `kueue.x-k8s.io/queue-name`, and Kueue admits it
    by unsuspending it (kubeforge's own gang admission is then skipped). Immutable after creation."""
    policy: TrainingPolicy = Field(default_factory=TrainingPolicy, json_schema_extra={"default": {}})
    """Gang placement, restarts and backoff."""
    preemptible: bool | None = None
    """What the job lends to an InferenceFleet whose autoscaler wants GPUs the cluster has no room for
    (see docs/arbitration.md). Unset: an elastic job lends its workers above `minWorkers`, nothing else;
    true: the whole job is lendable, after its checkpoint; false: nothing is ever taken from it. Only
    fleets of higher priority (or of the same priority in the job's own namespace) borrow."""
    security_context: WorkerSecurityContext | None = None
    """User and groups of the worker processes."""
    budget: TrainingBudget | None = None
    """Most the job may cost in all: once `status.usage.cost` reaches `maxCost` the workers are removed
    (as `suspend` does) and the job is `Suspended` with reason `BudgetExceeded` until the budget is
    raised or removed."""
    objective: Objective = "throughput"
    """What the job is tuned for: `throughput` (default), `latency`, `cost`, `energy`, `reliability` or
    `privacy`. The operator derives GPU type, spot use and placement from it (see `status.policy` and
    docs/objectives.md); every field set explicitly wins. Applies from the next attempt."""
    privacy: Privacy | None = None
    """The data region the workers must run in; required with `objective: privacy`, refused
    otherwise."""

    model_config = ConfigDict(
        **KubeModel.model_config, json_schema_extra=_rules(*_SPEC_RULES, *process_rules(), *objective_rules())
    )

    @model_validator(mode="after")
    def _procs_fit_gpus(self) -> TrainingJobSpec:
        # The same rule as the CEL one above, for specs that did not come through the API server.
        procs, gpus = self.distributed.procs_per_worker, self.resources.gpus
        if procs is not None and gpus > 0 and procs > gpus:
            raise ValueError("spec.distributed.procsPerWorker must not exceed spec.resources.gpus")
        check_process_totals(self.command, self.args, self.env)
        if self.elastic is not None:
            if "workers" in self.model_fields_set:
                raise ValueError("spec.workers and spec.elastic are exclusive")
            if self.queue_name:
                raise ValueError("spec.elastic cannot be combined with spec.queueName")
            if self.distributed.framework != "torchrun":
                raise ValueError("spec.elastic needs spec.distributed.framework torchrun")
            if self.policy.gang is False:
                raise ValueError("spec.policy.gang cannot be false with spec.elastic")
        check_objective(self.objective, self.privacy)
        return self

    @property
    def min_workers(self) -> int:
        """Fewest workers an attempt runs with: `elastic.minWorkers`, or `workers`."""
        return self.elastic.min_workers if self.elastic is not None else self.workers

    @property
    def max_workers(self) -> int:
        """Most workers an attempt runs with: `elastic.maxWorkers`, or `workers`."""
        return self.elastic.max_workers if self.elastic is not None else self.workers

    @property
    def gang(self) -> bool:
        """The effective gang setting: explicit, or on for more than one worker; always on for an elastic
        job (its `minWorkers` are admitted together, and it grows by what the capacity ledger says fits)."""
        if self.elastic is not None:
            return True
        return self.policy.gang if self.policy.gang is not None else self.workers > 1

    @property
    def procs_per_worker(self) -> int:
        if self.distributed.procs_per_worker is not None:
            return self.distributed.procs_per_worker
        return max(1, self.resources.gpus)


class WorkerCounts(KubeModel):
    """Worker pods of the current attempt."""

    desired: int = 0
    """Workers the job runs (`spec.workers`; for an elastic job its current size)."""
    active: int = 0
    """Pods pending or running."""
    ready: int = 0
    """Pods running and ready."""
    succeeded: int = 0
    """Pods that exited 0."""
    failed: int = 0
    """Pods that failed."""
    current: int | None = None
    """Elastic jobs: workers the running attempt has now (its Job's parallelism)."""
    min: int | None = None
    """Elastic jobs: `spec.elastic.minWorkers`."""
    max: int | None = None
    """Elastic jobs: `spec.elastic.maxWorkers`."""


ResizeReason = Literal["CapacityFreed", "CapacityReclaimed", "LentToFleet"]


class Resize(KubeModel):
    """A change of an elastic job's size by the operator: not a restart, and not a failure."""

    time: str
    """When the operator resized the attempt."""
    from_: int = Field(alias="from")
    """Workers before."""
    to: int
    """Workers after."""
    reason: ResizeReason
    """`CapacityFreed`: GPUs freed up and more workers fit; `CapacityReclaimed`: workers were given
    back (their room was taken before they could be placed); `LentToFleet`: workers were lent to an
    InferenceFleet (`status.borrowed` of the fleet)."""
    message: str | None = None
    """What happened, in one sentence."""


class CheckpointStatus(KubeModel):
    """The latest checkpoint a worker reported, over all attempts."""

    step: int
    """Training step of the checkpoint."""
    path: str
    """Where the trainer wrote it (handed to resumed workers as `KUBEFORGE_CHECKPOINT_PATH`)."""
    time: str
    """When it was written (the report's time, or when the operator first saw the report)."""


PreemptionState = Literal["WaitingForCheckpoint", "Stopping", "Settling"]
PreemptionOutcome = Literal["checkpointed", "timedOut", "stopped"]
MAX_PREEMPTIONS_KEPT = 10


class PreemptionInProgress(KubeModel):
    """A preemption the operator is carrying out: recorded before anything else, so a restarted operator
    resumes the wait instead of starting a second one."""

    reason: str = Field(max_length=63)
    """Who asked: `Manual` (the `kubeforge.dev/preempt` annotation), or the operator's own reason."""
    requested_at: str
    """When the checkpoint was asked for; the grace period counts from here."""
    state: PreemptionState
    """`WaitingForCheckpoint`: the workers were asked to checkpoint; `Stopping`: the attempt is being
    stopped (its workers get their termination grace period, and the record waits for the checkpoints
    they leave as termination messages); `Settling`: the same after Kueue stopped the workers without
    asking."""
    outcome: PreemptionOutcome | None = None
    """Once `Stopping`: whether the checkpoint came before the stop."""
    gpus: int = 0
    """GPUs the workers held when the preemption began (what the lost work is counted on)."""
    workers_started: str | None = None
    """When the stopped attempt's first worker started."""
    stopped_at: str | None = None
    """Once `Stopping`: when the operator stopped the workers; the record is written once they are
    gone, with the checkpoint they left as termination messages."""


class Preemption(KubeModel):
    """One past preemption of the job's workers."""

    time: str
    """When the workers were stopped."""
    reason: str = Field(max_length=63)
    """Who asked (`Manual`, `Kueue`, or the operator's reason)."""
    outcome: PreemptionOutcome
    """`checkpointed`: a checkpoint answered the request; `timedOut`: the grace period ended first;
    `stopped`: stopped without being asked (Kueue)."""
    checkpoint_step: int | None = None
    """Step of the checkpoint the job resumes from."""
    checkpoint_path: str | None = None
    """Path of the checkpoint the job resumes from."""
    waited_seconds: int = 0
    """Seconds between the request and the stop."""
    lost_gpu_hours: float = 0.0
    """GPU-hours of work since that checkpoint (or since the workers started), thrown away."""


class TrainingJobStatus(KubeModel):
    """Observed state, written by the operator only."""

    phase: Phase | None = None
    """Pending, Queued, Running, Restarting, Succeeded, Failed or Suspended."""
    message: str | None = None
    """What is happening, in one sentence."""
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=condition_list_schema())
    """Ready, Reconciling, Stalled (kstatus), Admitted, Running, Succeeded, Failed."""
    workers: WorkerCounts | None = None
    """Worker pod counts of the current attempt."""
    workers_ready: str | None = None
    """`ready/desired`, for `kubectl get`."""
    last_resize: Resize | None = None
    """Elastic jobs: the last time the operator grew or shrank the running attempt, and why."""
    restarts: int = 0
    """Whole-gang restarts so far."""
    attempt: int = 0
    """Number of the current attempt; its Job is `<name>-a<attempt>`."""
    job_name: str | None = None
    """Name of the current attempt's Job."""
    start_time: str | None = None
    """When the job was first admitted (reset on resume)."""
    active_seconds: int = 0
    """Seconds the job was active (Pending, Running, Restarting) before `activeSince`, over all attempts;
    `activeDeadlineSeconds` counts this plus the current stretch. Time Queued or Suspended is not
    added."""
    active_since: str | None = None
    """Start of the current active stretch; unset while Queued, Suspended or finished."""
    completion_time: str | None = None
    """When the job succeeded or failed."""
    next_attempt_time: str | None = None
    """While Restarting: when the next attempt may start (backoff)."""
    requeued_at: str | None = None
    """When the gang last gave its GPUs back because its workers were not all scheduled in time
    (`ScheduleTimeout`): it queues from then, behind the gangs that waited meanwhile, as Kueue requeues
    an evicted workload by its eviction time. Cleared once it is admitted again: otherwise, and for
    restarts of any other cause, its place is its creation time."""
    gpu_hours: float = 0.0
    """GPU-hours held by the job's workers so far, over all attempts."""
    gpu_hours_as_of: str | None = None
    """Time up to which `gpuHours` is accounted."""
    usage: Usage | None = None
    """GPU-hours, cost and energy so far and the rates in force (see docs/cost.md)."""
    policy: list[PolicyEntry] = Field(default_factory=list)
    """What the operator derived from `spec.objective` (and what explicit fields overrode), each with
    its source: objective, explicit or catalog."""
    checkpoint: CheckpointStatus | None = None
    """The latest checkpoint a worker reported (the `kubeforge.dev/checkpoint` annotation or its
    termination message), over all attempts: new attempts resume from it."""
    preemption: PreemptionInProgress | None = None
    """The preemption in progress, if any."""
    preemptions: list[Preemption] = Field(default_factory=list, max_length=MAX_PREEMPTIONS_KEPT)
    """The last preemptions (at most 10), oldest first."""
    lost_gpu_hours: float = 0.0
    """GPU-hours of work thrown away by all preemptions so far."""
    preempt_trigger: str | None = Field(default=None, max_length=63)
    """The last `kubeforge.dev/preempt` annotation value the operator acted on."""
    observed_generation: int | None = None
    """The `metadata.generation` this status was computed from."""


INFO = KindInfo(
    kind=KIND,
    plural="trainingjobs",
    singular="trainingjob",
    short_names=("tj",),
    spec_model=TrainingJobSpec,
    status_model=TrainingJobStatus,
    description=(
        "A distributed, GPU-scheduled training run: gang-placed workers in an Indexed Job, whole-gang "
        "restarts with backoff, checkpoints, suspend/resume and Kueue queues."
    ),
    # On the root, since only it sees metadata.name (the API server takes no fieldPath into metadata).
    root_validations=(
        {
            "rule": f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
            "message": f"metadata.name must be at most {MAX_NAME_LENGTH} characters: worker pod hostnames"
            " `<name>-a<attempt>-<index>` must fit in 63",
        },
        {
            "rule": "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
            "message": "metadata.name must be a DNS label starting with a letter (it names the workers'"
            " headless Service)",
        },
    ),
    printer_columns=(
        PrinterColumn("Phase", ".status.phase", description="Lifecycle phase"),
        PrinterColumn(
            "Workers",
            ".status.workersReady",
            description="Ready workers / desired workers (elastic jobs: and their min-max range)",
        ),
        PrinterColumn("GPUs", ".spec.resources.gpus", type="integer", description="GPUs per worker"),
        PrinterColumn("GPU-Type", ".spec.resources.gpuType", description="GPU model", priority=1),
        PrinterColumn("Restarts", ".status.restarts", type="integer", description="Whole-gang restarts"),
        PrinterColumn("GPU-Hours", ".status.gpuHours", type="number", description="GPU-hours held so far"),
        PrinterColumn("Cost", ".status.usage.cost", type="number", description="Cost so far", priority=1),
        PrinterColumn("Objective", ".spec.objective", description="What the job is tuned for"),
        PrinterColumn("Message", ".status.message", description="What is happening", priority=1),
        PrinterColumn(
            "Preemptible", ".spec.preemptible", type="boolean", description="Lendable whole", priority=1
        ),
    ),
)
