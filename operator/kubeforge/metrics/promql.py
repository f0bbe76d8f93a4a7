"""The autoscaler's metric source: Prometheus over its HTTP API.

Windows are computed by Prometheus, not by the operator: every default query takes the window as a
range (`rate(...[60s])`, `avg_over_time(...[6s])`), so the stable and panic averages are right from
the first evaluation after an operator restart, and need no samples kept in memory.

Selecting a fleet's series
--------------------------
Default queries select series by two labels, set by the scrape configuration:

- `namespace`: the fleet's namespace (what Prometheus' Kubernetes service discovery gives every
  pod target with the usual relabelling, and what PodMonitors set);
- `kubeforge_dev_inferencefleet`: the fleet's name. Pods carry the label `kubeforge.dev/inferencefleet`;
  a `labelmap` of `__meta_kubernetes_pod_label_(.+)` turns it into this Prometheus label.

Both names are a `LabelConvention`, so another convention is one constructor argument away; a custom
`spec.autoscaling.query` can select any way it likes through the `$selector` placeholder or none.
A series is *stale* when Prometheus has no sample of it inside the window: the range functions then
return nothing, which reads as no data.
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass
from typing import Any

import httpx

from kubeforge.api.inferencefleet import Autoscaling, MetricName
from kubeforge.api.rollout import AnalysisSpec
from kubeforge.metrics import scope
from kubeforge.policy.analysis import MetricSample
from kubeforge.policy.autoscaler import Reading
from kubeforge.policy.usage import UsageReading

DEFAULT_TIMEOUT = 2.0


@dataclass(frozen=True)
class LabelConvention:
    namespace: str = "namespace"
    fleet: str = "kubeforge_dev_inferencefleet"
    revision: str = "kubeforge_dev_revision"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def selector(namespace: str, name: str, convention: LabelConvention = LabelConvention()) -> str:
    """The label matchers of one fleet's series, without braces."""
    return f'{convention.namespace}="{_escape(namespace)}",{convention.fleet}="{_escape(name)}"'


# `{sel}` is the fleet's matchers, `{w}` the window. Alternatives joined by `or`, first match wins: vLLM's
# own series, then prometheus-fastapi-instrumentator and Go's promhttp (both `http_requests_total` and
# `http_request_duration_seconds`, with `status="5xx"` and `code="503"` respectively), then
# starlette_exporter (`starlette_*`, `status_code="503"`), so one fleet needs no configuration.
# Probe and scrape endpoints are left out: a scrape every second would otherwise pass for traffic.
_PROBES = "/metrics|/health|/healthz|/livez|/readyz|/ping|/version"
_HTTP = f'{{sel}},handler!~"{_PROBES}"'
_STARLETTE = f'{{sel}},path!~"{_PROBES}"'


def _p95(histogram: str, matchers: str = "{sel}") -> str:
    return "histogram_quantile(0.95, sum by (le) (rate(" + histogram + "{{" + matchers + "}}[{w}])))"


def _sum(function: str, series: str, matchers: str = "{sel}") -> str:
    return f"sum({function}({series}{{{{{matchers}}}}}[{{w}}]))"


def _either(*alternatives: str) -> str:
    return " or ".join(alternatives)


REQUEST_RATE_QUERY = _either(
    _sum("rate", "vllm:e2e_request_latency_seconds_count"),
    _sum("rate", "http_requests_total", _HTTP),
    _sum("rate", "starlette_requests_total", _STARLETTE),
)
"""The fleet's total request rate: the capacity floor of latency metrics and the idle signal."""

GPU_PODS = '{ns},pod=~"{pod}"'
"""dcgm-exporter's series carry the `namespace` and `pod` of the pod using the GPU (Kubernetes mapping
on, scraped with `honor_labels`), not the fleet's labels: the fleet's pods are selected by name."""

DEFAULT_QUERIES: dict[MetricName, str] = {
    "latencyP95": _either(
        _p95("vllm:e2e_request_latency_seconds_bucket"),
        _p95("http_request_duration_seconds_bucket", _HTTP),
        _p95("starlette_request_duration_seconds_bucket", _STARLETTE),
    ),
    "ttftP95": _p95("vllm:time_to_first_token_seconds_bucket"),
    "queueDepth": _sum("avg_over_time", "vllm:num_requests_waiting"),
    "concurrency": _either(
        _sum("avg_over_time", "vllm:num_requests_running"),
        _sum("avg_over_time", "http_requests_in_flight"),
        _sum("avg_over_time", "http_requests_inprogress"),
        _sum("avg_over_time", "starlette_requests_in_progress"),
    ),
    "requestsPerSecond": REQUEST_RATE_QUERY,
    # One series per GPU: averaged over each pod's GPUs, then summed over pods, so the total is in
    # replicas' worth of percent whatever `resources.gpus` is (a 2-GPU replica at 50% adds 50).
    "gpuUtilization": "sum(avg by (pod) (avg_over_time(DCGM_FI_DEV_GPU_UTIL{{" + GPU_PODS + "}}[{w}])))",
}
"""Per metric name: a query returning one number: a latency quantile, or for the load metrics the
fleet's *total* (summed over its pods), which the autoscaler divides by its ready pods. A total, not an
average over pods, because right after a scale-up the new pods have not reported yet: an average over
the old pods times the new ready count would count their load twice and overshoot (Knative's KPA
divides the observed total by the target for the same reason)."""

