"""`spec.rollout` / `status.rollout` models: defaults, wire names, and the rules the API server enforces."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kubeforge.api.crdgen import openapi_schema
from kubeforge.api.rollout import AnalysisSpec, RolloutSpec, RolloutStatus


def _rules(schema: dict[str, Any]) -> list[str]:
    return [rule["rule"] for rule in schema.get("x-kubernetes-validations", [])]


def test_defaults() -> None:
    spec = RolloutSpec()
    assert spec.strategy == "Canary"
    assert spec.steps == []
    assert not spec.paused
    assert spec.history_limit == 10
    assert spec.analysis is None
    analysis = AnalysisSpec.model_validate({"maxErrorRate": 0.01})
    assert (analysis.interval_seconds, analysis.failure_limit, analysis.inconclusive_limit) == (10, 2, 3)


def test_wire_names_round_trip() -> None:
    wire = {
        "strategy": "Canary",
        "steps": [{"weight": 10, "pauseSeconds": 30}, {"weight": 50}, {"weight": 100, "pauseSeconds": 0}],
        "paused": True,
        "promote": {"revision": "5f8c9d2a1b", "step": 1},
        "abortRevision": "5f8c9d2a1b",
        "retryAt": "2026-01-01T12:00:00Z",
        "targetRevision": "0a1b2c3d4e",
        "analysis": {
            "intervalSeconds": 5,
            "maxErrorRate": 0.01,
            "maxLatencyP95": 0.5,
            "maxErrorRateIncrease": 0.005,
            "maxLatencyIncreaseRatio": 0.2,
            "failureLimit": 1,
            "inconclusiveLimit": 4,
        },
        "historyLimit": 5,
        "maxSurge": 2,
        "progressDeadlineSeconds": 300,
        "httpRoute": {"name": "llama"},
    }
    spec = RolloutSpec.model_validate(wire)
    assert spec.steps[1].pause_seconds is None
    assert spec.promote is not None
    assert spec.promote.step == 1
    out = spec.to_wire()
    assert out["retryAt"] == "2026-01-01T12:00:00Z"
    assert out["steps"] == wire["steps"]
    assert out["analysis"]["maxLatencyIncreaseRatio"] == 0.2
    assert RolloutSpec.model_validate(out) == spec


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ({"steps": [{"weight": 50}, {"weight": 10}]}, "strictly increasing"),
        ({"steps": [{"weight": 50}, {"weight": 50}]}, "strictly increasing"),
        ({"steps": [{"weight": 0}]}, "greater than or equal to 1"),
        ({"steps": [{"weight": 101}]}, "less than or equal to 100"),
        ({"steps": [{"weight": 10, "pauseSeconds": -1}]}, "greater than or equal to 0"),
        ({"strategy": "Rolling", "steps": [{"weight": 10}]}, "only for the Canary"),
        ({"strategy": "BlueGreen"}, "Canary"),
        ({"analysis": {"intervalSeconds": 10}}, "at least one of"),
        ({"analysis": {"maxErrorRate": 1.5}}, "less than or equal to 1"),
        ({"analysis": {"maxErrorRate": 0.1, "failureLimit": 0}}, "greater than or equal to 1"),
        ({"abortRevision": "Not_A_Hash"}, "pattern"),
        ({"targetRevision": ""}, "at least 1"),
        ({"promote": {"revision": "abc", "step": -1}}, "greater than or equal to 0"),
        ({"historyLimit": 0}, "greater than or equal to 1"),
        ({"steps": [{"weight": w} for w in range(1, 23)]}, "at most 20"),
    ],
)
def test_invalid_specs_are_refused(wire: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RolloutSpec.model_validate(wire)


def test_cel_rules_are_in_the_schema() -> None:
    schema = openapi_schema(RolloutSpec)
    rules = _rules(schema)
    assert any("isSorted()" in rule and "exists_one" in rule for rule in rules)
    assert any("self.strategy == 'Canary'" in rule for rule in rules)
    assert all(rule["fieldPath"] in (".steps", ".analysis") for rule in schema["x-kubernetes-validations"])
    assert any("self.steps[size(self.steps) - 1].weight < 100" in rule for rule in rules)
    analysis = schema["properties"]["analysis"]
    assert any("has(self.maxErrorRate)" in rule for rule in _rules(analysis))
    # The model's own config (camelCase, docstrings) survives alongside the rules.
    assert analysis["properties"]["intervalSeconds"]["default"] == 10
    assert "description" in analysis["properties"]["maxLatencyP95"]
    step = schema["properties"]["steps"]["items"]
    assert step["properties"]["weight"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "description": step["properties"]["weight"]["description"],
    }
    assert schema["properties"]["steps"]["maxItems"] == 20
    assert schema["properties"]["retryAt"]["format"] == "date-time"
    assert schema["properties"]["strategy"]["enum"] == ["Canary", "Rolling", "Recreate"]


def test_rules_guard_absent_fields() -> None:
    """CEL on a missing field errors instead of passing; every rule checks `has()` first."""
    for rule in _rules(openapi_schema(RolloutSpec)):
        assert rule.startswith(("!has(self.steps)", "!has(self.analysis)"))


def test_status_schema_and_round_trip() -> None:
    schema = openapi_schema(RolloutStatus)
    props = schema["properties"]
    assert props["phase"]["enum"] == ["Progressing", "Paused", "Promoted", "Aborted", "RolledBack"]
    assert props["lastAnalysis"]["properties"]["verdict"]["enum"] == ["Pass", "Fail", "Inconclusive"]
    assert "phase" in props["history"]["items"]["properties"]
    status = RolloutStatus.model_validate(
        {
            "phase": "Progressing",
            "currentStep": 1,
            "canaryWeight": 25,
            "stableRevision": "a",
            "canaryRevision": "b",
            "failedRevisions": ["c"],
            "lastAnalysis": {"time": "2026-01-01T00:00:00Z", "revision": "b", "verdict": "Pass"},
            "history": [
                {"revision": "a", "number": 1, "createdAt": "2026-01-01T00:00:00Z", "phase": "Stable"}
            ],
        }
    )
    assert RolloutStatus.model_validate(status.to_wire()) == status


RELATIVE: dict[str, Any] = {"maxErrorRateIncrease": 0.01}


@pytest.mark.parametrize(
    "wire",
    [
        {"strategy": "Rolling", "analysis": RELATIVE},
        {"strategy": "Recreate", "analysis": {"maxLatencyIncreaseRatio": 0.2}},
        {"steps": [{"weight": 10}, {"weight": 100, "pauseSeconds": 60}], "analysis": RELATIVE},
    ],
)
def test_baseline_only_analysis_is_refused_where_no_stable_pod_runs(wire: dict[str, Any]) -> None:
    """Issue 9.11: the last step would have no baseline to compare with, so it could never pass."""
    with pytest.raises(ValidationError, match="only baseline limits"):
        RolloutSpec.model_validate(wire)


ACCEPTED: list[dict[str, Any]] = [
    {"analysis": RELATIVE},  # the default steps end at 50%
    {"steps": [{"weight": 10}, {"weight": 99}], "analysis": RELATIVE},
    {"strategy": "Rolling", "analysis": {**RELATIVE, "maxErrorRate": 0.05}},
    {"steps": [{"weight": 100}], "analysis": {**RELATIVE, "maxLatencyP95": 2.0}},
    {"strategy": "Recreate"},
]


@pytest.mark.parametrize("wire", ACCEPTED)
def test_baseline_limits_with_a_baseline_or_an_absolute_limit_are_accepted(wire: dict[str, Any]) -> None:
    RolloutSpec.model_validate(wire)
