"""The operator's trust boundary as the controllers apply it: a child's name taken by an object the
operator did not create, an HTTPRoute that did not opt in, and a PriorityClass outside the operator
owner's allow-list.

`Kube.apply_if_changed` refuses to write such an object (`NotOursError`); the runtime then calls the
controller's `warn` with `NAME_CONFLICT`. The owner gets a Warning Event and a `Conflict` condition
(with `Ready` False), written only when they are not there already, so a pass retried with backoff
costs no write. The first pass that writes every child again removes the condition.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubeforge.api.names import INFERENCEFLEET_LABEL
from kubeforge.kube.client import Kube, Obj
from kubeforge.kube.kinds import Kind
from kubeforge.policy.conditions import ConditionUpdate, find_condition, merge_conditions

NAME_CONFLICT = "NameConflict"
"""Reason of the Warning Event (and of the condition) when a child's name is taken."""

CONFLICT = "Conflict"
"""Condition type: True while a child's name is held by an object this owner does not control."""


def conflict_conditions(
    current: list[dict[str, Any]], message: str, *, generation: int | None, now: datetime
) -> list[dict[str, Any]] | None:
    """The owner's conditions with `Conflict` True and `Ready` False, or None when they say so already."""
    conflict = find_condition(current, CONFLICT)
    ready = find_condition(current, "Ready")
    if (
        conflict is not None
        and conflict.get("status") == "True"
        and conflict.get("message") == message
        and ready is not None
        and ready.get("status") == "False"
    ):
        return None
    return merge_conditions(
        current,
        [
            ConditionUpdate(CONFLICT, "True", NAME_CONFLICT, message),
            ConditionUpdate("Ready", "False", NAME_CONFLICT, message),
        ],
        now=now,
        generation=generation,
    )


def without_conflict(current: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The owner's conditions without `Conflict`, or None when there is none to remove."""
    if find_condition(current, CONFLICT) is None:
        return None
    return [c for c in current if c.get("type") != CONFLICT]


def _conditions(obj: Obj) -> list[dict[str, Any]]:
    return list((obj.get("status") or {}).get("conditions") or [])


async def warn_owner(kube: Kube, kind: Kind, obj: Obj, reason: str, message: str) -> None:
    """A Warning Event on the owner; for a name conflict also its `Conflict` condition, and then the
    Event only when the condition changes: a conflict a tenant keeps standing is met on every retry and
    resync, and must not make the operator write an Event each time."""
    if reason != NAME_CONFLICT:
        await kube.event(obj, type_="Warning", reason=reason, message=message)
        return
    meta = obj["metadata"]
    conditions = conflict_conditions(
        _conditions(obj), message[:1024], generation=meta.get("generation"), now=datetime.now(UTC)
    )
    if conditions is not None:
        await kube.event(obj, type_="Warning", reason=reason, message=message)
        await kube.patch_status(
            kind.api_version, kind.kind, meta["name"], meta["namespace"], {"conditions": conditions}
        )


async def clear_conflict(kube: Kube, kind: Kind, obj: Obj | None) -> None:
    """After a pass that wrote every child: drop a `Conflict` condition left by an earlier pass."""
    if obj is None:
        return
    conditions = without_conflict(_conditions(obj))
    if conditions is not None:
        meta = obj["metadata"]
        await kube.patch_status(
            kind.api_version, kind.kind, meta["name"], meta["namespace"], {"conditions": conditions}
        )


PRIORITY_CLASS_NOT_ALLOWED = "PriorityClassNotAllowed"


def priority_class_refusal(name: str | None, allowed: frozenset[str] | None) -> str | None:
    """Why `spec.priorityClassName` is refused, or None. The operator owner lists the classes tenants
    may use (`--allowed-priority-classes`); the chart's admission policy refuses the same at the API
    server, and this is the operator's own check for clusters without it."""
    if name is None or allowed is None or name in allowed:
        return None
    choices = ", ".join(sorted(allowed)) or "none"
    return (
        f"spec.priorityClassName {name!r} is not allowed by the operator (allowed: {choices}); "
        "leave it unset or ask the cluster's operator owner"
    )


async def refuse(kube: Kube, kind: Kind, obj: Obj, reason: str, message: str) -> None:
    """Nothing is built for the object: a Warning Event and `Ready` False saying why, written only
    when the stored condition does not say so already."""
    current = _conditions(obj)
    ready = find_condition(current, "Ready")
    if ready is not None and ready.get("reason") == reason and ready.get("message") == message:
        return
    await kube.event(obj, type_="Warning", reason=reason, message=message)
    meta = obj["metadata"]
    conditions = merge_conditions(
        current,
        [ConditionUpdate("Ready", "False", reason, message)],
        now=datetime.now(UTC),
        generation=meta.get("generation"),
    )
    await kube.patch_status(
        kind.api_version, kind.kind, meta["name"], meta["namespace"], {"conditions": conditions}
    )


ROUTE_OPT_IN = INFERENCEFLEET_LABEL
"""Label or annotation an HTTPRoute carries, with the fleet's name as value, to let that fleet set its
backends' weights. A fleet names its route in its own spec; the route's owner agrees on the route."""


def route_opts_in(route: Obj, fleet: str) -> bool:
    meta = route.get("metadata") or {}
    return any((meta.get(part) or {}).get(ROUTE_OPT_IN) == fleet for part in ("labels", "annotations"))


def route_not_opted_in(fleet: str) -> str:
    return (
        f"not edited: it does not opt in; label or annotate it {ROUTE_OPT_IN}={fleet} to let "
        "this fleet set its backends' weights"
    )
