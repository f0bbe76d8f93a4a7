"""The rollout state machine of an InferenceFleet, as one pure function: `plan_rollout(inputs) -> plan`.

Each revision (a hash of the pod template) runs in its own Deployment behind the fleet's one Service, so
traffic splits by ready replicas. The plan says how many replicas each revision's Deployment should have,
the HTTPRoute weights, the new `status.rollout`, and the events to emit. Everything it needs to resume is
in that status, so an operator killed at any point picks up where it was.

Rules, in the order they apply:

1. The *desired* revision is `spec.rollout.targetRevision` when set (a rollback), else the template's.
2. Desired equal to stable: nothing to roll out; any other revision is drained (phase `Promoted`).
3. A desired revision in `failedRevisions` is refused (phase `RolledBack`) until the template changes.
4. `abortRevision` naming the canary aborts it (`Aborted`) for as long as it is set; a rollout that
   aborted itself stays `Aborted` until `retryAt` is later than `abortedAt`, or the template changes.
5. Otherwise the canary walks its steps. A step starts (unless `paused`), moves replicas towards its
   targets (`step_targets`: both revisions rounded up, so a small fleet keeps a baseline), and completes
   once its replicas are ready, its pause is over and a measurement taken at that weight passed (or a
   `promote` approval covers it). After the last step it is promoted.
6. At any point `failureLimit` failed measurements in a row (only a pass breaks the row) roll back
   (all replicas and traffic to stable at once, the revision marked failed); `inconclusiveLimit`
   measurements without data in a row, or a step with no progress for `progressDeadlineSeconds`
   (counted from the later of the step's start, the canary's last change of ready pods and the last
   change of the step's targets), abort.

Replica moves between revisions (`plan_moves`) never ask for more pods than the free capacity allows,
and only remove ready pods while the fleet keeps `total` ready pods (when the surge fits) or
`total - maxUnavailable` (when it does not: a swap in place, one pod down and one up).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from kubeforge.api.rollout import (
    AnalysisRun,
    CanaryStep,
    RevisionHistoryEntry,
    RevisionPhase,
    RolloutPhase,
    RolloutSpec,
    RolloutStatus,
)
from kubeforge.policy.conditions import ConditionUpdate, format_time, parse_time
from kubeforge.policy.events import Event, EventType

DEFAULT_STEPS: tuple[CanaryStep, ...] = (
    CanaryStep(weight=20, pause_seconds=60),
    CanaryStep(weight=50, pause_seconds=60),
)
"""The steps of a Canary whose `steps` list is empty."""
FULL_STEP: tuple[CanaryStep, ...] = (CanaryStep(weight=100, pause_seconds=0),)
"""Rolling and Recreate are one step to 100%, gated by analysis like any step."""
MIN_FAILED_KEPT = 10
"""`failedRevisions` keeps at least this many entries, whatever the history limit."""
MOVING_REQUEUE_SECONDS = 5.0
ACTIVE: frozenset[RolloutPhase | None] = frozenset({"Progressing", "Paused"})

RolloutEvent = Event
"""The rollout's events are plain Events; the name stays for readers of the state machine."""


@dataclass(frozen=True)
class RevisionState:
    """What the API server says about one revision's Deployment and pods."""

    replicas: int = 0
    """The Deployment's `spec.replicas`."""
    ready: int = 0
    """Its `status.readyReplicas`."""
    pending: int = 0
    """Its pods that are Pending unscheduled (for lack of GPUs, typically)."""
    terminating: int = 0
    """Its pods being deleted that still exist: no longer counted ready by the ReplicaSet, but still
    running (and holding their GPUs) until they are gone. Recreate waits for them."""


@dataclass(frozen=True)
class RolloutInputs:
    spec: RolloutSpec
    status: RolloutStatus | None
    """`status.rollout` as last written (None on a new fleet)."""
    template_revision: str
    """Hash of the current pod template."""
    total_replicas: int
    """Replicas the fleet should run in all (the autoscaler's decision or `spec.replicas`)."""
    now: datetime
    revisions: Mapping[str, RevisionState] = field(default_factory=dict)
    """Every revision Deployment of the fleet that exists."""
    template_image: str | None = None
    """Image of the template revision, for the history."""
    max_unavailable: int = 1
    """The disruption budget's maxUnavailable, resolved to a count (`resolve_max_unavailable`)."""
    surge_capacity: int | None = None
    """Pods that fit on the free GPUs now (free GPUs // GPUs per pod), before the fleet's own Pending
    pods take them (the plan subtracts those); None when unknown (no GPUs requested): surges are then
    unbounded."""
    analysis: AnalysisRun | None = None
    """The latest measurement (`AnalysisOutcome.record`); counted once, by its time."""


