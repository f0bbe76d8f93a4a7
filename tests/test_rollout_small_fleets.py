"""Issue 9.10: small fleets keep a baseline. A step rounds both revisions up (as Argo Rollouts counts a
basic canary), so one or two replicas at 10% surge a canary pod while every stable pod keeps serving;
with no GPU free the pods swap in place, never below the disruption budget. The weights reported are
those of the ready replicas that serve."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeforge.policy.rollout import RevisionState, step_targets
from test_rollout_plan import NEW, OLD, T0, R, plan, ready, spec, stable_status

TEN = spec(steps=[{"weight": 10}, {"weight": 100, "pauseSeconds": 0}])


@pytest.mark.parametrize("total", [1, 2])
def test_a_small_fleet_surges_a_canary_pod_and_keeps_its_stable_pods(total: int) -> None:
    p = plan(TEN, stable_status(), revisions={OLD: R(total)}, total=total, capacity=1)
    assert dict(p.replicas) == {OLD: total, NEW: 1}
    assert p.weights == {OLD: 100, NEW: 0}  # the canary serves nothing until it is ready
    p = plan(TEN, p.status, revisions=ready(p), total=total, capacity=0)
    assert dict(p.replicas) == {OLD: total, NEW: 1}  # holds at the step, waiting for a promote
    assert p.status.phase == "Paused"
    share = round(100 / (total + 1))
    assert p.weights == {OLD: 100 - share, NEW: share}
    assert p.status.canary_weight == share
    assert p.analyze is None
    assert p.status.stable_ready_replicas == total


def test_analysis_has_a_baseline_at_every_step_below_100() -> None:
    rollout = spec(steps=[{"weight": 10}], analysis={"maxErrorRateIncrease": 0.01})
    p = plan(rollout, stable_status(), revisions={OLD: R(1)}, total=1, capacity=1)
    p = plan(rollout, p.status, revisions=ready(p), total=1, capacity=0)
    assert (p.analyze, p.baseline) == (NEW, OLD)


@pytest.mark.parametrize(
    ("total", "max_unavailable", "expected"), [(1, 1, {OLD: 0, NEW: 1}), (2, 1, {OLD: 1, NEW: 1})]
)
def test_no_free_gpu_swaps_in_place_within_the_budget(
    total: int, max_unavailable: int, expected: dict[str, int]
) -> None:
    p = plan(
        TEN,
        stable_status(),
        revisions={OLD: R(total)},
        total=total,
        capacity=0,
        max_unavailable=max_unavailable,
    )
    assert dict(p.replicas) == expected
    # What still serves after the plan: never fewer than total - maxUnavailable ready pods.
    assert p.replicas[OLD] >= total - max_unavailable
    # The swapped-in canary is ready: it serves what the stable pods no longer do.
    p = plan(TEN, p.status, revisions=ready(p), total=total, capacity=0, max_unavailable=max_unavailable)
    assert p.weights[NEW] == round(100 * expected[NEW] / total)


def test_no_free_gpu_and_no_budget_moves_nothing() -> None:
    p = plan(TEN, stable_status(), revisions={OLD: R(1)}, total=1, capacity=0, max_unavailable=0)
    assert dict(p.replicas) == {OLD: 1, NEW: 0}
    assert p.weights == {OLD: 100, NEW: 0}


def test_a_gpu_freed_later_brings_the_baseline_back() -> None:
    p = plan(TEN, stable_status(), revisions={OLD: R(1)}, total=1, capacity=0)
    assert dict(p.replicas) == {OLD: 0, NEW: 1}
    p = plan(TEN, p.status, revisions=ready(p), total=1, capacity=1, now=T0)
    assert dict(p.replicas) == {OLD: 1, NEW: 1}


@given(
    total=st.integers(1, 40),
    weight=st.integers(1, 99),
    free=st.one_of(st.none(), st.integers(0, 3)),
)
def test_step_targets_round_both_sides_up_when_the_surge_fits(
    total: int, weight: int, free: int | None
) -> None:
    current = {OLD: RevisionState(total, total)}
    targets = step_targets(OLD, NEW, total=total, weight=weight, current=current, surge_capacity=free)
    canary = math.ceil(total * weight / 100)
    assert targets[NEW] == min(total, canary)
    kept = math.ceil(total * (100 - weight) / 100)
    fits = free is None or free >= targets[NEW]  # every canary pod to add must fit, or pods swap
    assert targets[OLD] == (kept if fits else total - targets[NEW])
    assert targets[OLD] >= 1 or not fits  # a baseline whenever the surge fits
    assert sum(targets.values()) <= total + 1  # at most one pod above the total
