"""Which condition transitions of a fleet are Events (`policy.fleet_events`)."""

from __future__ import annotations

import pytest

from kubeforge.api.common import Condition
from kubeforge.policy.fleet_events import condition_events

T = "2026-12-01T00:00:00Z"


def ready(status: str, reason: str) -> Condition:
    return Condition(type="Ready", status=status, reason=reason, message="m", last_transition_time=T)


def test_a_promoted_rollouts_tail_is_no_news() -> None:
    """After `Promoted`, a pass that still sees the replaced Deployment reports Ready=False `Updating`,
    and the next one `Serving`: neither is an Event (the rollout's own events said it)."""
    rolling, tail, done = (
        ready("False", "RolloutInProgress"),
        ready("False", "Updating"),
        ready("True", "Serving"),
    )
    assert condition_events([rolling], [tail]) == ()
    assert condition_events([tail], [done]) == ()
    assert condition_events([ready("True", "Serving")], [tail]) == ()


@pytest.mark.parametrize("reason", ["CapacityLimited", "WaitingForReplicas"])
def test_a_serving_fleet_losing_replicas_is_still_a_warning(reason: str) -> None:
    events = condition_events([ready("True", "Serving")], [ready("False", reason)])
    assert [(e.type, e.reason) for e in events] == [("Warning", reason)]
    back = condition_events([ready("False", reason)], [ready("True", "Serving")])
    assert [(e.type, e.reason) for e in back] == [("Normal", "Serving")]


def test_replicas_coming_up_during_a_rollouts_tail_are_news_once() -> None:
    """A fleet that was not serving (its replicas lost) whose new revision comes up while the old one
    is removed: entering the tail says it recovered (Normal, not a warning), Serving after it is quiet."""
    down, tail = ready("False", "WaitingForReplicas"), ready("False", "Updating")
    events = condition_events([down], [tail])
    assert [(e.type, e.reason) for e in events] == [("Normal", "Updating")]
    assert condition_events([tail], [ready("True", "Serving")]) == ()
