"""Properties of whole rollouts, driven against a small simulated cluster.

The cluster has a fixed number of GPU slots; pods of a revision start Pending, are scheduled when a slot
is free, and become ready a few ticks later; scale-downs remove Pending, then unready, then ready pods
(as the ReplicaSet controller does). Each tick the operator plans, the cluster applies, time moves on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kubeforge.api.rollout import AnalysisRun, RolloutSpec, RolloutStatus, Verdict
from kubeforge.policy.analysis import MetricSample, Thresholds, evaluate
from kubeforge.policy.conditions import format_time
from kubeforge.policy.rollout import RevisionState, RolloutInputs, RolloutPlan, plan_rollout

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TICK = timedelta(seconds=10)
OLD, NEW = "old", "new"


@dataclass
class Cluster:
    slots: int
    load_ticks: int
    desired: dict[str, int] = field(default_factory=dict)
    scheduled: dict[str, list[int]] = field(default_factory=dict)  # ages of scheduled pods
    pending: dict[str, int] = field(default_factory=dict)

    def ready(self, revision: str) -> int:
        return sum(1 for age in self.scheduled.get(revision, []) if age >= self.load_ticks)

    def total_ready(self) -> int:
        return sum(self.ready(n) for n in self.scheduled)

    def states(self) -> dict[str, RevisionState]:
        return {
            n: RevisionState(want, self.ready(n), self.pending.get(n, 0)) for n, want in self.desired.items()
        }

    def free(self) -> int:
        return self.slots - sum(len(p) for p in self.scheduled.values())

    def apply(self, plan: RolloutPlan) -> None:
        for name in plan.delete:
            assert self.desired.get(name, 0) == 0
            assert not self.scheduled.get(name)
            assert not self.pending.get(name)
            self.desired.pop(name, None)
        for name, want in plan.replicas.items():
            self.desired[name] = want
            pods = self.scheduled.setdefault(name, [])
            pending = self.pending.get(name, 0)
            excess = len(pods) + pending - want
            if excess > 0:
                drop = min(excess, pending)
                pending -= drop
                excess -= drop
                pods.sort()  # youngest (unready) first
                del pods[:excess]
            elif excess < 0:
                pending -= excess
            self.pending[name] = pending

    def tick(self) -> None:
        for pods in self.scheduled.values():
            pods[:] = [age + 1 for age in pods]
        for name in sorted(self.pending):
            while self.pending[name] and self.free() > 0:
                self.pending[name] -= 1
                self.scheduled[name].append(0)


specs = st.one_of(
    st.builds(
        lambda weights, pause: RolloutSpec.model_validate(
            {"steps": [{"weight": w, "pauseSeconds": pause} for w in sorted(set(weights))]}
        ),
        st.lists(st.integers(1, 100), min_size=1, max_size=4),
        st.integers(0, 30),
    ),
    st.builds(lambda surge: RolloutSpec(strategy="Rolling", max_surge=surge), st.integers(1, 3)),
)


def _simulate(
    rollout: RolloutSpec,
    *,
    total: int,
    spare: int,
    load_ticks: int,
    ticks: int,
    max_unavailable: int = 1,
    verdicts: list[Verdict] | None = None,
    totals: Callable[[int], int] | None = None,
    healthy_metrics: bool = False,
) -> tuple[list[RolloutPlan], Cluster]:
    if verdicts is not None:
        rollout = rollout.model_copy(
            update={"analysis": RolloutSpec.model_validate({"analysis": {"maxErrorRate": 0.1}}).analysis}
        )
    """Run `ticks` reconciles; `totals(tick)` is the autoscaler's total at each (default: `total`), and
    the cluster has room for the largest total plus `spare` pods."""
    at = totals or (lambda _: total)
    cluster = Cluster(slots=max(at(i) for i in range(ticks)) + spare, load_ticks=load_ticks)
    cluster.desired[OLD] = total
    cluster.scheduled[OLD] = [load_ticks] * total
    cluster.pending[OLD] = 0
    status: RolloutStatus | None = RolloutStatus(stable_revision=OLD, phase="Promoted")
    analysis: AnalysisRun | None = None
    plans = []
    now = T0
    for i in range(ticks):
        total = at(i)
        plan = plan_rollout(
            RolloutInputs(
                spec=rollout,
                status=status,
                template_revision=NEW,
                total_replicas=total,
                now=now,
                revisions=cluster.states(),
                max_unavailable=max_unavailable,
                surge_capacity=cluster.free(),
                analysis=analysis,
            )
        )
        ready_before = cluster.total_ready()
        cluster.apply(plan)
        if plan.status.phase not in ("RolledBack", "Aborted") and rollout.strategy != "Recreate":
            floor = max(0, total - max_unavailable)
            assert cluster.total_ready() >= min(ready_before, floor), (i, plan)
        assert sum(plan.weights.values()) == 100
        plans.append(plan)
        # Restart safety: the status always goes through the wire.
        status = RolloutStatus.model_validate(plan.status.to_wire())
        analysis = None
        if healthy_metrics and plan.analyze is not None and rollout.analysis is not None:
            # Every revision serving has healthy data, the stable one too when it has ready pods.
            good = MetricSample(error_rate=0.0, latency_p95=0.1)
            baseline = good if plan.baseline and cluster.ready(plan.baseline) else None
            outcome = evaluate(good, baseline, Thresholds.from_spec(rollout.analysis))
            analysis = outcome.record(revision=plan.analyze, now=now)
        if verdicts is not None and plan.analyze is not None:
            analysis = AnalysisRun(
                time=format_time(now), revision=plan.analyze, verdict=verdicts[i % len(verdicts)]
            )
        cluster.tick()
        now += TICK
    return plans, cluster


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rollout=specs,
    total=st.integers(1, 8),
    spare=st.integers(0, 3),
    max_unavailable=st.integers(1, 2),
    load_ticks=st.integers(0, 3),
)
def test_a_good_revision_always_completes(
    rollout: RolloutSpec, total: int, spare: int, max_unavailable: int, load_ticks: int
) -> None:
    plans, cluster = _simulate(
        rollout,
        total=total,
        spare=spare,
        max_unavailable=max_unavailable,
        load_ticks=load_ticks,
        verdicts=None,
        ticks=120,
    )
    final = plans[-1]
    assert final.status.phase == "Promoted", final.status.message
    assert final.status.stable_revision == NEW
    assert dict(final.replicas) == {NEW: total}
    assert cluster.ready(NEW) == total
    assert OLD not in cluster.desired
    steps = [p.status.current_step for p in plans if p.status.canary_revision == NEW]
    assert steps == sorted(s for s in steps if s is not None)  # steps only move forward
    # Never more pods asked for than the cluster holds.
    for plan in plans:
        assert sum(plan.replicas.values()) <= total + spare


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rollout=specs,
    total=st.integers(1, 6),
    spare=st.integers(0, 2),
    load_ticks=st.integers(0, 2),
)
def test_a_failing_revision_is_rolled_back_and_never_promoted(
    rollout: RolloutSpec, total: int, spare: int, load_ticks: int
) -> None:
    plans, cluster = _simulate(
        rollout,
        total=total,
        spare=spare,
        max_unavailable=1,
        load_ticks=load_ticks,
        verdicts=["Fail"],
        ticks=60,
    )
    assert all(p.status.stable_revision == OLD for p in plans)
    final = plans[-1]
    assert final.status.phase == "RolledBack"
    assert final.status.failed_revisions == [NEW]
    assert final.weights.get(NEW, 0) == 0
    assert cluster.ready(NEW) == 0
    assert cluster.ready(OLD) == total
    rolled = [i for i, p in enumerate(plans) if p.status.phase == "RolledBack"]
    assert sum(1 for p in plans for e in p.events if e.reason == "RolledBack") == 1
    # From the first failing measurement to the rollback: failureLimit (2) measurements.
    first_measured = next(i for i, p in enumerate(plans) if p.analyze is not None)
    assert rolled[0] - first_measured <= 2


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rollout=specs,
    total=st.integers(1, 6),
    verdicts=st.lists(st.sampled_from(["Pass", "Inconclusive"]), min_size=1, max_size=4),
)
def test_no_promotion_without_a_pass(rollout: RolloutSpec, total: int, verdicts: list[Verdict]) -> None:
    plans, _ = _simulate(
        rollout, total=total, spare=1, max_unavailable=1, load_ticks=1, verdicts=verdicts, ticks=80
    )
    final = plans[-1]
    if "Pass" not in verdicts:
        assert all(p.status.stable_revision == OLD for p in plans)
        assert final.status.phase == "Aborted"
    else:
        assert final.status.phase in ("Promoted", "Aborted", "Paused", "Progressing")


def test_no_free_gpus_and_no_budget_stalls_then_aborts_with_a_reason() -> None:
    plans, cluster = _simulate(
        RolloutSpec(progress_deadline_seconds=60),
        total=3,
        spare=0,
        max_unavailable=0,
        load_ticks=0,
        verdicts=None,
        ticks=12,
    )
    assert plans[-1].status.phase == "Aborted"
    assert any(e.reason == "ProgressDeadlineExceeded" for p in plans for e in p.events)
    assert cluster.ready(OLD) == 3


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    weights=st.lists(st.integers(1, 99), min_size=1, max_size=3, unique=True),
    pause=st.one_of(st.none(), st.integers(700, 3000)),
    schedule=st.lists(st.integers(1, 8), min_size=2, max_size=6),
    every=st.integers(3, 120),
    spare=st.integers(0, 2),
    load_ticks=st.integers(0, 3),
)
def test_autoscaling_never_aborts_a_step_waiting_on_a_long_pause_or_a_promote(
    weights: list[int], pause: int | None, schedule: list[int], every: int, spare: int, load_ticks: int
) -> None:
    """Issue 9.9: the total moves mid-step (long after the progress deadline of 600 s has passed since
    the step began) while the step waits on its pause or on a manual promote: progress is judged against
    the current targets, so the rollout carries on and completes (or keeps waiting for the promote)."""
    steps = [
        {"weight": w} if pause is None else {"weight": w, "pauseSeconds": pause} for w in sorted(weights)
    ]
    rollout = RolloutSpec.model_validate({"steps": steps})
    pause_ticks = 0 if pause is None else pause // int(TICK.total_seconds())
    ticks = len(steps) * (pause_ticks + 40) + len(schedule) * every
    plans, cluster = _simulate(
        rollout,
        total=schedule[0],
        totals=lambda i: schedule[min(i // every, len(schedule) - 1)],
        spare=spare,
        load_ticks=load_ticks,
        ticks=ticks,
    )
    assert not [e for p in plans for e in p.events if e.reason == "ProgressDeadlineExceeded"]
    assert all(p.status.phase != "Aborted" for p in plans)
    final, total = plans[-1], schedule[-1]
    if pause is None:
        assert final.status.phase == "Paused", final.status.message
        assert final.status.current_step == 0
        assert cluster.ready(NEW) == math.ceil(total * min(weights) / 100)
    else:
        assert final.status.phase == "Promoted", final.status.message
        assert cluster.ready(NEW) == total


LIMITS = {
    "maxErrorRate": 0.05,
    "maxLatencyP95": 1.0,
    "maxErrorRateIncrease": 0.01,
    "maxLatencyIncreaseRatio": 0.2,
}


def _valid(wire: dict[str, object]) -> RolloutSpec | None:
    try:
        return RolloutSpec.model_validate(wire)
    except ValidationError:
        return None


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    strategy=st.sampled_from(["Canary", "Rolling", "Recreate"]),
    weights=st.lists(st.integers(1, 100), max_size=3, unique=True),
    limits=st.sets(st.sampled_from(sorted(LIMITS)), min_size=1),
    total=st.integers(1, 6),
    spare=st.integers(1, 2),
    load_ticks=st.integers(0, 2),
)
def test_every_valid_spec_finishes_with_a_healthy_revision(
    strategy: str, weights: list[int], limits: set[str], total: int, spare: int, load_ticks: int
) -> None:
    """Issue 9.11: whatever limits the analysis has, a spec the API accepts can complete. A baseline-only
    analysis at a step where no stable pod serves (a last step of 100%, Rolling, Recreate) could never
    pass, and the API refuses it. (With no GPU free at all, a one-replica fleet swaps its only stable pod
    away and a baseline-only step cannot be judged: that is the cluster's limit, not the spec's.)"""
    steps = [{"weight": w, "pauseSeconds": 10} for w in sorted(weights)] if strategy == "Canary" else []
    rollout = _valid({"strategy": strategy, "steps": steps, "analysis": {k: LIMITS[k] for k in limits}})
    assume(rollout is not None)
    assert rollout is not None
    plans, cluster = _simulate(
        rollout,
        total=total,
        spare=spare,
        load_ticks=load_ticks,
        ticks=80,
        healthy_metrics=True,
    )
    final = plans[-1]
    assert final.status.phase == "Promoted", final.status.message
    assert final.status.stable_revision == NEW
    assert cluster.ready(NEW) == total
