"""The rollout state machine, scenario by scenario: one reconcile per call, status carried between calls."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubeforge.api.rollout import AnalysisRun, RolloutSpec, RolloutStatus, Verdict
from kubeforge.policy.conditions import format_time
from kubeforge.policy.rollout import RevisionState, RolloutInputs, RolloutPlan, analysis_due, plan_rollout

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
OLD, NEW = "aaa111", "bbb222"
ANALYSIS = {"maxErrorRate": 0.05, "intervalSeconds": 10}


def spec(**wire: Any) -> RolloutSpec:
    return RolloutSpec.model_validate(wire)


def R(replicas: int, ready: int | None = None, pending: int = 0) -> RevisionState:  # noqa: N802
    return RevisionState(replicas, replicas if ready is None else ready, pending)


def run(
    verdict: Verdict, at: datetime, revision: str = NEW, message: str = "", **values: float
) -> AnalysisRun:
    return AnalysisRun(time=format_time(at), revision=revision, verdict=verdict, message=message, **values)


def plan(
    rollout: RolloutSpec,
    status: RolloutStatus | None = None,
    *,
    revisions: Mapping[str, RevisionState] | None = None,
    template: str = NEW,
    total: int = 4,
    now: datetime = T0,
    capacity: int | None = None,
    max_unavailable: int = 1,
    analysis: AnalysisRun | None = None,
) -> RolloutPlan:
    return plan_rollout(
        RolloutInputs(
            spec=rollout,
            status=status,
            template_revision=template,
            template_image=f"img:{template}",
            total_replicas=total,
            now=now,
            revisions=revisions or {},
            surge_capacity=capacity,
            max_unavailable=max_unavailable,
            analysis=analysis,
        )
    )


def ready(p: RolloutPlan) -> dict[str, RevisionState]:
    """The cluster after the plan took effect and every pod became ready."""
    return {n: R(r) for n, r in p.replicas.items()}


def stable_status(revision: str = OLD) -> RolloutStatus:
    return plan(spec(), template=revision).status


def reasons(p: RolloutPlan) -> list[str]:
    return [e.reason for e in p.events]


def started(rollout: RolloutSpec, *, total: int = 4, now: datetime = T0) -> RolloutPlan:
    """A rollout of NEW over OLD, just begun."""
    return plan(rollout, stable_status(), revisions={OLD: R(total)}, total=total, now=now)


# ------------------------------------------------------------------------------------- first and steady


def test_first_deployment_needs_no_canary() -> None:
    p = plan(spec())
    assert p.status.phase == "Promoted"
    assert p.status.stable_revision == NEW
    assert p.status.canary_revision is None
    assert dict(p.replicas) == {NEW: 4}
    assert [(e.revision, e.number, e.phase, e.image) for e in p.status.history] == [
        (NEW, 1, "Stable", f"img:{NEW}")
    ]
    assert p.events == ()
    assert p.progressing.status == "True"  # pods still to come
    settled = plan(spec(), p.status, revisions=ready(p))
    assert settled.progressing.reason == "RolloutComplete"
    assert settled.requeue_after is None
    assert settled.weights == {NEW: 100}


def test_adopts_the_revision_already_serving() -> None:
    """A fleet created before rollouts existed: the running Deployment is stable, the template canary."""
    p = plan(spec(), None, revisions={OLD: R(4)})
    assert (p.status.stable_revision, p.status.canary_revision) == (OLD, NEW)
    assert p.status.phase == "Progressing"
    assert reasons(p) == ["RolloutStarted"]


def test_steady_follows_the_autoscaler() -> None:
    status = stable_status()
    up = plan(spec(), status, template=OLD, revisions={OLD: R(4)}, total=6)
    assert dict(up.replicas) == {OLD: 6}
    down = plan(spec(), status, template=OLD, revisions={OLD: R(6)}, total=2)
    assert dict(down.replicas) == {OLD: 2}


# ----------------------------------------------------------------------------------------------- steps


def test_canary_walks_timed_steps_and_is_promoted() -> None:
    rollout = spec(steps=[{"weight": 25, "pauseSeconds": 30}, {"weight": 50, "pauseSeconds": 30}])
    p = started(rollout)
    assert dict(p.replicas) == {OLD: 4, NEW: 1}  # surge: capacity unknown
    assert p.status.current_step == 0
    assert p.status.total_steps == 2
    assert p.status.step_started_at == format_time(T0)

    now = T0 + timedelta(seconds=5)
    p = plan(rollout, p.status, revisions=ready(p), now=now)
    assert dict(p.replicas) == {OLD: 3, NEW: 1}
    assert p.status.step_ready_at is None  # stable still has 4
    p = plan(rollout, p.status, revisions=ready(p), now=now)
    assert p.status.step_ready_at == format_time(now)
    assert p.weights == {OLD: 75, NEW: 25}
    assert p.status.canary_weight == 25
    assert p.status.message.endswith(f"holding until {format_time(now + timedelta(seconds=30))}")
    assert p.requeue_after == 30

    now += timedelta(seconds=30)
    p = plan(rollout, p.status, revisions=ready(p), now=now)
    assert reasons(p) == ["StepAdvanced"]
    assert p.status.current_step == 1
    assert dict(p.replicas) == {OLD: 3, NEW: 2}
    for _ in range(2):
        p = plan(rollout, p.status, revisions=ready(p), now=now)
    assert p.weights == {OLD: 50, NEW: 50}

    now += timedelta(seconds=30)
    p = plan(rollout, p.status, revisions=ready(p), now=now)
    assert reasons(p) == ["Promoted"]
    assert p.status.phase == "Promoted"
    assert (p.status.stable_revision, p.status.canary_revision) == (NEW, None)
    assert {e.revision: e.phase for e in p.status.history} == {OLD: "Superseded", NEW: "Stable"}
    assert p.progressing.status == "True"  # old still draining
    deleted: list[str] = []
    for _ in range(3):
        p = plan(rollout, p.status, revisions=ready(p), now=now)
        deleted.extend(p.delete)
    assert deleted == [OLD]
    assert dict(p.replicas) == {NEW: 4}
    assert p.progressing.reason == "RolloutComplete"


def test_step_without_pause_waits_for_promote_of_that_revision() -> None:
    rollout = spec(steps=[{"weight": 50}])
    p = started(rollout)
    for _ in range(3):
        p = plan(rollout, p.status, revisions=ready(p))
    assert p.status.phase == "Paused"
    assert "kubeforge rollout promote" in p.status.message
    assert p.progressing.reason == "RolloutPaused"

    other = rollout.model_copy(update={"promote": spec(promote={"revision": "ccc333", "step": 5}).promote})
    assert plan(other, p.status, revisions=ready(p)).status.phase == "Paused"

    approved = spec(steps=[{"weight": 50}], promote={"revision": NEW, "step": 0})
    promoted = plan(approved, p.status, revisions=ready(p))
    assert promoted.status.phase == "Promoted"
    assert promoted.status.stable_revision == NEW


def test_approval_covers_several_steps_but_still_waits_for_pods() -> None:
    rollout = spec(
        steps=[{"weight": 25}, {"weight": 50}, {"weight": 75}], promote={"revision": NEW, "step": 1}
    )
    p = started(rollout)
    seen: list[int] = []
    for _ in range(10):
        p = plan(rollout, p.status, revisions=ready(p))
        seen.append(p.status.current_step or 0)
    assert seen == sorted(seen)
    assert p.status.current_step == 2
    assert p.status.phase == "Paused"


def test_paused_holds_at_step_boundaries() -> None:
    rollout = spec(paused=True, steps=[{"weight": 25, "pauseSeconds": 0}])
    p = plan(rollout, stable_status(), revisions={OLD: R(4)})
    assert p.status.phase == "Paused"
    assert "before the first step" in p.status.message
    assert p.replicas.get(NEW, 0) == 0
    assert p.status.step_started_at is None

    resumed = spec(steps=[{"weight": 25, "pauseSeconds": 0}])
    p = plan(resumed, p.status, revisions=ready(p))
    assert p.replicas[NEW] == 1
    # Paused again mid-step: the step's replicas still come, but it does not complete.
    for _ in range(3):
        p = plan(rollout, p.status, revisions=ready(p))
    assert p.status.phase == "Paused"
    assert "paused by spec.rollout.paused" in p.status.message
    assert dict(p.replicas) == {OLD: 3, NEW: 1}
    assert plan(resumed, p.status, revisions=ready(p)).status.phase == "Promoted"


def test_autoscaling_during_a_step_splits_by_weight() -> None:
    rollout = spec(steps=[{"weight": 25}])
    p = started(rollout, total=4)
    for _ in range(2):
        p = plan(rollout, p.status, revisions=ready(p))
    p = plan(rollout, p.status, revisions=ready(p), total=8)
    assert dict(p.replicas) == {OLD: 6, NEW: 2}
    p = plan(rollout, p.status, revisions=ready(p), total=8)
    assert dict(p.replicas) == {OLD: 6, NEW: 2}


# -------------------------------------------------------------------------------------------- analysis


def _at_step(rollout: RolloutSpec) -> tuple[RolloutPlan, datetime]:
    """NEW at its first step with the step's replicas ready."""
    p = started(rollout)
    for _ in range(2):
        p = plan(rollout, p.status, revisions=ready(p))
    assert p.status.step_ready_at is not None
    return p, T0


