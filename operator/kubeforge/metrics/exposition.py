"""Metrics the operator exposes about itself and the objects it manages.

Per-object series are removed when their object goes away (`forget`), so a long-lived operator does
not export a growing set of stale series.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "kubeforge_reconcile_total", "Reconcile passes by kind and result.", ["kind", "result"], registry=REGISTRY
)
RECONCILE_SECONDS = Histogram(
    "kubeforge_reconcile_duration_seconds",
    "Time one reconcile pass took.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
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
ROLLOUTS = Counter(
    "kubeforge_rollout_outcomes_total",
    "Finished rollouts by outcome (Promoted, RolledBack, Aborted).",
    ["namespace", "outcome"],
    registry=REGISTRY,
)

_PER_OBJECT: tuple[Gauge, ...] = (TRAINING_GPU_HOURS, AUTOSCALER_DESIRED, AUTOSCALER_METRIC)


def record_conditions(kind: str, namespace: str, name: str, conditions: Iterable[Mapping[str, Any]]) -> None:
    for condition in conditions:
        for status in ("True", "False", "Unknown"):
            CONDITION.labels(kind, namespace, name, condition["type"], status).set(
                1.0 if condition.get("status") == status else 0.0
            )


def record_phase(kind: str, namespace: str, name: str, phase: str, phases: Iterable[str]) -> None:
    for candidate in phases:
        PHASE.labels(kind, namespace, name, candidate).set(1.0 if candidate == phase else 0.0)


def forget(kind: str, namespace: str, name: str) -> None:
    """Drop every series of one object."""
    for gauge in (CONDITION, PHASE):
        for labels in list(_series(gauge)):
            if labels[:3] == (kind, namespace, name):
                gauge.remove(*labels)
    for gauge in _PER_OBJECT:
        for labels in list(_series(gauge)):
            if labels == (namespace, name):
                gauge.remove(*labels)


def _series(gauge: Gauge) -> list[tuple[str, ...]]:
    # prometheus_client keeps children keyed by label values; there is no public iterator.
    return [tuple(key) for key in gauge._metrics]


def serve(port: int, host: str = "0.0.0.0") -> None:
    start_http_server(port, addr=host, registry=REGISTRY)
