"""Issue 9.13: how `failureLimit` and `inconclusiveLimit` count, measurement by measurement.

- `Pass` resets both counts.
- `Fail` adds one to `consecutiveFailures` and resets `consecutiveInconclusive` (it had data).
- `Inconclusive` adds one to `consecutiveInconclusive` and leaves `consecutiveFailures` as it is: no
  data is not a pass, so Fail, Inconclusive, Fail are two failures in a row.
- `consecutiveFailures` reaching `failureLimit` rolls back; `consecutiveInconclusive` reaching
  `inconclusiveLimit` aborts. Each measurement counts once (by its time).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeforge.api.rollout import RolloutStatus, Verdict
from kubeforge.policy.rollout import RolloutPlan
from test_rollout_plan import NEW, OLD, T0, R, plan, run, spec, stable_status


def _drive(verdicts: list[Verdict], failure_limit: int, inconclusive_limit: int) -> list[RolloutPlan]:
    """A canary at a manual step (it never advances on its own), ready, measured once per verdict."""
    rollout = spec(
        steps=[{"weight": 50}],
        analysis={
            "maxErrorRate": 0.05,
            "failureLimit": failure_limit,
            "inconclusiveLimit": inconclusive_limit,
        },
    )
    p = plan(rollout, stable_status(), revisions={OLD: R(4)}, total=4)
    revisions = {OLD: R(2), NEW: R(2)}
    p = plan(rollout, p.status, revisions=revisions, total=4)
    assert p.status.step_ready_at is not None
    status: RolloutStatus = p.status
    plans = []
    for i, verdict in enumerate(verdicts):
        now = T0 + timedelta(seconds=10 * (i + 1))
        p = plan(rollout, status, revisions=revisions, total=4, now=now, analysis=run(verdict, now))
        # Measurements seen again (same time) count once.
        again = plan(rollout, p.status, revisions=revisions, total=4, now=now, analysis=run(verdict, now))
        assert again.status.consecutive_failures == p.status.consecutive_failures
        assert again.status.consecutive_inconclusive == p.status.consecutive_inconclusive
        plans.append(p)
        status = p.status
        if p.status.phase in ("RolledBack", "Aborted"):
            break
    return plans


def _expected(verdicts: list[Verdict], failure_limit: int, inconclusive_limit: int) -> str:
    """The documented rule, written out: the phase the rollout ends the sequence in."""
    failures = inconclusive = 0
    for verdict in verdicts:
        if verdict == "Pass":
            failures = inconclusive = 0
        elif verdict == "Fail":
            failures, inconclusive = failures + 1, 0
        else:
            inconclusive += 1
        if failures >= failure_limit:
            return "RolledBack"
        if inconclusive >= inconclusive_limit:
            return "Aborted"
    return "Paused"


@pytest.mark.parametrize(
    ("verdicts", "phase"),
    [
        (["Fail", "Inconclusive", "Fail"], "RolledBack"),  # no data between two failures is no pass
        (["Fail", "Inconclusive", "Inconclusive", "Fail"], "RolledBack"),
        (["Fail", "Pass", "Fail"], "Paused"),  # a pass between them: not in a row
        (["Fail", "Pass", "Fail", "Fail"], "RolledBack"),
        (["Inconclusive", "Fail", "Inconclusive", "Inconclusive"], "Paused"),  # a Fail breaks a no-data run
        (["Inconclusive", "Inconclusive", "Inconclusive"], "Aborted"),
    ],
)
def test_failures_in_a_row(verdicts: list[Verdict], phase: str) -> None:
    plans = _drive(verdicts, failure_limit=2, inconclusive_limit=3)
    assert plans[-1].status.phase == phase, plans[-1].status.message
    assert _expected(verdicts, 2, 3) == phase


@given(
    verdicts=st.lists(st.sampled_from(["Pass", "Fail", "Inconclusive"]), min_size=1, max_size=12),
    failure_limit=st.integers(1, 4),
    inconclusive_limit=st.integers(1, 4),
)
def test_counting_follows_the_documented_rule(
    verdicts: list[Verdict], failure_limit: int, inconclusive_limit: int
) -> None:
    plans = _drive(verdicts, failure_limit, inconclusive_limit)
    assert plans[-1].status.phase == _expected(verdicts, failure_limit, inconclusive_limit)