def test_analysis_must_pass_at_the_steps_weight() -> None:
    rollout = spec(steps=[{"weight": 25, "pauseSeconds": 10}], analysis=ANALYSIS)
    p, now = _at_step(rollout)
    assert p.analyze == NEW
    assert p.baseline == OLD
    later = now + timedelta(seconds=20)
    p = plan(rollout, p.status, revisions=ready(p), now=later)
    assert p.status.phase == "Progressing"
    assert "waiting for a passing measurement" in p.status.message
    stale = run("Pass", now - timedelta(seconds=1))  # taken before the step was ready
    assert (
        "waiting for a passing"
        in plan(rollout, p.status, revisions=ready(p), now=later, analysis=stale).status.message
    )
    p = plan(rollout, p.status, revisions=ready(p), now=later, analysis=run("Pass", later))
    assert p.status.phase == "Promoted"


def test_failed_analysis_rolls_back_and_is_never_promoted_again() -> None:
    rollout = spec(steps=[{"weight": 25, "pauseSeconds": 0}], analysis=ANALYSIS)
    p, now = _at_step(rollout)
    p = plan(
        rollout,
        p.status,
        revisions=ready(p),
        now=now,
        analysis=run("Fail", now, message="error rate 0.3 above 0.05"),
    )
    assert p.status.consecutive_failures == 1
    assert p.status.phase == "Progressing"
    assert reasons(p) == []

    now += timedelta(seconds=10)
    p = plan(
        rollout,
        p.status,
        revisions=ready(p),
        now=now,
        analysis=run("Fail", now, message="error rate 0.3 above 0.05"),
    )
    assert p.status.phase == "RolledBack"
    assert dict(p.replicas) == {OLD: 4, NEW: 0}
    assert p.weights == {OLD: 100, NEW: 0}
    assert p.status.failed_revisions == [NEW]
    assert p.degraded is not None
    assert (p.degraded.status, p.degraded.reason) == ("True", "RolledBack")
    [event] = p.events
    assert (event.type, event.reason) == ("Warning", "RolledBack")
    assert "error rate 0.3" in event.message
    assert p.analyze is None
    assert {e.revision: e.phase for e in p.status.history}[NEW] == "Failed"

    # Next reconciles, restarts (status through the wire) and even an approval change nothing.
    approved = rollout.model_copy(update={"promote": spec(promote={"revision": NEW, "step": 9}).promote})
    restored = RolloutStatus.model_validate(p.status.to_wire())
    again = plan(approved, restored, revisions={OLD: R(4), NEW: R(0)}, now=now + timedelta(minutes=5))
    assert again.status.phase == "RolledBack"
    assert again.events == ()
    assert dict(again.replicas) == {OLD: 4, NEW: 0}
    assert again.status.stable_revision == OLD

    # A new template is a new rollout; going back to the failed one is refused.
    newer = plan(rollout, again.status, revisions={OLD: R(4)}, template="ccc333", now=now)
    assert newer.status.phase == "Progressing"
    assert newer.status.canary_revision == "ccc333"
    back = plan(rollout, newer.status, revisions=ready(newer), template=NEW, now=now)
    assert back.status.phase == "RolledBack"
    assert reasons(back) == ["RolloutSuperseded", "RevisionRefused"]
    assert back.replicas.get(NEW, 0) == 0


