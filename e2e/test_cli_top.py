"""`kubectl kubeforge top` against the local cluster, through a real kubectl that finds the plugin on PATH:
a GPU fleet and a training job placed by the real scheduler, shown from the context's namespace, with
-A, as JSON, sorted, and refreshed with -w while the fleet scales."""

from __future__ import annotations

import itertools
import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kubeforge_e2e import Kubectl, LocalCluster, wait_for
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.workloads import (
    fleet,
    kubectl_kubeforge,
    plugin_env,
    start_operator,
    trainingjob_manifest,
    wait_ready,
    wait_trainingjob_phase,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MONEY = re.compile(r"^(-|\d+\.\d\d( [A-Z]{3})?)$")
"""A cost cell: `-` until the cost accounting reports one."""


@pytest.fixture
def workloads(
    cluster: LocalCluster, kubectl: Kubectl, crds: None, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator, a Ready 2-replica L4 fleet and a Running 2 x 4-GPU H100 job in the test's namespace."""
    operator = start_operator(cluster, namespace, tmp_path)
    try:
        kubectl.apply(fleet("chat", replicas=2, resources={"gpus": 1, "gpuType": "L4"}), namespace)
        kubectl.apply(trainingjob_manifest("llama", run_seconds=600), namespace)
        wait_ready(kubectl, namespace, "chat")
        wait_trainingjob_phase(kubectl, namespace, "llama", "Running")
        yield operator
    finally:
        operator.stop()


def context_in(tmp_path: Path, namespace: str) -> Path:
    """A kubeconfig with one context, current, over the project's cluster and admin user in `namespace`."""
    path = tmp_path / "ns-config"
    context = {"cluster": "kubeforge-e2e", "user": "admin", "namespace": namespace}
    path.write_text(
        yaml.safe_dump({"current-context": "ns", "contexts": [{"name": "ns", "context": context}]})
    )
    return path


def rows(output: str) -> dict[str, dict[str, str]]:
    """NAME -> {HEADER: cell} of every table in `output` (columns split on runs of 2+ spaces)."""
    found: dict[str, dict[str, str]] = {}
    for table in output.strip().split("\n\n"):
        header, *lines = table.splitlines()
        names = re.split(r"\s{2,}", header.strip())
        for line in lines:
            cells = dict(zip(names, re.split(r"\s{2,}", line.strip()), strict=True))
            found[cells["NAME"]] = cells
    return found


def test_top_shows_fleets_and_jobs_of_the_contexts_namespace(
    cluster: LocalCluster, namespace: str, workloads: OperatorProcess, tmp_path: Path
) -> None:
    # The namespace comes from the context (merged from KUBECONFIG), as kubectl's would.
    env = plugin_env(tmp_path, cluster, [context_in(tmp_path, namespace), cluster.kubeconfig])
    result = kubectl_kubeforge(cluster, env, "top")
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    assert set(table) == {"chat", "llama"}, result.stdout
    chat, llama = table["chat"], table["llama"]
    assert chat["NAMESPACE"] == namespace
    assert (chat["PHASE"], chat["READY/DESIRED"], chat["METRIC"], chat["GPUS"]) == ("Ready", "2/2", "-", "2")
    assert MONEY.match(chat["COST/H"]), chat
    assert (llama["PHASE"], llama["WORKERS"], llama["RESTARTS"], llama["GPUS"]) == (
        "Running",
        "2/2",
        "0",
        "8",
    )
    assert re.match(r"^\d+\.\d\d$", llama["GPU-HOURS"]), llama
    assert MONEY.match(llama["COST"]), llama
    # Neither spec names one: the API server stores each kind's default.
    assert (chat["OBJECTIVE"], llama["OBJECTIVE"]) == ("latency", "throughput")

    # -A lists every namespace; an empty namespace says so on stderr, as kubectl does.
    everywhere = kubectl_kubeforge(cluster, env, "top", "-A", "--sort-by", "gpus")
    assert everywhere.returncode == 0, everywhere.stderr
    assert {"chat", "llama"} <= set(rows(everywhere.stdout))
    empty = kubectl_kubeforge(cluster, env, "top", "-n", "default")
    assert (empty.returncode, empty.stdout, empty.stderr.strip()) == (
        0,
        "",
        "No resources found in default namespace.",
    )


def test_top_json_and_sort(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str, workloads: OperatorProcess, tmp_path: Path
) -> None:
    kubectl.apply(fleet("small", replicas=1, resources={"gpus": 1, "gpuType": "L4"}), namespace)
    wait_ready(kubectl, namespace, "small")
    env = plugin_env(tmp_path, cluster, [cluster.kubeconfig])

    result = kubectl_kubeforge(
        cluster, env, "top", "fleets", "-n", namespace, "-o", "json", "--sort-by", "gpus"
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert list(body) == ["inferenceFleets"]  # only the kind asked for
    fleets = body["inferenceFleets"]
    assert [(f["name"], f["gpus"], f["readyReplicas"]) for f in fleets] == [("chat", 2, 2), ("small", 1, 1)]
    status = kubectl.get("inferencefleet", "chat", namespace)["status"]
    assert fleets[0]["desiredReplicas"] == status["desiredReplicas"]

    jobs = kubectl_kubeforge(cluster, env, "top", "tj", "-n", namespace, "-o", "json")
    assert jobs.returncode == 0, jobs.stderr
    (llama,) = json.loads(jobs.stdout)["trainingJobs"]
    assert (llama["name"], llama["phase"], llama["workers"]["ready"], llama["gpus"]) == (
        "llama",
        "Running",
        2,
        8,
    )


def test_top_watch_refreshes_as_the_fleet_scales(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str, workloads: OperatorProcess, tmp_path: Path
) -> None:
    env = plugin_env(tmp_path, cluster, [cluster.kubeconfig])
    output = tmp_path / "top.out"
    with output.open("w") as out:
        follow = subprocess.Popen(
            [
                str(cluster.bin_dir / "kubectl"),
                "kubeforge",
                "top",
                "fleets",
                "-n",
                namespace,
                "-w",
                "--interval",
                "0.5",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "2/2" in output.read_text(), timeout=30, description="the first table")
        kubectl("scale", "inferencefleet", "chat", "-n", namespace, "--replicas=3")
        wait_for(
            lambda: rows(output.read_text().split("\n\n")[-1]).get("chat", {}).get("READY/DESIRED") == "3/3",
            timeout=90,
            description="top -w showing the third replica ready",
        )
        assert follow.poll() is None, output.read_text()  # still refreshing
        follow.send_signal(signal.SIGINT)  # Ctrl-C: kubectl passes it to the plugin
        assert follow.wait(timeout=30) in (0, 130, -signal.SIGINT), output.read_text()
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    tables = output.read_text().strip().split("\n\n")
    # A table each time something changed, never the same one twice in a row.
    assert all(a != b for a, b in itertools.pairwise(tables)), tables
    assert "Traceback" not in output.read_text()
