"""Metrics the operator exposes about itself and the objects it manages.

Per-object series are removed when their object goes away (`forget`), so a long-lived operator does
not export a growing set of stale series.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kubeforge.api.usage import Usage
from kubeforge.policy.usage import extrapolate

REGISTRY = CollectorRegistry(auto_describe=True)

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
GPU_LENDS = Counter(
    "kubeforge_gpu_lends",
    "GPUs InferenceFleets borrowed from TrainingJobs (direction lend) and gave back (direction return).",
    ["namespace", "direction"],
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


class _StateCollector(Collector):
    """`kubeforge_condition` and `kubeforge_phase` (kube-state-metrics style: one series per possible
    value, 1 for the current one), built at scrape time from one small tuple per object. A labelled
    Gauge child per series costs about 800 bytes, and an object has a dozen series: at a thousand
    objects that was a tenth of the operator's memory."""

    STATUSES = ("True", "False", "Unknown")

    def __init__(self) -> None:
        self.conditions: dict[tuple[str, str, str], tuple[tuple[str, str], ...]] = {}
        self.phases: dict[tuple[str, str, str], tuple[str, tuple[str, ...]]] = {}

    def collect(self) -> Iterator[Metric]:
        condition = GaugeMetricFamily(
            "kubeforge_condition",
            "1 for the current status of each condition of each object (kube-state-metrics style).",
            labels=["kind", "namespace", "name", "type", "status"],
        )
        for key, pairs in list(self.conditions.items()):
            for type_, current in pairs:
                for status in self.STATUSES:
                    condition.add_metric([*key, type_, status], 1.0 if current == status else 0.0)
        phase = GaugeMetricFamily(
            "kubeforge_phase",
            "1 for the current phase of each object.",
            labels=["kind", "namespace", "name", "phase"],
        )
        for key, (current, candidates) in list(self.phases.items()):
            for candidate in candidates:
                phase.add_metric([*key, candidate], 1.0 if candidate == current else 0.0)
        yield condition
        yield phase


STATE = _StateCollector()
REGISTRY.register(STATE)


class _UsageCollector(Collector):
    """GPU-hours, cost and energy of every object, extrapolated from its `status.usage` at scrape time
    (`total + rate x (now - accountedUntil)`), so the series move every scrape while the status is
    written only when a rate changes. Labels are the object's kind, namespace and name (and the
    currency): nothing a request carries, so no request-level data reaches a label."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.clock = clock
        self.usage: dict[tuple[str, str, str], Usage] = {}
        self.limited: dict[tuple[str, str, str], bool] = {}

    def collect(self) -> Iterator[Metric]:
        labels = ["kind", "namespace", "name"]
        gpu_hours = CounterMetricFamily(
            "kubeforge_gpu_hours", "GPU-hours held by each object so far.", labels=labels
        )
        cost = CounterMetricFamily(
            "kubeforge_cost",
            "Cost of each object's GPUs so far (catalog price x time).",
            labels=[*labels, "currency"],
        )
        energy = CounterMetricFamily(
            "kubeforge_energy_kwh", "Energy drawn by each object's GPUs so far, in kWh.", labels=labels
        )
        per_hour = GaugeMetricFamily(
            "kubeforge_cost_per_hour",
            "What each object's GPUs held now cost per hour.",
            labels=[*labels, "currency"],
        )
        gpus = GaugeMetricFamily("kubeforge_gpus_held", "GPUs each object holds now.", labels=labels)
        watts = GaugeMetricFamily(
            "kubeforge_gpu_power_watts", "Power each object's GPUs draw now.", labels=labels
        )
        limited = GaugeMetricFamily(
            "kubeforge_budget_limited",
            "1 while spec.budget holds an object back (fleet: BudgetLimited; TrainingJob: BudgetExceeded).",
            labels=labels,
        )
        now = self.clock()
        for key, usage in list(self.usage.items()):
            totals = extrapolate(usage, now)
            gpu_hours.add_metric(list(key), totals.gpu_hours)
            cost.add_metric([*key, usage.currency], totals.cost)
            energy.add_metric(list(key), totals.energy_kwh)
            per_hour.add_metric([*key, usage.currency], usage.cost_per_hour)
            gpus.add_metric(list(key), usage.gpus)
            watts.add_metric(list(key), usage.watts)
        for key, held in list(self.limited.items()):
            limited.add_metric(list(key), 1.0 if held else 0.0)
        yield from (gpu_hours, cost, energy, per_hour, gpus, watts, limited)


USAGE = _UsageCollector()
REGISTRY.register(USAGE)


def record_usage(
    kind: str,
    namespace: str,
    name: str,
    usage: Usage | None,
    conditions: Iterable[Any] = (),
    budget_condition: str | None = None,
) -> None:
    """The object's `status.usage` (None: nothing accounted yet), and for an object with a budget
    whether its `budget_condition` (`BudgetLimited`, `BudgetExceeded`) is True among `conditions`."""
    key = (kind, namespace, name)
    if usage is None:
        USAGE.usage.pop(key, None)
    else:
        USAGE.usage[key] = usage
    if budget_condition is None:
        USAGE.limited.pop(key, None)
    else:
        USAGE.limited[key] = any(c.type == budget_condition and c.status == "True" for c in conditions)


LEADER = Gauge(
    "leader_election_master_status",
    "1 while this replica is the leader (client-go's name); 0 on standby.",
    ["name"],
    registry=REGISTRY,
)

_PER_OBJECT: dict[str, tuple[Gauge, ...]] = {"TrainingJob": (TRAINING_GPU_HOURS,)}
"""Gauges with one series per object, by the kind they describe (labels: namespace, name)."""
_TARGET_METRIC: dict[tuple[str, str], str] = {}
"""The metric label of each fleet's `kubeforge_autoscaler_target` series."""


