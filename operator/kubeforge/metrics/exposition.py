"""Metrics the operator exposes about itself and the objects it manages.

Per-object series are removed when their object goes away (`forget`), so a long-lived operator does
not export a growing set of stale series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

CONDITION = Gauge(
    "kubeforge_condition",
    "1 for the current status of each condition of each object (kube-state-metrics style).",
    ["kind", "namespace", "name", "type", "status"],
    registry=REGISTRY,
)
PHASE = Gauge(
    "kubeforge_phase",
    "1 for the current phase of each object.",
    ["kind", "namespace", "name", "phase"],
    registry=REGISTRY,
)
TRANSITIONS = Counter(
    "kubeforge_condition_transitions_total",
    "Condition status or reason changes, by kind, type, status and reason.",
    ["kind", "type", "status", "reason"],
    registry=REGISTRY,
)
TRAINING_RESTARTS = Counter(
    "kubeforge_trainingjob_restarts_total",
    "Whole-gang restarts of TrainingJobs.",
    ["namespace"],
    registry=REGISTRY,
)
TRAINING_PREEMPTIONS = Counter(
    "kubeforge_trainingjob_preemptions_total",
    "Preemptions of TrainingJobs, by reason and outcome (checkpointed, timedOut, stopped: by Kueue).",
    ["namespace", "reason", "outcome"],
    registry=REGISTRY,
)
TRAINING_RESIZES = Counter(
    "kubeforge_trainingjob_resizes_total",
    "Resizes of elastic TrainingJobs by the operator, by direction (up, down) and reason.",
    ["namespace", "direction", "reason"],
    registry=REGISTRY,
)
TRAINING_GPU_HOURS = Gauge(
    "kubeforge_trainingjob_gpu_hours",
    "GPU-hours held by each TrainingJob so far.",
    ["namespace", "name"],
    registry=REGISTRY,
)
AUTOSCALER_DECISIONS = Counter(
    "kubeforge_autoscaler_decisions_total",
    "Autoscaler evaluations by direction (up, down, hold) and reason.",
    ["namespace", "direction", "reason"],
    registry=REGISTRY,
)
AUTOSCALER_DESIRED = Gauge(
    "kubeforge_autoscaler_desired_replicas",
    "Replicas the autoscaler wants for each fleet.",
    ["namespace", "name"],
    registry=REGISTRY,
)
AUTOSCALER_METRIC = Gauge(
    "kubeforge_autoscaler_metric_value",
    "Last metric value the autoscaler read for each fleet.",
    ["namespace", "name"],
    registry=REGISTRY,
)
AUTOSCALER_TARGET = Gauge(
    "kubeforge_autoscaler_target",
    "The target the autoscaler holds each fleet's metric to (spec.autoscaling.target), by metric name "
    "(latencyP95, ttftP95, ..., or query): alerts and dashboards compare the metric value with it.",
    ["namespace", "name", "metric"],
    registry=REGISTRY,
)
ROLLOUTS = Counter(
    "kubeforge_rollout_outcomes_total",
    "Finished rollouts by outcome (Promoted, RolledBack, Aborted).",
    ["namespace", "outcome"],
    registry=REGISTRY,
)
ANALYSIS = Counter(
    "kubeforge_rollout_analysis_total",
    "Canary analysis measurements by verdict (Pass, Fail, Inconclusive).",
    ["namespace", "verdict"],
    registry=REGISTRY,
)

# -- the operator itself, named as controller-runtime and client-go name them, so dashboards and alerts
# -- written for Go operators read these too.

API_REQUESTS = Counter(
    "kubeforge_api_requests_total",
    "Requests the operator made to the Kubernetes API server, by verb, resource and HTTP code.",
    ["verb", "resource", "code"],
    registry=REGISTRY,
)
REST_CLIENT_REQUESTS = Counter(
    "rest_client_requests_total",
    "Number of HTTP requests, partitioned by status code, method, and host (client-go's name).",
    ["code", "method", "host"],
    registry=REGISTRY,
)
_VERB_METHOD = {
    "get": "GET",
    "list": "GET",
    "watch": "GET",
    "create": "POST",
    "update": "PUT",
    "apply": "PATCH",
    "patch": "PATCH",
    "delete": "DELETE",
}
API_HOST = ["kubernetes"]
"""The host label of rest_client_requests_total; the operator sets it to its API server's address."""


_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
REST_CLIENT_LATENCY = Histogram(
    "rest_client_request_duration_seconds",
    "Request latency in seconds, by verb and host (client-go's name): how long a reconcile waits per call.",
    ["verb", "host"],
    buckets=_DURATION_BUCKETS,
    registry=REGISTRY,
)
EVENTS_DROPPED = Counter(
    "kubeforge_events_dropped_total",
    "Events not recorded because the queue of Events waiting to be sent was full.",
    registry=REGISTRY,
)


def count_api_request(verb: str, resource: str, code: int | str, seconds: float | None = None) -> None:
    method = _VERB_METHOD.get(verb, verb.upper())
    API_REQUESTS.labels(verb, resource, str(code)).inc()
    REST_CLIENT_REQUESTS.labels(str(code), method, API_HOST[0]).inc()
    if seconds is not None:
        REST_CLIENT_LATENCY.labels(method, API_HOST[0]).observe(seconds)


