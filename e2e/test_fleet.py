"""InferenceFleet end to end on the local cluster: children, readiness, validation, `kubectl scale`,
revision replacement. (Autoscaling on Prometheus is in test_fleet_autoscale.py.)"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from kubeforge_e2e import Kubectl, KubectlError, LocalCluster, wait_for
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.workloads import (
    IMAGE,
    fleet,
    fleet_pods,
    get_fleet,
    is_true,
    wait_ready,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


# -- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture
def operator(fleet_operator: OperatorProcess) -> OperatorProcess:
    """This module's operator: the operator alone, without Prometheus (conftest's `fleet_operator`)."""
    return fleet_operator


# -- tests -------------------------------------------------------------------------------------------


def test_l4_fleet_becomes_ready_with_service_pdb_and_spread(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    kubectl.apply(
        fleet(
            "chat",
            replicas=2,
            port=8080,
            resources={"gpus": 1, "gpuType": "L4", "cpu": "2", "memory": "8Gi"},
            disruption={"maxUnavailable": 1},
        ),
        namespace,
    )
    obj = wait_ready(kubectl, namespace, "chat")
    status = obj["status"]
    assert status["readyReplicas"] == 2
    assert status["desiredReplicas"] == 2
    assert status["endpoint"] == {
        "service": f"chat.{namespace}.svc",
        "port": 8080,
        "url": f"http://chat.{namespace}.svc:8080",
    }
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    revision = status["revision"]

    deployment = kubectl.get("deployment", f"chat-{revision}", namespace)
    assert deployment is not None
    pod_spec = deployment["spec"]["template"]["spec"]
    spread = {c["topologyKey"]: c for c in pod_spec["topologySpreadConstraints"]}
    assert spread["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
    assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == "ScheduleAnyway"
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "InferenceFleet"

    service = kubectl.get("service", "chat", namespace)
    assert service is not None
    assert service["spec"]["selector"] == {
        "app.kubernetes.io/managed-by": "kubeforge",
        "kubeforge.dev/inferencefleet": "chat",
    }
    assert service["spec"]["ports"][0]["port"] == 8080
    pdb = kubectl.get("poddisruptionbudget", "chat", namespace)
    assert pdb is not None
    assert pdb["spec"]["maxUnavailable"] == 1
    wait_for(
        lambda: (
            (kubectl.get("poddisruptionbudget", "chat", namespace) or {})
            .get("status", {})
            .get("expectedPods")
            == 2
        ),
        timeout=30,
        description="PDB covering both pods",
    )

    pods = fleet_pods(kubectl, namespace, "chat")
    assert len(pods) == 2
    nodes = {p["spec"]["nodeName"] for p in pods}
    assert nodes <= {"l4-0", "l4-1"}
    assert len(nodes) == 2, "the node spread puts the two replicas on two nodes"
    for pod in pods:
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["MODEL_NAME"] == "llama-3.1-8b"
        assert env["PORT"] == "8080"
        assert pod["metadata"]["labels"]["kubeforge.dev/revision"] == revision


# Each: a fleet spec change, and the field the API server's message must name.
INVALID: list[tuple[str, dict[str, Any], str]] = [
    (
        "min-above-max",
        {"autoscaling": {"minReplicas": 5, "maxReplicas": 2, "metric": "latencyP95", "target": 0.5}},
        "spec.autoscaling.minReplicas",
    ),
    (
        "unknown-metric",
        {"autoscaling": {"maxReplicas": 2, "metric": "cpu", "target": 1}},
        "spec.autoscaling.metric",
    ),
    ("zero-port", {"port": 0}, "spec.port"),
    ("negative-gpus", {"resources": {"gpus": -1}}, "spec.resources.gpus"),
    (
        "metric-and-query",
        {
            "autoscaling": {
                "maxReplicas": 2,
                "metric": "queueDepth",
                "query": "sum(x{$selector})",
                "target": 1,
            }
        },
        "spec.autoscaling.metric",
    ),
    (
        "zero-target",
        {"autoscaling": {"maxReplicas": 2, "metric": "queueDepth", "target": 0}},
        "spec.autoscaling.target",
    ),
    ("bad-percentage", {"disruption": {"maxUnavailable": "150%"}}, "spec.disruption.maxUnavailable"),
    ("gpu-type-without-gpus", {"resources": {"gpuType": "L4"}}, "spec.resources.gpuType"),
    (
        "panic-longer-than-stable",
        {
            "autoscaling": {
                "maxReplicas": 2,
                "metric": "queueDepth",
                "target": 1,
                "panicWindowSeconds": 120,
                "stableWindowSeconds": 60,
            }
        },
        "spec.autoscaling.panicWindowSeconds",
    ),
    ("root-user", {"securityContext": {"runAsUser": 0}}, "spec.securityContext.runAsUser"),
    (
        "scale-to-zero-without-activation",
        {
            "autoscaling": {
                "maxReplicas": 2,
                "metric": "queueDepth",
                "target": 1,
                "scaleToZero": {"enabled": True},
            }
        },
        "spec.autoscaling.scaleToZero.activationQuery",
    ),
    ("negative-replicas", {"replicas": -1}, "spec.replicas"),
]


@pytest.mark.parametrize(("case", "change", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_fleet_refused_naming_the_field(
    kubectl: Kubectl, namespace: str, crds: None, case: str, change: dict[str, Any], field: str
) -> None:
    with pytest.raises(KubectlError) as info:
        kubectl.apply(fleet(f"bad-{case}", **change), namespace)
    message = str(info.value)
    assert "is invalid" in message, message
    assert field in message, message
    assert kubectl.get("inferencefleet", f"bad-{case}", namespace) is None


def test_kubectl_scale_with_autoscaler_off(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    kubectl.apply(fleet("scaled", replicas=1, resources={"cpu": "1"}), namespace)
    wait_ready(kubectl, namespace, "scaled")
    scale = kubectl.json("get", "--subresource=scale", "inferencefleet/scaled", "-n", namespace, "-o", "json")
    assert (
        scale["status"]["selector"]
        == "app.kubernetes.io/managed-by=kubeforge,kubeforge.dev/inferencefleet=scaled"
    )

    kubectl("scale", "inferencefleet/scaled", "--replicas=3", "-n", namespace)

    def scaled_up() -> dict[str, Any] | None:
        obj = get_fleet(kubectl, namespace, "scaled")
        st = obj.get("status", {})
        ok = st.get("readyReplicas") == 3 and st.get("desiredReplicas") == 3 and is_true(obj, "Ready")
        return obj if ok else None

    obj = wait_for(scaled_up, timeout=60, description="3 ready replicas after kubectl scale")
    assert obj["spec"]["replicas"] == 3
    scale = kubectl.json("get", "--subresource=scale", "inferencefleet/scaled", "-n", namespace, "-o", "json")
    assert scale["status"]["replicas"] == 3
    kubectl("scale", "inferencefleet/scaled", "--replicas=1", "-n", namespace)
    wait_for(
        lambda: (
            len(fleet_pods(kubectl, namespace, "scaled")) == 1
            and get_fleet(kubectl, namespace, "scaled")["status"]["replicas"] == 1
        ),
        timeout=60,
        description="back to 1 replica",
    )


def test_template_change_replaces_the_revision(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    kubectl.apply(fleet("web", replicas=2, resources={"cpu": "1"}), namespace)
    first = wait_ready(kubectl, namespace, "web")["status"]["revision"]
    kubectl.apply(fleet("web", replicas=2, resources={"cpu": "1"}, image=IMAGE + "-patched"), namespace)

    def replaced() -> str | None:
        obj = get_fleet(kubectl, namespace, "web")
        rev = obj.get("status", {}).get("revision")
        if rev == first or not is_true(obj, "Ready"):
            return None
        names = {
            d["metadata"]["name"]
            for d in kubectl.json("get", "deployments", "-n", namespace, "-o", "json")["items"]
        }
        return str(rev) if names == {f"web-{rev}"} else None

    second = wait_for(replaced, timeout=90, description="new revision alone and Ready")
    assert second != first
    pods = fleet_pods(kubectl, namespace, "web")
    assert {p["metadata"]["labels"]["kubeforge.dev/revision"] for p in pods} == {second}


def test_restart_operator_changes_nothing(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess, cluster: LocalCluster
) -> None:
    """A steady fleet survives an operator kill and restart without a single write to its children."""
    kubectl.apply(fleet("steady", replicas=2, resources={"cpu": "1"}), namespace)
    wait_ready(kubectl, namespace, "steady")
    time.sleep(2)

    def versions() -> dict[str, str]:
        out: dict[str, str] = {}
        for kind in ("deployments", "services", "poddisruptionbudgets", "inferencefleets"):
            for item in kubectl.json("get", kind, "-n", namespace, "-o", "json")["items"]:
                out[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
        return out

    before = versions()
    operator.kill()
    operator.start()
    time.sleep(8)  # more than a resync period
    assert versions() == before


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("inferencefleet-*.yaml")))
def test_samples_are_accepted_by_the_api_server(
    kubectl: Kubectl, namespace: str, crds: None, sample: str
) -> None:
    kubectl.run("apply", "--dry-run=server", "-n", namespace, "-f", str(SAMPLES / sample))