def record_conditions(kind: str, namespace: str, name: str, conditions: Iterable[Mapping[str, Any]]) -> None:
    """The object's conditions as they are now: a condition no longer in its status loses its series."""
    STATE.conditions[(kind, namespace, name)] = tuple(
        (str(c["type"]), str(c.get("status") or "Unknown")) for c in conditions
    )


def record_phase(kind: str, namespace: str, name: str, phase: str, phases: Iterable[str]) -> None:
    STATE.phases[(kind, namespace, name)] = (phase, tuple(phases))


def record_target(namespace: str, name: str, metric: str, target: float) -> None:
    """One target series per fleet: a changed metric name replaces the old series."""
    old = _TARGET_METRIC.get((namespace, name))
    if old is not None and old != metric:
        _remove(AUTOSCALER_TARGET, namespace, name, old)
    _TARGET_METRIC[(namespace, name)] = metric
    AUTOSCALER_TARGET.labels(namespace, name, metric).set(target)


def forget_autoscaler(namespace: str, name: str) -> None:
    """Drop one fleet's autoscaler series: when its autoscaler is disabled or taken out of the spec they
    would otherwise keep its last desired replicas, metric and target for as long as the fleet lives."""
    _remove(AUTOSCALER_DESIRED, namespace, name)
    _remove(AUTOSCALER_METRIC, namespace, name)
    metric = _TARGET_METRIC.pop((namespace, name), None)
    if metric is not None:
        _remove(AUTOSCALER_TARGET, namespace, name, metric)


def forget_metric_value(namespace: str, name: str) -> None:
    """Drop a fleet's `kubeforge_autoscaler_metric_value` while no value could be read."""
    _remove(AUTOSCALER_METRIC, namespace, name)


def forget(kind: str, namespace: str, name: str) -> None:
    """Drop every series of one object (of that kind only: a fleet and a job may share a name)."""
    record_usage(kind, namespace, name, None)
    STATE.conditions.pop((kind, namespace, name), None)
    STATE.phases.pop((kind, namespace, name), None)
    for gauge in _PER_OBJECT.get(kind, ()):
        _remove(gauge, namespace, name)
    if kind == "InferenceFleet":
        forget_autoscaler(namespace, name)


def _remove(gauge: Gauge, *labels: str) -> None:
    # The series may never have been set (or already be gone): nothing to drop then.
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)


def serve(port: int, host: str = "0.0.0.0") -> None:
    start_http_server(port, addr=host, registry=REGISTRY)
