"""`kubeforge top`: the key figures of InferenceFleets and TrainingJobs, read from the objects as the API
server returns them, as a table or as JSON.

Pure: no I/O, no Kubernetes client. Statuses are read defensively: an object written by an older or newer
operator (a field missing, renamed or of another type) shows `<none>` or `-` in that column, never an
error, because `top` is what people run when something already looks wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Obj = Mapping[str, Any]
Figures = dict[str, Any]
"""One row as JSON-ready values: numbers, strings, nested objects, None where the object says nothing."""

NONE = "<none>"
"""A text field the object does not set (kubectl's word for it)."""
ABSENT = "-"
"""A figure the object does not report."""

FLEETS, JOBS = "inferenceFleets", "trainingJobs"
"""The keys of `-o json` and the names of the two tables."""


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _num(value: Any) -> float | None:
    """A finite number, or None (bools, strings and NaN are not figures)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    number = _num(value)
    return int(number) if number is not None and number == int(number) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _conditions(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    found: dict[str, Mapping[str, Any]] = {}
    conditions = status.get("conditions")
    for cond in conditions if isinstance(conditions, list) else []:
        if isinstance(cond, Mapping) and isinstance(cond.get("type"), str):
            found[cond["type"]] = cond
    return found


def _is_true(conditions: Mapping[str, Mapping[str, Any]], type_: str) -> bool:
    return conditions.get(type_, {}).get("status") == "True"


def _usage(status: Mapping[str, Any]) -> Mapping[str, Any]:
    return _map(status.get("usage"))


def _identity(obj: Obj) -> Figures:
    meta, spec = _map(obj.get("metadata")), _map(obj.get("spec"))
    return {
        "namespace": _text(meta.get("namespace")),
        "name": _text(meta.get("name")),
        "objective": _text(spec.get("objective")),
    }


def _gpus_held(pods: int | None, spec: Mapping[str, Any]) -> int | None:
    """GPUs held by `pods` pods of the object. A spec without `resources.gpus` asks for none (the CRD's
    default is 0), so only an unknown pod count makes the figure unknown."""
    per_pod = _int(_map(spec.get("resources")).get("gpus"))
    if pods is None:
        return None
    return pods * (per_pod if per_pod is not None and per_pod > 0 else 0)


ROLLOUT_UNDERWAY = ("Progressing", "Paused", "Aborted", "RolledBack")
"""Rollout phases `top` shows in place of the fleet's health: a finished, promoted rollout says nothing."""


def fleet_phase(status: Mapping[str, Any]) -> str | None:
    """One word for a fleet, most pressing first: a rollout under way or ended badly, then Stalled,
    Degraded, CapacityLimited (pods without a node), Ready, and NotReady when Ready is False."""
    rollout_phase = _text(_map(status.get("rollout")).get("phase"))
    if rollout_phase in ROLLOUT_UNDERWAY:
        return rollout_phase
    conditions = _conditions(status)
    for type_ in ("Stalled", "Degraded", "CapacityLimited", "Ready"):
        if _is_true(conditions, type_):
            return type_
    if "Ready" in conditions:
        return "NotReady"
    return None


def fleet_figures(obj: Obj) -> Figures:
    """The figures of one InferenceFleet (see docs/cli.md for each field)."""
    spec, status = _map(obj.get("spec")), _map(obj.get("status"))
    autoscaler, usage = _map(status.get("autoscaler")), _usage(status)
    metric: Figures | None = None
    if autoscaler:
        metric = {
            "name": _text(autoscaler.get("metric")),
            "value": _num(autoscaler.get("metricValue")),
            "target": _num(autoscaler.get("target")),
        }
    return {
        **_identity(obj),
        "phase": fleet_phase(status),
        "readyReplicas": _int(status.get("readyReplicas")),
        "desiredReplicas": _int(status.get("desiredReplicas")),
        "replicas": _int(status.get("replicas")),
        "metric": metric,
        "gpus": _gpus_held(_int(status.get("replicas")), spec),
        "costPerHour": _num(usage.get("costPerHour")),
        "currency": _text(usage.get("currency")),
    }


def job_figures(obj: Obj) -> Figures:
    """The figures of one TrainingJob. `status.workers` is the current attempt's pod counts; an elastic
    job also reports `current`, `min` and `max` there, and `current` is then the size it runs at."""
    spec, status = _map(obj.get("spec")), _map(obj.get("status"))
    workers, usage = _map(status.get("workers")), _usage(status)
    current = _int(workers.get("current"))
    gpu_hours = _num(usage.get("gpuHours"))
    return {
        **_identity(obj),
        "phase": _text(status.get("phase")),
        "workers": {
            "ready": _int(workers.get("ready")),
            "desired": current if current is not None else _int(workers.get("desired")),
            "min": _int(workers.get("min")),
            "max": _int(workers.get("max")),
        },
        "restarts": _int(status.get("restarts")),
        "gpus": _gpus_held(_int(workers.get("active")), spec),
        # The cost accounting's figure when there is one, else the operator's own GPU-hours.
        "gpuHours": gpu_hours if gpu_hours is not None else _num(status.get("gpuHours")),
        "cost": _num(usage.get("cost")),
        "currency": _text(usage.get("currency")),
    }


# -- text cells ---------------------------------------------------------------------------------------


def short_number(value: float) -> str:
    """A figure in at most about four characters of precision: 0.25, 3.14, 12.5, 1234."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f}ms" if abs(value) < 1 else f"{short_number(value)}s"


def _percent(value: float) -> str:
    return f"{short_number(value)}%"


METRIC_LABELS: dict[str, tuple[str, Callable[[float], str]]] = {
    "latencyP95": ("p95", _seconds),
    "ttftP95": ("ttft", _seconds),
    "queueDepth": ("queue", short_number),
    "concurrency": ("conc", short_number),
    "requestsPerSecond": ("rps", short_number),
    "gpuUtilization": ("gpu", _percent),
}
"""The autoscaler's built-in metrics: a short label and the unit each is measured in."""


def metric_cell(metric: Mapping[str, Any] | None) -> str:
    """`p95 212ms/300ms`: the autoscaler's last reading against its target; `-` for a missing reading."""
    if not metric:
        return ABSENT
    name = metric.get("name") or "metric"
    label, fmt = METRIC_LABELS.get(name, (name, short_number))
    value, target = metric.get("value"), metric.get("target")
    shown = fmt(value) if value is not None else ABSENT
    return f"{label} {shown}/{fmt(target)}" if target is not None else f"{label} {shown}"


def money(amount: float | None, currency: str | None) -> str:
    if amount is None:
        return ABSENT
    return f"{amount:.2f} {currency}" if currency else f"{amount:.2f}"


def _count(value: int | None) -> str:
    return ABSENT if value is None else str(value)


def ratio(ready: int | None, desired: int | None) -> str:
    if ready is None and desired is None:
        return ABSENT
    return f"{_count(ready)}/{_count(desired)}"


def workers_cell(workers: Mapping[str, Any]) -> str:
    """`3/4`, and for an elastic job its bounds: `3/4 (2-8)`."""
    cell = ratio(workers.get("ready"), workers.get("desired"))
    low, high = workers.get("min"), workers.get("max")
    if low is not None or high is not None:
        cell += f" ({_count(low)}-{_count(high)})"
    return cell


def _hours(value: float | None) -> str:
    if value is None:
        return ABSENT
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[Figures], str]
    sort_key: str
    """The `--sort-by` name of the column."""
    sort_value: Callable[[Figures], float | str | None]
    """What the column sorts by: numbers sort largest first (like `kubectl top`), text alphabetically."""