@dataclass(frozen=True)
class RolloutPlan:
    status: RolloutStatus
    """The new `status.rollout`."""
    replicas: Mapping[str, int]
    """Desired `spec.replicas` of each revision Deployment to apply (create when missing)."""
    weights: Mapping[str, int]
    """Traffic percentages per revision (sum 100), from ready replicas: the HTTPRoute backend weights."""
    delete: tuple[str, ...]
    """Revision Deployments to delete (drained, no longer stable or canary)."""
    events: tuple[RolloutEvent, ...]
    progressing: ConditionUpdate
    """The fleet's `Progressing` condition as the rollout sees it."""
    degraded: ConditionUpdate | None
    """`Degraded` when the rollout is the cause (RolledBack, RolloutAborted, RevisionNotFound), else None."""
    analyze: str | None
    """Revision to measure (the canary), when a measurement can tell anything."""
    baseline: str | None
    """Revision to compare with (the stable), when it has ready pods."""
    requeue_after: float | None
    """Seconds until something is due (a pause ends, a measurement, pods to watch)."""

    @property
    def stable_replicas(self) -> int:
        return self.replicas.get(self.status.stable_revision or "", 0)

    @property
    def canary_replicas(self) -> int:
        return self.replicas.get(self.status.canary_revision or "", 0)


# --------------------------------------------------------------------------------------------- helpers


def resolve_max_unavailable(value: int | str, total: int) -> int:
    """A PodDisruptionBudget's maxUnavailable as a count; percentages round up, as the disruption
    controller does."""
    if isinstance(value, int):
        return max(0, value)
    percent = int(value.rstrip("%"))
    return math.ceil(total * percent / 100)


def effective_steps(spec: RolloutSpec) -> tuple[CanaryStep, ...]:
    if spec.strategy != "Canary":
        return FULL_STEP
    return tuple(spec.steps) or DEFAULT_STEPS


def canary_replicas(total: int, weight: int) -> int:
    """Replicas of the canary at a weight: `ceil(total * weight / 100)`, at most `total`."""
    return min(total, math.ceil(total * weight / 100))


def split_weights(ready: Mapping[str, int], fallback: str) -> dict[str, int]:
    """Percentages proportional to ready replicas, summing to 100 (largest remainder; ties favour
    `fallback`, then go by name). With nothing ready, everything goes to `fallback`."""
    positive = {name: count for name, count in ready.items() if count > 0}
    total = sum(positive.values())
    if total == 0:
        return {name: (100 if name == fallback else 0) for name in {*ready, fallback}}
    exact = {name: 100 * count / total for name, count in positive.items()}
    weights = {name: math.floor(value) for name, value in exact.items()}
    left = 100 - sum(weights.values())
    for name in sorted(exact, key=lambda n: (-(exact[n] - weights[n]), n != fallback, n))[:left]:
        weights[name] += 1
    return {name: weights.get(name, 0) for name in ready}


def plan_moves(
    current: Mapping[str, RevisionState],
    targets: Mapping[str, int],
    *,
    total: int,
    max_unavailable: int,
    surge_capacity: int | None,
    max_surge: int | None = None,
) -> dict[str, int]:
    """One move of replicas towards `targets` (revisions missing from it go to zero).

    Canary mode (`max_surge` None): when the free capacity fits every pod still to add, the new pods are
    added at once and old ready pods are removed only as the fleet has more than `total` ready (no loss
    of capacity). When it does not fit, pods swap in place: old pods are removed while the fleet keeps
    `total - max_unavailable` ready, and the freed GPUs go to new pods. Rolling mode (`max_surge` set):
    always the swap floor, and never more than `total + max_surge` pods.

    Unready pods of a shrinking revision go first (they serve nothing; the ReplicaSet controller picks
    them first too); Pending ones free no GPU. Revisions going to zero shrink before others.
    """
    names = sorted({*current, *targets})
    state = {n: current.get(n, RevisionState()) for n in names}
    cur = {n: max(0, state[n].replicas) for n in names}
    ready = {n: max(0, min(state[n].ready, cur[n])) for n in names}
    target = {n: max(0, targets.get(n, 0)) for n in names}
    need, spare = _surge_room(current, targets, surge_capacity)
    surging = max_surge is None and (spare is None or spare >= need)
    floor = total if surging else max(0, total - max_unavailable)
    budget = max(0, sum(ready.values()) - floor)

    new = dict(cur)
    freed = 0
    for n in sorted(names, key=lambda n: (target[n] != 0, n)):
        excess = cur[n] - target[n]
        if excess <= 0:
            continue
        unready = cur[n] - ready[n]
        drop_unready = min(excess, unready)
        drop_ready = min(excess - drop_unready, budget)
        budget -= drop_ready
        new[n] = cur[n] - drop_unready - drop_ready
        pending_dropped = min(drop_unready, max(0, state[n].pending))
        freed += drop_unready + drop_ready - pending_dropped

    allowance = need if spare is None else max(0, spare + freed)
    if max_surge is not None:
        allowance = min(allowance, max(0, total + max_surge - sum(new.values())))
    for n in names:
        add = min(max(0, target[n] - new[n]), allowance)
        new[n] += add
        allowance -= add
    return new