ERROR_RATE_QUERY = (
    "("
    + _either(
        'sum(rate(http_requests_total{{{sel},code=~"5..",handler!~"' + _PROBES + '"}}[{w}])'
        ' or rate(http_requests_total{{{sel},status=~"5..",handler!~"' + _PROBES + '"}}[{w}]))',
        'sum(rate(starlette_requests_total{{{sel},status_code=~"5..",path!~"' + _PROBES + '"}}[{w}]))',
        "vector(0)",
    )
    + ") / ("
    + _either(
        _sum("rate", "http_requests_total", _HTTP), _sum("rate", "starlette_requests_total", _STARLETTE)
    )
    + ")"
)
"""A revision's share of failed requests (HTTP 5xx), 0..1. `5..` matches promhttp's `code="503"`, the
instrumentator's grouped `status="5xx"` and starlette_exporter's `status_code="503"` alike. A server
that never failed has no 5xx series at all, hence the `or vector(0)`; no requests at all divide by
nothing and read as no data."""

LATENCY_QUERY = DEFAULT_QUERIES["latencyP95"]
"""A revision's p95 request latency, seconds (vLLM's histogram, else the generic HTTP ones)."""


USAGE_QUERIES: dict[str, str] = {
    # Summed over every GPU series of the fleet's pods: the fleet's average power over the window.
    "watts": "sum(avg_over_time(DCGM_FI_DEV_POWER_USAGE{{" + GPU_PODS + "}}[{w}]))",
    "utilization": "avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{{" + GPU_PODS + "}}[{w}])) / 100",
    "requests": _either(
        _sum("increase", "vllm:e2e_request_latency_seconds_count"),
        _sum("increase", "http_requests_total", _HTTP),
        _sum("increase", "starlette_requests_total", _STARLETTE),
    ),
    "tokens": _sum("increase", "vllm:generation_tokens_total"),
}
"""What `status.usage` reads of a fleet over the segment it folds (`{w}`): its GPUs' power and
utilization from dcgm-exporter, the requests and tokens it served. Only the fleet's namespace is read,
and the results are only totals: nothing request-level."""


def usage_queries(
    namespace: str, name: str, seconds: float, convention: LabelConvention = LabelConvention()
) -> dict[str, str]:
    sel = selector(namespace, name, convention)
    window = f"{max(1, round(seconds))}s"
    return {
        key: confined(_fill(text, namespace, name, sel, window, convention), namespace, None, convention)
        for key, text in USAGE_QUERIES.items()
    }


TRAINING_USAGE_KEYS = ("watts", "utilization")
"""What `status.usage` reads of a TrainingJob: its GPUs' power and utilization (a trainer serves no
requests)."""


def training_usage_queries(
    namespace: str, name: str, seconds: float, convention: LabelConvention = LabelConvention()
) -> dict[str, str]:
    """The GPU queries of `usage_queries`, over a TrainingJob's worker pods (every attempt's)."""
    window = f"{max(1, round(seconds))}s"
    pods = training_pods_regex(name)
    return {
        key: confined(
            _fill(USAGE_QUERIES[key], namespace, name, "", window, convention, pods),
            namespace,
            None,
            convention,
        )
        for key in TRAINING_USAGE_KEYS
    }


def training_pods_regex(name: str) -> str:
    """The names of a TrainingJob's worker pods: an Indexed Job's `<job>-<index>-<suffix>`, the Job being
    `<trainingjob>-a<attempt>` (anchored, as `fleet_pods_regex`). When `<job>-<index>-` would pass 58
    characters Kubernetes shortens the Job name and keeps the index, so a long-named job's workers can
    be `<name>-a-10-<suffix>` or `<name>--100-<suffix>`: the attempt part is optional."""
    return name.replace(".", "[.]") + "-(a[0-9]*)?-[0-9]+-[0-9a-z]+"


def fleet_pods_regex(name: str) -> str:
    """The names of a fleet's pods: `<fleet>-<revision>-<replicaset hash>-<suffix>` (PromQL regexes
    are anchored, so fleet `a` does not match the pods of fleet `a-b`)."""
    return name.replace(".", "[.]") + "-[0-9a-f]{10}-[0-9a-z]+-[0-9a-z]+"


