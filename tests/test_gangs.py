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


def test_a_gang_that_gave_its_gpus_back_queues_behind_those_that_waited_meanwhile() -> None:
    old = _tj("old", "Queued", "InsufficientCapacity")  # created 2026-01-01
    old["status"]["requeuedAt"] = "2026-01-02T00:00:00Z"  # its schedule timeout, a day later
    young = _tj("young", "Queued", "InsufficientCapacity")
    young["metadata"]["creationTimestamp"] = "2026-01-01T12:00:00Z"
    urgent = _tj("urgent", "Queued", "InsufficientCapacity", priorityClassName="high")
    urgent["status"]["requeuedAt"] = "2026-01-03T00:00:00Z"
    found = gangs_of([old, young, urgent], lambda spec: 10 if spec.priority_class_name == "high" else 0)
    assert [order for order, _ in sorted(found.queued)] == [
        (-10, "2026-01-03T00:00:00Z", "ns/urgent"),  # priority first, whenever it queued
        (0, "2026-01-01T12:00:00Z", "ns/young"),
        (0, "2026-01-02T00:00:00Z", "ns/old"),
    ]