def _surge_room(
    current: Mapping[str, RevisionState], targets: Mapping[str, int], surge_capacity: int | None
) -> tuple[int, int | None]:
    """Pods still to add to reach `targets`, and the pods the free GPUs can take (None: unbounded)
    once the Pending pods of growing revisions have taken theirs."""
    names = {*current, *targets}
    state = {n: current.get(n, RevisionState()) for n in names}
    need = sum(max(0, targets.get(n, 0) - max(0, state[n].replicas)) for n in names)
    stuck = sum(max(0, state[n].pending) for n in names if targets.get(n, 0) >= max(0, state[n].replicas))
    return need, None if surge_capacity is None else surge_capacity - stuck


def surge_fits(
    current: Mapping[str, RevisionState], targets: Mapping[str, int], surge_capacity: int | None
) -> bool:
    """Whether the free GPUs take every pod still to add to reach `targets`."""
    need, spare = _surge_room(current, targets, surge_capacity)
    return spare is None or spare >= need


def step_targets(
    stable: str,
    canary: str,
    *,
    total: int,
    weight: int,
    current: Mapping[str, RevisionState],
    surge_capacity: int | None,
) -> dict[str, int]:
    """Replicas of each revision at a canary step.

    The canary gets `ceil(total * weight / 100)` and the stable revision `ceil(total * (100 - weight)
    / 100)`, as Argo Rollouts counts a basic canary: both round up, so a small fleet keeps a baseline
    (one replica at 10% runs one stable and one canary pod) at the cost of at most one pod above
    `total`. When the free GPUs cannot take that extra pod, the stable revision gets only what is left
    (`total` minus the canary) and the pods swap in place within the disruption budget."""
    canary_count = canary_replicas(total, weight)
    rest = total - canary_count
    if weight >= 100 or stable == canary:
        return {stable: rest, canary: canary_count}
    kept = min(total, math.ceil(total * (100 - weight) / 100))
    surged = {stable: kept, canary: canary_count}
    if kept > rest and surge_fits(current, surged, surge_capacity):
        return surged
    return {stable: rest, canary: canary_count}


def recreate_targets(current: Mapping[str, RevisionState], desired: str, total: int) -> dict[str, int]:
    """Recreate: every other revision to zero first; the desired one starts once they have no pods
    (terminating ones included)."""
    others_alive = any(
        n != desired and (s.replicas > 0 or s.ready > 0 or s.pending > 0 or s.terminating > 0)
        for n, s in current.items()
    )
    if others_alive:
        kept = min(current.get(desired, RevisionState()).replicas, total)
        return {**dict.fromkeys(current, 0), desired: kept}
    return {**dict.fromkeys(current, 0), desired: total}


def analysis_due(status: RolloutStatus, interval_seconds: int, now: datetime) -> bool:
    """Whether the canary should be measured now (the controller asks `plan.analyze` which one)."""
    last = status.last_analysis
    if last is None or last.revision != status.canary_revision:
        return True
    taken = parse_time(last.time)
    return taken is None or now - taken >= timedelta(seconds=interval_seconds)


def _is_new(run: AnalysisRun, last: AnalysisRun | None) -> bool:
    if last is None or last.revision != run.revision:
        return True
    new_time, old_time = parse_time(run.time), parse_time(last.time)
    return new_time is not None and (old_time is None or new_time > old_time)


def _adopt_stable(revisions: Mapping[str, RevisionState], template: str) -> str:
    """On a fleet without rollout status, the revision already serving is stable; none means the
    template is (a first deployment needs no canary)."""
    alive = [(s.ready, s.replicas, n != template, n) for n, s in revisions.items() if s.replicas or s.ready]
    return max(alive)[3] if alive else template


# ---------------------------------------------------------------------------------------- the machine


