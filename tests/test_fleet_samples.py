"""Every InferenceFleet sample parses with the API models (the API server check is in e2e)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubeforge.api.inferencefleet import InferenceFleetSpec

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "samples").glob("inferencefleet-*.yaml"))


def test_there_are_samples() -> None:
    assert len(SAMPLES) >= 3


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_sample_parses(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        assert doc["kind"] == "InferenceFleet"
        InferenceFleetSpec.model_validate(doc["spec"])
