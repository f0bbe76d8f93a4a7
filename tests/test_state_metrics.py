"""`kubeforge_condition` and `kubeforge_phase`: one series per possible value, current state only."""

from __future__ import annotations

import pytest

from kubeforge.metrics import exposition

KIND, NS = "InferenceFleet", "team-state"


@pytest.fixture(autouse=True)
def _clean() -> None:
    for name in ("chat", "code"):
        exposition.forget(KIND, NS, name)
        exposition.forget("TrainingJob", NS, name)


def condition(name: str, type_: str, status: str) -> float | None:
    labels = {"kind": KIND, "namespace": NS, "name": name, "type": type_, "status": status}
    return exposition.REGISTRY.get_sample_value("kubeforge_condition", labels)


def test_each_condition_has_a_series_per_status_with_one_set() -> None:
    exposition.record_conditions(
        KIND,
        NS,
        "chat",
        [{"type": "Ready", "status": "True"}, {"type": "CapacityLimited", "status": "False"}],
    )
    assert [condition("chat", "Ready", s) for s in ("True", "False", "Unknown")] == [1.0, 0.0, 0.0]
    assert [condition("chat", "CapacityLimited", s) for s in ("True", "False", "Unknown")] == [0.0, 1.0, 0.0]


def test_recording_again_replaces_the_set_and_forget_drops_only_that_object() -> None:
    exposition.record_conditions(KIND, NS, "chat", [{"type": "CapacityLimited", "status": "True"}])
    exposition.record_conditions(KIND, NS, "code", [{"type": "Ready", "status": "True"}])
    exposition.record_conditions(KIND, NS, "chat", [{"type": "Ready", "status": "False"}])
    # A condition the status no longer has is no longer exported (no stale CapacityLimited alert).
    assert condition("chat", "CapacityLimited", "True") is None
    assert condition("chat", "Ready", "False") == 1.0
    exposition.forget(KIND, NS, "chat")
    assert condition("chat", "Ready", "False") is None
    assert condition("code", "Ready", "True") == 1.0


def test_phase_series_cover_every_phase_with_the_current_one_set() -> None:
    exposition.record_phase("TrainingJob", NS, "chat", "Running", ("Pending", "Running", "Succeeded"))
    values = {
        phase: exposition.REGISTRY.get_sample_value(
            "kubeforge_phase", {"kind": "TrainingJob", "namespace": NS, "name": "chat", "phase": phase}
        )
        for phase in ("Pending", "Running", "Succeeded")
    }
    assert values == {"Pending": 0.0, "Running": 1.0, "Succeeded": 0.0}
    exposition.forget("TrainingJob", NS, "chat")
    assert (
        exposition.REGISTRY.get_sample_value(
            "kubeforge_phase", {"kind": "TrainingJob", "namespace": NS, "name": "chat", "phase": "Running"}
        )
        is None
    )