@dataclass
class _Work:
    """Mutable copy of the status while one plan is computed."""

    phase: RolloutPhase | None
    stable: str | None
    canary: str | None
    step: int | None
    total_steps: int | None
    failed: list[str]
    last_analysis: AnalysisRun | None
    failures: int
    inconclusive: int
    step_started: datetime | None
    step_ready: datetime | None
    step_targets: dict[str, int] | None
    last_progress: datetime | None
    aborted_at: datetime | None
    message: str = ""

    @classmethod
    def of(cls, status: RolloutStatus) -> _Work:
        return cls(
            phase=status.phase,
            stable=status.stable_revision,
            canary=status.canary_revision,
            step=status.current_step,
            total_steps=status.total_steps,
            failed=list(status.failed_revisions),
            last_analysis=status.last_analysis,
            failures=status.consecutive_failures,
            inconclusive=status.consecutive_inconclusive,
            step_started=parse_time(status.step_started_at),
            step_ready=parse_time(status.step_ready_at),
            step_targets=dict(status.step_targets) if status.step_targets is not None else None,
            last_progress=parse_time(status.last_progress_at),
            aborted_at=parse_time(status.aborted_at),
        )

    def start(self, revision: str, total_steps: int) -> None:
        """A fresh rollout of `revision` from its first step."""
        self.canary = revision
        self.step = 0
        self.total_steps = total_steps
        self.last_analysis = None
        self.failures = self.inconclusive = 0
        self.step_started = self.step_ready = self.last_progress = self.aborted_at = None
        self.step_targets = None

    def clear_canary(self) -> None:
        self.canary = None
        self.step = self.total_steps = None
        self.failures = self.inconclusive = 0
        self.step_started = self.step_ready = self.last_progress = self.aborted_at = None
        self.step_targets = None


