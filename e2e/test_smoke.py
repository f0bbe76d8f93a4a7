"""Smoke tests: the local control plane is a real one (scheduler, controllers, RBAC, tokens)."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kubeforge_e2e import GpuSpec, Helm, Kubectl, LocalCluster, NodeSpec, Paths, read_versions, wait_for
from kubeforge_e2e.api import tls_context
from kubeforge_e2e.paths import cache_dir
from kubeforge_e2e.safety import UnsafeKubeconfigError, verify_kubeconfig

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

IMAGE = "registry.invalid/kubeforge/noop:1"


def _gpu_pod_spec(gpus: int, **extra: Any) -> dict[str, Any]:
    return {
        "containers": [
            {
                "name": "main",
                "image": IMAGE,
                "resources": {
                    "requests": {"nvidia.com/gpu": str(gpus)},
                    "limits": {"nvidia.com/gpu": str(gpus)},
                },
            }
        ],
        **extra,
    }


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def test_gpu8_deployment_lands_on_8_gpu_nodes(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "trainer"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "trainer"}},
                "template": {"metadata": {"labels": {"app": "trainer"}}, "spec": _gpu_pod_spec(8)},
            },
        },
        namespace,
    )
    wait_for(
        lambda: kubectl.get("deployment", "trainer", namespace)["status"].get("readyReplicas") == 2,
        timeout=60,
        description="Deployment trainer 2/2 Ready",
    )
    pods = kubectl.json("get", "pods", "-n", namespace, "-l", "app=trainer")["items"]
    assert len(pods) == 2
    nodes = {p["spec"]["nodeName"] for p in pods}
    assert len(nodes) == 2, "8 GPUs each: the two replicas cannot share a node"
    for name in nodes:
        labels = kubectl.get("node", name)["metadata"]["labels"]
        assert labels["nvidia.com/gpu.count"] == "8"
        assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        assert pod["status"]["podIP"]
        assert (_condition(pod, "Ready") or {}).get("status") == "True"
        assert pod["status"]["containerStatuses"][0]["ready"] is True


def test_too_many_gpus_stays_pending_unschedulable(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "greedy"}, "spec": _gpu_pod_spec(16)},
        namespace,
    )

    def unschedulable() -> dict[str, Any] | None:
        cond = _condition(kubectl.get("pod", "greedy", namespace), "PodScheduled")
        return cond if cond and cond.get("status") == "False" else None

    cond = wait_for(unschedulable, timeout=30, description="PodScheduled=False")
    assert cond["reason"] == "Unschedulable"
    assert "nvidia.com/gpu" in cond.get("message", "")
    time.sleep(2)
    pod = kubectl.get("pod", "greedy", namespace)
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")


def test_job_completes(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "once"},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"annotations": {"e2e.kubeforge.dev/run-seconds": "1"}},
                    "spec": _gpu_pod_spec(4, restartPolicy="Never"),
                },
            },
        },
        namespace,
    )
    job = wait_for(
        lambda: (
            j
            if (j := kubectl.get("job", "once", namespace))
            and (_condition(j, "Complete") or {}).get("status") == "True"
            else None
        ),
        timeout=60,
        description="Job once Complete",
    )
    assert job["status"]["succeeded"] == 1
    pods = kubectl.json("get", "pods", "-n", namespace, "-l", "job-name=once")["items"]
    assert [p["status"]["phase"] for p in pods] == ["Succeeded"]
    assert pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


def test_a_pod_marked_not_ready_while_its_node_is_alive_is_ready_again(
    kubectl: Kubectl, namespace: str
) -> None:
    """What the node lifecycle controller does to the pods of a node whose lease it saw expire (a late
    renewal on a loaded machine), undone as a live kubelet would: without it a serving pod stayed not
    Ready for good and a 1,000-fleet benchmark never converged. A pod that is not ready on purpose
    keeps its state."""
    for name, notes in (("serving", {}), ("unready", {"e2e.kubeforge.dev/ready": "false"})):
        kubectl.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "annotations": notes},
                "spec": _gpu_pod_spec(1),
            },
            namespace,
        )

    def running() -> bool:
        phases = {kubectl.get("pod", n, namespace)["status"].get("phase") for n in ("serving", "unready")}
        return phases == {"Running"}

    wait_for(running, timeout=60, description="both pods Running")
    assert (_condition(kubectl.get("pod", "serving", namespace), "Ready") or {}).get("status") == "True"
    not_ready = {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    kubectl(
        "patch",
        "pod",
        "serving",
        "-n",
        namespace,
        "--subresource=status",
        "--type=strategic",
        "-p",
        json.dumps(not_ready),
    )
    marked = _condition(kubectl.get("pod", "serving", namespace), "Ready") or {}
    assert marked.get("status") == "False"
    wait_for(
        lambda: (_condition(kubectl.get("pod", "serving", namespace), "Ready") or {}).get("status") == "True",
        timeout=45,
        description="pod serving Ready again",
    )
    unready = kubectl.get("pod", "unready", namespace)
    assert (_condition(unready, "Ready") or {}).get("status") == "False"
    assert (_condition(unready, "ContainersReady") or {}).get("status") == "False"


def test_failing_pod_reports_exit_code(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "crasher",
                "annotations": {
                    "e2e.kubeforge.dev/fail-exit-code": "42",
                    "e2e.kubeforge.dev/fail-after-seconds": "1",
                },
            },
            "spec": _gpu_pod_spec(1, restartPolicy="Never"),
        },
        namespace,
    )
    pod = wait_for(
        lambda: (p := kubectl.get("pod", "crasher", namespace))["status"].get("phase") == "Failed" and p,
        timeout=60,
        description="pod crasher Failed",
    )
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 42
    assert terminated["reason"] == "Error"


def test_service_account_without_rights_is_denied(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str
) -> None:
    kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    user = f"system:serviceaccount:{namespace}:nobody"
    result = kubectl("auth", "can-i", "list", "pods", "-n", namespace, f"--as={user}", check=False)
    assert result.returncode == 1
    assert result.stdout.strip() == "no"
    # Sanity check: the admin may.
    assert kubectl("auth", "can-i", "list", "pods", "-n", namespace).stdout.strip() == "yes"

    token = kubectl("create", "token", "nobody", "-n", namespace, "--duration=10m").stdout.strip()
    with httpx.Client(
        base_url=cluster.server, verify=tls_context(cluster.ca_file), trust_env=False
    ) as client:
        resp = client.get(
            f"/api/v1/namespaces/{namespace}/pods", headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status_code == 403, resp.text
        assert user in resp.json()["message"]  # authenticated as the service account, then refused
        bogus = client.get("/api/v1/namespaces/default/pods", headers={"Authorization": "Bearer not-a-token"})
        assert bogus.status_code == 401


def test_versions_are_the_pinned_ones(kubectl: Kubectl, helm: Helm, namespace: str, tmp_path: Path) -> None:
    versions = read_versions()
    info = json.loads(kubectl("version", "-o", "json").stdout)
    assert info["clientVersion"]["gitVersion"] == versions["KUBERNETES_VERSION"]
    assert info["serverVersion"]["gitVersion"] == versions["KUBERNETES_VERSION"]
    assert helm("version", "--template", "{{ .Version }}").stdout.strip() == versions["HELM_VERSION"]

    # The rest of the control plane (and kwokctl, built beside kwok) is the pinned build too.
    def version_of(binary: str) -> str:
        path = cache_dir() / "bin" / binary
        return subprocess.run([str(path), "--version"], capture_output=True, text=True, check=True).stdout

    assert f"kwok version {versions['KWOK_VERSION']} " in version_of("kwok")
    assert f"kwokctl version {versions['KWOK_VERSION']} " in version_of("kwokctl")
    assert f"etcd Version: {versions['ETCD_VERSION'].lstrip('v')}" in version_of("etcd")

    # Helm sees the server's true version through kubeVersion, and installs into our cluster.
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    minor = versions["KUBERNETES_VERSION"].split(".")[1]
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: probe\nversion: 0.1.0\n"
        f"kubeVersion: '>=1.{minor}.0-0 <1.{int(minor) + 1}.0-0'\n"
    )
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\ndata:\n"
        "  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n"
    )
    helm("install", "probe", str(chart), "-n", namespace, "--wait", "--timeout", "60s")
    cm = kubectl.get("configmap", "probe", namespace)
    assert cm["data"]["kube"] == versions["KUBERNETES_VERSION"]
    helm("uninstall", "probe", "-n", namespace)


def test_node_loss_helpers(cluster: LocalCluster, kubectl: Kubectl, namespace: str) -> None:
    name = f"extra-{secrets.token_hex(3)}"
    cluster.add_node(NodeSpec(name=name, zone="zone-b", gpu=GpuSpec("NVIDIA-L4", 1, 23034)))
    assert kubectl.get("node", name)["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    try:
        kubectl.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "pinned"},
                "spec": _gpu_pod_spec(1, nodeSelector={"kubernetes.io/hostname": name}),
            },
            namespace,
        )
        wait_for(
            lambda: kubectl.get("pod", "pinned", namespace)["status"].get("phase") == "Running",
            timeout=30,
            description="pod pinned Running",
        )

        cluster.set_node_ready(name, False)  # returns once the node is tainted NoExecute
        assert not cluster.is_node_ready(name)
        # The taint manager evicts the pod once the (10s) default toleration runs out.
        wait_for(
            lambda: kubectl.get("pod", "pinned", namespace)["metadata"].get("deletionTimestamp"),
            timeout=60,
            description="pod pinned evicted from the NotReady node",
        )

        cluster.set_node_ready(name, True)
        assert cluster.is_node_ready(name)
        # kwok manages the node again and finishes the eviction.
        wait_for(
            lambda: kubectl.get("pod", "pinned", namespace) is None,
            timeout=30,
            description="evicted pod gone",
        )
    finally:
        cluster.delete_node(name)
    assert kubectl.get("node", name) is None


def test_refuses_any_other_kubeconfig(cluster: LocalCluster, tmp_path: Path) -> None:
    """The guard the fixtures apply: only <repo>/.cluster/kubeconfig, on loopback, trusting our CA."""
    assert verify_kubeconfig(cluster.paths) == cluster.server
    elsewhere = tmp_path / "kubeconfig"
    shutil.copy(cluster.kubeconfig, elsewhere)
    with pytest.raises(UnsafeKubeconfigError, match="not the project's kubeconfig"):
        verify_kubeconfig(cluster.paths, elsewhere)

    # A copy of the harness's layout whose kubeconfig points at a remote server, or trusts another CA.
    fake = Paths(tmp_path / ".cluster")
    fake.pki.mkdir(parents=True)
    shutil.copy(cluster.ca_file, fake.ca_cert)
    shutil.copy(cluster.paths.state, fake.state)
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["certificate-authority"] = str(fake.ca_cert)
    fake.kubeconfig.write_text(yaml.safe_dump(config))
    assert verify_kubeconfig(fake) == cluster.server
    config["clusters"][0]["cluster"]["server"] = "https://prod.example.com:6443"
    fake.kubeconfig.write_text(yaml.safe_dump(config))
    with pytest.raises(UnsafeKubeconfigError, match="not an https loopback address"):
        verify_kubeconfig(fake)
    config["clusters"][0]["cluster"]["server"] = cluster.server
    fake.kubeconfig.write_text(yaml.safe_dump(config))
    fake.ca_cert.write_text("-----BEGIN CERTIFICATE-----\nnot ours\n-----END CERTIFICATE-----\n")
    with pytest.raises(UnsafeKubeconfigError, match="not the CA this harness generated"):
        verify_kubeconfig(fake)