def _fill(
    template: str,
    namespace: str,
    name: str,
    sel: str,
    window: str,
    convention: LabelConvention,
    pods: str | None = None,
) -> str:
    return template.format(
        sel=sel,
        w=window,
        ns=f'{convention.namespace}="{_escape(namespace)}"',
        pod=pods if pods is not None else fleet_pods_regex(name),
    )


def revision_selector(
    namespace: str, name: str, revision: str, convention: LabelConvention = LabelConvention()
) -> str:
    """The label matchers of one revision's series: the fleet's, plus the pod's revision label."""
    return f'{selector(namespace, name, convention)},{convention.revision}="{_escape(revision)}"'


@dataclass(frozen=True)
class RevisionQueries:
    error_rate: str | None
    latency_p95: str | None


def revision_queries(
    spec: AnalysisSpec,
    namespace: str,
    name: str,
    revision: str,
    convention: LabelConvention = LabelConvention(),
) -> RevisionQueries:
    """The analysis queries of one revision; a metric no limit needs is not queried."""
    sel = revision_selector(namespace, name, revision, convention)
    window = f"{spec.window}s"
    wants_errors = spec.max_error_rate is not None or spec.max_error_rate_increase is not None
    wants_latency = spec.max_latency_p95 is not None or spec.max_latency_increase_ratio is not None

    def render(custom: str | None, default: str, field: str) -> str:
        if custom is None:
            text = _fill(default, namespace, name, sel, window, convention)
        else:
            text = _WINDOW_RE.sub(lambda _: window, _SELECTOR_RE.sub(lambda _: sel, custom))
        return confined(text, namespace, field if custom is not None else None, convention)

    return RevisionQueries(
        error_rate=render(spec.error_rate_query, ERROR_RATE_QUERY, "analysis.errorRateQuery")
        if wants_errors
        else None,
        latency_p95=render(spec.latency_query, LATENCY_QUERY, "analysis.latencyQuery")
        if wants_latency
        else None,
    )


_SELECTOR_RE = re.compile(r"\$selector|\{\{\s*selector\s*\}\}")
_WINDOW_RE = re.compile(r"\$window|\{\{\s*window\s*\}\}")


def render_custom(query: str, sel: str, window_seconds: int) -> str:
    """A user's query with `$selector` and `$window` filled in. A query without a window placeholder is
    averaged over the window as a subquery, so the stable and panic windows still mean something."""
    text = _SELECTOR_RE.sub(lambda _: sel, query)
    if _WINDOW_RE.search(text):
        return _WINDOW_RE.sub(lambda _: f"{window_seconds}s", text)
    return f"avg_over_time(({text})[{window_seconds}s:1s])"


@dataclass(frozen=True)
class FleetQueries:
    stable: str
    panic: str
    rate: str
    activation: str | None = None


def fleet_queries(
    spec: Autoscaling, namespace: str, name: str, convention: LabelConvention = LabelConvention()
) -> FleetQueries:
    sel = selector(namespace, name, convention)
    stable_w, panic_w = spec.stable_window_seconds, spec.panic_window_seconds

    def render(window: int) -> str:
        if spec.query is not None:
            return confined(
                render_custom(spec.query, sel, window), namespace, "autoscaling.query", convention
            )
        assert spec.metric is not None  # the CRD's CEL rule: exactly one of metric and query
        text = _fill(DEFAULT_QUERIES[spec.metric], namespace, name, sel, f"{window}s", convention)
        return confined(text, namespace, None, convention)

    activation = None
    stz = spec.scale_to_zero
    if stz is not None and stz.enabled and stz.activation_query:
        activation = confined(
            render_custom(stz.activation_query, sel, stable_w),
            namespace,
            "autoscaling.scaleToZero.activationQuery",
            convention,
        )
    rate = _fill(REQUEST_RATE_QUERY, namespace, name, sel, f"{stable_w}s", convention)
    return FleetQueries(
        stable=render(stable_w),
        panic=render(panic_w),
        rate=confined(rate, namespace, None, convention),
        activation=activation,
    )


def confined(
    query: str, namespace: str, field: str | None, convention: LabelConvention = LabelConvention()
) -> str:
    """`query` reading only the namespace's series (see `kubeforge.metrics.scope`); a query that cannot
    be confined is a MetricsError `QueryRefusedError` naming the field, never sent to Prometheus."""
    try:
        return scope.confine(query, namespace, label=convention.namespace)
    except scope.QueryRefusedError as error:
        where = field or "a built-in query"
        raise MetricsError("QueryRefused", f"{where} refused: {error}") from error


