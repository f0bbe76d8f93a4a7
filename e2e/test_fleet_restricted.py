"""A fleet rolled out by an operator that may read pods only in its own namespace (the chart with
`watchNamespaces` and no cluster-wide pod list): it cannot see which GPUs other namespaces hold, so a
rollout never adds a pod beyond the fleet's count; it swaps in place and says why."""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubeforge_e2e import Helm, Kubectl, LocalCluster, wait_for
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.workloads import IMAGE, condition, fleet, get_fleet, is_true, wait_ready
from test_chart_install import CHART, token_kubeconfig

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def replayed(stream: str) -> list[int]:
    """The fleet's replicas asked for (sum of its Deployments' `spec.replicas`) after each watch event
    of a `kubectl get deployments -w -o json --output-watch-events` stream, in order."""
    decoder, at = json.JSONDecoder(), 0
    totals: list[int] = []
    current: dict[str, int] = {}
    while True:
        while at < len(stream) and stream[at].isspace():
            at += 1
        if at >= len(stream):
            return totals
        event, at = decoder.raw_decode(stream, at)
        obj: dict[str, Any] = event["object"]
        name = obj["metadata"]["name"]
        if event["type"] == "DELETED":
            current.pop(name, None)
        else:
            current[name] = int(obj["spec"].get("replicas", 1))
        totals.append(sum(current.values()))


@contextlib.contextmanager
def restricted_operator(
    cluster: LocalCluster, kubectl: Kubectl, helm: Helm, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator as the chart installs it with `watchNamespaces` and no cluster-wide pod list (a Role
    in `namespace` only), run here with the chart's own ServiceAccount."""
    release = f"kf-{secrets.token_hex(3)}"
    helm(
        "install", release, str(CHART), "-n", namespace, "--set", "image.tag=e2e",
        "--set", f"watchNamespaces={{{namespace}}}", "--set", "replicaCount=0",
        "--set", "gangAdmission.readPodsInAllNamespaces=false",
    )  # fmt: skip
    try:
        [deployment] = kubectl.json(
            "get", "deployment", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}"
        )["items"]
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        kubeconfig = token_kubeconfig(cluster, kubectl, namespace, account, tmp_path / "kubeconfig")
        proc = OperatorProcess(kubeconfig, tmp_path / "operator.log", extra_args=["--namespace", namespace])
        proc.start()
        try:
            yield proc
        finally:
            proc.stop()
            print(f"--- operator log ({proc.log_path}) ---\n{proc.tail(40)}")
    finally:
        helm("uninstall", release, "-n", namespace, "--wait=false", check=False)


def test_a_restricted_operator_swaps_a_fleet_in_place_and_says_capacity_is_unknown(
    cluster: LocalCluster, kubectl: Kubectl, helm: Helm, namespace: str, crds: None, tmp_path: Path
) -> None:
    watch_log = tmp_path / "deployments.json"
    with restricted_operator(cluster, kubectl, helm, namespace, tmp_path):
        # A canary whose one step takes every replica: with GPUs visibly free it would surge.
        spec: dict[str, Any] = {
            "replicas": 1,
            "resources": {"gpus": 1, "gpuType": "L4"},
            "rollout": {"steps": [{"weight": 100, "pauseSeconds": 0}]},
        }
        kubectl.apply(fleet("chat", **spec), namespace)
        old = wait_ready(kubectl, namespace, "chat")["status"]["revision"]
        with watch_log.open("w") as out:
            watch = subprocess.Popen(
                [str(cluster.bin_dir / "kubectl"), "--kubeconfig", str(cluster.kubeconfig), "-n",
                 namespace, "get", "deployments", "-l", "kubeforge.dev/inferencefleet=chat", "-w",
                 "-o", "json", "--output-watch-events"],
                stdout=out,
            )  # fmt: skip
            try:
                kubectl.apply(fleet("chat", **{**spec, "image": f"{IMAGE}-v2"}), namespace)
                seen: set[str] = set()

                def rolled() -> bool:
                    obj = get_fleet(kubectl, namespace, "chat")
                    limited = condition(obj, "CapacityLimited") or {}
                    seen.add(str(limited.get("reason")))
                    status = (obj or {}).get("status") or {}
                    return status.get("revision") != old and is_true(obj, "Ready")

                wait_for(rolled, timeout=120, interval=0.2, description="the new revision Ready")
                wait_for(
                    lambda: len(kubectl.json("get", "deployments", "-n", namespace, "-l",
                                             "kubeforge.dev/inferencefleet=chat")["items"]) == 1,
                    timeout=60,
                    description="the old revision gone",
                )  # fmt: skip
            finally:
                watch.terminate()
                watch.wait(10)
        totals = replayed(watch_log.read_text())
        assert totals, "the watch saw the rollout"
        assert max(totals) <= 1, f"replicas asked for, event by event: {totals}"
        events = kubectl.json("get", "events", "-n", namespace)["items"]
        warnings = [
            e["message"]
            for e in events
            if e["involvedObject"].get("name") == "chat" and e["reason"] == "CapacityUnknown"
        ]
        assert warnings, f"no CapacityUnknown Event (conditions seen: {seen})"
        assert namespace in warnings[0]
        final = get_fleet(kubectl, namespace, "chat")
        assert (condition(final, "CapacityLimited") or {}).get("reason") == "Schedulable"
