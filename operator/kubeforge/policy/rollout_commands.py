"""The JSON merge patches behind `kubeforge rollout pause|resume|promote|abort|undo <fleet>`.

Each function takes the InferenceFleet as read from the API server (a plain mapping) and returns the
merge patch (RFC 7386, `application/merge-patch+json`) to send to it; the CLI only reads, calls, sends.
Every patch touches `spec.rollout` alone and is level-triggered: sending it twice does what sending it
once did, and the operator acts on it even if it was down when it was sent. `None` in a patch removes
the field. A patch never names fields the user's manifest is likely to own except `paused`, so GitOps
tools (which leave fields they did not apply alone) keep these controls until the manifest says
otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kubeforge.api.rollout import RolloutStatus
from kubeforge.policy.conditions import format_time

ACTIVE_PHASES = ("Progressing", "Paused")
UNSETTLED_PHASES = (*ACTIVE_PHASES, "Aborted", "RolledBack")
"""Phases in which the stable revision serves but the template's does not (yet, or no more)."""


class RolloutCommandError(ValueError):
    """The command makes no sense for the fleet as it is; the message says why and what to do."""


def _patch(**fields: Any) -> dict[str, Any]:
    return {"spec": {"rollout": fields}}


def rollout_status(fleet: Mapping[str, Any]) -> RolloutStatus:
    """`status.rollout` of a fleet (empty when the operator has not written one yet)."""
    status = fleet.get("status") or {}
    return RolloutStatus.model_validate(status.get("rollout") or {})


def _rollout_spec(fleet: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = fleet.get("spec") or {}
    rollout = spec.get("rollout") or {}
    return rollout if isinstance(rollout, Mapping) else {}


def _name(fleet: Mapping[str, Any]) -> str:
    return str((fleet.get("metadata") or {}).get("name", "the fleet"))


def _active_canary(fleet: Mapping[str, Any], command: str) -> tuple[RolloutStatus, str]:
    status = rollout_status(fleet)
    if status.phase not in ACTIVE_PHASES or status.canary_revision is None:
        raise RolloutCommandError(
            f"{_name(fleet)} has no rollout in progress (phase {status.phase or 'unknown'}); "
            f"nothing to {command}"
        )
    return status, status.canary_revision


def pause_patch() -> dict[str, Any]:
    """Hold the rollout at the current step boundary (and do not start a new one)."""
    return _patch(paused=True)


def resume_patch(fleet: Mapping[str, Any], *, now: datetime) -> dict[str, Any]:
    """Carry on: unpause, lift an abort of the canary, and restart a rollout that aborted itself
    (`retryAt` later than its `abortedAt`). A rolled-back revision stays refused: change the template."""
    status = rollout_status(fleet)
    fields: dict[str, Any] = {"paused": None}
    spec = _rollout_spec(fleet)
    if spec.get("abortRevision") is not None:
        fields["abortRevision"] = None
    if status.phase == "Aborted" and status.aborted_at is not None:
        fields["retryAt"] = format_time(now)
    return _patch(**fields)


def promote_patch(fleet: Mapping[str, Any], *, full: bool = False) -> dict[str, Any]:
    """Approve the current step of the canary (or, with `full`, every remaining step): its pause and the
    wait for a passing measurement are skipped; a failing analysis still rolls back."""
    status, canary = _active_canary(fleet, "promote")
    total = status.total_steps or 1
    step = total - 1 if full else min(status.current_step or 0, total - 1)
    existing = _rollout_spec(fleet).get("promote")
    if isinstance(existing, Mapping) and existing.get("revision") == canary:
        previous = existing.get("step")
        if isinstance(previous, int):
            step = max(step, previous)
    return _patch(promote={"revision": canary, "step": step})


def abort_patch(fleet: Mapping[str, Any]) -> dict[str, Any]:
    """Abort the canary: all traffic back on stable, canary scaled to zero, until `resume` (or a new
    template, which starts a new rollout)."""
    _, canary = _active_canary(fleet, "abort")
    return _patch(abortRevision=canary)


def undo_patch(fleet: Mapping[str, Any], *, to_revision: int | None = None) -> dict[str, Any]:
    """Roll back: run revision number `to_revision` from the history through the same steps and
    analysis. Without a number: while the template's revision is not the one serving (a rollout in
    progress, aborted or rolled back), back to the stable revision; once it serves, the last revision
    promoted before it (one with `promotedAt`), never a canary that was abandoned, aborted or failed.
    Pins `targetRevision`; undoing to the template's own revision removes the pin."""
    status = rollout_status(fleet)
    history = sorted(status.history, key=lambda e: e.number)
    if to_revision is None:
        if status.phase in UNSETTLED_PHASES and status.stable_revision is not None:
            target = status.stable_revision
        else:
            previous = [
                e
                for e in history
                if e.promoted_at is not None
                and e.revision != status.stable_revision
                and e.revision not in status.failed_revisions
            ]
            if not previous:
                raise RolloutCommandError(
                    f"{_name(fleet)} has no earlier revision that served as stable (history entries with"
                    " promotedAt); pick one with --to-revision"
                )
            target = max(previous, key=lambda e: (e.promoted_at or "", e.number)).revision
    else:
        found = [e for e in history if e.number == to_revision]
        if not found:
            numbers = ", ".join(str(e.number) for e in history) or "none"
            raise RolloutCommandError(
                f"{_name(fleet)} has no revision {to_revision} in its history (known: {numbers})"
            )
        target = found[0].revision
    if target in status.failed_revisions:
        raise RolloutCommandError(
            f"revision {target} failed analysis and is never promoted again; change the template instead"
        )
    template = (fleet.get("status") or {}).get("revision")
    return _patch(targetRevision=None if target == template else target)


def follow_template_patch() -> dict[str, Any]:
    """Remove a rollback pin: roll out whatever the template says (`kubeforge rollout undo --clear`)."""
    return _patch(targetRevision=None)