def test_a_pass_resets_the_failure_count_and_samples_count_once() -> None:
    rollout = spec(steps=[{"weight": 25}], analysis={**ANALYSIS, "failureLimit": 2})
    p, now = _at_step(rollout)
    fail = run("Fail", now)
    p = plan(rollout, p.status, revisions=ready(p), now=now, analysis=fail)
    p = plan(rollout, p.status, revisions=ready(p), now=now, analysis=fail)  # same sample again
    assert p.status.consecutive_failures == 1
    now += timedelta(seconds=10)
    p = plan(rollout, p.status, revisions=ready(p), now=now, analysis=run("Pass", now))
    assert p.status.consecutive_failures == 0
    now += timedelta(seconds=10)
    p = plan(rollout, p.status, revisions=ready(p), now=now, analysis=run("Fail", now))
    assert p.status.phase != "RolledBack"


def test_missing_metrics_pause_then_abort_and_retry() -> None:
    rollout = spec(steps=[{"weight": 25, "pauseSeconds": 0}], analysis=ANALYSIS)
    # No data before the canary is ready is expected: not counted.
    p = started(rollout)
    p = plan(rollout, p.status, revisions={OLD: R(4), NEW: R(1, 0)}, analysis=run("Inconclusive", T0))
    assert p.status.consecutive_inconclusive == 0
    p, now = _at_step(rollout)
    for i in range(1, 3):
        now += timedelta(seconds=10)
        p = plan(
            rollout,
            p.status,
            revisions=ready(p),
            now=now,
            analysis=run("Inconclusive", now, message="no data"),
        )
        assert p.status.phase == "Paused"
        assert p.status.consecutive_inconclusive == i
        assert "analysis inconclusive" in p.status.message
    now += timedelta(seconds=10)
    p = plan(rollout, p.status, revisions=ready(p), now=now, analysis=run("Inconclusive", now))
    assert p.status.phase == "Aborted"
    assert p.status.aborted_at == format_time(now)
    assert dict(p.replicas) == {OLD: 4, NEW: 0}
    assert p.degraded is not None
    assert p.degraded.reason == "RolloutAborted"
    assert reasons(p) == ["RolloutAborted"]
    assert p.status.failed_revisions == []  # no data is not a failure

    stays = plan(rollout, p.status, revisions=ready(p), now=now + timedelta(minutes=1))
    assert stays.status.phase == "Aborted"
    assert stays.events == ()
    old_retry = spec(
        steps=[{"weight": 25, "pauseSeconds": 0}],
        analysis=ANALYSIS,
        retryAt=format_time(now - timedelta(seconds=1)),
    )
    assert plan(old_retry, stays.status, revisions=ready(p), now=now).status.phase == "Aborted"
    retry = spec(
        steps=[{"weight": 25, "pauseSeconds": 0}],
        analysis=ANALYSIS,
        retryAt=format_time(now + timedelta(seconds=30)),
    )
    again = plan(retry, stays.status, revisions=ready(p), now=now + timedelta(minutes=1))
    assert again.status.phase == "Progressing"
    assert again.status.current_step == 0
    assert again.status.consecutive_inconclusive == 0
    assert again.status.aborted_at is None
    assert reasons(again) == ["RolloutRetried"]


