"""`spec.rollout` and `status.rollout` of an InferenceFleet: progressive delivery of a new revision.

A *revision* is a hash of the fleet's pod template. When the template changes, the new revision becomes
the *canary* and is walked through `steps` (percentages of the fleet's replicas and so of its traffic),
gated at every step by an analysis of its Prometheus metrics against absolute limits and against the
*stable* revision. A failed analysis rolls back automatically and the revision is never promoted again.

Manual control is expressed in spec, level-triggered and idempotent, so the same patch works from the
command line (`kubeforge rollout ...`) and from a GitOps repository, and survives an operator restart:

- `paused: true` holds the rollout at step boundaries;
- `promote: {revision, step}` approves the gates of that revision's steps up to and including `step`;
- `abortRevision: <hash>` aborts the rollout of that revision for as long as it is set;
- `retryAt: <time>` restarts a rollout that aborted itself before that time;
- `targetRevision: <hash>` runs a revision from the history instead of the template's (a rollback).

Naming the revision in `promote` and `abortRevision` means a leftover approval or abort never applies to
a later template by accident. The operator never writes spec; it reports in `status.rollout`.
"""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from kubeforge.api.common import KubeModel

RolloutStrategy = Literal["Canary", "Rolling", "Recreate"]
RolloutPhase = Literal["Progressing", "Paused", "Promoted", "Aborted", "RolledBack"]
Verdict = Literal["Pass", "Fail", "Inconclusive"]
RevisionPhase = Literal["Stable", "Canary", "Superseded", "Failed", "Aborted", "Abandoned"]

REVISION_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""A revision name: a DNS label, since it is the suffix of the revision's Deployment."""
MAX_STEPS = 20
MAX_HISTORY_LIMIT = 25
"""Each revision of the history keeps a ControllerRevision; this caps their count per fleet."""


def _rules(*rules: tuple[str, str, str]) -> ConfigDict:
    """A KubeModel config carrying CEL rules: (rule, message, fieldPath)."""
    return ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": rule, "message": message, "fieldPath": path} for rule, message, path in rules
            ]
        }
    )


class CanaryStep(KubeModel):
    """One step of a canary: a share of the fleet's replicas (and so of its traffic) for the canary."""

    weight: int = Field(ge=1, le=100)
    """Percentage of the fleet's replicas that run the canary: `ceil(replicas * weight / 100)` pods, the
    stable revision runs the rest. Traffic is split by ready replicas."""
    pause_seconds: int | None = Field(default=None, ge=0, le=604800)
    """How long to hold the step once its replicas are ready (and its analysis passes) before the next
    one. Without it the step waits for a manual promote (`kubeforge rollout promote`)."""


class Promotion(KubeModel):
    """Approval of manual gates: the steps of `revision` up to and including `step` may advance without
    waiting for their pause or for a passing analysis (a failing analysis still rolls back)."""

    revision: str = Field(min_length=1, max_length=63, pattern=REVISION_PATTERN)
    """The canary revision the approval is for (`status.rollout.canaryRevision`); an approval for another
    revision is ignored, so a leftover one never promotes a later template."""
    step: int = Field(ge=0, le=MAX_STEPS)
    """Index (from 0) of the last step approved; the last index of `steps` approves a full promotion."""


class AnalysisSpec(KubeModel):
    """Metric gates evaluated every `intervalSeconds` from Prometheus, per revision. Missing metrics are
    *inconclusive*: the rollout pauses, it never promotes on no data."""

    model_config = _rules(
        (
            "has(self.maxErrorRate) || has(self.maxLatencyP95) || has(self.maxErrorRateIncrease)"
            " || has(self.maxLatencyIncreaseRatio)",
            "rollout.analysis needs at least one of maxErrorRate, maxLatencyP95, maxErrorRateIncrease"
            " or maxLatencyIncreaseRatio",
            ".maxErrorRate",
        ),
    )

    interval_seconds: int = Field(default=10, ge=1, le=3600)
    """How often the canary is measured."""
    max_error_rate: float | None = Field(default=None, ge=0, le=1)
    """Largest acceptable share of failed requests of the canary (0.01 = 1%)."""
    max_latency_p95: float | None = Field(default=None, gt=0, le=3600)
    """Largest acceptable 95th-percentile request latency of the canary, in seconds."""
    max_error_rate_increase: float | None = Field(default=None, ge=0, le=1)
    """Largest acceptable error rate of the canary above the stable revision's (0.01 = one point)."""
    max_latency_increase_ratio: float | None = Field(default=None, ge=0, le=100)
    """Largest acceptable relative p95 latency increase over the stable revision (0.2 = 20% slower)."""
    window_seconds: int | None = Field(default=None, ge=1, le=3600)
    """Range of the `rate()` windows of the built-in queries (`$window` in custom ones). Default: 30 s
    or two intervals, whichever is longer. It must span at least two scrapes of the model servers, and
    the shorter it is the sooner a breach shows."""
    failure_limit: int = Field(default=2, ge=1, le=100)
    """Consecutive failed measurements that roll the canary back."""
    inconclusive_limit: int = Field(default=3, ge=1, le=1000)
    """Consecutive measurements without data (or with Prometheus unreachable) that abort the rollout."""
    error_rate_query: str | None = Field(default=None, min_length=1, max_length=4096)
    """Custom PromQL for a revision's error rate (0..1); `$selector` is replaced by the revision's label
    matchers and `$window` by the window (`30s`)."""
    latency_query: str | None = Field(default=None, min_length=1, max_length=4096)
    """Custom PromQL for a revision's p95 latency in seconds; `$selector` as above."""

    @property
    def window(self) -> int:
        """The query window in seconds."""
        return self.window_seconds or max(30, 2 * self.interval_seconds)

    @model_validator(mode="after")
    def _check_limits(self) -> AnalysisSpec:
        limits = (
            self.max_error_rate,
            self.max_latency_p95,
            self.max_error_rate_increase,
            self.max_latency_increase_ratio,
        )
        if all(limit is None for limit in limits):
            raise ValueError(
                "rollout.analysis needs at least one of maxErrorRate, maxLatencyP95, maxErrorRateIncrease"
                " or maxLatencyIncreaseRatio"
            )
        return self


