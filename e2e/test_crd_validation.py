"""CRD validation through the real API server: what `kubectl apply` refuses (reserved pod labels and
annotations, malformed keys, sizes, durations) and with which message; and a child the API server itself
refuses (HTTP 422: a pod `fieldRef` no CRD can check) ending as an `InvalidSpec` condition."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from kubeforge_e2e import Kubectl, KubectlError, LocalCluster, wait_for
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.workloads import IMAGE, condition, fleet, start_operator

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

RESERVED = "set by the operator or the platform"


@pytest.fixture
def operator(
    cluster: LocalCluster, crds: None, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    proc = start_operator(
        cluster, namespace, tmp_path_factory.mktemp("validation-operator"), ["--resync-seconds", "1"]
    )
    try:
        yield proc
    finally:
        proc.stop()


def trainingjob(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubeforge.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {"image": IMAGE, **spec},
    }


def _meta(field: str, key: str, value: str = "x") -> dict[str, Any]:
    return {"podMetadata": {field: {key: value}}}


# Reserved keys, one per class: (case, labels or annotations, key).
RESERVED_KEYS = [
    ("own-label", "labels", "kubeforge.dev/trainingjob"),
    ("kueue-queue", "labels", "kueue.x-k8s.io/queue-name"),
    ("kueue-priority", "labels", "kueue.x-k8s.io/priority-class"),
    ("managed-by", "labels", "app.kubernetes.io/managed-by"),
    ("apparmor", "annotations", "container.apparmor.security.beta.kubernetes.io/worker"),
    ("seccomp", "annotations", "seccomp.security.alpha.kubernetes.io/pod"),
    ("istio-inject", "annotations", "sidecar.istio.io/inject"),
    ("linkerd-inject", "annotations", "linkerd.io/inject"),
]

# (case, spec change, field path the error names, words of the message)
REFUSED: list[tuple[str, dict[str, Any], str, str]] = [
    *(
        (
            case,
            _meta(field, key),
            f"spec.podMetadata.{field}",
            f"podMetadata.{field} may not set {key}: keys under kubeforge.dev/*, kueue.x-k8s.io/*,"
            " app.kubernetes.io/managed-by, AppArmor and seccomp annotations and service-mesh injection"
            " switches are set by the operator or the platform",
        )
        for case, field, key in RESERVED_KEYS
    ),
    (
        "malformed-key",
        _meta("labels", "Team Name"),
        "spec.podMetadata.labels",
        "podMetadata.labels has an invalid key Team Name; a key is [prefix/]name",
    ),
    (
        "long-label-value",
        _meta("labels", "team", "x" * 64),
        "spec.podMetadata.labels.team",
        "may not be more than 63",
    ),
    (
        "annotations-total",
        {"podMetadata": {"annotations": {f"note-{i}": "x" * 1024 for i in range(33)}}},
        "spec.podMetadata.annotations",
        "keys and values may hold at most 32768 characters together",
    ),
    ("long-arg", {"args": ["x" * 4097]}, "spec.args[0]", "may not be more than 4096"),
    (
        "args-total",
        {"args": ["x" * 4096] * 9},
        "spec.args",
        "spec.command and spec.args may hold at most 32768 characters together",
    ),
    (
        "env-value-and-source",
        {"env": [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
        "spec.env[0].valueFrom",
        "env[].value and env[].valueFrom are exclusive",
    ),
]
TRAINING_ONLY: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "deadline-1e12",
        {"activeDeadlineSeconds": 10**12},
        "spec.activeDeadlineSeconds",
        "less than or equal to 31622400",
    ),
    (
        "ttl-1e12",
        {"ttlSecondsAfterFinished": 10**12},
        "spec.ttlSecondsAfterFinished",
        "less than or equal to 31622400",
    ),
]
FLEET_ONLY: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "history-limit",
        {"rollout": {"historyLimit": 26}},
        "spec.rollout.historyLimit",
        "less than or equal to 25",
    ),
]
KINDS = {"trainingjob": trainingjob, "inferencefleet": fleet}
CASES = [
    *((kind, *case) for kind in KINDS for case in REFUSED),
    *(("trainingjob", *case) for case in TRAINING_ONLY),
    *(("inferencefleet", *case) for case in FLEET_ONLY),
]


@pytest.mark.parametrize(
    ("kind", "case", "change", "field", "words"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES]
)
def test_kubectl_apply_refuses_naming_the_field(
    kubectl: Kubectl,
    namespace: str,
    crds: None,
    kind: str,
    case: str,
    change: dict[str, Any],
    field: str,
    words: str,
) -> None:
    with pytest.raises(KubectlError) as info:
        kubectl.apply(KINDS[kind](f"bad-{case}", **change), namespace)
    message = str(info.value)
    assert "is invalid" in message, message
    assert f"{field}: " in message, message
    assert words in message, message
    assert kubectl.get(kind, f"bad-{case}", namespace) is None


@pytest.mark.parametrize("kind", list(KINDS))
def test_ordinary_metadata_at_the_limits_is_accepted(
    kubectl: Kubectl, namespace: str, crds: None, kind: str
) -> None:
    """The bounds are wide enough for real use: 64 labels with the longest keys and values, annotations
    up to the total, prometheus and app.kubernetes.io keys other than managed-by."""
    prefix = ".".join(["a" * 63] * 3) + "." + "b" * 61  # 253 characters
    labels = {f"{prefix}/{i:02d}".ljust(317, "n"): "v" * 63 for i in range(62)}
    labels.update({"app.kubernetes.io/name": "llm", "team": "nlp"})
    annotations = {"prometheus.io/scrape": "true", "notes": "x" * (32768 - 100)}
    body = KINDS[kind]("at-limits", podMetadata={"labels": labels, "annotations": annotations})
    body["spec"]["args"] = ["y" * 4096] * 7 + ["z" * 4000]
    body["spec"]["env"] = [{"name": "CONFIG", "value": "c" * 32768}]
    if kind == "trainingjob":
        body["spec"]["activeDeadlineSeconds"] = 31622400
    kubectl.apply(body, namespace, "--dry-run=server")


def _warnings(kubectl: Kubectl, namespace: str, kind: str, name: str) -> list[tuple[str, str]]:
    events = kubectl.json("get", "events", "-n", namespace)["items"]
    return [
        (e["reason"], e["message"])
        for e in events
        if e["type"] == "Warning"
        and e["involvedObject"].get("kind") == kind
        and e["involvedObject"]["name"] == name
    ]


BOGUS_FIELD_REF = [{"name": "WHERE", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]
"""Accepted by the CRD (a field path is a string to it), refused by the API server in a pod template."""


@pytest.mark.parametrize(
    ("kind", "plural", "child"),
    [("InferenceFleet", "inferencefleet", "Deployment.apps"), ("TrainingJob", "trainingjob", "Job.batch")],
)
def test_a_child_the_api_server_refuses_is_reported_as_invalid_spec(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess, kind: str, plural: str, child: str
) -> None:
    body = KINDS[plural]("refused", env=BOGUS_FIELD_REF)
    kubectl.apply(body, namespace)

    def refused() -> dict[str, Any] | None:
        obj = kubectl.get(plural, "refused", namespace)
        ready = condition(obj, "Ready")
        return ready if ready is not None and ready.get("reason") == "InvalidSpec" else None

    ready = wait_for(refused, timeout=60, description=f"{kind} refused reports InvalidSpec")
    assert ready["status"] == "False"
    assert f'{child} "refused' in ready["message"], ready
    assert 'fieldRef.fieldPath: Invalid value: "spec.bogus"' in ready["message"], ready
    warnings = wait_for(
        lambda: _warnings(kubectl, namespace, kind, "refused"), timeout=30, description="a Warning event"
    )
    assert any("spec.bogus" in message for _, message in warnings), warnings

    # Not a retry loop: the status stays as written and no child appears.
    status = kubectl.get(plural, "refused", namespace)["status"]
    # Five seconds hold five resyncs (`--resync-seconds 1`) and any watch events: every pass of this
    # generation must leave the object alone and fail nothing.
    time.sleep(5)
    assert kubectl.get(plural, "refused", namespace)["status"] == status
    assert operator.tail(400).count("reconcile failed") == 0

    # The user fixes the spec: a new generation is built.
    body["spec"]["env"] = [{"name": "WHERE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    kubectl.apply(body, namespace)

    def rebuilt() -> dict[str, Any] | None:
        obj = kubectl.get(plural, "refused", namespace)
        ready = condition(obj, "Ready")
        return obj if ready is not None and ready.get("reason") != "InvalidSpec" else None

    wait_for(rebuilt, timeout=60, description=f"{kind} rebuilt after the fix")
    kinds = "deployments" if kind == "InferenceFleet" else "jobs"
    assert kubectl.json("get", kinds, "-n", namespace)["items"], f"no {kinds} after the fix"