def test_analysis_due() -> None:
    status = RolloutStatus(canary_revision=NEW)
    assert analysis_due(status, 10, T0)
    status = status.model_copy(update={"last_analysis": run("Pass", T0)})
    assert not analysis_due(status, 10, T0 + timedelta(seconds=9))
    assert analysis_due(status, 10, T0 + timedelta(seconds=10))
    assert analysis_due(status.model_copy(update={"canary_revision": "other"}), 10, T0)


# -------------------------------------------------------------------------------------- manual control


def test_abort_revision_aborts_while_set() -> None:
    rollout = spec(steps=[{"weight": 50}])
    p = started(rollout)
    p = plan(rollout, p.status, revisions=ready(p))
    aborting = spec(steps=[{"weight": 50}], abortRevision=NEW)
    p = plan(aborting, p.status, revisions=ready(p))
    assert p.status.phase == "Aborted"
    assert dict(p.replicas) == {OLD: 4, NEW: 0}
    assert p.weights[NEW] == 0
    assert p.degraded is None  # the user's decision, not a fault
    assert reasons(p) == ["RolloutAborted"]
    assert plan(aborting, p.status, revisions=ready(p)).events == ()
    # An abort of another revision does not touch a later template.
    later = plan(aborting, p.status, revisions=ready(p), template="ccc333")
    assert later.status.phase == "Progressing"
    # Lifting the abort starts the rollout again.
    again = plan(rollout, p.status, revisions=ready(p))
    assert again.status.phase == "Progressing"
    assert again.status.current_step == 0
    assert reasons(again) == ["RolloutRetried"]


