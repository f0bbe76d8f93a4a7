"""Every panel of the Grafana dashboard returns data from a real Prometheus during a load run.

The dashboard is taken from the chart as `helm template` renders it (the ConfigMap the Grafana sidecar
would load), with `monitoring.job` set to the job the harness' Prometheus gives the operator. That
Prometheus scrapes the operator's /metrics and the load simulator (which plays vLLM and dcgm-exporter)
every second. The run creates what the panels show: an autoscaled fleet under load, a canary that fails
its analysis and is rolled back, a TrainingJob that runs and one whose worker keeps failing (restarts),
with the operator holding a leader-election Lease. A query that errors or returns nothing fails the test.
The alert rules are evaluated there too: the rollback and the restarts must be seen by theirs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kubeforge_e2e import Helm, Kubectl, LocalCluster, wait_for
from kubeforge_e2e.loadsim import LoadSimulator
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.prometheus import PrometheusProcess, scrape_config
from kubeforge_e2e.workloads import IMAGE, fleet, get_fleet, start_operator, trainingjob, wait_ready
from test_fleet_autoscale import AUTOSCALING
from test_rollout import ANALYSIS, MODEL, STEPS, base_spec, replicas_by_revision, revision_of, steady_fleet

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus, pytest.mark.timeout(480)]

CHART = Path(__file__).resolve().parents[1] / "charts" / "kubeforge"
# The harness' Prometheus scrapes every target in one static job.
JOB = scrape_config([])["scrape_configs"][0]["job_name"]
# Grafana's own variables, as it fills them for a 10-minute view at a 1 s scrape interval.
GRAFANA = {"$__rate_interval": "15s", "$__range": "10m", "$__interval": "5s"}


def rendered(helm: Helm, release: str, values: list[str]) -> list[dict[str, Any]]:
    args = [arg for value in values for arg in ("--set", value)]
    out = helm("template", release, str(CHART), "--namespace", "monitoring", *args)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def dashboard(helm: Helm) -> dict[str, Any]:
    docs = rendered(helm, "kubeforge", ["monitoring.grafanaDashboard.enabled=true", f"monitoring.job={JOB}"])
    [config_map] = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("dashboard")
    ]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    board: dict[str, Any] = json.loads(config_map["data"]["kubeforge.json"])
    return board


def alert_rules(helm: Helm) -> dict[str, str]:
    docs = rendered(helm, "kubeforge", ["monitoring.prometheusRule.enabled=true", f"monitoring.job={JOB}"])
    [rule] = [d for d in docs if d["kind"] == "PrometheusRule"]
    return {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}


def panel_queries(board: dict[str, Any], namespace: str) -> list[tuple[str, str]]:
    out = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = str(target["expr"]).replace("$namespace", namespace)
            for variable, value in GRAFANA.items():
                expr = expr.replace(variable, value)
            out.append((f"{panel['title']} [{target['refId']}]", expr))
    return out


def series(prometheus: PrometheusProcess, expr: str) -> list[dict[str, Any]]:
    """The instant query's result vector; a query Prometheus refuses raises."""
    response = httpx.get(
        f"{prometheus.url}/api/v1/query", params={"query": expr}, timeout=10, trust_env=False
    )
    body = response.json()
    if body.get("status") != "success":
        raise AssertionError(f"{expr}\n  refused: {body.get('error')}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.fixture
def monitored(
    cluster: LocalCluster,
    crds: None,
    namespace: str,
    loadsim: LoadSimulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[OperatorProcess, PrometheusProcess]]:
    """The operator (leader-elected, reading Prometheus) and a Prometheus that scrapes it and the
    simulator. Prometheus needs the operator's port, the operator Prometheus' URL: both ports are
    chosen before either starts."""
    prometheus = PrometheusProcess(tmp_path_factory.mktemp("prometheus"), [loadsim.address])
    operator = start_operator(
        cluster,
        namespace,
        tmp_path_factory.mktemp("operator"),
        [
            "--prometheus-url",
            prometheus.url,
            "--leader-elect",
            "--leader-election-namespace",
            namespace,
            "--leader-election-id",
            "kubeforge",
        ],
    )
    try:
        prometheus.targets.append(f"127.0.0.1:{operator.metrics_port}")
        prometheus.start()
        wait_for(
            prometheus.targets_up, timeout=30, description="Prometheus scraping the operator and simulator"
        )
        yield operator, prometheus
    finally:
        prometheus.stop()
        operator.stop()
        print(f"--- operator log ({operator.log_path}) ---\n{operator.tail(60)}")


def test_every_panel_returns_data_during_a_load_run(
    kubectl: Kubectl,
    helm: Helm,
    namespace: str,
    loadsim: LoadSimulator,
    monitored: tuple[OperatorProcess, PrometheusProcess],
) -> None:
    operator, prometheus = monitored
    board = dashboard(helm)

    # Training: one job that runs for the whole test, one whose worker fails until it gives up.
    kubectl.apply(trainingjob("train", {"run-seconds": "600"}), namespace)
    flaky = {"fail-exit-code": "1", "fail-after-seconds": "1"}
    kubectl.apply(trainingjob("flaky", flaky, policy={"maxRestarts": 2, "backoffSeconds": 1}), namespace)

    # A canary that fails its analysis and is rolled back (first: steady_fleet expects the namespace's
    # only Deployments to be its own).
    body = base_spec(rollout={"steps": STEPS, "analysis": ANALYSIS})
    stable = steady_fleet(kubectl, loadsim, namespace, "canary", body)
    bad_body = {**body, "image": IMAGE + "-broken"}
    bad = revision_of(fleet("canary", **bad_body)["spec"])
    loadsim.set_fault(namespace, "canary", bad, error_rate=0.3)
    kubectl.apply(fleet("canary", **bad_body), namespace)

    def rolled_back() -> bool:
        rollout = get_fleet(kubectl, namespace, "canary").get("status", {}).get("rollout") or {}
        return (
            rollout.get("phase") == "RolledBack" and replicas_by_revision(kubectl, namespace).get(bad, 0) == 0
        )

    wait_for(rolled_back, timeout=120, interval=0.5, description="the bad canary rolled back")
    assert replicas_by_revision(kubectl, namespace).get(stable) == 4

    # An autoscaled fleet under more load than one replica serves.
    loadsim.set_load(namespace, "chat", 50, **MODEL)
    kubectl.apply(fleet("chat", resources={"gpus": 1, "gpuType": "L4"}, autoscaling=AUTOSCALING), namespace)
    wait_ready(kubectl, namespace, "chat")
    wait_for(
        lambda: (get_fleet(kubectl, namespace, "chat").get("status", {}).get("desiredReplicas") or 0) > 1,
        timeout=90,
        description="chat scaled up",
    )

    # Every panel's query, polled until all have data (Prometheus scrapes every second; rates need two).
    queries = panel_queries(board, namespace)
    assert len(queries) >= 25
    empty: list[str] = []
    deadline = time.monotonic() + 60
    while True:
        empty = [f"{title}: {expr}" for title, expr in queries if not series(prometheus, expr)]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert not empty, "panels without data:\n" + "\n".join(empty)

    # Namespaced panels show this test's objects (and only them, as the $namespace variable asks).
    names = {s["metric"].get("name") for s in series(prometheus, dict(queries)["GPU-hours [A]"])}
    assert names == {"train", "flaky"}

    # The alerts this run provokes fire on the same series (their `for` aside).
    rules = alert_rules(helm)
    rolled = series(prometheus, rules["KubeforgeRolloutRolledBack"])
    assert {s["metric"]["namespace"] for s in rolled} == {namespace}
    wait_for(
        lambda: series(prometheus, rules["KubeforgeTrainingRestartsClimbing"].replace("> 3", "> 1")),
        timeout=90,
        description="the flaky job's restarts seen by the restart rule (at a threshold of 1)",
    )
    assert not series(prometheus, rules["KubeforgeNoLeader"])
    assert not series(prometheus, rules["KubeforgeOperatorDown"])
    assert operator.running
