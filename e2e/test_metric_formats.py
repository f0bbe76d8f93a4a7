"""The built-in queries against what real servers export, evaluated by a real Prometheus.

The load simulator replays the exposition fixtures of `tests/fixtures/exposition/` (vLLM,
prometheus-fastapi-instrumentator, starlette_exporter, Go promhttp, dcgm-exporter) with their counters
growing at the fixture's per-second counts; Prometheus scrapes it every second; the operator's own
query builders ask it. No cluster: the fleets are only labels here.

Expected values are worked out by hand from the fixtures (see each comment), so a query that picks the
wrong series, misses a label spelling (`5xx` vs `503`) or counts the scrape endpoint reads wrong."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from kubeforge.api.inferencefleet import Autoscaling, MetricName
from kubeforge.api.rollout import AnalysisSpec
from kubeforge.metrics.promql import fleet_queries, revision_queries, training_usage_queries, usage_queries
from kubeforge.policy.autoscaler import Reading, per_replica
from kubeforge_e2e import wait_for
from kubeforge_e2e.loadsim import LoadSimulator, PodInfo, Replay
from kubeforge_e2e.prometheus import PrometheusProcess

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(300)]

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "exposition"
NAMESPACE = "team-a"
REVISION = "0123456789"
APPS = ("vllm", "fastapi_instrumentator", "starlette_exporter", "go_promhttp")


def fleet_name(app: str) -> str:
    return app.replace("_", "-")


@pytest.fixture(scope="module")
def loadsim() -> Iterator[LoadSimulator]:
    """The simulator with no cluster behind it (no fleet pods): it serves only the replayed fixtures.
    Overrides conftest's `loadsim`, so conftest's `prometheus` scrapes this one."""

    def no_pods(namespace: str, name: str) -> Sequence[PodInfo]:
        return []

    sim = LoadSimulator(no_pods)
    for app in APPS:
        name = fleet_name(app)
        # What a Kubernetes pod scrape adds to an application's own series.
        labels = {
            "namespace": NAMESPACE,
            "pod": f"{name}-{REVISION}-7d9f8c6b5-x2x9k",
            "kubeforge_dev_inferencefleet": name,
            "kubeforge_dev_revision": REVISION,
        }
        sim.replay(app, (FIXTURES / f"{app}.prom").read_text(), labels)
    # dcgm-exporter's series name the pod they measure themselves (`honor_labels` keeps them).
    sim.replay("dcgm", (FIXTURES / "dcgm_exporter.prom").read_text())
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def test_replay_grows_counts_and_keeps_gauges() -> None:
    text = (FIXTURES / "vllm.prom").read_text()
    page = Replay(text, {"namespace": "ns"}, started=100.0).render(now=110.0)
    assert 'vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct",' in page
    lines = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in page.splitlines() if line[0] != "#"
    }
    model = 'model_name="meta-llama/Llama-3.1-8B-Instruct",namespace="ns"'
    assert lines[f'vllm:num_requests_running{{engine="0",{model}}}'] == 6.0  # a gauge
    assert lines[f'vllm:e2e_request_latency_seconds_count{{engine="0",{model}}}'] == 180.0  # 18/s for 10 s
    assert lines[f'vllm:e2e_request_latency_seconds_created{{engine="0",{model}}}'] == pytest.approx(
        1.7647e9, 1e-4
    )
    assert (
        lines['http_requests_total{handler="/v1/chat/completions",method="POST",status="5xx",namespace="ns"}']
        == 10
    )


def _auto(metric: MetricName) -> Autoscaling:
    return Autoscaling.model_validate(
        {"metric": metric, "target": 1, "maxReplicas": 4, "stableWindowSeconds": 10, "panicWindowSeconds": 4}
    )


def _settles(prometheus: PrometheusProcess, query: str, expected: float, what: str) -> None:
    seen: list[float | None] = []

    def close() -> bool:
        value = prometheus.query(query)
        seen.append(value)
        return value is not None and abs(value - expected) <= 0.02 * abs(expected) + 1e-9

    wait_for(close, timeout=60, interval=1, description=f"{what} = {expected} (last {seen[-3:]}): {query}")


# (fixture, error rate, p95 latency): the error rate is 5xx over every request but probes and scrapes.
ANALYSIS = [
    # instrumentator's status="5xx": 1 of 18 + 1 + 1; p95 from vLLM's own histogram, rank 17.1 of 18
    # in (2.5, 5]: 2.5 + 2.5 * 1.1 / 2
    ("vllm", 1 / 20, 3.875),
    # 5 of 50 on /generate (/metrics and /health left out); rank 47.5 in (0.5, 1]: 0.5 + 0.5 * 17.5 / 19
    ("fastapi_instrumentator", 5 / 50, 0.5 + 0.5 * 17.5 / 19),
    # status_code 500 and 503: 2 of 30 on /generate; 200 and 500 buckets summed, rank 27.075 of 28.5
    # in (1, 2.5]: 1 + 1.5 * 1.575 / 3
    ("starlette_exporter", 2 / 30, 1 + 1.5 * 1.575 / 3),
    # code="503": 10 of 100; rank 95 of 100 in (2.5, 5]: 2.5 + 2.5 * 5 / 6
    ("go_promhttp", 10 / 100, 2.5 + 2.5 * 5 / 6),
]


@pytest.mark.parametrize(("app", "error_rate", "p95"), ANALYSIS, ids=[a[0] for a in ANALYSIS])
def test_analysis_queries_read_each_exporter(
    prometheus: PrometheusProcess, app: str, error_rate: float, p95: float
) -> None:
    spec = AnalysisSpec.model_validate({"maxErrorRate": 0.5, "maxLatencyP95": 10, "windowSeconds": 10})
    queries = revision_queries(spec, NAMESPACE, fleet_name(app), REVISION)
    assert queries.error_rate is not None
    assert queries.latency_p95 is not None
    _settles(prometheus, queries.error_rate, error_rate, f"{app} error rate")
    _settles(prometheus, queries.latency_p95, p95, f"{app} p95 latency")


# (fixture, metric, fleet total): what the autoscaler divides by its ready replicas.
LOAD = [
    ("vllm", "requestsPerSecond", 18.0),  # vllm:e2e_request_latency_seconds_count
    ("vllm", "concurrency", 6.0),
    ("vllm", "queueDepth", 2.0),
    ("vllm", "ttftP95", 0.25 + 0.25 * 1.1 / 2),  # rank 17.1 of 18 in (0.25, 0.5]
    ("fastapi_instrumentator", "requestsPerSecond", 50.0),  # not the 0.7/s of /metrics and /health
    ("fastapi_instrumentator", "concurrency", 7.0),  # http_requests_inprogress
    ("starlette_exporter", "requestsPerSecond", 30.0),
    ("starlette_exporter", "concurrency", 5.0),
    ("go_promhttp", "requestsPerSecond", 100.0),
    ("go_promhttp", "concurrency", 9.0),
]


@pytest.mark.parametrize(("app", "metric", "total"), LOAD, ids=[f"{a}-{m}" for a, m, _ in LOAD])
def test_autoscaling_queries_read_each_exporter(
    prometheus: PrometheusProcess, app: str, metric: MetricName, total: float
) -> None:
    queries = fleet_queries(_auto(metric), NAMESPACE, fleet_name(app))
    _settles(prometheus, queries.stable, total, f"{app} {metric}")


def test_gpu_utilization_is_percent_per_gpu(prometheus: PrometheusProcess) -> None:
    """Fleet `chat` in team-a has two 2-GPU pods on dcgm-exporter's page: (40 + 60) / 2 and
    (70 + 50) / 2, so 110 replicas' worth of percent in total and 55 per replica. The GPUs of
    `chat-canary`'s pod (95), of team-b's `chat` (99) and the unallocated GPU (0) are not the fleet's."""
    spec = _auto("gpuUtilization")
    query = fleet_queries(spec, NAMESPACE, "chat").stable
    _settles(prometheus, query, 110.0, "gpuUtilization total")
    total = prometheus.query(query)
    assert per_replica(spec, Reading(stable=total), ready=2).stable == pytest.approx(55.0)


def test_usage_power_is_the_sum_over_the_workloads_own_gpus(prometheus: PrometheusProcess) -> None:
    """On dcgm-exporter's page, fleet `chat` in team-a has four GPUs on two pods (301.25 + 318.75 +
    342 + 288 W) and TrainingJob `llama` in team-a four on its two workers (405.5 + 398 + 412.25 +
    401.75 W). The canary's pod, team-b's pods of the same names, job `llama-2` (whose pods start like
    `llama`'s) and the unallocated GPU are neither's."""
    fleet_watts = usage_queries(NAMESPACE, "chat", 60)["watts"]
    _settles(prometheus, fleet_watts, 1250.0, "fleet chat watts")
    job_watts = training_usage_queries(NAMESPACE, "llama", 60)["watts"]
    _settles(prometheus, job_watts, 1617.5, "trainingjob llama watts")