def test_undo_to_a_history_revision_goes_through_the_steps() -> None:
    rollout = spec(steps=[{"weight": 50, "pauseSeconds": 0}])
    p = started(rollout)
    for _ in range(6):
        p = plan(rollout, p.status, revisions=ready(p))
    assert p.status.stable_revision == NEW
    pinned = spec(steps=[{"weight": 50, "pauseSeconds": 0}], targetRevision=OLD)
    p = plan(pinned, p.status, revisions=ready(p))
    assert (p.status.stable_revision, p.status.canary_revision) == (NEW, OLD)
    assert p.status.phase == "Progressing"
    for _ in range(6):
        p = plan(pinned, p.status, revisions=ready(p))
    assert p.status.stable_revision == OLD
    assert dict(p.replicas) == {OLD: 4}
    assert [e.number for e in p.status.history] == [1, 2]
    # The template no longer matters while pinned, and the status says so.
    held = plan(pinned, p.status, revisions=ready(p), template="ccc333")
    assert held.status.phase == "Promoted"
    assert "template revision ccc333 held back" in held.status.message


def test_undo_to_stable_during_a_rollout_discards_the_canary_at_once() -> None:
    rollout = spec(steps=[{"weight": 50}])
    p = started(rollout)
    p = plan(rollout, p.status, revisions=ready(p))
    pinned = spec(steps=[{"weight": 50}], targetRevision=OLD)
    p = plan(pinned, p.status, revisions=ready(p))
    assert p.status.phase == "Promoted"
    assert p.replicas[NEW] == 0
    assert reasons(p) == ["RolloutDiscarded"]
    assert p.status.canary_revision is None


