"""Condition bookkeeping as Kubernetes API conventions define it, in pure functions.

`lastTransitionTime` moves only when a condition's status flips, so a reconcile that sees nothing new
writes nothing new.

Both kinds also write the two conditions kstatus (sigs.k8s.io/cli-utils, what Flux reads) defines:
`Reconciling` (work towards the spec is under way: InProgress) and `Stalled` (the spec cannot be reached
without a change to it: Failed). kstatus reads `status.observedGeneration` first, then the first of the
two that is True, and only then `Ready`. A fleet derives them from its other conditions, so it goes
through `kstatus_conditions`; a TrainingJob's come from exclusive phases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]


def format_time(when: datetime) -> str:
    """RFC 3339 in UTC with second precision, as metav1.Time serialises."""
    return when.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class ConditionUpdate:
    """What a reconcile concluded about one condition type."""

    type: str
    status: Status
    reason: str
    message: str = ""


def merge_conditions(
    current: Sequence[Mapping[str, Any]],
    updates: Iterable[ConditionUpdate],
    *,
    now: datetime,
    generation: int | None,
) -> list[dict[str, Any]]:
    """The new condition list: updated types replace old ones, untouched types are kept as they were.

    The transition time is kept when the status did not change, even if reason or message did.
    Output is sorted by type so that equal inputs give byte-equal status (no spurious patches).
    """
    by_type: dict[str, dict[str, Any]] = {str(c["type"]): dict(c) for c in current}
    for update in updates:
        previous = by_type.get(update.type)
        transition = format_time(now)
        if previous is not None and previous.get("status") == update.status:
            transition = str(previous.get("lastTransitionTime") or transition)
        condition: dict[str, Any] = {
            "type": update.type,
            "status": update.status,
            "reason": update.reason,
            "message": update.message,
            "lastTransitionTime": transition,
        }
        if generation is not None:
            condition["observedGeneration"] = generation
        by_type[update.type] = condition
    return [by_type[key] for key in sorted(by_type)]


def kstatus_conditions(reconciling: ConditionUpdate, stalled: ConditionUpdate) -> list[ConditionUpdate]:
    """`Reconciling` and `Stalled`, never both True: kstatus takes whichever True one comes first in the
    list (sorted by type, so `Reconciling`), and a stall is the verdict a pipeline must see. A stalled
    object that still moves replicas (draining a rolled-back canary) is therefore not `Reconciling`."""
    if reconciling.type != "Reconciling" or stalled.type != "Stalled":
        raise ValueError("kstatus_conditions takes a Reconciling and a Stalled update")
    if stalled.status == "True" and reconciling.status == "True":
        reconciling = ConditionUpdate("Reconciling", "False", "Stalled", stalled.message)
    return [reconciling, stalled]


def find_condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    for condition in conditions:
        if condition.get("type") == type_:
            return condition
    return None


def is_true(conditions: Sequence[Mapping[str, Any]], type_: str) -> bool:
    found = find_condition(conditions, type_)
    return found is not None and found.get("status") == "True"


def transitions(
    before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Conditions whose status or reason changed: each is worth an Event and a metric update."""
    changed = []
    for condition in after:
        old = find_condition(before, str(condition["type"]))
        if (
            old is None
            or old.get("status") != condition.get("status")
            or old.get("reason") != condition.get("reason")
        ):
            changed.append(condition)
    return changed