class MetricsError(Exception):
    """A query could not be answered; `reason` is a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def parse_result(body: Any) -> float | None:
    """One number from a /api/v1/query answer; None when there is no (finite) value.

    Several series are an error: a query the autoscaler acts on must aggregate to one number."""
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error", "unknown error") if isinstance(body, dict) else "not JSON"
        raise MetricsError("QueryFailed", f"Prometheus refused the query: {error}")
    data = body.get("data") or {}
    kind = data.get("resultType")
    result = data.get("result")
    if kind == "scalar":
        return _number(result[1] if isinstance(result, list) and len(result) == 2 else None)
    if kind != "vector" or not isinstance(result, list):
        raise MetricsError("QueryFailed", f"query returned a {kind}, not an instant vector or scalar")
    if not result:
        return None
    if len(result) > 1:
        raise MetricsError("QueryFailed", f"query returned {len(result)} series; it must aggregate to one")
    value = result[0].get("value")
    return _number(value[1] if isinstance(value, list) and len(value) == 2 else None)


def _number(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class PrometheusSource:
    """Reads a fleet's metric from Prometheus' HTTP API (`GET /api/v1/query`)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        convention: LabelConvention = LabelConvention(),
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.convention = convention
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout), trust_env=False)

    async def close(self) -> None:
        await self._client.aclose()

    async def query(self, promql: str) -> float | None:
        try:
            response = await self._client.get(f"{self.base_url}/api/v1/query", params={"query": promql})
        except httpx.HTTPError as error:
            raise MetricsError(
                "PrometheusUnreachable", f"Prometheus at {self.base_url} unreachable: {error!r}"
            ) from error
        if response.status_code >= 500:
            raise MetricsError("PrometheusUnreachable", f"Prometheus answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError as error:
            raise MetricsError(
                "QueryFailed", f"Prometheus answered HTTP {response.status_code}, not JSON"
            ) from error
        return parse_result(body)

    async def sample(self, spec: AnalysisSpec, namespace: str, name: str, revision: str) -> MetricSample:
        """One revision's error rate and p95 latency; raises MetricsError when Prometheus cannot answer."""
        queries = revision_queries(spec, namespace, name, revision, self.convention)
        error_rate = latency = None
        if queries.error_rate is not None:
            error_rate = await self.query(queries.error_rate)
        if queries.latency_p95 is not None:
            latency = await self.query(queries.latency_p95)
        return MetricSample(error_rate=error_rate, latency_p95=latency)

    async def usage(self, namespace: str, name: str, seconds: float) -> UsageReading:
        """What the fleet's GPUs drew and its servers served over the last `seconds`; a value Prometheus
        does not have (or cannot give) is None, and accounting falls back (TDP, no unit cost)."""
        try:
            queries = usage_queries(namespace, name, seconds, self.convention)
        except MetricsError:
            return UsageReading()
        return await self._usage(queries)

    async def training_usage(self, namespace: str, name: str, seconds: float) -> UsageReading:
        """What a TrainingJob's GPUs drew over the last `seconds` (power and utilization only)."""
        try:
            queries = training_usage_queries(namespace, name, seconds, self.convention)
        except MetricsError:
            return UsageReading()
        return await self._usage(queries)

    async def _usage(self, queries: dict[str, str]) -> UsageReading:
        results = await asyncio.gather(*(self.query(q) for q in queries.values()), return_exceptions=True)
        values: dict[str, float | None] = {}
        for key, result in zip(queries, results, strict=True):
            if isinstance(result, MetricsError):
                values[key] = None
            elif isinstance(result, BaseException):
                raise result
            else:
                values[key] = result
        return UsageReading(
            watts=values.get("watts"),
            utilization=values.get("utilization"),
            requests=values.get("requests"),
            tokens=values.get("tokens"),
        )

    async def read(self, spec: Autoscaling, namespace: str, name: str) -> Reading:
        """The stable and panic values, the request rate, and the activation rate, queried together."""
        try:
            queries = fleet_queries(spec, namespace, name, self.convention)
        except MetricsError as error:
            return Reading(error=error.reason, message=error.message)
        names = ["stable", "panic", "rate"] + (["activation"] if queries.activation else [])
        texts = [queries.stable, queries.panic, queries.rate] + (
            [queries.activation] if queries.activation else []
        )
        results = await asyncio.gather(*(self.query(q) for q in texts), return_exceptions=True)
        values: dict[str, float | None] = {}
        for key, result in zip(names, results, strict=True):
            if isinstance(result, MetricsError):
                if key in ("stable", "activation") or result.reason == "PrometheusUnreachable":
                    return Reading(error=result.reason, message=result.message)
                values[key] = None  # a failing auxiliary query only loses its refinement
            elif isinstance(result, BaseException):
                raise result
            else:
                values[key] = result
        return Reading(
            stable=values.get("stable"),
            panic=values.get("panic"),
            rate=values.get("rate"),
            activation_rate=values.get("activation"),
        )
