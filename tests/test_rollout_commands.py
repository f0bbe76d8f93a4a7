"""`kubeforge rollout ...` patches: what each command sends, and that the operator acts on it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kubeforge.api.rollout import RolloutSpec, RolloutStatus
from kubeforge.policy.rollout import RevisionState, RolloutInputs, plan_rollout
from kubeforge.policy.rollout_commands import (
    RolloutCommandError,
    abort_patch,
    follow_template_patch,
    pause_patch,
    promote_patch,
    resume_patch,
    undo_patch,
)
from kubeforge.policy.status import apply_merge_patch as merge

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def _history(*entries: tuple[str, int, str]) -> list[dict[str, Any]]:
    """History entries; those that served as stable (phase Stable or Superseded) have `promotedAt`."""
    return [
        {
            "revision": r,
            "number": n,
            "phase": p,
            "createdAt": "2026-01-01T00:00:00Z",
            **({"promotedAt": f"2026-01-01T00:00:0{n}Z"} if p in ("Stable", "Superseded") else {}),
        }
        for r, n, p in entries
    ]


def fleet(
    rollout_status: dict[str, Any], spec_rollout: dict[str, Any] | None = None, template: str = "ccc"
) -> dict[str, Any]:
    return {
        "metadata": {"name": "llama"},
        "spec": {"rollout": spec_rollout or {}},
        "status": {"revision": template, "rollout": rollout_status},
    }


IN_PROGRESS = {
    "phase": "Paused",
    "stableRevision": "bbb",
    "canaryRevision": "ccc",
    "currentStep": 1,
    "totalSteps": 3,
    "history": _history(("aaa", 1, "Superseded"), ("bbb", 2, "Stable"), ("ccc", 3, "Canary")),
}
SETTLED = {
    "phase": "Promoted",
    "stableRevision": "ccc",
    "failedRevisions": ["bbb"],
    "history": _history(("aaa", 1, "Superseded"), ("bbb", 2, "Failed"), ("ccc", 3, "Stable")),
}


def test_pause() -> None:
    assert pause_patch() == {"spec": {"rollout": {"paused": True}}}


@pytest.mark.parametrize(
    ("status", "spec_rollout", "expected"),
    [
        (IN_PROGRESS, {"paused": True}, {"paused": None}),
        (
            {**IN_PROGRESS, "phase": "Aborted"},
            {"abortRevision": "ccc"},
            {"paused": None, "abortRevision": None},
        ),
        (
            {**IN_PROGRESS, "phase": "Aborted", "abortedAt": "2026-01-01T11:00:00Z"},
            {},
            {"paused": None, "retryAt": "2026-01-01T12:00:00Z"},
        ),
    ],
)
def test_resume(status: dict[str, Any], spec_rollout: dict[str, Any], expected: dict[str, Any]) -> None:
    assert resume_patch(fleet(status, spec_rollout), now=T0) == {"spec": {"rollout": expected}}


@pytest.mark.parametrize(
    ("spec_rollout", "full", "step"),
    [
        ({}, False, 1),
        ({}, True, 2),
        ({"promote": {"revision": "ccc", "step": 2}}, False, 2),  # never lowers an approval
        ({"promote": {"revision": "old", "step": 2}}, False, 1),  # another revision's does not count
    ],
)
def test_promote(spec_rollout: dict[str, Any], full: bool, step: int) -> None:
    patch = promote_patch(fleet(IN_PROGRESS, spec_rollout), full=full)
    assert patch == {"spec": {"rollout": {"promote": {"revision": "ccc", "step": step}}}}


def test_abort() -> None:
    assert abort_patch(fleet(IN_PROGRESS)) == {"spec": {"rollout": {"abortRevision": "ccc"}}}


@pytest.mark.parametrize("command", [promote_patch, abort_patch])
def test_commands_need_a_rollout_in_progress(command: Any) -> None:
    with pytest.raises(RolloutCommandError, match="no rollout in progress"):
        command(fleet(SETTLED))


@pytest.mark.parametrize(
    ("status", "to_revision", "expected"),
    [
        (IN_PROGRESS, None, "bbb"),  # during a rollout: back to stable
        (IN_PROGRESS, 1, "aaa"),
        (IN_PROGRESS, 3, None),  # the template's own revision: drop the pin
        (SETTLED, None, "aaa"),  # previous, skipping the failed one
        (SETTLED, 1, "aaa"),
        # Issue 9.12: never to a canary that did not serve as stable.
        (
            {
                "phase": "Promoted",
                "stableRevision": "ccc",
                "history": _history(
                    ("aaa", 1, "Superseded"),
                    ("bbb", 2, "Abandoned"),
                    ("ddd", 3, "Aborted"),
                    ("ccc", 4, "Stable"),
                ),
            },
            None,
            "aaa",
        ),
        # An aborted or rolled-back template: the stable revision is the last one promoted.
        ({**IN_PROGRESS, "phase": "Aborted"}, None, "bbb"),
        ({**IN_PROGRESS, "phase": "RolledBack", "failedRevisions": ["ccc"]}, None, "bbb"),
    ],
)
def test_undo(status: dict[str, Any], to_revision: int | None, expected: str | None) -> None:
    patch = undo_patch(fleet(status), to_revision=to_revision)
    assert patch == {"spec": {"rollout": {"targetRevision": expected}}}


@pytest.mark.parametrize(
    ("status", "to_revision", "message"),
    [
        (SETTLED, 2, "failed analysis"),
        (SETTLED, 7, r"no revision 7 in its history \(known: 1, 2, 3\)"),
        (
            {"phase": "Promoted", "stableRevision": "ccc", "history": _history(("ccc", 1, "Stable"))},
            None,
            "no earlier revision that served as stable",
        ),
    ],
)
def test_undo_refusals(status: dict[str, Any], to_revision: int | None, message: str) -> None:
    with pytest.raises(RolloutCommandError, match=message):
        undo_patch(fleet(status), to_revision=to_revision)


def test_follow_template() -> None:
    assert follow_template_patch() == {"spec": {"rollout": {"targetRevision": None}}}


def test_patches_drive_the_operator() -> None:
    """Each command's patch, applied to the fleet, has the effect it names on the next plan."""
    spec_rollout: dict[str, Any] = {"steps": [{"weight": 50}]}
    revisions = {"bbb": RevisionState(2, 2), "ccc": RevisionState(2, 2)}

    def reconcile(status: dict[str, Any], rollout: dict[str, Any]) -> dict[str, Any]:
        plan = plan_rollout(
            RolloutInputs(
                spec=RolloutSpec.model_validate(rollout),
                status=RolloutStatus.model_validate(status),
                template_revision="ccc",
                total_replicas=4,
                now=T0,
                revisions=revisions,
            )
        )
        return plan.status.to_wire()

    status = reconcile({"stableRevision": "bbb", "phase": "Promoted"}, spec_rollout)
    status = reconcile(status, spec_rollout)
    assert status["phase"] == "Paused"
    promoted = merge({"spec": {"rollout": spec_rollout}}, promote_patch(fleet(status, spec_rollout)))
    assert reconcile(status, promoted["spec"]["rollout"])["phase"] == "Promoted"
    aborted = merge({"spec": {"rollout": spec_rollout}}, abort_patch(fleet(status, spec_rollout)))
    after_abort = reconcile(status, aborted["spec"]["rollout"])
    assert after_abort["phase"] == "Aborted"
    resumed = merge(aborted, resume_patch(fleet(after_abort, aborted["spec"]["rollout"]), now=T0))
    assert "abortRevision" not in resumed["spec"]["rollout"]
    assert reconcile(after_abort, resumed["spec"]["rollout"])["phase"] in ("Progressing", "Paused")


