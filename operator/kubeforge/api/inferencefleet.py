"""InferenceFleet: a GPU model-serving fleet with latency-driven autoscaling and progressive rollouts.

The spec describes one serving pod template (a *revision*), how many replicas to run or how to choose
that number from a Prometheus metric, how to place and protect the pods, and how a new revision replaces
the running one (`spec.rollout`, see `kubeforge.api.rollout`). A fleet without `spec.rollout` replaces
a revision as a Deployment would (the `Rolling` strategy, no analysis), so fleets written before
rollouts existed behave as they did.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, WithJsonSchema, model_validator

from kubeforge.api import common
from kubeforge.api.common import Condition, EnvVar, KubeModel, PodMetadata, Resources, condition_list_schema
from kubeforge.api.crdgen import KindInfo, PrinterColumn, ScaleSubresource
from kubeforge.api.objective import Objective, PolicyEntry, Privacy, check_objective, objective_rules
from kubeforge.api.rollout import RolloutSpec, RolloutStatus
from kubeforge.api.usage import FleetBudget, Usage

KIND = "InferenceFleet"

PERCENT_PATTERN = r"^(100|[1-9]?[0-9])%$"

MAX_REVISION_BYTES = 800 * 1024
"""The largest ControllerRevision a fleet's pod template can make, in JSON bytes, given the CRD's bounds
(a unit test builds the largest spec and measures it): well below the 1.5 MiB etcd takes. With at most
`historyLimit` + 3 of them per fleet (the history, the template's, the stable and the canary revision),
their count and bytes are capped."""


def _check_int_or_percent(value: int | str) -> int | str:
    if isinstance(value, bool):
        raise ValueError("must be an integer or a percentage")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if not re.fullmatch(PERCENT_PATTERN, value):
        raise ValueError("must be an integer or a percentage such as 25%")
    return value


IntOrPercent = Annotated[
    int | str,
    AfterValidator(_check_int_or_percent),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "pattern": PERCENT_PATTERN,
            "maxLength": 4,
            "x-kubernetes-validations": [
                {
                    "rule": "type(self) == int ? self >= 0 : self.matches('" + PERCENT_PATTERN + "')",
                    "message": "must be a non-negative integer or a percentage such as 25%",
                }
            ],
        }
    ),
]

MetricName = Literal[
    "latencyP95", "ttftP95", "queueDepth", "concurrency", "requestsPerSecond", "gpuUtilization"
]
METRIC_NAMES: tuple[MetricName, ...] = (
    "latencyP95",
    "ttftP95",
    "queueDepth",
    "concurrency",
    "requestsPerSecond",
    "gpuUtilization",
)


def _rules(*rules: tuple[str, str, str]) -> ConfigDict:
    """A KubeModel config carrying CEL rules: (rule, message, fieldPath)."""
    return ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": rule, "message": message, "fieldPath": path} for rule, message, path in rules
            ]
        }
    )


class ModelRef(KubeModel):
    """The model the fleet serves; handed to every pod as MODEL_NAME and MODEL_URI."""

    name: str = Field(min_length=1, max_length=253)
    """Model name, e.g. `meta-llama/Llama-3.1-8B-Instruct`."""
    uri: str | None = Field(default=None, min_length=1, max_length=2048)
    """Where the weights come from, e.g. `s3://models/llama-3.1-8b` or `hf://meta-llama/...`."""
    memory_gib: float | None = Field(default=None, gt=0, le=16384, alias="memoryGiB")
    """GPU memory one replica needs for the model (weights and KV cache), in GiB. When the objective
    chooses the GPU type, only types whose memory times `resources.gpus` holds it are considered."""


class Disruption(KubeModel):
    """Voluntary-disruption budget for the fleet's pods (made into a PodDisruptionBudget)."""

    max_unavailable: IntOrPercent = 1
    """Pods that may be down at once for drains and evictions: a number or a percentage."""


class Placement(KubeModel):
    """Spreading of replicas across failure domains; on by default, since serving is judged by
    availability. Zone spread is a preference by default (`ScheduleAnyway`): GPUs of one type are often
    in one or two zones, and a hard rule would refuse a scale-up the cluster could serve."""

    spread_zones: bool = True
    """Spread pods across `topology.kubernetes.io/zone`."""
    spread_nodes: bool = True
    """Spread pods across nodes (`kubernetes.io/hostname`), always as a preference."""
    max_skew: int = Field(default=1, ge=1, le=100)
    """Largest allowed difference in pod count between two zones (or nodes)."""
    require_zone_spread: bool = False
    """Make the zone spread a hard rule (`DoNotSchedule`): pods stay Pending rather than pile into one
    zone."""


class ScaleToZero(KubeModel):
    """Scale the fleet to zero replicas when idle, and back to `minReplicas` on demand."""

    model_config = _rules(
        (
            "!self.enabled || has(self.activationQuery)",
            "autoscaling.scaleToZero.activationQuery is required when scale to zero is enabled",
            ".activationQuery",
        ),
    )

    enabled: bool = False
    """Allow zero replicas."""
    idle_seconds: int = Field(default=300, ge=10, le=86400)
    """How long the request rate must stay at zero before the fleet goes to zero."""
    activation_threshold: float = Field(default=0.0, ge=0)
    """Request rate (requests per second) above which a fleet at zero wakes up."""
    activation_query: str | None = Field(default=None, min_length=1, max_length=4096)
    """PromQL giving the fleet's total request rate, including while it has no pods (e.g. measured at a
    gateway or router in front of it); `$selector` is filled in as for `query`. Required when enabled:
    pods that do not exist cannot report the traffic that should wake them."""


class Autoscaling(KubeModel):
    """Built-in autoscaler, modelled on Knative's KPA: a stable window, a short panic window that scales
    up at once on a large breach, a tolerance band, and a scale-down stabilization window. The metric
    comes from Prometheus (the operator's `--prometheus-url`)."""

    model_config = _rules(
        (
            "self.minReplicas <= self.maxReplicas",
            "autoscaling.minReplicas must not be greater than autoscaling.maxReplicas",
            ".minReplicas",
        ),
        (
            "has(self.metric) != has(self.query)",
            "autoscaling needs exactly one of autoscaling.metric or autoscaling.query",
            ".metric",
        ),
        (
            "self.panicWindowSeconds <= self.stableWindowSeconds",
            "autoscaling.panicWindowSeconds must not be longer than autoscaling.stableWindowSeconds",
            ".panicWindowSeconds",
        ),
    )

    enabled: bool = True
    """Turn the autoscaler off without deleting its settings; `spec.replicas` then rules."""
    min_replicas: int = Field(default=1, ge=1, le=1000)
    """Never fewer replicas than this (except at zero, when `scaleToZero` is enabled)."""
    max_replicas: int = Field(ge=1, le=1000)
    """Never more replicas than this."""
    metric: MetricName | None = None
    """A built-in signal with a default PromQL query: `latencyP95` and `ttftP95` (seconds),
    `queueDepth` and `concurrency` (requests per replica), `requestsPerSecond` (per replica),
    `gpuUtilization` (percent, 0-100)."""
    query: str | None = Field(default=None, min_length=1, max_length=4096)
    """A custom PromQL query returning one number; `$selector` (or `{{selector}}`) is replaced by the
    fleet's label matchers, e.g. `namespace="ns",kubeforge_dev_inferencefleet="name"`. Treated as a
    per-replica load: replicas grow in proportion to value / target."""
    target: float = Field(gt=0)
    """The value to hold the metric at (same unit as the metric)."""
    interval_seconds: int = Field(default=10, ge=1, le=3600)
    """How often the autoscaler queries Prometheus and decides."""
    stable_window_seconds: int = Field(default=60, ge=1, le=3600)
    """Window of the averaged metric used for ordinary decisions."""
    panic_window_seconds: int = Field(default=6, ge=1, le=3600)
    """Short window used to detect a burst."""
    panic_threshold: float = Field(default=2.0, ge=1.0, le=100.0)
    """Enter panic mode when the panic window asks for this many times the ready replicas (2.0 = 200%).
    In panic the fleet scales up at once and never scales down."""
    tolerance: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Relative deviation from the target that causes no change (0.1 = within 10%)."""
    scale_down_stabilization_seconds: int = Field(default=300, ge=0, le=86400)
    """Scale down only to the highest recommendation of this many past seconds."""
    max_scale_up_rate: float = Field(default=10.0, ge=1.0, le=1000.0)
    """At most this factor more replicas than ready ones per decision (at least one more)."""
    max_scale_down_rate: float = Field(default=2.0, ge=1.0, le=1000.0)
    """At most this factor fewer replicas per decision (2.0 = at most halve)."""
    scale_to_zero: ScaleToZero | None = None
    """Optional scale to zero when idle."""


class SecurityContext(KubeModel):
    """Identity the serving container runs as; the `restricted` profile is always kept."""

    run_as_user: int | None = Field(default=None, ge=1, le=2147483647)
    """UID (never 0: fleets run as non-root)."""
    run_as_group: int | None = Field(default=None, ge=0, le=2147483647)
    """GID."""
    fs_group: int | None = Field(default=None, ge=0, le=2147483647)
    """Group that owns mounted volumes."""


class InferenceFleetSpec(KubeModel):
    """Desired state of a serving fleet."""

    model_config = ConfigDict(
        **KubeModel.model_config,
        json_schema_extra={"x-kubernetes-validations": [*common.process_rules(), *objective_rules()]},
    )

    model: ModelRef
    """The model served."""
    image: str = Field(min_length=1, max_length=1024)
    """Container image of the model server, e.g. `vllm/vllm-openai:v0.8.5`."""
    command: list[common.Arg] = Field(default_factory=list, max_length=common.MAX_COMMAND_ITEMS)
    """Entrypoint override."""
    args: list[common.Arg] = Field(default_factory=list, max_length=common.MAX_ARGS_ITEMS)
    """Arguments to the entrypoint. Each entry of `command` and `args` holds at most 4096 characters,
    all of them together at most 32768."""
    env: list[EnvVar] = Field(default_factory=list, max_length=common.MAX_ENV_VARS)
    """Extra environment (at most 256 variables, their values 32768 characters together); MODEL_NAME,
    MODEL_URI and PORT are set by kubeforge."""
    pod_metadata: PodMetadata = Field(default_factory=PodMetadata)
    """Labels and annotations added to every pod; reserved keys (kubeforge.dev/*, Kueue's, managed-by,
    AppArmor and seccomp, service-mesh injection) are refused."""
    port: int = Field(default=8000, ge=1, le=65535)
    """Port the model server listens on (HTTP), exposed by the fleet's Service."""
    readiness_path: str = Field(default="/health", min_length=1, max_length=1024, pattern=r"^/")
    """HTTP path answering 200 once the model is loaded."""
    resources: Resources = Field(default_factory=Resources)
    """Resources of each replica."""
    replicas: int = Field(default=1, ge=0, le=1000)
    """Replicas when the autoscaler is off (the `scale` subresource writes this)."""
    priority_class_name: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
    )
    """PriorityClass of the pods."""
    kueue_queue_name: str | None = Field(
        default=None, min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
    )
    """Kueue LocalQueue (in the fleet's namespace) through which the fleet asks Kueue for GPUs that
    Kueue-admitted training holds, when its autoscaler wants replicas the cluster has no room for
    (docs/arbitration.md). The fleet's own pods never wait for Kueue; without it, training admitted by
    Kueue is never asked for anything."""
    disruption: Disruption = Field(default_factory=Disruption)
    """PodDisruptionBudget settings."""
    placement: Placement = Field(default_factory=Placement)
    """Topology spread of the replicas."""
    autoscaling: Autoscaling | None = None
    """Metric-driven autoscaling; without it the fleet runs `replicas` replicas."""
    security_context: SecurityContext | None = None
    """UID, GID and fsGroup of the pods."""
    budget: FleetBudget | None = None
    """What the fleet may spend: the autoscaler never asks for more replicas than `maxCostPerHour` (and
    `maxEnergyKWhPerDay`) buys, and the fleet then says `BudgetLimited`."""
    objective: Objective = "latency"
    """What the fleet is tuned for: `latency` (default), `throughput`, `cost`, `energy`, `reliability` or
    `privacy`. The operator derives GPU type, spot use, placement and autoscaler defaults from it (see
    `status.policy` and docs/objectives.md); every field set explicitly wins. Part of the pod template: a
    change rolls out like any template change."""
    privacy: Privacy | None = None
    """Data region, allowed client namespaces and egress destinations; required with
    `objective: privacy`, refused otherwise."""
    rollout: RolloutSpec | None = None
    """How a new revision (a change of the pod template) replaces the running one: canary steps gated
    by Prometheus analysis, automatic rollback, manual control. Without it a new revision replaces the
    old one as a Deployment would (`Rolling`, one pod above the desired count, no analysis)."""

    @model_validator(mode="after")
    def _process_fits(self) -> InferenceFleetSpec:
        # The same totals as the CEL rules, for specs that did not come through the API server.
        common.check_process_totals(self.command, self.args, self.env)
        check_objective(self.objective, self.privacy)
        return self

    @property
    def autoscaler_on(self) -> bool:
        return self.autoscaling is not None and self.autoscaling.enabled

    @property
    def rollout_spec(self) -> RolloutSpec:
        """`spec.rollout`, or the Rolling replacement a fleet without it gets."""
        return self.rollout if self.rollout is not None else DEFAULT_ROLLOUT


DEFAULT_ROLLOUT = RolloutSpec(strategy="Rolling")
"""What a fleet without `spec.rollout` gets: replaced a pod at a time, like a Deployment."""


class Endpoint(KubeModel):
    """Where clients reach the fleet."""

    service: str
    """In-cluster DNS name of the fleet's Service."""
    port: int
    """Service port."""
    url: str
    """Base URL, `http://<service>:<port>`."""


class Recommendation(KubeModel):
    """One past replica recommendation, kept for the scale-down stabilization window."""

    time: str
    replicas: int


class AutoscalerStatus(KubeModel):
    """The last autoscaler decision, and what it needs to resume after an operator restart."""

    metric: str | None = None
    """Metric name, or `query` for a custom query."""
    metric_value: float | None = None
    """Value read at the last evaluation (stable-window average); absent when unavailable."""
    panic_value: float | None = None
    """Panic-window average at the last evaluation."""
    target: float | None = None
    current_replicas: int | None = None
    """Ready replicas seen at the last evaluation."""
    desired_replicas: int | None = None
    """Replicas the autoscaler asked for."""
    recommended_replicas: int | None = None
    """The raw recommendation, before stabilization, rate limits and bounds."""
    reason: str | None = None
    """Why: ScaleUp, ScaleDown, PanicScaleUp, WithinTolerance, Stabilizing, MetricsUnavailable, ..."""
    message: str | None = None
    mode: Literal["stable", "panic"] | None = None
    last_decision_time: str | None = None
    last_scale_time: str | None = None
    """When the autoscaler last changed the count."""
    panic_until: str | None = None
    """Panic mode lasts until this time unless renewed."""
    idle_since: str | None = None
    """Since when the request rate has been zero (scale to zero)."""
    breach_rate_per_replica: float | None = None
    """For latency metrics: the lowest request rate per replica at which the target was seen broken;
    a scale-down never puts more than (1 - tolerance) times this on a replica."""
    recommendations: list[Recommendation] = Field(default_factory=list)
    """Recommendations inside the scale-down stabilization window."""


MAX_BORROWED = 16
"""Borrowed entries a fleet keeps at most: each names one TrainingJob it holds workers of."""


class Borrowed(KubeModel):
    """GPUs this fleet took from one TrainingJob (`docs/arbitration.md`). The fleet is the only writer of
    this record; the job's controller reads it and keeps the job at most at `fromWorkers - workers`, or
    stopped while an entry says `whole`."""

    job: str = Field(max_length=317)
    """`<namespace>/<name>` of the TrainingJob."""
    workers: int = Field(ge=1)
    """Workers taken from it."""
    gpus: int = Field(ge=0)
    """GPUs those workers held."""
    from_workers: int = Field(ge=1)
    """Workers the job had when they were taken."""
    replicas: int = Field(ge=0)
    """Replicas of this fleet the taken GPUs make room for."""
    for_replicas: int = Field(ge=0)
    """Replicas the fleet could run with these GPUs when it borrowed them (what it could run without
    them, plus `replicas`): it gives back once it wants no more than `forReplicas - replicas` for the
    operator's `--gpu-return-after-seconds`."""
    since: str
    """When the workers were taken (RFC 3339)."""
    calm_since: str | None = None
    """Since when the fleet has wanted no more than it could run without these GPUs."""
    whole: bool = False
    """The job was preempted whole (it is `spec.preemptible`, and asked for a checkpoint first): it stays
    `Queued` (`LentToFleet`) until every fleet holding it whole gives it back, then resumes from its
    checkpoint."""


class KueueClaim(KubeModel):
    """What this fleet asked Kueue for (`docs/arbitration.md`): one Kueue Workload per replica, named
    `<fleet>-kueue-<n>`, in `queue`, at the fleet's priority. Kueue admits them, preempting lower-priority
    workloads as its ClusterQueue's preemption settings allow; they are deleted once the fleet has
    wanted no more than it could run without them for `--gpu-return-after-seconds`."""

    queue: str = Field(max_length=63)
    """The LocalQueue (`spec.kueueQueueName` when they were made)."""
    replicas: int = Field(ge=1)
    """Replicas asked for: one Workload each."""
    admitted: int = Field(default=0, ge=0)
    """Of those, the Workloads Kueue has admitted."""
    for_replicas: int = Field(ge=0)
    """Replicas the fleet could run with what it asked for, when it asked (what it could run without,
    plus `replicas`): the claims go once it wants no more than `forReplicas - replicas` long enough."""
    since: str
    """When the first of them was made (RFC 3339)."""
    calm_since: str | None = None
    """Since when the fleet has wanted no more than it could run without them."""
    message: str | None = Field(default=None, max_length=1024)
    """Kueue's word on a Workload it has not admitted (why it waits)."""


class InferenceFleetStatus(KubeModel):
    """Observed state, written by the operator only."""

    observed_generation: int | None = None
    replicas: int | None = None
    """Pods of the fleet that exist (all revisions)."""
    ready_replicas: int | None = None
    desired_replicas: int | None = None
    """Replicas the operator asks for (spec.replicas, or the autoscaler's decision)."""
    selector: str | None = None
    """Label selector of the fleet's pods, for the scale subresource."""
    revision: str | None = None
    """Hash of the current pod template; the Deployment is `<name>-<revision>`."""
    endpoint: Endpoint | None = None
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=condition_list_schema())
    autoscaler: AutoscalerStatus | None = None
    rollout: RolloutStatus | None = None
    """Progress of the rollout of a new revision, the revision history, the last analysis."""
    usage: Usage | None = None
    """GPU-hours, cost and energy so far and the rates in force (see docs/cost.md)."""
    policy: list[PolicyEntry] = Field(default_factory=list)
    """What the operator derived from `spec.objective` (and what explicit fields overrode), each with
    its source: objective, explicit or catalog."""
    borrowed: list[Borrowed] | None = Field(default=None, max_length=MAX_BORROWED)
    """GPUs this fleet holds that training lent it, per TrainingJob, until it gives them back (absent
    when it holds none)."""
    kueue_claim: KueueClaim | None = None
    """GPUs this fleet asked Kueue for (`spec.kueueQueueName`), until it gives them back."""


INFO = KindInfo(
    kind=KIND,
    plural="inferencefleets",
    singular="inferencefleet",
    short_names=("fleet", "fleets"),
    spec_model=InferenceFleetSpec,
    status_model=InferenceFleetStatus,
    description="A fleet of GPU model servers behind one Service, with latency-driven autoscaling.",
    printer_columns=(
        PrinterColumn("Model", ".spec.model.name"),
        PrinterColumn("Desired", ".status.desiredReplicas", "integer"),
        PrinterColumn("Ready", ".status.readyReplicas", "integer"),
        PrinterColumn("Metric", ".status.autoscaler.metricValue", "number", priority=1),
        PrinterColumn("Reason", ".status.autoscaler.reason", priority=1),
        PrinterColumn("Rollout", ".status.rollout.phase"),
        PrinterColumn("Canary", ".status.rollout.canaryWeight", "integer", priority=1),
        PrinterColumn("Cost/h", ".status.usage.costPerHour", "number", priority=1),
        PrinterColumn("Status", '.status.conditions[?(@.type=="Ready")].reason'),
        PrinterColumn("Objective", ".spec.objective", description="What the fleet is tuned for"),
    ),
    scale=ScaleSubresource(),
)
