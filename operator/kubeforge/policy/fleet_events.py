"""Which changes of an InferenceFleet are news: the Events a pass emits and the outcomes it counts.

- A condition transition (status or reason changed) is an Event, Warning when the condition turned bad,
  except `Progressing`, the kstatus conditions that restate it and `Degraded` (`Reconciling`,
  `Stalled`), and the reasons the rollout announces with Events of its own; a condition's first,
  healthy value (and a new fleet that is not Ready yet) is no news, nor is `Ready` coming back at the
  end of a rollout or while its replaced revision is removed (`Promoted`, `RolledBack`,
  `RolloutAborted` said it, as `RolloutStarted` said why it went).
- An autoscaler decision that changes the replica count is `ScaledUp` or `ScaledDown`.
- The rollout's events ending a rollout count as its outcome in `kubeforge_rollout_outcomes_total`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from kubeforge.api.common import Condition
from kubeforge.policy.autoscaler import Decision
from kubeforge.policy.conditions import transitions
from kubeforge.policy.events import Event

WARNING_WHEN_TRUE = frozenset({"Degraded", "CapacityLimited", "MetricsUnavailable", "BudgetLimited"})
WARNING_WHEN_FALSE = frozenset({"TrafficRouted", "Ready"})
SILENT_TYPES = frozenset({"Progressing", "Reconciling", "Stalled"})
"""Condition types whose transitions are no Event: another condition or the rollout already says it."""
ROLLOUT_REASONS = frozenset({"RolledBack", "RolloutAborted", "RevisionNotFound", "RolloutInProgress"})
"""Condition reasons whose transitions the rollout announces with events of its own."""
TAIL_REASON = "Updating"
"""`Ready`'s reason while the new revision serves and a replaced revision's Deployment is removed: the
tail of a rollout, which `Promoted` or `RolledBack` already announced. Entered from the rollout (or
from Ready, when a pass saw no step in between) it is no news, and neither is `Serving` after it;
entered from a fleet that was not serving (its replicas came up during the rollout) it says so."""

ROLLOUT_OUTCOMES: Mapping[str, str] = {
    "Promoted": "Promoted",
    "RolledBack": "RolledBack",
    "RolloutAborted": "Aborted",
    "ProgressDeadlineExceeded": "Aborted",
}
"""Event reasons that end a rollout, and the outcome each counts as."""


def changed_conditions(before: Sequence[Condition], after: Sequence[Condition]) -> tuple[Condition, ...]:
    """Conditions whose status or reason changed (each is counted in the transitions metric)."""
    old = [c.to_wire() for c in before]
    new = {c.type: c for c in after}
    return tuple(new[str(c["type"])] for c in transitions(old, [c.to_wire() for c in after]))


def condition_events(before: Sequence[Condition], after: Sequence[Condition]) -> tuple[Event, ...]:
    """The Events for the condition transitions from `before` to `after`."""
    was = {c.type: c.reason for c in before}
    was_ready = any(c.type == "Ready" and c.status == "True" for c in before)
    events: list[Event] = []
    for condition in changed_conditions(before, after):
        ctype, status, reason = condition.type, condition.status, condition.reason
        if ctype in SILENT_TYPES or reason in ROLLOUT_REASONS:
            continue
        if ctype == "Ready" and status == "True" and was.get(ctype) in (*ROLLOUT_REASONS, TAIL_REASON):
            continue  # the rollout's own event ends it
        tail = ctype == "Ready" and reason == TAIL_REASON
        if tail and (was_ready or was.get(ctype) in ROLLOUT_REASONS):
            continue
        warning = not tail and (
            (ctype in WARNING_WHEN_TRUE and status == "True")
            or (ctype in WARNING_WHEN_FALSE and status == "False")
        )
        if ctype not in was and (not warning or ctype == "Ready"):
            continue  # a condition's first, healthy value (or a new fleet not ready yet) is no news
        events.append(
            Event("Warning" if warning else "Normal", reason, f"{ctype}={status}: {condition.message}")
        )
    return tuple(events)


SCALE_REASONS = frozenset({"ScaledUp", "ScaledDown"})


def scale_event(decision: Decision) -> Event | None:
    """`ScaledUp` / `ScaledDown` for an autoscaler decision that changes the count; None for a hold."""
    if decision.direction == "hold":
        return None
    reason = "ScaledUp" if decision.direction == "up" else "ScaledDown"  # SCALE_REASONS
    message = f"{decision.previous} -> {decision.desired} replicas ({decision.reason}): {decision.message}"
    return Event("Normal", reason, message)


def outcomes(events: Iterable[Event]) -> tuple[str, ...]:
    """The rollout outcomes the events announce, one per event that ends a rollout."""
    return tuple(ROLLOUT_OUTCOMES[e.reason] for e in events if e.reason in ROLLOUT_OUTCOMES)
