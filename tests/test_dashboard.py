"""The Grafana dashboard (charts/kubeforge/files/kubeforge-dashboard.json), checked without Grafana:
valid JSON, a sound layout, every panel's query parses as PromQL and names only series that the
operator or the exporters its default queries read (vLLM, HTTP servers, dcgm-exporter) publish.
e2e/test_dashboard_queries.py runs the same queries against a real Prometheus during a load run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser as pp
import pytest
from prometheus_client import Metric

from kubeforge.metrics import exposition, promql
from kubeforge.metrics.scope import selectors
from test_chart import helm, helm_env, only, render  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "charts" / "kubeforge" / "files" / "kubeforge-dashboard.json"
JOB = 'job="kubeforge"'

# What Grafana puts in place of its variables before a query reaches Prometheus.
GRAFANA_DEFAULTS = {"namespace": ".*", "__rate_interval": "1m", "__range": "3h", "__interval": "30s"}
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            yield panel


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel."""
    for panel in panels(dashboard):
        for target in panel["targets"]:
            yield panel["title"], target["expr"]


def expand(expr: str, values: dict[str, str]) -> str:
    """The query as Grafana sends it, its variables replaced by `values`."""

    def value(match: re.Match[str]) -> str:
        return values[match.group(1)]

    return _VARIABLE.sub(value, expr)


def _exposed_names(metric: Metric) -> set[str]:
    # Counters are exposed with _total, histograms as _bucket, _sum and _count.
    if metric.type == "counter":
        return {f"{metric.name}_total"}
    if metric.type == "histogram":
        return {f"{metric.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
    return {metric.name}


def operator_metrics() -> set[str]:
    """Every series name the operator's /metrics can serve, from its registry."""
    return {name for metric in exposition.REGISTRY.collect() for name in _exposed_names(metric)}


def exporter_metrics() -> set[str]:
    """The model-server and GPU series the operator's own default queries read (see docs/inferencefleet.md,
    "Default queries"): the documented exporters' names, taken from the queries rather than retyped."""
    templates = [*promql.DEFAULT_QUERIES.values(), promql.ERROR_RATE_QUERY, promql.REQUEST_RATE_QUERY]
    return {name for text in templates for name in re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\{\{", text)}


def names(expr: str) -> set[str]:
    return {s.name for s in selectors(pp.parse(expr)) if s.name}


def test_the_dashboard_is_valid_json_with_a_stable_uid() -> None:
    dashboard = load()
    assert dashboard["uid"] == "kubeforge-overview"
    assert dashboard["title"] == "kubeforge"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["namespace"]["allValue"] == GRAFANA_DEFAULTS["namespace"]


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    dashboard = load()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells.get((x, y))}"
                cells[(x, y)] = panel["title"]


def test_every_panel_reads_prometheus_through_the_datasource_variable() -> None:
    for panel in panels(load()):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"


def test_the_dashboard_covers_fleets_rollouts_training_cost_and_the_operator() -> None:
    rows = [p["title"] for p in load()["panels"] if p["type"] == "row"]
    assert rows == ["Inference fleets", "Rollouts", "Training", "Cost and energy", "Operator"]
    used = set().union(*(names(expand(e, GRAFANA_DEFAULTS)) for _, e in queries(load())))
    for metric in (
        "kubeforge_autoscaler_metric_value",
        "kubeforge_autoscaler_target",
        "kubeforge_autoscaler_desired_replicas",
        "kubeforge_autoscaler_decisions_total",
        "kubeforge_condition",
        "kubeforge_rollout_analysis_total",
        "kubeforge_rollout_outcomes_total",
        "kubeforge_phase",
        "kubeforge_trainingjob_restarts_total",
        "kubeforge_trainingjob_gpu_hours",
        "kubeforge_cost_per_hour",
        "kubeforge_cost_total",
        "kubeforge_gpus_held",
        "kubeforge_energy_kwh_total",
        "workqueue_depth",
        "kubeforge_api_requests_total",
        "leader_election_master_status",
    ):
        assert metric in used, f"no panel shows {metric}"


@pytest.mark.parametrize(("title", "expr"), list(queries(load())))
def test_every_query_parses_and_names_only_published_metrics(title: str, expr: str) -> None:
    query = expand(expr, GRAFANA_DEFAULTS)
    found = names(query)  # raises on a query Prometheus would refuse to parse
    assert found, f"{title}: no metric"
    unknown = found - operator_metrics() - exporter_metrics()
    assert not unknown, f"{title}: {sorted(unknown)} are published by neither the operator nor its exporters"


@pytest.mark.parametrize(("title", "expr"), list(queries(load())))
def test_the_operators_series_are_selected_by_job(title: str, expr: str) -> None:
    """Other controllers export workqueue_depth and the controller_runtime_* names too: every selector
    of the operator's series names its job (the chart sets it, see monitoring.job)."""
    ours = operator_metrics()
    for selector in selectors(pp.parse(expand(expr, GRAFANA_DEFAULTS))):
        if selector.name in ours:
            assert JOB in str(selector), f"{title}: {selector} without {JOB}"


def test_variables_are_the_ones_grafana_fills() -> None:
    text = DASHBOARD.read_text()
    used = set(_VARIABLE.findall(text))
    assert used <= {*GRAFANA_DEFAULTS, "datasource"}, used - {*GRAFANA_DEFAULTS, "datasource"}


def test_exporter_names_come_from_the_default_queries() -> None:
    # A guard on the guard: the set the dashboard is checked against is not empty or garbled.
    assert {"vllm:e2e_request_latency_seconds_bucket", "DCGM_FI_DEV_GPU_UTIL", "http_requests_total"} <= (
        exporter_metrics()
    )


def test_dashboard_config_map_is_off_by_default(helm: Path, helm_env: dict[str, str]) -> None:  # noqa: F811
    docs = render(helm, helm_env)
    labelled = [
        d for d in docs if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"]["labels"]
    ]
    assert not labelled


def test_dashboard_config_map_for_the_grafana_sidecar(helm: Path, helm_env: dict[str, str]) -> None:  # noqa: F811
    docs = render(helm, helm_env, "monitoring.grafanaDashboard.enabled=true")
    config_map = only(docs, "ConfigMap", "kubeforge-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"  # kube-prometheus-stack's default
    assert json.loads(config_map["data"]["kubeforge.json"]) == load()

    docs = render(
        helm,
        helm_env,
        "monitoring.grafanaDashboard.enabled=true",
        "monitoring.grafanaDashboard.namespace=monitoring",
        "monitoring.grafanaDashboard.annotations.grafana_folder=kubeforge",
        "monitoring.job=kubeforge-metrics",
    )
    config_map = only(docs, "ConfigMap", "kubeforge-dashboard")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "kubeforge"}
    rendered = json.loads(config_map["data"]["kubeforge.json"])
    exprs = [e for _, e in queries(rendered)]
    assert not [e for e in exprs if JOB in e]
    assert sum('job="kubeforge-metrics"' in e for e in exprs) == sum(JOB in e for _, e in queries(load()))