def test_unknown_target_revision_holds_and_degrades() -> None:
    pinned = spec(targetRevision="zzz999")
    p = plan(pinned, stable_status(), revisions={OLD: R(4)}, template=OLD)
    assert p.status.phase == "Promoted"
    assert p.degraded is not None
    assert p.degraded.reason == "RevisionNotFound"
    assert reasons(p) == ["RevisionNotFound"]
    assert "zzz999" in p.status.message
    assert plan(pinned, p.status, revisions={OLD: R(4)}, template=OLD).events == ()


def test_a_new_template_supersedes_a_rollout_in_progress() -> None:
    rollout = spec(steps=[{"weight": 50}])
    p = started(rollout)
    p = plan(rollout, p.status, revisions=ready(p))
    p = plan(rollout, p.status, revisions=ready(p), template="ccc333")
    assert reasons(p) == ["RolloutSuperseded", "RolloutStarted"]
    assert p.status.canary_revision == "ccc333"
    assert p.status.current_step == 0
    assert p.replicas[NEW] < 2 or p.replicas["ccc333"] > 0


# ------------------------------------------------------------------------------- capacity and deadlines


def test_swap_in_place_without_free_gpus_completes() -> None:
    rollout = spec(steps=[{"weight": 50, "pauseSeconds": 0}])
    p = plan(rollout, stable_status(), revisions={OLD: R(4)}, capacity=0)
    assert dict(p.replicas) == {OLD: 3, NEW: 1}
    for _ in range(10):
        p = plan(rollout, p.status, revisions=ready(p), capacity=0)
        assert sum(p.replicas.values()) <= 4
    assert p.status.phase == "Promoted"
    assert dict(p.replicas) == {NEW: 4}


def test_progress_deadline_aborts_a_stuck_step() -> None:
    rollout = spec(steps=[{"weight": 50}], progressDeadlineSeconds=60)
    p = plan(rollout, stable_status(), revisions={OLD: R(4)}, capacity=0, max_unavailable=0)
    stuck = {OLD: R(4), NEW: R(0)}
    p = plan(
        rollout, p.status, revisions=stuck, capacity=0, max_unavailable=0, now=T0 + timedelta(seconds=30)
    )
    assert p.status.phase == "Progressing"
    p = plan(
        rollout, p.status, revisions=stuck, capacity=0, max_unavailable=0, now=T0 + timedelta(seconds=61)
    )
    assert p.status.phase == "Aborted"
    assert reasons(p) == ["ProgressDeadlineExceeded"]
    assert p.status.aborted_at is not None


def test_progress_resets_the_deadline() -> None:
    rollout = spec(steps=[{"weight": 50}], progressDeadlineSeconds=60)
    p = plan(rollout, stable_status(), revisions={OLD: R(4)}, capacity=0, total=4)
    p = plan(rollout, p.status, revisions={OLD: R(3), NEW: R(1)}, capacity=0, now=T0 + timedelta(seconds=50))
    p = plan(
        rollout, p.status, revisions={OLD: R(2), NEW: R(2, 1)}, capacity=0, now=T0 + timedelta(seconds=100)
    )
    assert p.status.phase == "Progressing"
    assert p.status.last_progress_at == format_time(T0 + timedelta(seconds=50))


def test_template_change_at_zero_replicas_is_promoted_directly() -> None:
    p = plan(spec(), stable_status(), revisions={OLD: R(0)}, total=0)
    assert p.status.phase == "Promoted"
    assert p.status.stable_revision == NEW
    assert reasons(p) == ["Promoted"]


def test_fleet_at_zero_mid_rollout_holds() -> None:
    rollout = spec(steps=[{"weight": 50, "pauseSeconds": 0}])
    p = started(rollout)
    p = plan(rollout, p.status, revisions={OLD: R(0), NEW: R(0)}, total=0)
    assert p.status.phase == "Paused"
    assert p.status.canary_revision == NEW


# --------------------------------------------------------------------------------- other strategies


