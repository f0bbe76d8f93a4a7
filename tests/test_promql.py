"""The Prometheus metric source: queries per metric name, result parsing, HTTP behaviour (no network:
httpx's MockTransport plays Prometheus)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import promql_parser as pp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeforge.api.inferencefleet import METRIC_NAMES, Autoscaling
from kubeforge.api.rollout import AnalysisSpec
from kubeforge.metrics.promql import (
    DEFAULT_QUERIES,
    ERROR_RATE_QUERY,
    LabelConvention,
    MetricsError,
    PrometheusSource,
    fleet_pods_regex,
    fleet_queries,
    parse_result,
    render_custom,
    revision_queries,
    selector,
)
from kubeforge.metrics.scope import QueryRefusedError, confine, is_confined, selectors

SEL = 'namespace="ns",kubeforge_dev_inferencefleet="chat"'


def auto(**overrides: Any) -> Autoscaling:
    fields: dict[str, Any] = {"maxReplicas": 4, "metric": "latencyP95", "target": 0.5}
    fields.update(overrides)
    return Autoscaling.model_validate(fields)


def test_every_metric_name_has_a_default_query() -> None:
    assert set(DEFAULT_QUERIES) == set(METRIC_NAMES)


def matchers_of(query: str) -> list[set[str]]:
    """Each selector of a query as its set of matchers (`name="value"`, the metric name included)."""
    return [
        {str(m) for m in sel.matchers.matchers} | ({f'__name__="{sel.name}"'} if sel.name else set())
        for sel in selectors(pp.parse(query))
    ]


def ranges_of(query: str) -> set[float]:
    found: set[float] = set()

    def visit(node: pp.Expr) -> bool:
        if isinstance(node, pp.MatrixSelector):
            found.add(node.range.total_seconds())
        return True

    pp.walk(pp.parse(query), visit)
    return found


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
    fleet = {'namespace="ns"', 'kubeforge_dev_inferencefleet="chat"'}
    gpu = {'namespace="ns"', 'pod=~"chat-[0-9a-f]{10}-[0-9a-z]+-[0-9a-z]+"'}
    for matchers in matchers_of(queries.stable) + matchers_of(queries.rate):
        assert fleet <= matchers or (metric == "gpuUtilization" and gpu <= matchers)
    assert ranges_of(queries.stable) == {60}
    assert ranges_of(queries.panic) == {6}
    assert ranges_of(queries.rate) == {60}
    assert queries.activation is None


@pytest.mark.parametrize(
    ("pod", "selected"),
    [
        ("chat-0123456789-7d9f8c6b5-x2x9k", True),
        ("chat-abcdef0123-58b4f-qq7zt", True),
        ("chat-canary-0123456789-7d9f8c6b5-x2x9k", False),  # the pods of another fleet, `chat-canary`
        ("chat-0123456789", False),
        ("dcgm-exporter-8xk2p", False),
        ("xchat-0123456789-7d9f8c6b5-x2x9k", False),
    ],
)
def test_gpu_query_selects_the_fleets_pods_by_name(pod: str, selected: bool) -> None:
    """dcgm-exporter labels a GPU's series with the pod using it, not with the fleet's labels."""
    regex = fleet_pods_regex("chat")
    assert (re.fullmatch(regex, pod) is not None) == selected


def test_gpu_utilization_is_per_gpu_whatever_the_gpus_per_replica() -> None:
    """The query averages each pod's GPUs before summing pods: a 2-GPU replica at 50% adds 50."""
    query = fleet_queries(auto(metric="gpuUtilization", target=60), "ns", "chat").stable
    expr = pp.parse(query)
    assert isinstance(expr, pp.AggregateExpr)  # sum over pods ...
    inner = expr.expr
    assert isinstance(inner, pp.AggregateExpr)  # ... of the average over one pod's GPUs
    assert inner.modifier is not None
    assert inner.modifier.labels == ["pod"]
    assert "avg" in str(inner.op)


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
    assert queries.stable == confine(f"avg_over_time((sum(my_load{{{SEL}}}))[20s:1s])", "ns")
    assert queries.panic.endswith("[4s:1s])")
    assert queries.activation is not None
    assert matchers_of(queries.activation) == [
        {'__name__="gateway_requests_total"', 'namespace="ns"', 'kubeforge_dev_inferencefleet="chat"'}
    ]


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
    prom = source(answer({"[1m]))) or": "0.8", "[6s]))) or": "1.9", "sum(rate(": "12"}))
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


