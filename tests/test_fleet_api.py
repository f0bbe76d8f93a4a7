"""The InferenceFleet API: defaults, validation in pydantic, and the CRD the API server enforces."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kubeforge.api.crdgen import build_crd
from kubeforge.api.inferencefleet import INFO, METRIC_NAMES, InferenceFleetSpec

BASE: dict[str, Any] = {"model": {"name": "m"}, "image": "img"}


def parse(**overrides: Any) -> InferenceFleetSpec:
    return InferenceFleetSpec.model_validate({**BASE, **overrides})


def test_defaults() -> None:
    s = parse()
    assert (s.port, s.readiness_path, s.replicas) == (8000, "/health", 1)
    assert s.disruption.max_unavailable == 1
    assert s.placement.spread_zones
    assert s.placement.spread_nodes
    assert not s.placement.require_zone_spread
    assert s.autoscaling is None
    assert not s.autoscaler_on
    a = parse(autoscaling={"maxReplicas": 3, "metric": "latencyP95", "target": 0.5}).autoscaling
    assert a is not None
    assert (a.interval_seconds, a.stable_window_seconds, a.panic_window_seconds) == (10, 60, 6)
    assert (a.panic_threshold, a.tolerance, a.scale_down_stabilization_seconds) == (2.0, 0.1, 300)
    assert a.min_replicas == 1
    assert a.enabled


@pytest.mark.parametrize(
    "bad",
    [
        {"port": 0},
        {"port": 70000},
        {"replicas": -1},
        {"resources": {"gpus": -1}},
        {"image": ""},
        {"readinessPath": "health"},
        {"disruption": {"maxUnavailable": "150%"}},
        {"disruption": {"maxUnavailable": -1}},
        {"autoscaling": {"maxReplicas": 3, "metric": "cpu", "target": 1}},
        {"autoscaling": {"maxReplicas": 3, "metric": "queueDepth", "target": 0}},
        {"autoscaling": {"maxReplicas": 0, "metric": "queueDepth", "target": 1}},
        {"securityContext": {"runAsUser": 0}},
    ],
)
def test_pydantic_refuses(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse(**bad)


def _props(schema: dict[str, Any], *path: str) -> dict[str, Any]:
    node = schema
    for key in path:
        node = node["properties"][key]
    return node


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return build_crd(INFO)


def _spec_schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def test_crd_names_and_scale(crd: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == "inferencefleets.kubeforge.dev"
    assert "fleet" in crd["spec"]["names"]["shortNames"]
    scale = crd["spec"]["versions"][0]["subresources"]["scale"]
    assert scale == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_crd_enforces_bounds(crd: dict[str, Any]) -> None:
    spec = _spec_schema(crd)
    assert _props(spec, "port")["minimum"] == 1
    assert _props(spec, "resources", "gpus")["minimum"] == 0
    assert _props(spec, "autoscaling", "metric")["enum"] == list(METRIC_NAMES)
    assert _props(spec, "autoscaling", "target")["exclusiveMinimum"] is True
    assert set(spec["required"]) == {"model", "image"}


def test_crd_cel_rules(crd: dict[str, Any]) -> None:
    rules = {r["rule"]: r for r in _props(_spec_schema(crd), "autoscaling")["x-kubernetes-validations"]}
    assert "self.minReplicas <= self.maxReplicas" in rules
    assert "has(self.metric) != has(self.query)" in rules
    for rule in rules.values():
        assert rule["fieldPath"].startswith(".")
        assert "autoscaling." in rule["message"]


def test_crd_is_structural(crd: dict[str, Any]) -> None:
    """Every node has a type, except int-or-string ones; no $ref, anyOf or title anywhere."""

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            assert not {"$ref", "anyOf", "oneOf", "title"} & set(node), path
            if "properties" in node or "items" in node:
                assert node.get("type") in ("object", "array"), path
            for key in ("properties",):
                for name, child in node.get(key, {}).items():
                    assert "type" in child or child.get("x-kubernetes-int-or-string"), f"{path}.{name}"
                    walk(child, f"{path}.{name}")
            if isinstance(node.get("items"), dict):
                walk(node["items"], f"{path}[]")

    walk(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], "")
