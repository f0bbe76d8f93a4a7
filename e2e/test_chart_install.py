"""The Helm chart installs into a real cluster, and its RBAC is enough for the operator to do its job.

The operator here runs with the token of the chart's ServiceAccount, not the admin credentials, so a
rule missing from `charts/kubeforge/templates/rbac.yaml` fails this test.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeforge_e2e import Helm, Kubectl, LocalCluster
from kubeforge_e2e.operator import REPO, OperatorProcess

CHART = REPO / "charts" / "kubeforge"


@contextlib.contextmanager
def installed(helm: Helm, namespace: str, *values: str) -> Iterator[str]:
    """The chart installed as a fresh release in `namespace` (with `--set` values), uninstalled after."""
    name = f"kf-{secrets.token_hex(3)}"
    helm("install", name, str(CHART), "-n", namespace, "--set", "image.tag=e2e", *values)
    try:
        yield name
    finally:
        helm("uninstall", name, "-n", namespace, "--wait=false", check=False)


@pytest.fixture
def release(helm: Helm, kubectl: Kubectl, namespace: str) -> Iterator[str]:
    with installed(helm, namespace, "--set", "metrics.service.enabled=true") as name:
        yield name


def token_kubeconfig(cluster: LocalCluster, kubectl: Kubectl, namespace: str, sa: str, path: Path) -> Path:
    token = kubectl("create", "token", sa, "-n", namespace, "--duration", "1h").stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": cluster.server, "certificate-authority": str(cluster.ca_file)},
            }
        ],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": sa}}],
        "current-context": "local",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_chart_installs_and_its_rbac_runs_the_operator(
    cluster: LocalCluster,
    kubectl: Kubectl,
    helm: Helm,
    namespace: str,
    release: str,
    tmp_path: Path,
    wait_for: Callable[..., Any],
) -> None:
    status = helm.json("status", release, "-n", namespace)
    assert status["info"]["status"] == "deployed"

    deployment = kubectl.json(
        "get", "deployment", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}"
    )
    [operator_deploy] = deployment["items"]
    pod_spec = operator_deploy["spec"]["template"]["spec"]
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    sa = pod_spec["serviceAccountName"]
    assert "--in-cluster" in pod_spec["containers"][0]["args"]

    # The chart's identity may manage TrainingJobs' children but not, say, read Secrets.
    can = kubectl(
        "auth",
        "can-i",
        "create",
        "jobs.batch",
        "-n",
        namespace,
        f"--as=system:serviceaccount:{namespace}:{sa}",
        check=False,
    )
    assert can.stdout.strip() == "yes"
    cannot = kubectl(
        "auth",
        "can-i",
        "get",
        "secrets",
        "-n",
        namespace,
        f"--as=system:serviceaccount:{namespace}:{sa}",
        check=False,
    )
    assert cannot.stdout.strip() == "no"

    kubeconfig = token_kubeconfig(cluster, kubectl, namespace, sa, tmp_path / "kubeconfig")
    operator = OperatorProcess(kubeconfig, tmp_path / "operator.log", extra_args=["--namespace", namespace])
    operator.start()
    try:
        kubectl.apply(
            {
                "apiVersion": "kubeforge.dev/v1alpha1",
                "kind": "TrainingJob",
                "metadata": {"name": "rbac-check", "namespace": namespace},
                "spec": {
                    "image": "ghcr.io/example/trainer:1",
                    "workers": 2,
                    "resources": {"gpus": 1, "gpuType": "L4"},
                    "podMetadata": {"annotations": {"e2e.kubeforge.dev/run-seconds": "2"}},
                },
            }
        )
        kubectl.apply(
            {
                "apiVersion": "kubeforge.dev/v1alpha1",
                "kind": "InferenceFleet",
                "metadata": {"name": "rbac-check-fleet", "namespace": namespace},
                "spec": {
                    "model": {"name": "tiny"},
                    "image": "ghcr.io/example/server:1",
                    "replicas": 1,
                    "resources": {"gpus": 1, "gpuType": "L4"},
                },
            }
        )

        def phase() -> str:
            job = kubectl.get("trainingjob", "rbac-check", namespace) or {}
            return str(job.get("status", {}).get("phase", ""))

        wait_for(lambda: phase() == "Succeeded", timeout=120, description="TrainingJob Succeeded")

        def fleet_ready() -> bool:
            fleet = kubectl.get("inferencefleet", "rbac-check-fleet", namespace) or {}
            conditions = fleet.get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        wait_for(fleet_ready, timeout=120, description="InferenceFleet Ready")
        log = operator.tail(2000)
        assert "Forbidden" not in log, log
        assert " 403" not in log, log
        # The operator recorded Events with its own identity.
        events = kubectl.json(
            "get", "events", "-n", namespace, "--field-selector", "involvedObject.kind=TrainingJob"
        )
        assert events["items"], json.dumps(events)[:2000]
    finally:
        operator.stop()
