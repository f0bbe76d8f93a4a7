"""`kubeforge rollout status -w`: the line printed for each state of a fleet, and when it stops."""

from __future__ import annotations

from typing import Any

import pytest

from kubeforge.cli import describe_rollout


def _fleet(generation: int = 2, observed: int | None = 2, **rollout: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"observedGeneration": observed, "revision": "r2"}
    if rollout:
        status["rollout"] = rollout
    return {"metadata": {"name": "chat", "generation": generation}, "status": status}


@pytest.mark.parametrize(
    ("fleet", "line", "verdict"),
    [
        (
            _fleet(observed=1, phase="Promoted", stableRevision="r1"),
            "inferencefleet/chat: waiting for the operator to observe generation 2",
            None,
        ),
        (
            _fleet(
                phase="Progressing",
                currentStep=1,
                totalSteps=3,
                canaryWeight=25,
                canaryRevision="r2",
                stableRevision="r1",
                canaryReadyReplicas=1,
                stableReadyReplicas=3,
                message="analysing",
            ),
            "inferencefleet/chat [#####---------------]  25% Progressing step 2/3, canary r2 (1 ready), "
            "stable r1 (3 ready): analysing",
            None,
        ),
        (
            _fleet(phase="Promoted", stableRevision="r2", message="r2 promoted"),
            "inferencefleet/chat [####################] 100% Promoted: r2 promoted\n"
            "inferencefleet/chat successfully rolled out (revision r2)",
            0,
        ),
        (
            _fleet(phase="RolledBack", canaryWeight=0, canaryRevision="r2", stableRevision="r1"),
            "inferencefleet/chat [--------------------]   0% RolledBack, canary r2 (0 ready), "
            "stable r1 (0 ready)",
            1,
        ),
        (_fleet(phase="Aborted", canaryRevision="r2", stableRevision="r1"), None, 1),
        (_fleet(), "inferencefleet/chat: waiting for the first revision to become ready", None),
    ],
    ids=["not-observed", "mid-canary", "promoted", "rolled-back", "aborted", "first-revision"],
)
def test_status_line(fleet: dict[str, Any], line: str | None, verdict: int | None) -> None:
    got_line, got_verdict = describe_rollout(fleet)
    if line is not None:
        assert got_line == line
    assert got_verdict == verdict


def test_a_ready_fleet_without_a_rollout_is_done() -> None:
    fleet = _fleet()
    fleet["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    assert describe_rollout(fleet) == ("inferencefleet/chat: no rollout in progress, revision r2 serves", 0)