WORKQUEUE_DEPTH = Gauge("workqueue_depth", "Current depth of workqueue.", ["name"], registry=REGISTRY)
WORKQUEUE_ADDS = Counter(
    "workqueue_adds_total", "Total number of adds handled by workqueue.", ["name"], registry=REGISTRY
)
WORKQUEUE_RETRIES = Counter(
    "workqueue_retries_total", "Total number of retries handled by workqueue.", ["name"], registry=REGISTRY
)
WORKQUEUE_QUEUE_SECONDS = Histogram(
    "workqueue_queue_duration_seconds",
    "How long in seconds an item stays in workqueue before being requested.",
    ["name"],
    buckets=_DURATION_BUCKETS,
    registry=REGISTRY,
)
WORKQUEUE_WORK_SECONDS = Histogram(
    "workqueue_work_duration_seconds",
    "How long in seconds processing an item from workqueue takes.",
    ["name"],
    buckets=_DURATION_BUCKETS,
    registry=REGISTRY,
)
RECONCILE_TOTAL = Counter(
    "controller_runtime_reconcile_total",
    "Total number of reconciliations per controller (result: success, error, requeue_after).",
    ["controller", "result"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "controller_runtime_reconcile_errors_total",
    "Total number of reconciliation errors per controller.",
    ["controller"],
    registry=REGISTRY,
)
RECONCILE_TIME = Histogram(
    "controller_runtime_reconcile_time_seconds",
    "Length of time per reconciliation per controller.",
    ["controller"],
    buckets=_DURATION_BUCKETS,
    registry=REGISTRY,
)
MAX_CONCURRENT = Gauge(
    "controller_runtime_max_concurrent_reconciles",
    "Maximum number of concurrent reconciles per controller.",
    ["controller"],
    registry=REGISTRY,
)
ACTIVE_WORKERS = Gauge(
    "controller_runtime_active_workers",
    "Number of currently used workers per controller.",
    ["controller"],
    registry=REGISTRY,
)


class _CacheCollector(Collector):
    """Cache sizes and sync state, read at scrape time (always current, no timer)."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[tuple[str, int, bool]]] | None = None

    def collect(self) -> Iterator[Metric]:
        objects = GaugeMetricFamily(
            "kubeforge_cache_objects",
            "Objects held in the operator's watch-fed caches, by resource.",
            labels=["resource"],
        )
        synced = GaugeMetricFamily(
            "kubeforge_cache_synced",
            "1 once the cache of a resource holds a complete list.",
            labels=["resource"],
        )
        for resource, count, is_synced in self.source() if self.source is not None else ():
            objects.add_metric([resource], count)
            synced.add_metric([resource], 1 if is_synced else 0)
        yield objects
        yield synced


CACHES = _CacheCollector()
REGISTRY.register(CACHES)
LEADER = Gauge(
    "leader_election_master_status",
    "1 while this replica is the leader (client-go's name); 0 on standby.",
    ["name"],
    registry=REGISTRY,
)

_PER_OBJECT: tuple[Gauge, ...] = (
    TRAINING_GPU_HOURS,
    AUTOSCALER_DESIRED,
    AUTOSCALER_METRIC,
    AUTOSCALER_TARGET,
)


def record_conditions(kind: str, namespace: str, name: str, conditions: Iterable[Mapping[str, Any]]) -> None:
    for condition in conditions:
        for status in ("True", "False", "Unknown"):
            CONDITION.labels(kind, namespace, name, condition["type"], status).set(
                1.0 if condition.get("status") == status else 0.0
            )


def record_phase(kind: str, namespace: str, name: str, phase: str, phases: Iterable[str]) -> None:
    for candidate in phases:
        PHASE.labels(kind, namespace, name, candidate).set(1.0 if candidate == phase else 0.0)


def record_target(namespace: str, name: str, metric: str, target: float) -> None:
    """One target series per fleet: a changed metric name replaces the old series."""
    for labels in list(_series(AUTOSCALER_TARGET)):
        if labels[:2] == (namespace, name) and labels[2] != metric:
            AUTOSCALER_TARGET.remove(*labels)
    AUTOSCALER_TARGET.labels(namespace, name, metric).set(target)


def forget(kind: str, namespace: str, name: str) -> None:
    """Drop every series of one object."""
    for gauge in (CONDITION, PHASE):
        for labels in list(_series(gauge)):
            if labels[:3] == (kind, namespace, name):
                gauge.remove(*labels)
    for gauge in _PER_OBJECT:
        for labels in list(_series(gauge)):
            if labels[:2] == (namespace, name):
                gauge.remove(*labels)


def _series(gauge: Gauge) -> list[tuple[str, ...]]:
    # prometheus_client keeps children keyed by label values; there is no public iterator.
    return [tuple(key) for key in gauge._metrics]


def serve(port: int, host: str = "0.0.0.0") -> None:
    start_http_server(port, addr=host, registry=REGISTRY)