def _field(name: str) -> Callable[[Figures], Any]:
    return lambda figures: figures.get(name)


def _or_none(name: str) -> Callable[[Figures], str]:
    return lambda figures: figures.get(name) or NONE


def _metric_load(figures: Figures) -> float | None:
    """How far the autoscaler's reading is from its target: the busiest fleet sorts first."""
    metric = figures.get("metric") or {}
    value, target = metric.get("value"), metric.get("target")
    return value / target if value is not None and target else None


_IDENTITY = (
    Column("NAMESPACE", _or_none("namespace"), "namespace", _field("namespace")),
    Column("NAME", _or_none("name"), "name", _field("name")),
    Column("OBJECTIVE", _or_none("objective"), "objective", _field("objective")),
    Column("PHASE", _or_none("phase"), "phase", _field("phase")),
)

FLEET_COLUMNS: tuple[Column, ...] = (
    *_IDENTITY,
    Column(
        "READY/DESIRED",
        lambda f: ratio(f["readyReplicas"], f["desiredReplicas"]),
        "ready",
        _field("readyReplicas"),
    ),
    Column("METRIC", lambda f: metric_cell(f["metric"]), "metric", _metric_load),
    Column("GPUS", lambda f: _count(f["gpus"]), "gpus", _field("gpus")),
    Column("COST/H", lambda f: money(f["costPerHour"], f["currency"]), "cost", _field("costPerHour")),
)

