"""The TrainingJob API: model defaults and bounds, and the CRD schema generated from them."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from kubeforge.api.crdgen import build_crd
from kubeforge.api.trainingjob import (
    INFO,
    MAX_NAME_LENGTH,
    MAX_RESTARTS,
    MAX_WORKERS,
    TrainingJobSpec,
    TrainingJobStatus,
    job_name,
)

CRD = build_crd(INFO)
VERSION = CRD["spec"]["versions"][0]
ROOT = VERSION["schema"]["openAPIV3Schema"]
SPEC = ROOT["properties"]["spec"]
STATUS = ROOT["properties"]["status"]


def _spec(**fields: Any) -> TrainingJobSpec:
    return TrainingJobSpec.model_validate({"image": "trainer:1", **fields})


def test_defaults() -> None:
    spec = _spec()
    assert spec.workers == 1
    assert spec.distributed.framework == "torchrun"
    assert spec.distributed.port == 29500
    assert spec.policy.max_restarts == 3
    assert spec.policy.backoff_seconds == 10
    assert spec.policy.schedule_timeout_seconds == 300
    assert spec.policy.node_loss_timeout_seconds == 60
    assert spec.policy.permanent_exit_codes == []
    assert spec.checkpoint is None
    assert spec.suspend is False


@pytest.mark.parametrize(
    ("workers", "gang", "expected"),
    [(1, None, False), (2, None, True), (8, None, True), (2, False, False), (1, True, True)],
)
def test_gang_defaults_on_for_more_than_one_worker(workers: int, gang: bool | None, expected: bool) -> None:
    assert _spec(workers=workers, policy={"gang": gang}).gang is expected


@pytest.mark.parametrize(
    ("gpus", "procs", "expected"),
    [(0, None, 1), (4, None, 4), (8, 2, 2), (0, 3, 3)],
)
def test_procs_per_worker_defaults_to_gpus(gpus: int, procs: int | None, expected: int) -> None:
    spec = _spec(resources={"gpus": gpus}, distributed={"procsPerWorker": procs})
    assert spec.procs_per_worker == expected


@pytest.mark.parametrize(
    "fields",
    [
        {"workers": 0},
        {"workers": MAX_WORKERS + 1},
        {"image": ""},
        {"image": "has space"},
        {"resources": {"gpus": -1}},
        {"distributed": {"framework": "mpi"}},
        {"distributed": {"procsPerWorker": 0}},
        {"distributed": {"procsPerWorker": 8}, "resources": {"gpus": 4}},
        {"distributed": {"port": 80}},
        {"policy": {"maxRestarts": -1}},
        {"policy": {"maxRestarts": MAX_RESTARTS + 1}},
        {"policy": {"permanentExitCodes": [0]}},
        {"policy": {"permanentExitCodes": [256]}},
        {"policy": {"backoffSeconds": -5}},
        {"checkpoint": {"claimName": "data", "mountPath": "relative"}},
        {"checkpoint": {"claimName": "Not_A_Name"}},
        {"securityContext": {"runAsUser": 0}},
        {"activeDeadlineSeconds": 0},
        {"queueName": "has space"},
    ],
    ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()),
)
def test_model_refuses_invalid(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TrainingJobSpec.model_validate({"image": "trainer:1", **fields})


def test_crd_names_and_subresources() -> None:
    names = CRD["spec"]["names"]
    assert names["kind"] == "TrainingJob"
    assert names["shortNames"] == ["tj"]
    assert "kubeforge" in names["categories"]
    assert VERSION["subresources"] == {"status": {}}
    assert SPEC["required"] == ["image"]


def test_printer_columns() -> None:
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"]}
    assert columns["Phase"]["jsonPath"] == ".status.phase"
    assert columns["Workers"]["jsonPath"] == ".status.workersReady"
    assert columns["GPUs"]["jsonPath"] == ".spec.resources.gpus"
    assert columns["Restarts"]["type"] == "integer"
    assert columns["GPU-Hours"]["type"] == "number"
    assert "Age" in columns


def test_nested_objects_default_so_the_server_fills_their_defaults() -> None:
    for name in ("resources", "distributed", "policy"):
        assert SPEC["properties"][name]["default"] == {}
    policy = SPEC["properties"]["policy"]["properties"]
    assert policy["maxRestarts"]["default"] == 3
    assert policy["permanentExitCodes"]["items"] == {"type": "integer", "minimum": 1, "maximum": 255}
    assert policy["permanentExitCodes"]["x-kubernetes-list-type"] == "set"
    assert "default" not in policy["gang"]  # decided by the policy from the worker count
    assert SPEC["properties"]["distributed"]["properties"]["framework"]["enum"] == ["torchrun", "none"]
    assert SPEC["properties"]["env"]["x-kubernetes-list-map-keys"] == ["name"]


def _rules(schema: dict[str, Any]) -> list[dict[str, str]]:
    return list(schema.get("x-kubernetes-validations", []))


@pytest.mark.parametrize("field", ["workers", "resources", "distributed", "checkpoint", "queueName"])
def test_fields_that_cannot_change_mid_run_are_immutable(field: str) -> None:
    [rule] = [r for r in _rules(SPEC) if r.get("fieldPath") == f".{field}" and "oldSelf" in r["rule"]]
    assert f"spec.{field} is immutable" in rule["message"]
    assert "immutable" in SPEC["properties"][field]["description"].lower()


def test_procs_per_worker_rule() -> None:
    [rule] = [r for r in _rules(SPEC) if r.get("fieldPath") == ".distributed.procsPerWorker"]
    assert "self.distributed.procsPerWorker <= self.resources.gpus" in rule["rule"]
    assert rule["message"].startswith("spec.distributed.procsPerWorker")


def test_cel_rules_name_fields_that_exist() -> None:
    props = SPEC["properties"]
    for rule in _rules(SPEC):
        for path in re.findall(r"(?:self|oldSelf)((?:\.\w+)+)", rule["rule"]):
            node: dict[str, Any] = {"properties": props}
            for part in path.strip(".").split("."):
                if "properties" not in node:
                    break  # a list or a string: the rest is a CEL function (`.map`, `.size`)
                assert part in node["properties"], f"{part} of {path} in {rule['rule']}"
                node = node["properties"][part]


def test_name_rules_on_the_root() -> None:
    rules = _rules(ROOT)
    assert any(f"size(self.metadata.name) <= {MAX_NAME_LENGTH}" == r["rule"] for r in rules)
    assert any("matches" in r["rule"] for r in rules)
    assert all("metadata.name" in r["message"] for r in rules)


def test_longest_name_still_gives_valid_pod_hostnames() -> None:
    hostname = f"{job_name('n' * MAX_NAME_LENGTH, MAX_RESTARTS)}-{MAX_WORKERS - 1}"
    assert len(hostname) <= 63


def test_status_schema() -> None:
    props = STATUS["properties"]
    assert props["phase"]["enum"] == [
        "Pending",
        "Queued",
        "Running",
        "Restarting",
        "Succeeded",
        "Failed",
        "Suspended",
    ]
    assert props["conditions"]["x-kubernetes-list-type"] == "map"
    for field in ("gpuHours", "restarts", "startTime", "completionTime", "observedGeneration", "workers"):
        assert field in props


specs = st.builds(
    lambda workers, gpus, procs, restarts, codes, gang, suspend: {
        "image": "trainer:1",
        "workers": workers,
        "resources": {"gpus": gpus, **({"gpuType": "H100"} if gpus else {})},
        "distributed": {"procsPerWorker": min(procs, gpus) if gpus else procs} if procs is not None else {},
        "policy": {"maxRestarts": restarts, "permanentExitCodes": codes, "gang": gang},
        "suspend": suspend,
    },
    st.integers(1, MAX_WORKERS),
    st.integers(0, 8),
    st.none() | st.integers(1, 8),
    st.integers(0, MAX_RESTARTS),
    st.lists(st.integers(1, 255), max_size=5, unique=True),
    st.none() | st.booleans(),
    st.booleans(),
)


@given(specs)
def test_spec_round_trips_through_the_wire(raw: dict[str, Any]) -> None:
    spec = TrainingJobSpec.model_validate(raw)
    assert TrainingJobSpec.model_validate(spec.to_wire()) == spec
    assert spec.procs_per_worker >= 1


def test_status_round_trips() -> None:
    status = TrainingJobStatus.model_validate({"phase": "Running", "restarts": 2, "gpuHours": 1.5})
    assert TrainingJobStatus.model_validate(status.to_wire()) == status
    assert status.to_wire()["gpuHours"] == 1.5