def test_rolling_replaces_with_surge_and_budget() -> None:
    rollout = spec(strategy="Rolling", maxSurge=1)
    p = plan(rollout, stable_status(), revisions={OLD: R(4)}, capacity=10, max_unavailable=1)
    assert dict(p.replicas) == {OLD: 3, NEW: 2}
    assert p.status.total_steps == 1
    for _ in range(6):
        p = plan(rollout, p.status, revisions=ready(p), capacity=10, max_unavailable=1)
        assert sum(p.replicas.values()) <= 5
    assert p.status.stable_revision == NEW
    assert dict(p.replicas) == {NEW: 4}


def test_recreate_stops_old_then_starts_new_and_waits_for_analysis() -> None:
    rollout = spec(strategy="Recreate", analysis=ANALYSIS)
    p = plan(rollout, stable_status(), revisions={OLD: R(4)})
    assert dict(p.replicas) == {OLD: 0, NEW: 0}
    p = plan(rollout, p.status, revisions={OLD: R(0, 2)})  # terminating
    assert p.replicas.get(NEW, 0) == 0
    p = plan(rollout, p.status, revisions={OLD: R(0)})
    assert p.replicas[NEW] == 4
    p = plan(rollout, p.status, revisions={NEW: R(4)})
    assert p.status.phase == "Progressing"
    assert p.analyze == NEW
    assert p.baseline is None
    p = plan(rollout, p.status, revisions={NEW: R(4)}, analysis=run("Pass", T0))
    assert p.status.phase == "Promoted"


def test_recreate_rolls_back_by_recreating_stable() -> None:
    rollout = spec(strategy="Recreate", analysis={**ANALYSIS, "failureLimit": 1})
    p = plan(rollout, stable_status(), revisions={OLD: R(0), NEW: R(4)})
    p = plan(rollout, p.status, revisions={OLD: R(0), NEW: R(4)}, analysis=run("Fail", T0))
    assert p.status.phase == "RolledBack"
    assert dict(p.replicas) == {OLD: 0, NEW: 0}
    p = plan(rollout, p.status, revisions={OLD: R(0), NEW: R(0)})
    assert dict(p.replicas) == {OLD: 4, NEW: 0}


# -------------------------------------------------------------------------------------- restart safety


@pytest.mark.parametrize("ticks", [0, 1, 2, 3, 5, 8])
def test_a_restart_resumes_where_it_was(ticks: int) -> None:
    """Status through the wire (as after an operator restart) gives the same plan as status in memory."""
    rollout = spec(steps=[{"weight": 25, "pauseSeconds": 10}, {"weight": 50}], analysis=ANALYSIS)
    p = started(rollout)
    now = T0
    for i in range(ticks):
        now += timedelta(seconds=10)
        p = plan(rollout, p.status, revisions=ready(p), now=now, analysis=run("Pass", now) if i % 2 else None)
    now += timedelta(seconds=10)
    live = plan(rollout, p.status, revisions=ready(p), now=now, analysis=run("Pass", now))
    restored = RolloutStatus.model_validate(p.status.to_wire())
    again = plan(rollout, restored, revisions=ready(p), now=now, analysis=run("Pass", now))
    assert again == live
    # And a repeated reconcile with nothing new emits nothing new.
    repeat = plan(rollout, live.status, revisions=ready(p), now=now, analysis=run("Pass", now))
    assert repeat.status.current_step == live.status.current_step or repeat.events
    assert all(e.reason not in ("RolloutStarted", "RolledBack") for e in repeat.events)


def test_history_is_bounded_and_keeps_stable() -> None:
    rollout = spec(steps=[{"weight": 50, "pauseSeconds": 0}], historyLimit=2)
    p = plan(rollout, template="r0")
    for i in range(1, 5):
        for _ in range(6):
            p = plan(rollout, p.status, revisions=ready(p), template=f"r{i}")
    assert [(e.revision, e.number, e.phase) for e in p.status.history] == [
        ("r3", 4, "Superseded"),
        ("r4", 5, "Stable"),
    ]