@dataclass
class _Planner:
    inp: RolloutInputs
    prev: RolloutStatus
    work: _Work
    events: list[RolloutEvent] = field(default_factory=list)
    replicas: dict[str, int] = field(default_factory=dict)
    requeue: list[float] = field(default_factory=list)
    degraded: ConditionUpdate | None = None
    moving: bool = False

    # -- small utilities

    def emit(self, type_: EventType, reason: str, message: str) -> None:
        self.events.append(RolloutEvent(type_, reason, message))

    def state(self, revision: str | None) -> RevisionState:
        return self.inp.revisions.get(revision or "", RevisionState())

    @property
    def spec(self) -> RolloutSpec:
        return self.inp.spec

    @property
    def total(self) -> int:
        return max(0, self.inp.total_replicas)

    def move(self, targets: Mapping[str, int], desired: str) -> None:
        """Replicas towards `targets` by the strategy's rules."""
        current = dict(self.inp.revisions)
        if self.spec.strategy == "Recreate":
            planned = recreate_targets(current, desired, self.total)
        else:
            planned = plan_moves(
                current,
                targets,
                total=self.total,
                max_unavailable=self.inp.max_unavailable,
                surge_capacity=self.inp.surge_capacity,
                max_surge=self.spec.max_surge if self.spec.strategy == "Rolling" else None,
            )
        self.replicas = planned
        self.moving = (
            any(planned.get(n, 0) != s.replicas for n, s in current.items())
            or any(self.state(n).ready < v for n, v in planned.items())
            or (
                self.spec.strategy == "Recreate"
                and any(s.terminating for n, s in current.items() if n != desired)
            )
        )

    def all_to(self, revision: str) -> None:
        """Everything to one revision at once: rollback and abort."""
        if self.spec.strategy == "Recreate":
            self.replicas = recreate_targets(self.inp.revisions, revision, self.total)
        else:
            self.replicas = {**dict.fromkeys(self.inp.revisions, 0), revision: self.total}
        self.moving = self.state(revision).ready < self.total

    # -- the phases

    def steady(self, stable: str) -> None:
        work = self.work
        discarded = work.canary if work.canary not in (None, stable) and work.phase in ACTIVE else None
        if discarded is not None:
            self.emit("Normal", "RolloutDiscarded", f"rollout of {discarded} abandoned; {stable} serves")
        work.clear_canary()
        work.phase = "Promoted"
        self.move({stable: self.total}, stable)
        if discarded is not None:
            # Back to stable at once, as for an abort.
            self.replicas[discarded] = 0
        work.message = self.serves(stable)

    def serves(self, stable: str) -> str:
        """The message of a fleet that one revision serves. The same on the pass that promotes it and on
        the passes after, so a promotion whose old revision is already drained costs no second status
        write (the `Promoted` event and phase say it was promoted)."""
        draining = sorted(n for n, s in self.inp.revisions.items() if n != stable and (s.replicas or s.ready))
        return f"draining {', '.join(draining)}" if draining else f"{stable} serves all replicas"

    def refuse_failed(self, desired: str, new: bool) -> None:
        work = self.work
        if new or work.phase != "RolledBack":
            self.emit(
                "Warning",
                "RevisionRefused",
                f"revision {desired} failed analysis before; change the template to roll out again",
            )
        work.phase = "RolledBack"
        work.message = f"{desired} failed analysis and is not promoted again; {work.stable} serves"
        self.degraded = ConditionUpdate("Degraded", "True", "RolledBack", work.message)
        self.all_to(work.stable or desired)

    def abort(self, desired: str, reason: str, message: str, *, by_user: bool) -> None:
        work = self.work
        if work.phase != "Aborted":
            self.emit("Warning", reason, message)
        work.phase = "Aborted"
        work.message = message
        if not by_user:
            work.aborted_at = work.aborted_at or self.inp.now
            self.degraded = ConditionUpdate("Degraded", "True", "RolloutAborted", message)
        self.all_to(work.stable or desired)

    def roll_back(self, desired: str) -> None:
        work = self.work
        detail = work.last_analysis.message if work.last_analysis else ""
        if desired not in work.failed:
            work.failed.append(desired)
        keep = max(self.spec.history_limit, MIN_FAILED_KEPT)
        work.failed = work.failed[-keep:]
        work.phase = "RolledBack"
        work.message = (
            f"{desired} failed analysis {work.failures} times in a row ({detail}); all traffic back on "
            f"{work.stable}"
        )
        self.emit("Warning", "RolledBack", work.message)
        self.degraded = ConditionUpdate("Degraded", "True", "RolledBack", work.message)
        self.all_to(work.stable or desired)

    def count_analysis(self, desired: str) -> None:
        run, work = self.inp.analysis, self.work
        if self.spec.analysis is None or run is None or run.revision != desired:
            return
        if not _is_new(run, work.last_analysis):
            return
        work.last_analysis = run
        if run.verdict == "Pass":
            work.failures = work.inconclusive = 0
        elif run.verdict == "Fail":
            work.failures += 1
            work.inconclusive = 0
        elif work.step_ready is not None:
            # Before the step's pods are ready, no data is expected, not a reason to abort.
            work.inconclusive += 1

    def targets(self, desired: str, weight: int) -> dict[str, int]:
        return step_targets(
            self.work.stable or desired,
            desired,
            total=self.total,
            weight=weight,
            current=self.inp.revisions,
            surge_capacity=self.inp.surge_capacity,
        )

    def reached(self, desired: str, targets: Mapping[str, int]) -> bool:
        if self.total == 0:
            return False
        if self.state(desired).ready < targets.get(desired, 0):
            return False
        return all(s.replicas <= targets.get(n, 0) for n, s in self.inp.revisions.items() if n != desired)

    def canary(self, desired: str) -> None:
        spec, work, now = self.spec, self.work, self.inp.now
        steps = effective_steps(spec)
        new = work.canary != desired
        if new:
            if work.canary is not None and work.phase in ACTIVE:
                self.emit("Normal", "RolloutSuperseded", f"rollout of {work.canary} replaced by {desired}")
            work.start(desired, len(steps))
            work.phase = None
        work.total_steps = len(steps)

        if desired in work.failed:
            self.refuse_failed(desired, new)
            return
        if spec.abort_revision == desired:
            self.abort(
                desired,
                "RolloutAborted",
                f"rollout of {desired} aborted by spec.rollout.abortRevision",
                by_user=True,
            )
            return
        if work.phase == "RolledBack" and not new:
            # Rolled back, but no longer listed as failed (the list is bounded): a fresh start.
            work.start(desired, len(steps))
            new = True
        if work.phase == "Aborted" and not new:
            retried = work.aborted_at is None or (
                spec.retry_at is not None and spec.retry_at > work.aborted_at
            )
            if not retried:
                self.abort(desired, "RolloutAborted", work.message, by_user=False)
                return
            self.emit("Normal", "RolloutRetried", f"rollout of {desired} starts again from its first step")
            work.start(desired, len(steps))
            work.phase = None
        if new:
            self.emit(
                "Normal", "RolloutStarted", f"rolling out {desired} over {work.stable} ({spec.strategy})"
            )

        step = min(work.step or 0, len(steps) - 1)
        work.step = step
        if work.step_started is None and not spec.paused:
            work.step_started = work.last_progress = now

        self.count_analysis(desired)
        limits = spec.analysis
        if limits is not None and work.failures >= limits.failure_limit:
            self.roll_back(desired)
            return
        if limits is not None and work.inconclusive >= limits.inconclusive_limit:
            self.abort(
                desired,
                "RolloutAborted",
                f"rollout of {desired} aborted: {work.inconclusive} measurements in a row without data",
                by_user=False,
            )
            return

        canary_ready = self.state(desired).ready
        if self.prev.canary_revision == desired and self.prev.canary_ready_replicas != canary_ready:
            work.last_progress = now

        while True:
            weight = steps[step].weight if work.step_started is not None else 0
            targets = self.targets(desired, weight)
            self.move(targets, desired)
            if work.step_started is not None:
                if work.step_targets is not None and work.step_targets != targets:
                    # The autoscaler moved the total (or free GPUs came or went): progress is judged
                    # against the new targets from now on, not from when the step (perhaps paused for
                    # long) began.
                    work.last_progress = now
                work.step_targets = dict(targets)
            reached = work.step_started is not None and self.reached(desired, targets)
            if work.step_started is not None and not reached and self.total > 0:
                since = max(work.step_started, work.last_progress or work.step_started)
                if now - since > timedelta(seconds=spec.progress_deadline_seconds):
                    self.abort(
                        desired,
                        "ProgressDeadlineExceeded",
                        f"step {step + 1} of {desired} made no progress for "
                        f"{spec.progress_deadline_seconds}s ({self.waiting_for(desired, targets)})",
                        by_user=False,
                    )
                    return
            if reached and work.step_ready is None:
                work.step_ready = now
            if not (reached and self.gate(desired, step, steps)):
                break
            if step == len(steps) - 1:
                self.promote(desired)
                return
            step += 1
            work.step = step
            work.step_started = work.last_progress = now
            work.step_ready = None
            work.step_targets = None
            self.emit(
                "Normal", "StepAdvanced", f"{desired}: step {step + 1}/{len(steps)}, {steps[step].weight}%"
            )

        if work.step_started is None:
            work.phase, work.message = "Paused", f"paused before the first step of {desired}"
        elif not reached:
            work.phase = "Paused" if self.total == 0 else "Progressing"
            ready = self.ready_of(desired, targets)
            work.message = (
                "fleet at zero replicas; the rollout holds"
                if self.total == 0
                else f"step {step + 1}/{len(steps)} ({weight}%): canary {ready} ready"
            )
        # otherwise gate() set phase and message
        if work.phase != self.prev.phase and work.phase == "Paused" and self.prev.canary_revision == desired:
            self.emit("Normal", "RolloutPaused", work.message)

    def ready_of(self, desired: str, targets: Mapping[str, int]) -> str:
        """Ready canary pods of the step's target. While a step waits its message says only this: pods
        asked for, created and bound within seconds would otherwise rewrite the status at each of those
        moments (the fleet's `CapacityLimited` says when pods cannot be scheduled)."""
        return f"{self.state(desired).ready}/{targets.get(desired, 0)}"

    def waiting_for(self, desired: str, targets: Mapping[str, int]) -> str:
        state = self.state(desired)
        text = f"canary {self.ready_of(desired, targets)} ready"
        if state.pending:
            text += f", {state.pending} Pending for lack of capacity"
        return text

    def gate(self, desired: str, step: int, steps: tuple[CanaryStep, ...]) -> bool:
        """Whether a step whose replicas are ready may complete; sets phase and message when not."""
        spec, work, now = self.spec, self.work, self.inp.now
        label = f"step {step + 1}/{len(steps)} ({steps[step].weight}%)"
        if spec.paused:
            work.phase, work.message = "Paused", f"{label}: paused by spec.rollout.paused"
            return False
        approval = spec.promote
        if approval is not None and approval.revision == desired and approval.step >= step:
            return True
        last = work.last_analysis
        ready_at = work.step_ready or now
        limits = spec.analysis
        if (
            limits is not None
            and last is not None
            and last.revision == desired
            and last.verdict == "Inconclusive"
            and (parse_time(last.time) or now) >= ready_at
        ):
            work.phase, work.message = "Paused", f"{label}: analysis inconclusive ({last.message})"
            self.requeue.append(float(limits.interval_seconds))
            return False
        pause = steps[step].pause_seconds
        if pause is None:
            work.phase, work.message = "Paused", f"{label}: waiting for `kubeforge rollout promote`"
            return False
        ends = ready_at + timedelta(seconds=pause)
        remaining = (ends - now).total_seconds()
        if remaining > 0:
            # The deadline, not a countdown: the status of a holding fleet is the same every pass, so
            # its requeues and resyncs write nothing.
            work.phase, work.message = "Progressing", f"{label}: holding until {format_time(ends)}"
            self.requeue.append(remaining)
            return False
        if limits is not None:
            passed = (
                last is not None
                and last.revision == desired
                and last.verdict == "Pass"
                and (parse_time(last.time) or ready_at) >= ready_at
            )
            if not passed:
                work.phase, work.message = "Progressing", f"{label}: waiting for a passing measurement"
                self.requeue.append(float(limits.interval_seconds))
                return False
        return True

    def promote(self, desired: str) -> None:
        work = self.work
        old = work.stable
        self.emit(
            "Normal", "Promoted", f"{desired} promoted to stable" + (f", replacing {old}" if old else "")
        )
        work.stable = desired
        work.clear_canary()
        work.phase = "Promoted"
        self.move({desired: self.total}, desired)
        work.message = self.serves(desired)


