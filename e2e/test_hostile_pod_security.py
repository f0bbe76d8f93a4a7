"""A tenant in bad faith against the `restricted` Pod Security Standard, judged by the API server itself.

The namespace enforces `restricted` (`pod-security.kubernetes.io/enforce: restricted`), so the Job and
ReplicaSet controllers cannot create a pod that breaks it. A TrainingJob and a fleet set every field a
tenant has that reaches the pod's security: the lowest user and group ids the CRDs admit (uid 1, gid 0,
fsGroup 0), a checkpoint claim, env from the downward API and a secret, and pod annotations that are
not reserved. Their pods must be created (no `FailedCreate`), so nothing a tenant writes makes the
operator build a pod the restricted profile refuses, and each pod keeps the restricted fields."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubeforge_e2e import Kubectl, LocalCluster, wait_for
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.workloads import fleet, start_operator, trainingjob_manifest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

IDS = {"runAsUser": 1, "runAsGroup": 0, "fsGroup": 0}
ENV = [
    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token", "optional": True}}},
]
ANNOTATIONS = {"example.com/owner": "team-a", "kubectl.kubernetes.io/default-container": "server"}


@pytest.fixture
def restricted(kubectl: Kubectl, namespace: str) -> str:
    kubectl.run(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", "--overwrite"
    )
    return namespace


@pytest.fixture
def operator(cluster: LocalCluster, crds: None, restricted: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    proc = start_operator(cluster, restricted, tmp_path, ["--resync-seconds", "2"])
    try:
        yield proc
    finally:
        proc.stop()


def _pods(kubectl: Kubectl, namespace: str, selector: str) -> list[dict[str, Any]]:
    return list(kubectl.json("get", "pods", "-n", namespace, "-l", selector)["items"])


def _failed_creates(kubectl: Kubectl, namespace: str) -> list[str]:
    events = kubectl.json("get", "events", "-n", namespace)["items"]
    return [e["message"] for e in events if e["reason"] == "FailedCreate"]


def _restricted(pod: dict[str, Any]) -> None:
    spec = pod["spec"]
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(host), host
    assert spec.get("serviceAccountName", "default") == "default"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 1
    assert not any("hostPath" in v for v in spec.get("volumes") or [])
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert not context.get("privileged")


def test_a_tenants_own_fields_never_build_a_pod_the_restricted_profile_refuses(
    kubectl: Kubectl, restricted: str, operator: OperatorProcess
) -> None:
    namespace = restricted
    tj = trainingjob_manifest(
        "ids",
        workers=1,
        resources={"gpus": 1, "gpuType": "H100"},
        env=ENV,
        securityContext=IDS,
        checkpoint={"claimName": "ckpt"},
    )
    tj["spec"]["podMetadata"]["annotations"].update(ANNOTATIONS)
    kubectl.apply(tj, namespace)
    kubectl.apply(
        fleet("serve", env=ENV, securityContext=IDS, podMetadata={"annotations": ANNOTATIONS}), namespace
    )
    tj_pods = wait_for(
        lambda: _pods(kubectl, namespace, "kubeforge.dev/trainingjob=ids"),
        timeout=90,
        description="the TrainingJob's worker pod created under enforce=restricted",
    )
    fleet_pods = wait_for(
        lambda: _pods(kubectl, namespace, "kubeforge.dev/inferencefleet=serve"),
        timeout=90,
        description="the fleet's pod created under enforce=restricted",
    )
    assert _failed_creates(kubectl, namespace) == []
    for pod in [*tj_pods, *fleet_pods]:
        _restricted(pod)
