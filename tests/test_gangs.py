"""Which TrainingJobs hold admitted GPU room, and which wait in the admission queue."""

from __future__ import annotations

from typing import Any

import pytest

from kubeforge.policy.capacity import demand_of
from kubeforge.policy.gangs import gangs_of


def _tj(name: str, phase: str, reason: str, status: str = "False", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"image": "x", "workers": 2, "resources": {"gpus": 4, "gpuType": "H100"}, **spec},
        "status": {
            "phase": phase,
            "attempt": 1,
            "conditions": [
                {
                    "type": "Admitted",
                    "status": status,
                    "reason": reason,
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        },
    }


@pytest.mark.parametrize(
    ("obj", "admitted", "queued"),
    [
        (_tj("a", "Pending", "GangAdmitted", "True"), True, False),
        (_tj("a", "Running", "GangAdmitted", "True"), False, False),  # every worker placed
        (_tj("a", "Pending", "KueueAdmitted", "True", queueName="q"), False, False),
        (_tj("a", "Queued", "InsufficientCapacity"), False, True),
        (_tj("a", "Queued", "QuotaExceeded"), False, False),  # waits for its quota, not for GPUs
        (_tj("a", "Queued", "InsufficientCapacity", suspend=True), False, False),
        (_tj("a", "Restarting", "Restarting"), False, False),
    ],
    ids=["pending", "running", "kueue", "queued", "quota", "suspended", "restarting"],
)
def test_gangs_of(obj: dict[str, Any], admitted: bool, queued: bool) -> None:
    found = gangs_of([obj], lambda _: 0)
    whole = demand_of("ns/a", 2, 4, "H100")
    assert found.admitted == ({"ns/a": (whole, 1)} if admitted else {})
    assert [d for _, d in found.queued] == ([whole] if queued else [])
    assert gangs_of([obj], lambda _: 0, skip="ns/a") == gangs_of([], lambda _: 0)