def _desired(inp: RolloutInputs, work: _Work, history: Iterable[RevisionHistoryEntry]) -> tuple[str, str]:
    """The revision to run, and a problem with `targetRevision` ("" when none)."""
    pin = inp.spec.target_revision
    if pin is None or pin == inp.template_revision:
        return inp.template_revision, ""
    known = pin == work.stable or pin in inp.revisions or any(e.revision == pin for e in history)
    if known:
        return pin, ""
    hold = work.canary if work.phase in ACTIVE and work.canary else (work.stable or inp.template_revision)
    return hold, f"spec.rollout.targetRevision {pin} is not in the revision history"


def update_history(
    history: Iterable[RevisionHistoryEntry],
    *,
    stable: str | None,
    canary: str | None,
    phase: RolloutPhase | None,
    failed: Iterable[str],
    template_revision: str,
    template_image: str | None,
    now: datetime,
    limit: int,
) -> list[RevisionHistoryEntry]:
    """The revision history: the stable and canary revisions added when new (numbered from 1), phases
    brought up to date, `promotedAt` set the first time a revision is stable, the oldest others dropped
    beyond `limit`."""
    failed_set = set(failed)
    entries = {e.revision: e for e in sorted(history, key=lambda e: e.number)}
    number = max((e.number for e in entries.values()), default=0)
    for revision in (stable, canary):
        if revision is not None and revision not in entries:
            number += 1
            image = template_image if revision == template_revision else None
            entries[revision] = RevisionHistoryEntry(
                revision=revision, number=number, image=image, created_at=format_time(now), phase="Canary"
            )
    out: list[RevisionHistoryEntry] = []
    for revision, entry in entries.items():
        new_phase: RevisionPhase
        promoted_at = entry.promoted_at
        if revision == stable and promoted_at is None:
            promoted_at = format_time(now)
        if revision in failed_set:
            new_phase = "Failed"
        elif revision == stable:
            new_phase = "Stable"
        elif revision == canary:
            new_phase = "Aborted" if phase == "Aborted" else "Canary"
        elif entry.phase in ("Stable", "Canary"):
            # Left without being promoted is not the same as replaced after serving: `undo` tells them
            # apart.
            new_phase = "Superseded" if promoted_at is not None else "Abandoned"
        else:
            new_phase = entry.phase
        update: dict[str, object] = {}
        if entry.phase != new_phase:
            update["phase"] = new_phase
        if entry.promoted_at != promoted_at:
            update["promoted_at"] = promoted_at
        out.append(entry.model_copy(update=update) if update else entry)
    while len(out) > limit:
        victim = next((e for e in out if e.revision not in (stable, canary)), None)
        if victim is None:
            break
        out.remove(victim)
    return out


