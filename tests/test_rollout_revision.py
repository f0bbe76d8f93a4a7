"""The revision hash: what the user wrote in the serving template, normalised; operator defaults never
enter it, and fleets named by the former hash keep their revision across the upgrade."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import Field

from kubeforge.api.common import Resources
from kubeforge.api.inferencefleet import InferenceFleetSpec
from kubeforge.builders import inferencefleet as build

SAMPLES = Path(__file__).resolve().parents[1] / "samples"

# Pinned: a change here re-rolls every fleet of users who applied these samples. Only change them
# together with a way for existing fleets to keep their revision (see `template_revision`).
PINNED = {
    "inferencefleet-autoscaled.yaml": ("fca91cf596", "f11bff9de9"),
    "inferencefleet-basic.yaml": ("2ef59e0246", "5185500e16"),
    "inferencefleet-canary.yaml": ("95c2c7f7e1", "90e22174a8"),
    "inferencefleet-queue-scale-to-zero.yaml": ("8ede8ebec0", "96332db589"),
}


def _sample_specs() -> dict[str, InferenceFleetSpec]:
    out = {}
    for path in sorted(SAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "InferenceFleet":
                out[path.name] = InferenceFleetSpec.model_validate(doc["spec"])
    return out


def test_every_fleet_sample_is_pinned() -> None:
    assert sorted(_sample_specs()) == sorted(PINNED)


@pytest.mark.parametrize("sample", sorted(PINNED))
def test_sample_hashes_are_pinned(sample: str) -> None:
    spec = _sample_specs()[sample]
    assert (build.revision(spec), build.legacy_revision(spec)) == PINNED[sample]


BASE: dict[str, Any] = {"model": {"name": "llama"}, "image": "vllm/vllm-openai:v0.8.5"}
EXPLICIT_DEFAULTS: dict[str, Any] = {
    "port": 8000,
    "readinessPath": "/health",
    "command": [],
    "args": [],
    "env": [],
    "resources": {"gpus": 0},
    "podMetadata": {"labels": {}, "annotations": {}},
    # Not part of a revision at all.
    "replicas": 3,
    "placement": {"spreadZones": False},
}


@given(st.sets(st.sampled_from(sorted(EXPLICIT_DEFAULTS))))
def test_writing_a_default_out_is_the_same_revision(keys: set[str]) -> None:
    written = InferenceFleetSpec.model_validate({**BASE, **{k: EXPLICIT_DEFAULTS[k] for k in keys}})
    assert build.revision(written) == build.revision(InferenceFleetSpec.model_validate(BASE))


@pytest.mark.parametrize(
    "change",
    [
        {"image": "vllm/vllm-openai:v0.8.6"},
        {"port": 8080},
        {"env": [{"name": "A", "value": "1"}]},
        {"resources": {"gpus": 1}},
        {"model": {"name": "llama", "uri": "s3://m"}},
        {"podMetadata": {"labels": {"team": "a"}}},
    ],
)
def test_what_the_user_changes_is_a_new_revision(change: dict[str, Any]) -> None:
    assert build.revision(InferenceFleetSpec.model_validate({**BASE, **change})) != build.revision(
        InferenceFleetSpec.model_validate(BASE)
    )


class _UpgradedResources(Resources):
    """What a later operator version might ship: a new field with a default."""

    gpu_sharing: str = Field(default="None")


class _UpgradedSpec(InferenceFleetSpec):
    resources: _UpgradedResources = Field(default_factory=_UpgradedResources)
    shm_size: str = Field(default="1Gi")
    """A new top-level template field with a default."""


def test_an_upgrade_adding_defaulted_fields_changes_no_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "TEMPLATE_FIELDS", (*build.TEMPLATE_FIELDS, "shmSize"))
    for spec in _sample_specs().values():
        upgraded = _UpgradedSpec.model_validate(spec.to_wire())
        assert build.revision(upgraded) == build.revision(spec)
        assert build.legacy_revision(upgraded) == build.legacy_revision(spec)
    # Written by the user, the new field does make a revision.
    spec = _UpgradedSpec.model_validate({**BASE, "shmSize": "8Gi"})
    assert build.revision(spec) != build.revision(InferenceFleetSpec.model_validate(BASE))


def test_a_fleet_running_the_former_hash_keeps_it() -> None:
    spec = _sample_specs()["inferencefleet-canary.yaml"]
    new, old = PINNED["inferencefleet-canary.yaml"]
    assert build.template_revision(spec, []) == new  # a new fleet
    assert build.template_revision(spec, [old, None]) == old  # upgraded: no rollout, same Deployment
    assert build.template_revision(spec, [old, new]) == new
    assert build.template_revision(spec, ["0123456789"]) == new  # a changed template: new hash


@pytest.mark.parametrize(
    "added",
    [
        {"model": {"memoryGiB": 40}},
        {"objective": "cost"},
        {"objective": "privacy", "privacy": {"dataRegion": "eu"}},
    ],
    ids=["model-memory", "objective", "privacy"],
)
def test_a_field_the_former_hash_never_saw_leaves_the_former_name(added: dict[str, Any]) -> None:
    """A fleet running its template under the former hash that sets a field added since gets a new
    revision (a rollout): keeping the former name would re-apply that revision's ControllerRevision
    with other data, which the API server refuses."""
    spec = _sample_specs()["inferencefleet-canary.yaml"]
    _, old = PINNED["inferencefleet-canary.yaml"]
    wire = spec.to_wire()
    for key, value in added.items():
        wire[key] = {**wire[key], **value} if isinstance(value, dict) and key in wire else value
    changed = InferenceFleetSpec.model_validate(wire)
    assert build.legacy_revision(changed) == old, "the former hash cannot see the change"
    assert build.template_revision(changed, [old]) == build.revision(changed) != old


def test_a_stored_template_under_the_former_hash_rebuilds() -> None:
    spec = _sample_specs()["inferencefleet-basic.yaml"]
    new, old = PINNED["inferencefleet-basic.yaml"]
    stored = build.build_controller_revision(spec, name="f", namespace="n", uid="u", rev=old)
    assert build.spec_of_revision(spec, stored, old) is not None
    assert build.spec_of_revision(spec, stored, new) is not None
    assert build.spec_of_revision(spec, stored, "0123456789") is None