JOB_COLUMNS: tuple[Column, ...] = (
    *_IDENTITY,
    Column("WORKERS", lambda f: workers_cell(f["workers"]), "ready", lambda f: f["workers"]["ready"]),
    Column("RESTARTS", lambda f: _count(f["restarts"]), "restarts", _field("restarts")),
    Column("GPUS", lambda f: _count(f["gpus"]), "gpus", _field("gpus")),
    Column("GPU-HOURS", lambda f: _hours(f["gpuHours"]), "gpu-hours", _field("gpuHours")),
    Column("COST", lambda f: money(f["cost"], f["currency"]), "cost", _field("cost")),
)

SORT_KEYS: tuple[str, ...] = tuple(dict.fromkeys(c.sort_key for c in (*FLEET_COLUMNS, *JOB_COLUMNS)))


def sort_rows(rows: Sequence[Figures], columns: Sequence[Column], key: str | None) -> list[Figures]:
    """Rows by namespace and name, then by `key` if the kind has that column (a stable sort, so ties keep
    namespace/name order). Rows without the figure come last."""
    ordered = sorted(rows, key=lambda r: (r.get("namespace") or "", r.get("name") or ""))
    column = next((c for c in columns if c.sort_key == key), None)
    if column is None:
        return ordered
    present = [r for r in ordered if column.sort_value(r) is not None]
    missing = [r for r in ordered if column.sort_value(r) is None]
    if present and isinstance(column.sort_value(present[0]), str):
        present.sort(key=lambda r: str(column.sort_value(r)))
    else:
        present.sort(key=lambda r: _as_float(column.sort_value(r)), reverse=True)
    return present + missing


def _as_float(value: float | str | None) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def printable(text: str) -> str:
    """`text` with control characters spelled out (`\\x1b`): names, phases and objectives are written by
    users, and one of them must not be able to break the table or send escape sequences to the terminal
    of whoever runs `top -A`."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def render_table(columns: Sequence[Column], rows: Sequence[Figures]) -> str:
    """kubectl's plain table: upper-case headers, columns three spaces apart, no trailing spaces."""
    cells = [[c.header for c in columns], *([printable(c.cell(r)) for c in columns] for r in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


KINDS: dict[str, tuple[Callable[[Obj], Figures], tuple[Column, ...]]] = {
    FLEETS: (fleet_figures, FLEET_COLUMNS),
    JOBS: (job_figures, JOB_COLUMNS),
}


def figures_of(objects: Mapping[str, Sequence[Obj]], sort_by: str | None = None) -> dict[str, list[Figures]]:
    """Kind key (FLEETS, JOBS) -> the sorted rows of its objects."""
    result: dict[str, list[Figures]] = {}
    for kind, items in objects.items():
        figures, columns = KINDS[kind]
        result[kind] = sort_rows(
            [figures(obj) for obj in items if isinstance(obj, Mapping)], columns, sort_by
        )
    return result


def render(rows: Mapping[str, Sequence[Figures]]) -> str | None:
    """The tables of the kinds that have rows, a blank line apart (as `kubectl get a,b` prints them);
    None when there is no row at all (kubectl then says `No resources found`)."""
    tables = [render_table(KINDS[kind][1], kind_rows) for kind, kind_rows in rows.items() if kind_rows]
    return "\n\n".join(tables) if tables else None