def test_undo_after_an_abandoned_canary_goes_to_the_last_promoted_revision() -> None:
    """Issue 9.12, through the state machine: bbb is stable, ccc is abandoned mid-canary for ddd, ddd is
    promoted. History says ccc never served as stable, and `undo` goes back to bbb, not ccc."""
    rollout = RolloutSpec.model_validate({"steps": [{"weight": 50, "pauseSeconds": 0}]})

    def reconcile(status: RolloutStatus | None, template: str, revisions: dict[str, int]) -> RolloutStatus:
        plan = plan_rollout(
            RolloutInputs(
                spec=rollout,
                status=status,
                template_revision=template,
                total_replicas=2,
                now=T0,
                revisions={r: RevisionState(n, n) for r, n in revisions.items()},
            )
        )
        return RolloutStatus.model_validate(plan.status.to_wire())

    status = reconcile(None, "bbb", {"bbb": 2})
    status = reconcile(status, "ccc", {"bbb": 2})
    assert status.canary_revision == "ccc"
    status = reconcile(status, "ddd", {"bbb": 1, "ccc": 1})  # template changed mid-canary
    status = reconcile(status, "ddd", {"bbb": 1, "ddd": 1})
    assert status.stable_revision == "ddd"
    history = {e.revision: e for e in status.history}
    assert history["bbb"].phase == "Superseded"
    assert history["bbb"].promoted_at is not None
    assert history["ccc"].phase == "Abandoned"
    assert history["ccc"].promoted_at is None
    assert history["ddd"].promoted_at is not None
    fleet_now = fleet(status.to_wire(), template="ddd")
    assert undo_patch(fleet_now) == {"spec": {"rollout": {"targetRevision": "bbb"}}}