# -- confinement to the fleet's namespace (issue: metrics stay in the tenant's namespace) -------------

ATTACKS = {
    "plain matcher": 'sum(vllm:num_requests_waiting{namespace="other"})',
    "regex matcher": 'sum(vllm:num_requests_waiting{namespace=~".+"})',
    "or": (
        'sum(vllm:num_requests_waiting{namespace="ns"}) or sum(vllm:num_requests_waiting{namespace="other"})'
    ),
    "subquery": 'max_over_time(sum(vllm:num_requests_waiting{namespace="other"})[1m:1s])',
    "label_replace": (
        'sum(label_replace(vllm:num_requests_waiting{namespace="other"}, "namespace", "ns", "", ""))'
    ),
    "no selector matchers": "sum(vllm:num_requests_waiting)",
    "name regex": 'sum({__name__=~"vllm:.+"})',
    "offset and at": 'sum(vllm:num_requests_waiting{namespace="other"} offset 5m @ 1700000000)',
    "binary with on": 'sum(a{namespace="other"} * on(pod) group_left b{namespace!="ns"})',
}


@pytest.mark.parametrize("query", ATTACKS.values(), ids=ATTACKS.keys())
def test_confine_adds_the_namespace_to_every_selector_and_keeps_the_users(query: str) -> None:
    out = confine(query, "ns")
    assert is_confined(out, "ns")
    before, after = matchers_of(query), matchers_of(out)
    assert len(before) == len(after)
    for mine, theirs in zip(before, after, strict=True):
        assert theirs == mine | {'namespace="ns"'}  # ANDed: whatever the user wrote still applies


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("sum(rate(x[5m]", "does not parse"),
        ('x{a="1" or b="2"}', "alternatives"),
        ('x{a="q\\"} or y{namespace=\\"other"}', "quote, backslash"),
        ('label_replace(x, "a", "\\\\1", "b", "(.*)")', "quote, backslash"),
        ("info(x)", "info()"),
    ],
)
def test_confine_refuses_what_it_cannot_vouch_for(query: str, why: str) -> None:
    with pytest.raises(QueryRefusedError, match=re.escape(why)):
        confine(query, "ns")


@pytest.mark.parametrize("namespace", ["", "A", "ns\\", 'ns"', "-ns", "n" * 64])
def test_confine_refuses_a_namespace_that_is_not_a_namespace_name(namespace: str) -> None:
    with pytest.raises(QueryRefusedError):
        confine("x", namespace)


def test_queries_that_read_no_series_are_left_alone() -> None:
    assert confine("vector(1) + time()", "ns") == "vector(1) + time()"


def test_every_default_query_is_confined() -> None:
    analysis = AnalysisSpec.model_validate({"maxErrorRate": 0.01, "maxLatencyP95": 1})
    queries = revision_queries(analysis, "ns", "chat", "abc")
    assert queries.error_rate is not None
    assert queries.latency_p95 is not None
    texts = [queries.error_rate, queries.latency_p95]
    for metric in METRIC_NAMES:
        fq = fleet_queries(auto(metric=metric), "ns", "chat")
        texts += [fq.stable, fq.panic, fq.rate]
    for text in texts:
        assert is_confined(text, "ns"), text


def test_error_rate_counts_every_5xx_spelling() -> None:
    """promhttp's `code="503"`, the instrumentator's `status="5xx"`, starlette_exporter's
    `status_code="500"`: one regex, `5..`, matches all three."""
    for label in ("code", "status", "status_code"):
        assert f'{label}=~"5.."' in ERROR_RATE_QUERY
    for code, error in (("5xx", True), ("503", True), ("200", False), ("2xx", False)):
        assert (re.fullmatch("5..", code) is not None) == error