def plan_rollout(inp: RolloutInputs) -> RolloutPlan:
    """The whole rollout decision for one reconcile. Pure: equal inputs give equal plans."""
    prev = inp.status or RolloutStatus()
    work = _Work.of(prev)
    planner = _Planner(inp=inp, prev=prev, work=work)
    if work.stable is None:
        work.stable = _adopt_stable(inp.revisions, inp.template_revision)
    stable = work.stable
    desired, pin_problem = _desired(inp, work, prev.history)
    if pin_problem:
        if pin_problem not in prev.message:
            planner.emit("Warning", "RevisionNotFound", pin_problem)
        planner.degraded = ConditionUpdate("Degraded", "True", "RevisionNotFound", pin_problem)

    stable_empty = not (planner.state(stable).replicas or planner.state(stable).ready)
    if (
        desired != stable
        and planner.total == 0
        and stable_empty
        and desired not in work.failed
        and work.canary != desired
    ):
        # Nothing serves and nothing should: there is no traffic to test a canary with.
        planner.emit("Normal", "Promoted", f"{desired} promoted to stable at zero replicas")
        work.stable = stable = desired

    if desired == stable:
        planner.steady(stable)
    else:
        planner.canary(desired)
    if pin_problem:
        work.message = f"{pin_problem}; {work.message}"
    elif desired != inp.template_revision:
        work.message += (
            f" (template revision {inp.template_revision} held back by spec.rollout.targetRevision)"
        )

    return _finish(planner)


