"""Condition bookkeeping follows the Kubernetes API conventions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeforge.policy.conditions import (
    ConditionUpdate,
    find_condition,
    format_time,
    is_true,
    kstatus_conditions,
    merge_conditions,
    parse_time,
    transitions,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_new_condition_gets_now_as_transition_time() -> None:
    [ready] = merge_conditions([], [ConditionUpdate("Ready", "True", "Running")], now=T0, generation=3)
    assert ready == {
        "type": "Ready",
        "status": "True",
        "reason": "Running",
        "message": "",
        "lastTransitionTime": "2026-01-01T12:00:00Z",
        "observedGeneration": 3,
    }


@pytest.mark.parametrize(
    ("new_status", "expected_time"),
    [("True", format_time(T0)), ("False", format_time(T1))],
    ids=["same-status-keeps-time", "flip-moves-time"],
)
def test_transition_time_moves_only_on_flip(new_status: str, expected_time: str) -> None:
    first = merge_conditions([], [ConditionUpdate("Ready", "True", "A")], now=T0, generation=1)
    second = merge_conditions(
        first,
        [ConditionUpdate("Ready", new_status, "B", "changed")],  # type: ignore[arg-type]
        now=T1,
        generation=2,
    )
    assert second[0]["lastTransitionTime"] == expected_time
    assert second[0]["reason"] == "B"


def test_untouched_conditions_are_kept_and_output_sorted() -> None:
    current = merge_conditions([], [ConditionUpdate("Ready", "True", "A")], now=T0, generation=1)
    merged = merge_conditions(
        current, [ConditionUpdate("Degraded", "False", "AsExpected")], now=T1, generation=1
    )
    assert [c["type"] for c in merged] == ["Degraded", "Ready"]
    assert find_condition(merged, "Ready") == current[0]
    assert is_true(merged, "Ready")
    assert not is_true(merged, "Degraded")


def test_transitions_report_status_and_reason_changes_only() -> None:
    before = merge_conditions([], [ConditionUpdate("Ready", "False", "Pending")], now=T0, generation=1)
    same = merge_conditions(
        before, [ConditionUpdate("Ready", "False", "Pending", "new msg")], now=T1, generation=1
    )
    assert transitions(before, same) == []
    flipped = merge_conditions(before, [ConditionUpdate("Ready", "True", "Running")], now=T1, generation=1)
    assert [c["reason"] for c in transitions(before, flipped)] == ["Running"]


_updates = st.lists(
    st.builds(
        ConditionUpdate,
        type=st.sampled_from(["Ready", "Progressing", "Degraded"]),
        status=st.sampled_from(["True", "False", "Unknown"]),
        reason=st.sampled_from(["A", "B"]),
    ),
    max_size=6,
)


@given(_updates, _updates)
def test_merge_is_idempotent_and_keyed_by_type(
    first: list[ConditionUpdate], second: list[ConditionUpdate]
) -> None:
    state = merge_conditions([], first, now=T0, generation=1)
    state = merge_conditions(state, second, now=T1, generation=2)
    types = [c["type"] for c in state]
    assert types == sorted(set(types))
    # Re-applying the same conclusions later changes nothing: no spurious status patches.
    last = {u.type: u for u in second}
    again = merge_conditions(state, list(last.values()), now=T1 + timedelta(hours=1), generation=2)
    assert again == state


def test_time_round_trip() -> None:
    assert parse_time(format_time(T0)) == T0
    assert parse_time(None) is None


_kstatus_pair = st.tuples(
    st.builds(
        ConditionUpdate,
        type=st.just("Reconciling"),
        status=st.sampled_from(["True", "False", "Unknown"]),
        reason=st.sampled_from(["A", "B"]),
    ),
    st.builds(
        ConditionUpdate,
        type=st.just("Stalled"),
        status=st.sampled_from(["True", "False", "Unknown"]),
        reason=st.sampled_from(["A", "B"]),
        message=st.sampled_from(["", "why"]),
    ),
)


@given(_kstatus_pair)
def test_reconciling_and_stalled_are_never_both_true(pair: tuple[ConditionUpdate, ConditionUpdate]) -> None:
    """kstatus takes the first True one in list order (`Reconciling` sorts first): a stall must win."""
    reconciling, stalled = kstatus_conditions(*pair)
    assert stalled == pair[1]
    assert not (reconciling.status == "True" and stalled.status == "True")
    if stalled.status == "True" and pair[0].status == "True":
        assert (reconciling.status, reconciling.reason, reconciling.message) == (
            "False",
            "Stalled",
            stalled.message,
        )
    else:
        assert reconciling == pair[0]


def test_kstatus_conditions_take_the_two_types_in_order() -> None:
    with pytest.raises(ValueError, match="Reconciling and a Stalled"):
        kstatus_conditions(
            ConditionUpdate("Stalled", "True", "A"), ConditionUpdate("Reconciling", "True", "B")
        )
