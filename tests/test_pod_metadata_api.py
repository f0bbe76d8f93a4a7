"""What a tenant may put on pods and how big a spec may get: reserved keys, key shapes, totals, and the
largest ControllerRevision a fleet can make. The CEL rules the API server runs are checked end to end in
e2e/test_crd_validation.py; these tests pin the same rules in pydantic and in the generated schema."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from kubeforge.api.common import (
    MAX_ANNOTATION_CHARS,
    MAX_ARG_LENGTH,
    MAX_COMMAND_CHARS,
    MAX_DURATION_SECONDS,
    MAX_ENV_CHARS,
    MAX_ENV_VARS,
    MAX_POD_ANNOTATIONS,
    MAX_POD_LABELS,
    PodMetadata,
    is_qualified_key,
    is_reserved_key,
)
from kubeforge.api.crdgen import openapi_schema
from kubeforge.api.inferencefleet import MAX_REVISION_BYTES, InferenceFleetSpec
from kubeforge.api.rollout import MAX_HISTORY_LIMIT
from kubeforge.api.trainingjob import TrainingJobSpec
from kubeforge.builders.inferencefleet import build_controller_revision

RESERVED = [
    "kubeforge.dev/trainingjob",
    "kubeforge.dev/anything",
    "kueue.x-k8s.io/queue-name",
    "kueue.x-k8s.io/priority-class",
    "app.kubernetes.io/managed-by",
    "container.apparmor.security.beta.kubernetes.io/worker",
    "seccomp.security.alpha.kubernetes.io/pod",
    "container.seccomp.security.alpha.kubernetes.io/server",
    "sidecar.istio.io/inject",
    "traffic.sidecar.istio.io/excludeOutboundPorts",
    "istio.io/rev",
    "linkerd.io/inject",
    "config.linkerd.io/skip-outbound-ports",
    "kuma.io/sidecar-injection",
    "consul.hashicorp.com/connect-inject",
]
ALLOWED = [
    "e2e.kubeforge.dev/run-seconds",
    "team",
    "app.kubernetes.io/name",
    "example.com/owner",
    "prometheus.io/scrape",
    "a",
    "A_b-c.d",
]
MALFORMED = ["", "Bad Key", "-team", "team-", "a/b/c", "UPPER.example.com/x", "x/" + "n" * 64, "/name"]


@pytest.mark.parametrize("key", RESERVED)
@pytest.mark.parametrize("field", ["labels", "annotations"])
def test_reserved_keys_are_refused(field: str, key: str) -> None:
    assert is_reserved_key(key)
    with pytest.raises(ValidationError, match=re.escape(f"podMetadata.{field} may not set {key}")):
        PodMetadata.model_validate({field: {key: "true"}})


@pytest.mark.parametrize("key", ALLOWED)
def test_ordinary_keys_pass(key: str) -> None:
    assert not is_reserved_key(key)
    assert PodMetadata.model_validate({"labels": {key: "v"}, "annotations": {key: "v"}}).labels == {key: "v"}


@pytest.mark.parametrize("key", MALFORMED)
def test_malformed_keys_are_refused(key: str) -> None:
    assert not is_qualified_key(key)
    with pytest.raises(ValidationError, match=re.escape("podMetadata.labels has an invalid key")):
        PodMetadata.model_validate({"labels": {key: "v"}})


_NAME = st.from_regex(r"\A[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?\Z")
_LABEL = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?\Z")


@given(prefix=st.lists(_LABEL, min_size=0, max_size=4), name=_NAME)
def test_every_well_formed_key_is_qualified(prefix: list[str], name: str) -> None:
    key = ".".join(prefix) + "/" + name if prefix else name
    assert is_qualified_key(key)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"labels": {"team": "x" * 64}}, "at most 63 characters"),
        ({"labels": {"team": "-x"}}, "should match pattern"),
        ({"labels": {f"k{i}": "v" for i in range(MAX_POD_LABELS + 1)}}, "at most 64 items"),
        ({"annotations": {f"k{i}": "v" for i in range(MAX_POD_ANNOTATIONS + 1)}}, "at most 64 items"),
        ({"annotations": {"a": "x" * MAX_ANNOTATION_CHARS}}, "characters together"),
    ],
)
def test_sizes_are_bounded(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PodMetadata.model_validate(bad)


def test_crd_carries_the_same_rules_with_messages_naming_the_field() -> None:
    schema = openapi_schema(PodMetadata)
    for field in ("labels", "annotations"):
        node = schema["properties"][field]
        assert node["maxProperties"] == 64
        rules = node["x-kubernetes-validations"]
        assert [r["messageExpression"].startswith(f"'podMetadata.{field} ") for r in rules] == [True, True]
        assert any(r"kubeforge\.dev" in r["rule"] and "managed-by" in r["rule"] for r in rules)
    assert schema["properties"]["labels"]["additionalProperties"]["maxLength"] == 63


SPECS = [
    (TrainingJobSpec, {"image": "trainer:1"}),
    (InferenceFleetSpec, {"model": {"name": "m"}, "image": "img"}),
]


@pytest.mark.parametrize(("model", "base"), SPECS, ids=["TrainingJob", "InferenceFleet"])
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"args": ["x" * (MAX_ARG_LENGTH + 1)]}, "at most 4096 characters"),
        ({"args": ["x" * MAX_ARG_LENGTH] * (MAX_COMMAND_CHARS // MAX_ARG_LENGTH + 1)}, "together"),
        (
            {"env": [{"name": f"V{i}", "value": "x" * 1024} for i in range(MAX_ENV_CHARS // 1024 + 1)]},
            "together",
        ),
        ({"env": [{"name": f"V{i}"} for i in range(MAX_ENV_VARS + 1)]}, "at most 256 items"),
        ({"env": [{"name": "V", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]}, "exclusive"),
        ({"env": [{"name": "V", "valueFrom": {}}]}, "exactly one"),
        ({"podMetadata": {"labels": {"kubeforge.dev/x": "y"}}}, "may not set"),
    ],
)
def test_both_kinds_refuse(model: Any, base: dict[str, Any], bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        model.model_validate({**base, **bad})


@pytest.mark.parametrize("field", ["activeDeadlineSeconds", "ttlSecondsAfterFinished"])
def test_training_durations_have_a_maximum(field: str) -> None:
    assert TrainingJobSpec.model_validate({"image": "t", field: MAX_DURATION_SECONDS})
    with pytest.raises(ValidationError, match="less than or equal to 31622400"):
        TrainingJobSpec.model_validate({"image": "t", field: 10**12})


def _largest_fleet(sources: bool) -> InferenceFleetSpec:
    """A fleet with every template field at its maximum, filled with the character JSON escapes longest
    (`\\u0001`, six bytes); with `sources`, env variables alternate between values and secret refs."""
    worst = "\x01"
    args_each = MAX_COMMAND_CHARS // (MAX_COMMAND_CHARS // MAX_ARG_LENGTH)
    env: list[dict[str, Any]] = []
    valued = MAX_ENV_VARS // 2 if sources else MAX_ENV_VARS
    for i in range(MAX_ENV_VARS):
        name = f"E{i}".ljust(256, "x")
        if i < valued:
            env.append({"name": name, "value": worst * (MAX_ENV_CHARS // valued)})
        else:
            ref = {"name": "s" * 253, "key": "k" * 253, "optional": True}
            env.append({"name": name, "valueFrom": {"secretKeyRef": ref}})
    labels = {f"p{i:02d}".ljust(253, "a") + "/" + "n" * 63: "v" * 63 for i in range(MAX_POD_LABELS)}
    each = MAX_ANNOTATION_CHARS // MAX_POD_ANNOTATIONS
    annotations = {f"a{i:02d}": worst * (each - 3) for i in range(MAX_POD_ANNOTATIONS)}
    return InferenceFleetSpec.model_validate(
        {
            "model": {"name": "m" * 253, "uri": "u" * 2048},
            "image": "i" * 1024,
            "args": [worst * args_each] * (MAX_COMMAND_CHARS // args_each),
            "env": env,
            "podMetadata": {"labels": labels, "annotations": annotations},
            "readinessPath": "/" + "r" * 1023,
            "resources": {"gpus": 64, "gpuType": "g" * 63, "cpu": "1" * 64, "memory": "2" * 64},
            "securityContext": {"runAsUser": 2147483647, "runAsGroup": 2147483647, "fsGroup": 2147483647},
        }
    )


@pytest.mark.parametrize("sources", [False, True], ids=["values", "values-and-refs"])
def test_controller_revisions_are_capped_in_bytes_and_count(sources: bool) -> None:
    spec = _largest_fleet(sources)
    revision = build_controller_revision(spec, name="f" * 52, namespace="n" * 63, uid="u" * 36, rev="r" * 10)
    size = len(json.dumps(revision, separators=(",", ":")).encode())
    assert size <= MAX_REVISION_BYTES
    assert size > MAX_REVISION_BYTES // 2, "the largest spec should come near the stated bound"
    # history + template + stable + canary: the most ControllerRevisions one fleet keeps.
    assert (MAX_HISTORY_LIMIT + 3) * MAX_REVISION_BYTES <= 24 * 1024 * 1024