class HTTPRouteRef(KubeModel):
    """A Gateway API HTTPRoute whose backend weights follow the split between revisions."""

    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    """Name of the HTTPRoute, in the fleet's namespace."""


BASELINE_ONLY_MESSAGE = (
    "rollout.analysis has only baseline limits (maxErrorRateIncrease, maxLatencyIncreaseRatio), which"
    " cannot judge a step where the stable revision serves nothing (strategy Rolling or Recreate, or a"
    " last step of weight 100): add maxErrorRate or maxLatencyP95, or end the Canary steps below 100"
)


def relative_only(analysis: AnalysisSpec | None) -> bool:
    """Whether the analysis compares with the stable revision only (no absolute limit)."""
    return analysis is not None and analysis.max_error_rate is None and analysis.max_latency_p95 is None


class RolloutSpec(KubeModel):
    """How a new revision (a change of image, command, args, env, resources or model) replaces the
    running one."""

    model_config = _rules(
        (
            "!has(self.steps) || (self.steps.map(s, s.weight).isSorted()"
            " && self.steps.all(a, self.steps.exists_one(b, b.weight == a.weight)))",
            "rollout.steps weights must be strictly increasing",
            ".steps",
        ),
        (
            "!has(self.steps) || size(self.steps) == 0 || !has(self.strategy) || self.strategy == 'Canary'",
            "rollout.steps is only for the Canary strategy",
            ".steps",
        ),
        (
            "!has(self.analysis) || has(self.analysis.maxErrorRate) || has(self.analysis.maxLatencyP95)"
            " || ((!has(self.strategy) || self.strategy == 'Canary')"
            " && (!has(self.steps) || size(self.steps) == 0"
            " || self.steps[size(self.steps) - 1].weight < 100))",
            BASELINE_ONLY_MESSAGE,
            ".analysis",
        ),
    )

    strategy: RolloutStrategy = "Canary"
    """`Canary`: the new revision takes `steps` of the replicas, gated by analysis. `Rolling`: pods are
    replaced a few at a time (`maxSurge`, the disruption budget's `maxUnavailable`). `Recreate`: all old
    pods go, then the new ones start (no extra GPUs needed, a gap in service)."""
    steps: list[CanaryStep] = Field(default_factory=list, max_length=MAX_STEPS)
    """Canary steps with strictly increasing weights. Empty means 20% and 50%, a minute each. After the
    last step the canary is promoted: it takes all replicas and becomes the stable revision."""
    paused: bool = False
    """Hold the rollout at the current step boundary (a new revision is not started); analysis keeps
    running and a failure still rolls back."""
    promote: Promotion | None = None
    """Manual approval of steps (set by `kubeforge rollout promote`)."""
    abort_revision: str | None = Field(default=None, min_length=1, max_length=63, pattern=REVISION_PATTERN)
    """Abort the rollout of this revision: all traffic goes back to stable and the canary is scaled to
    zero while this is set (`kubeforge rollout abort`); remove it to start the rollout again."""
    retry_at: datetime | None = Field(default=None, json_schema_extra={"maxLength": 64})
    """Restart a rollout that aborted itself (too many inconclusive measurements, or its progress deadline)
    before this time (`kubeforge rollout resume` sets it to now)."""
    target_revision: str | None = Field(default=None, min_length=1, max_length=63, pattern=REVISION_PATTERN)
    """Run this revision from `status.rollout.history` instead of the template's: a rollback that goes
    through the same steps and analysis as any rollout (`kubeforge rollout undo`). While set, changes of
    the template are not rolled out; remove it to follow the template again."""
    analysis: AnalysisSpec | None = None
    """Metric gates; without them steps advance on their pauses alone."""
    history_limit: int = Field(default=10, ge=1, le=MAX_HISTORY_LIMIT)
    """Revisions kept in `status.rollout.history` (and available to `targetRevision`), at most 25: each
    keeps its pod template in a ControllerRevision."""
    max_surge: int = Field(default=1, ge=0, le=1000)
    """Rolling strategy: pods above the desired count while replacing. A Canary surges as far as free GPUs
    allow and swaps in place when there are none."""
    progress_deadline_seconds: int = Field(default=600, ge=10, le=86400)
    """Abort a step whose canary replicas make no progress towards ready for this long (pods Pending for
    lack of GPUs, crash loops)."""
    http_route: HTTPRouteRef | None = None
    """Gateway API HTTPRoute whose backend weights are set from the split between revisions."""

    @model_validator(mode="after")
    def _check_steps(self) -> RolloutSpec:
        weights = [step.weight for step in self.steps]
        if any(a >= b for a, b in pairwise(weights)):
            raise ValueError("rollout.steps weights must be strictly increasing")
        if self.steps and self.strategy != "Canary":
            raise ValueError("rollout.steps is only for the Canary strategy")
        # The last step runs no stable pod (Rolling and Recreate are one step to 100%): a baseline
        # limit has nothing to compare with there, so the rollout could never pass it.
        if relative_only(self.analysis) and (
            self.strategy != "Canary" or (self.steps and self.steps[-1].weight == 100)
        ):
            raise ValueError(BASELINE_ONLY_MESSAGE)
        return self


