"""The Prometheus metric source: queries per metric name, result parsing, HTTP behaviour (no network:
httpx's MockTransport plays Prometheus)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeforge.api.inferencefleet import METRIC_NAMES, Autoscaling
from kubeforge.metrics.promql import (
    DEFAULT_QUERIES,
    LabelConvention,
    MetricsError,
    PrometheusSource,
    fleet_queries,
    parse_result,
    render_custom,
    selector,
)

SEL = 'namespace="ns",kubeforge_dev_inferencefleet="chat"'


def auto(**overrides: Any) -> Autoscaling:
    fields: dict[str, Any] = {"maxReplicas": 4, "metric": "latencyP95", "target": 0.5}
    fields.update(overrides)
    return Autoscaling.model_validate(fields)


def test_every_metric_name_has_a_default_query() -> None:
    assert set(DEFAULT_QUERIES) == set(METRIC_NAMES)


@pytest.mark.parametrize(
    ("metric", "needles"),
    [
        (
            "latencyP95",
            ["vllm:e2e_request_latency_seconds_bucket", "http_request_duration_seconds_bucket", "0.95"],
        ),
        ("ttftP95", ["vllm:time_to_first_token_seconds_bucket"]),
        ("queueDepth", ["vllm:num_requests_waiting"]),
        ("concurrency", ["vllm:num_requests_running"]),
        ("requestsPerSecond", ["rate(vllm:e2e_request_latency_seconds_count"]),
        ("gpuUtilization", ["DCGM_FI_DEV_GPU_UTIL"]),
    ],
)
def test_default_queries_select_the_fleet_and_use_the_windows(metric: str, needles: list[str]) -> None:
    queries = fleet_queries(auto(metric=metric, stableWindowSeconds=60, panicWindowSeconds=6), "ns", "chat")
    for needle in needles:
        assert needle in queries.stable
    assert "{" + SEL + "}" in queries.stable
    assert "[60s]" in queries.stable
    assert "[6s]" in queries.panic
    assert "[60s]" in queries.rate
    assert SEL in queries.rate
    assert queries.activation is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("sum(foo{$selector})", "avg_over_time((sum(foo{SEL}))[30s:1s])"),
        ("sum(rate(foo{ {{selector}} }[$window]))", "sum(rate(foo{ SEL }[30s]))"),
        ("max(bar{{{ selector }}}) / 2", "avg_over_time((max(bar{SEL}) / 2)[30s:1s])"),
        ("sum(rate(x[{{window}}]))", "sum(rate(x[30s]))"),
    ],
)
def test_custom_query_placeholders(query: str, expected: str) -> None:
    assert render_custom(query, "SEL", 30) == expected


def test_custom_query_windows_and_activation() -> None:
    spec = auto(
        metric=None,
        query="sum(my_load{$selector})",
        stableWindowSeconds=20,
        panicWindowSeconds=4,
        scaleToZero={"enabled": True, "activationQuery": "sum(rate(gateway_requests_total{$selector}[1m]))"},
    )
    queries = fleet_queries(spec, "ns", "chat")
    assert queries.stable == f"avg_over_time((sum(my_load{{{SEL}}}))[20s:1s])"
    assert queries.panic.endswith("[4s:1s])")
    assert queries.activation is not None
    assert SEL in queries.activation


def test_label_convention_is_configurable() -> None:
    conv = LabelConvention(namespace="exported_namespace", fleet="fleet")
    assert selector("a", "b", conv) == 'exported_namespace="a",fleet="b"'


@given(st.text(max_size=20))
def test_selector_escapes_values(value: str) -> None:
    sel = selector(value, "x")
    body = sel.split("=", 1)[1].rsplit(",", 1)[0]
    assert body.startswith('"')
    assert body.endswith('"')
    inner = body[1:-1]
    # Every quote inside is escaped.
    assert all(inner[i - 1] == "\\" for i, c in enumerate(inner) if c == '"')


def vector(*values: str) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1.0, v]} for v in values]},
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (vector("0.25"), 0.25),
        (vector(), None),
        (vector("NaN"), None),
        (vector("+Inf"), None),
        ({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}}, 3.0),
    ],
    ids=["value", "empty", "nan", "inf", "scalar"],
)
def test_parse_result(body: dict[str, Any], expected: float | None) -> None:
    assert parse_result(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        vector("1", "2"),
        {"status": "error", "errorType": "bad_data", "error": "parse error"},
        {"status": "success", "data": {"resultType": "matrix", "result": []}},
        "nonsense",
    ],
    ids=["two-series", "error", "matrix", "not-a-dict"],
)
def test_parse_result_refuses(body: Any) -> None:
    with pytest.raises(MetricsError) as info:
        parse_result(body)
    assert info.value.reason == "QueryFailed"


def source(handler: Callable[[httpx.Request], httpx.Response]) -> PrometheusSource:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return PrometheusSource("http://prom:9090/", client=client)


def answer(values: dict[str, str | None]) -> Callable[[httpx.Request], httpx.Response]:
    """Serve /api/v1/query: the first key found in the query decides the answer."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/query"
        query = request.url.params["query"]
        for needle, value in values.items():
            if needle in query:
                return httpx.Response(200, json=vector(value) if value is not None else vector())
        return httpx.Response(200, json=vector())

    return handler


async def test_read_gives_stable_panic_and_rate() -> None:
    prom = source(answer({"[60s]))) or": "0.8", "[6s]))) or": "1.9", "sum(rate(": "12"}))
    reading = await prom.read(auto(), "ns", "chat")
    assert (reading.stable, reading.panic, reading.rate, reading.error) == (0.8, 1.9, 12.0, None)
    await prom.close()


async def test_unreachable_prometheus_is_an_error_reading() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    reading = await source(refuse).read(auto(), "ns", "chat")
    assert reading.error == "PrometheusUnreachable"
    assert "unreachable" in reading.message


@pytest.mark.parametrize(("status", "reason"), [(503, "PrometheusUnreachable"), (400, "QueryFailed")])
async def test_http_errors(status: int, reason: str) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        body = {"status": "error", "errorType": "bad_data", "error": "boom"}
        return httpx.Response(status, content=json.dumps(body).encode())

    reading = await source(fail).read(auto(), "ns", "chat")
    assert reading.error == reason


async def test_failing_rate_query_only_loses_the_refinement() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params["query"].startswith("sum(rate("):
            return httpx.Response(400, json={"status": "error", "error": "nope"})
        return httpx.Response(200, json=vector("0.4"))

    reading = await source(handler).read(auto(), "ns", "chat")
    assert (reading.stable, reading.rate, reading.error) == (0.4, None, None)