def _finish(planner: _Planner) -> RolloutPlan:
    inp, work, prev = planner.inp, planner.work, planner.prev
    stable = work.stable or inp.template_revision
    replicas = dict(planner.replicas)
    replicas.setdefault(stable, 0)
    keep = {stable, work.canary}
    delete = tuple(
        sorted(
            n
            for n, s in inp.revisions.items()
            if n not in keep and replicas.get(n, 0) == 0 and s.ready == 0 and s.replicas == 0
        )
    )
    for n in delete:
        replicas.pop(n, None)
    serving = {n: min(inp.revisions.get(n, RevisionState()).ready, r) for n, r in replicas.items()}
    weights = split_weights(serving, stable)
    canary = work.canary
    history = update_history(
        prev.history,
        stable=work.stable,
        canary=canary,
        phase=work.phase,
        failed=work.failed,
        template_revision=inp.template_revision,
        template_image=inp.template_image,
        now=inp.now,
        limit=inp.spec.history_limit,
    )
    status = RolloutStatus(
        phase=work.phase,
        current_step=work.step,
        total_steps=work.total_steps,
        canary_weight=weights.get(canary, 0) if canary else 0,
        stable_revision=work.stable,
        canary_revision=canary,
        stable_ready_replicas=inp.revisions.get(stable, RevisionState()).ready,
        canary_ready_replicas=inp.revisions.get(canary, RevisionState()).ready if canary else None,
        failed_revisions=work.failed,
        last_analysis=work.last_analysis,
        consecutive_failures=work.failures,
        consecutive_inconclusive=work.inconclusive,
        step_started_at=format_time(work.step_started) if work.step_started else None,
        step_ready_at=format_time(work.step_ready) if work.step_ready else None,
        step_targets=work.step_targets,
        last_progress_at=format_time(work.last_progress) if work.last_progress else None,
        aborted_at=format_time(work.aborted_at) if work.aborted_at else None,
        message=work.message,
        history=history,
    )
    active = work.phase in ACTIVE
    draining = any(n not in keep and (s.replicas or s.ready) for n, s in inp.revisions.items())
    progressing: ConditionUpdate
    if active:
        reason = "RolloutPaused" if work.phase == "Paused" else "RolloutProgressing"
        progressing = ConditionUpdate("Progressing", "True", reason, work.message)
    elif work.phase == "Promoted" and (draining or planner.moving):
        progressing = ConditionUpdate("Progressing", "True", "RolloutProgressing", work.message)
    elif work.phase == "Promoted":
        progressing = ConditionUpdate("Progressing", "False", "RolloutComplete", work.message)
    else:
        progressing = ConditionUpdate("Progressing", "False", str(work.phase), work.message)

    analysis = inp.spec.analysis
    analyze = canary if active and analysis is not None and canary else None
    if analyze is not None and inp.revisions.get(analyze, RevisionState()).ready == 0:
        analyze = None
    baseline = stable if analyze and inp.revisions.get(stable, RevisionState()).ready > 0 else None
    requeue = list(planner.requeue)
    if analyze is not None and analysis is not None:
        requeue.append(float(analysis.interval_seconds))
    if planner.moving or draining:
        requeue.append(MOVING_REQUEUE_SECONDS)
    return RolloutPlan(
        status=status,
        replicas=replicas,
        weights=weights,
        delete=delete,
        events=tuple(planner.events),
        progressing=progressing,
        degraded=planner.degraded,
        analyze=analyze,
        baseline=baseline,
        requeue_after=min(requeue) if requeue else None,
    )


__all__ = [
    "DEFAULT_STEPS",
    "RevisionState",
    "RolloutEvent",
    "RolloutInputs",
    "RolloutPlan",
    "analysis_due",
    "canary_replicas",
    "effective_steps",
    "plan_moves",
    "plan_rollout",
    "recreate_targets",
    "resolve_max_unavailable",
    "split_weights",
    "step_targets",
    "surge_fits",
    "update_history",
]