class AnalysisRun(KubeModel):
    """One measurement of a revision."""

    time: str
    """When it was taken (RFC 3339)."""
    revision: str
    """The revision measured (the canary)."""
    verdict: Verdict
    """`Pass`, `Fail`, or `Inconclusive` (no data, or Prometheus unreachable)."""
    error_rate: float | None = None
    """Canary error rate (0..1)."""
    latency_p95: float | None = None
    """Canary p95 latency, seconds."""
    baseline_error_rate: float | None = None
    """Stable revision's error rate."""
    baseline_latency_p95: float | None = None
    """Stable revision's p95 latency, seconds."""
    message: str = ""
    """Which limits were checked and which were broken."""


class RevisionHistoryEntry(KubeModel):
    """A revision the fleet has run or tried."""

    revision: str
    """Hash of the pod template; the Deployment is `<fleet>-<revision>`."""
    number: int
    """Sequence number, from 1 (`kubeforge rollout undo --to-revision N`)."""
    image: str | None = None
    """Container image of the revision."""
    created_at: str
    """When the operator first saw it."""
    phase: RevisionPhase
    """`Stable`, `Canary`, `Superseded` (served as stable, then replaced by a newer stable), `Failed`
    (rolled back by analysis, never promoted again), `Aborted`, or `Abandoned` (a canary replaced by a
    newer template before it was promoted)."""
    promoted_at: str | None = None
    """When the revision first served as stable; absent when it never did (a canary abandoned,
    aborted or rolled back). `kubeforge rollout undo` goes back only to revisions that have it."""


class RolloutStatus(KubeModel):
    """Where the rollout is, written by the operator only; enough to resume after a restart."""

    phase: RolloutPhase | None = None
    """`Progressing`, `Paused` (spec, a manual gate, or no analysis data), `Promoted` (one revision serves
    everything), `Aborted`, `RolledBack` (the canary failed analysis)."""
    current_step: int | None = None
    """Index of the canary step in progress (from 0)."""
    total_steps: int | None = None
    """Number of steps of the rollout."""
    canary_weight: int = 0
    """Share of traffic (percent) on the canary, from ready replicas."""
    stable_revision: str | None = None
    """The revision that serves when no rollout is in progress."""
    canary_revision: str | None = None
    """The revision being rolled out (or the last one aborted or rolled back)."""
    stable_ready_replicas: int | None = None
    canary_ready_replicas: int | None = None
    failed_revisions: list[str] = Field(default_factory=list)
    """Revisions rolled back by analysis: never promoted again unless the template changes."""
    last_analysis: AnalysisRun | None = None
    """The latest measurement of the canary."""
    consecutive_failures: int = 0
    consecutive_inconclusive: int = 0
    step_started_at: str | None = None
    """When the current step began."""
    step_ready_at: str | None = None
    """When the current step's replicas were first all ready; its pause counts from here."""
    step_targets: dict[str, int] | None = None
    """Replicas the current step asks of each revision. When they change (the autoscaler moved the
    fleet's total, free GPUs came or went), the progress deadline counts from that moment, not from the
    step's start."""
    last_progress_at: str | None = None
    """Last time the canary's ready replicas changed (for the progress deadline)."""
    aborted_at: str | None = None
    """When the rollout aborted itself (cleared by `spec.rollout.retryAt` later than this)."""
    message: str = ""
    """What the rollout is doing or waiting for."""
    history: list[RevisionHistoryEntry] = Field(default_factory=list)
    """The last `historyLimit` revisions, oldest first."""