def test_a_refused_custom_query_is_a_reading_error_that_says_why() -> None:
    spec = auto(metric=None, query='sum(x{a="1" or namespace="other"})')
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params["query"])
        return httpx.Response(200, json=vector("1"))

    import asyncio

    reading = asyncio.run(source(handler).read(spec, "ns", "chat"))
    assert reading.error == "QueryRefused"
    assert "autoscaling.query refused" in reading.message
    assert asked == []  # never sent to Prometheus


async def test_a_refused_analysis_query_raises_a_metrics_error() -> None:
    spec = AnalysisSpec.model_validate({"maxErrorRate": 0.01, "errorRateQuery": "info(x{$selector})"})
    prom = source(answer({}))
    with pytest.raises(MetricsError) as info:
        await prom.sample(spec, "ns", "chat", "abc")
    assert info.value.reason == "QueryRefused"
    assert "analysis.errorRateQuery" in info.value.message


async def test_activation_query_is_confined() -> None:
    spec = auto(
        scaleToZero={"enabled": True, "activationQuery": 'sum(rate(gw_total{namespace="other"}[1m]))'}
    )
    activation = fleet_queries(spec, "ns", "chat").activation
    assert activation is not None
    assert is_confined(activation, "ns")


# Generated expressions: selectors with any matchers, nested in the constructs PromQL has.
_VALUES = st.sampled_from(["other", "ns", "team-a", ".+", ".*", "a|b", "x.*", "kube-system"])
_OPS = st.sampled_from(["=", "!=", "=~", "!~"])
_LABELS = st.sampled_from(["namespace", "pod", "job", "code"])


@st.composite
def _selector(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(["up", "foo_total", "vllm:num_requests_waiting", ""]))
    matchers = [f'{draw(_LABELS)}{draw(_OPS)}"{draw(_VALUES)}"' for _ in range(draw(st.integers(0, 3)))]
    if not name:
        matchers.append(f'job="{draw(_VALUES)}"')  # a nameless selector needs a non-empty matcher
    text = name + ("{" + ",".join(matchers) + "}" if matchers else "")
    offset = " offset 5m" if draw(st.booleans()) else ""
    if draw(st.booleans()):
        return f"rate({text}[{draw(st.sampled_from(['1m', '30s']))}]{offset})"
    return text + offset


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, st.sampled_from(["+", "/", "or", "and", "unless", "> bool"]), inner).map(
            lambda t: f"{t[0]} {t[1]} {t[2]}"
        ),
        st.tuples(inner, inner).map(lambda t: f"{t[0]} * on(pod) group_left() {t[1]}"),
        st.tuples(st.sampled_from(["sum", "max", "count", "avg"]), inner).map(
            lambda t: f"{t[0]} by (pod) ({t[1]})"
        ),
        inner.map(lambda e: f"topk(2, {e})"),
        inner.map(lambda e: f'label_replace({e}, "namespace", "other", "", "")'),
        inner.map(lambda e: f"max_over_time(({e})[1m:10s])"),
        inner.map(lambda e: f"abs({e})"),
        inner.map(lambda e: f"({e})"),
    )


EXPRESSIONS = st.recursive(_selector(), _extend, max_leaves=6)


@settings(max_examples=200, deadline=None)
@given(EXPRESSIONS, st.sampled_from(["ns", "team-a", "kube-system"]))
def test_every_selector_of_a_confined_expression_carries_the_namespace(query: str, namespace: str) -> None:
    out = confine(query, namespace)
    assert is_confined(out, namespace)
    before, after = matchers_of(query), matchers_of(out)
    assert len(before) == len(after)
    for mine, theirs in zip(before, after, strict=True):
        assert theirs == mine | {f'namespace="{namespace}"'}
    assert confine(out, namespace) == out
