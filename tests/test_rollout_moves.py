"""Replica moves between revisions: surge when GPUs allow, swap in place when not, never below the budget."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeforge.api.rollout import RolloutSpec
from kubeforge.policy.rollout import (
    DEFAULT_STEPS,
    FULL_STEP,
    RevisionState,
    canary_replicas,
    effective_steps,
    plan_moves,
    recreate_targets,
    resolve_max_unavailable,
    split_weights,
)

S, C = "stable", "canary"


@pytest.mark.parametrize(
    ("total", "weight", "expected"),
    [(10, 10, 1), (10, 25, 3), (4, 50, 2), (3, 10, 1), (1, 1, 1), (0, 50, 0), (7, 100, 7), (100, 1, 1)],
)
def test_canary_replicas(total: int, weight: int, expected: int) -> None:
    assert canary_replicas(total, weight) == expected


@pytest.mark.parametrize(
    ("value", "total", "expected"),
    [(1, 10, 1), (0, 10, 0), ("25%", 10, 3), ("10%", 4, 1), ("0%", 10, 0), ("100%", 3, 3), (-1, 3, 0)],
)
def test_resolve_max_unavailable(value: int | str, total: int, expected: int) -> None:
    assert resolve_max_unavailable(value, total) == expected


@pytest.mark.parametrize(
    ("ready", "fallback", "expected"),
    [
        ({S: 3, C: 1}, S, {S: 75, C: 25}),
        ({S: 2, C: 1}, S, {S: 67, C: 33}),
        ({S: 1, C: 1, "old": 1}, S, {"old": 33, C: 33, S: 34}),
        ({S: 0, C: 0}, S, {S: 100, C: 0}),
        ({C: 0}, S, {S: 100, C: 0}),
        ({S: 0, C: 4}, S, {S: 0, C: 100}),
    ],
)
def test_split_weights(ready: dict[str, int], fallback: str, expected: dict[str, int]) -> None:
    assert split_weights(ready, fallback) == expected


@given(
    st.dictionaries(st.text(min_size=1, max_size=3), st.integers(0, 1000), max_size=5), st.text(min_size=1)
)
def test_split_weights_sum_to_100(ready: dict[str, int], fallback: str) -> None:
    weights = split_weights(ready, fallback)
    assert sum(weights.values()) == 100
    assert all(w >= 0 for w in weights.values())
    anything_ready = any(r > 0 for r in ready.values())
    assert all(weights[n] == 0 for n, r in ready.items() if r == 0 and (anything_ready or n != fallback))


def test_effective_steps() -> None:
    assert effective_steps(RolloutSpec()) == DEFAULT_STEPS
    assert effective_steps(RolloutSpec(strategy="Rolling")) == FULL_STEP
    custom = RolloutSpec.model_validate({"steps": [{"weight": 5}]})
    assert [s.weight for s in effective_steps(custom)] == [5]


def R(replicas: int, ready: int | None = None, pending: int = 0) -> RevisionState:  # noqa: N802
    return RevisionState(replicas, replicas if ready is None else ready, pending)


@pytest.mark.parametrize(
    ("current", "targets", "max_unavailable", "capacity", "max_surge", "expected"),
    [
        # Plenty of GPUs: the canary comes up at once, stable stays until it is ready.
        ({S: R(4)}, {S: 3, C: 1}, 1, 10, None, {S: 4, C: 1}),
        ({S: R(4), C: R(1)}, {S: 3, C: 1}, 1, 10, None, {S: 3, C: 1}),
        ({S: R(4), C: R(1, 0)}, {S: 3, C: 1}, 1, 10, None, {S: 4, C: 1}),
        # Unknown capacity (CPU fleets) behaves as plenty.
        ({S: R(10)}, {S: 5, C: 5}, 1, None, None, {S: 10, C: 5}),
        # No free GPU: swap in place, one down, one up, within the budget.
        ({S: R(4)}, {S: 2, C: 2}, 1, 0, None, {S: 3, C: 1}),
        ({S: R(3), C: R(1, 0)}, {S: 2, C: 2}, 1, 0, None, {S: 3, C: 1}),  # wait for the new pod
        ({S: R(3), C: R(1)}, {S: 2, C: 2}, 1, 0, None, {S: 2, C: 2}),
        # A bigger budget swaps more at once.
        ({S: R(10)}, {S: 5, C: 5}, 3, 0, None, {S: 7, C: 3}),
        # A budget of zero and no GPUs: no move is possible.
        ({S: R(4)}, {S: 2, C: 2}, 0, 0, None, {S: 4, C: 0}),
        # Some capacity, not enough: swap plus what fits.
        ({S: R(10)}, {S: 5, C: 5}, 1, 2, None, {S: 9, C: 3}),
        # Canary pods stuck Pending: stable gives way (the known "never drained" failure).
        ({S: R(4), C: R(2, 0, pending=2)}, {S: 2, C: 2}, 1, 0, None, {S: 3, C: 2}),
        # Unready stable pods go first, at no cost to the budget.
        ({S: R(4, 2)}, {S: 2, C: 2}, 0, 0, None, {S: 2, C: 2}),
        # Pending stable pods free no GPU.
        ({S: R(4, 2, pending=2)}, {S: 2, C: 2}, 0, 0, None, {S: 2, C: 0}),
        # Old revisions drain before stable shrinks.
        ({S: R(2), "old": R(2), C: R(0)}, {S: 2, C: 2}, 1, 0, None, {S: 2, "old": 1, C: 1}),
        # Rollback direction works the same way.
        ({S: R(2), C: R(2)}, {S: 4, C: 0}, 1, 10, None, {S: 4, C: 2}),
        ({S: R(4), C: R(2)}, {S: 4, C: 0}, 1, 10, None, {S: 4, C: 0}),
        # Scale-down of the fleet (autoscaler) during a step.
        ({S: R(8), C: R(2)}, {S: 4, C: 1}, 1, 0, None, {S: 4, C: 1}),
        # Rolling: maxSurge bounds the pod count, the budget bounds unavailability.
        ({S: R(4)}, {C: 4}, 1, 10, 1, {S: 3, C: 2}),
        ({S: R(4)}, {C: 4}, 0, 10, 1, {S: 4, C: 1}),
        ({S: R(4), C: R(1)}, {C: 4}, 0, 10, 1, {S: 3, C: 2}),
        ({S: R(4)}, {C: 4}, 1, 0, 1, {S: 3, C: 1}),
    ],
)
def test_plan_moves(
    current: dict[str, RevisionState],
    targets: dict[str, int],
    max_unavailable: int,
    capacity: int | None,
    max_surge: int | None,
    expected: dict[str, int],
) -> None:
    total = sum(targets.values())
    moved = plan_moves(
        current,
        targets,
        total=total,
        max_unavailable=max_unavailable,
        surge_capacity=capacity,
        max_surge=max_surge,
    )
    assert {n: v for n, v in moved.items() if v or n in expected} == expected


revision_state = st.builds(
    lambda replicas, ready, pending: RevisionState(
        replicas, min(ready, replicas), min(pending, replicas - min(ready, replicas))
    ),
    st.integers(0, 20),
    st.integers(0, 20),
    st.integers(0, 20),
)


@given(
    current=st.fixed_dictionaries({S: revision_state, C: revision_state}, optional={"old": revision_state}),
    total=st.integers(0, 20),
    weight=st.integers(0, 100),
    max_unavailable=st.integers(0, 5),
    capacity=st.none() | st.integers(0, 10),
    max_surge=st.none() | st.integers(0, 5),
)
def test_move_properties(
    current: dict[str, RevisionState],
    total: int,
    weight: int,
    max_unavailable: int,
    capacity: int | None,
    max_surge: int | None,
) -> None:
    canary = canary_replicas(total, weight)
    targets = {S: total - canary, C: canary}
    moved = plan_moves(
        current,
        targets,
        total=total,
        max_unavailable=max_unavailable,
        surge_capacity=capacity,
        max_surge=max_surge,
    )
    before = sum(s.replicas for s in current.values())
    after = sum(moved.values())
    ready_before = sum(s.ready for s in current.values())
    ready_removed = sum(
        max(0, (current[n].replicas - moved[n]) - (current[n].replicas - current[n].ready)) for n in current
    )
    for n, s in current.items():
        # Every revision moves towards its target, never past it.
        target = targets.get(n, 0)
        assert min(s.replicas, target) <= moved[n] <= max(s.replicas, target)
    # Ready pods are removed only down to the floor (or not at all when already below it).
    assert ready_before - ready_removed >= min(ready_before, max(0, total - max_unavailable))
    # Never more pods than exist plus the free capacity.
    if capacity is not None:
        assert after <= before + capacity
    if max_surge is not None:
        assert after <= max(before, total + max_surge)


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        ({S: R(4), C: R(0)}, {S: 0, C: 0}),
        ({S: R(0, 1), C: R(0)}, {S: 0, C: 0}),  # still terminating
        ({S: RevisionState(0, 0, 0, 2), C: R(0)}, {S: 0, C: 0}),  # deleted pods, not counted ready
        ({S: R(0), C: R(0)}, {S: 0, C: 4}),
        ({S: R(0), C: R(2)}, {S: 0, C: 4}),
        ({S: R(3), C: R(2)}, {S: 0, C: 2}),
    ],
)
def test_recreate_targets(current: dict[str, RevisionState], expected: dict[str, int]) -> None:
    assert recreate_targets(current, C, 4) == expected
