"""`kubeforge top`: the figures read from fleets' and jobs' status, the table and JSON they become, and
that no partial or odd status makes it fail."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeforge import top
from kubeforge.cli import TOP_KINDS, build_parser

Obj = dict[str, Any]


def fleet(name: str, spec: Obj | None = None, namespace: str = "team-a", **status: Any) -> Obj:
    return {
        "apiVersion": "kubeforge.dev/v1alpha1",
        "kind": "InferenceFleet",
        "metadata": {"name": name, "namespace": namespace, "generation": 3},
        "spec": {"resources": {"gpus": 1}, **(spec or {})},
        "status": status,
    }


def job(name: str, spec: Obj | None = None, namespace: str = "team-a", **status: Any) -> Obj:
    return {
        "apiVersion": "kubeforge.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"workers": 4, "resources": {"gpus": 8}, **(spec or {})},
        "status": status,
    }


def cond(type_: str, status: str = "True", reason: str = "R") -> Obj:
    return {"type": type_, "status": status, "reason": reason, "message": "", "lastTransitionTime": "x"}


USAGE = {
    "gpuHours": 41.25,
    "cost": 123.75,
    "currency": "USD",
    "costPerHour": 12.0,
    "energyKWh": 30.5,
    "energySource": "dcgm",
    "accountedUntil": "2026-12-01T15:00:00Z",
}

SERVING = fleet(
    "chat",
    {"objective": "latency", "autoscaling": {"metric": "latencyP95", "target": 0.3, "maxReplicas": 8}},
    replicas=4,
    readyReplicas=4,
    desiredReplicas=4,
    conditions=[cond("Ready", reason="Serving"), cond("Degraded", "False")],
    autoscaler={"metric": "latencyP95", "metricValue": 0.2125, "target": 0.3, "reason": "WithinTolerance"},
    usage=USAGE,
)
MID_CANARY = fleet(
    "summarize",
    {"resources": {"gpus": 2}},
    replicas=5,
    readyReplicas=4,
    desiredReplicas=4,
    conditions=[cond("Ready", "False", "Progressing")],
    rollout={"phase": "Paused", "canaryWeight": 25, "currentStep": 1, "totalSteps": 3},
)
NO_METRICS = fleet(
    "embed",
    replicas=1,
    readyReplicas=1,
    desiredReplicas=1,
    conditions=[cond("Ready"), cond("MetricsUnavailable", reason="QueryFailed")],
    autoscaler={"metric": "queueDepth", "target": 4, "reason": "MetricsUnavailable"},
)
NEW_FLEET = fleet("fresh")  # just applied: the operator has not written a status yet
TRAINING = job(
    "llama",
    {"objective": "throughput"},
    phase="Running",
    workers={"desired": 4, "active": 4, "ready": 3, "succeeded": 0, "failed": 0},
    workersReady="3/4",
    restarts=2,
    gpuHours=40.0,
    usage=USAGE,
)
ELASTIC = job(
    "elastic",
    phase="Running",
    workers={"current": 3, "min": 2, "max": 8, "ready": 3, "active": 3},
    restarts=0,
)
FINISHED = job(
    "mnist",
    {"resources": {"gpus": 1}, "workers": 1},
    phase="Succeeded",
    workers={"desired": 1, "active": 0, "ready": 0, "succeeded": 1},
    restarts=0,
    gpuHours=0.25,
)
QUEUED = job("waiting", phase="Queued")


@pytest.mark.parametrize(
    ("obj", "cells"),
    [
        (SERVING, ["team-a", "chat", "latency", "Ready", "4/4", "p95 212ms/300ms", "4", "12.00 USD"]),
        (MID_CANARY, ["team-a", "summarize", "<none>", "Paused", "4/4", "-", "10", "-"]),
        (NO_METRICS, ["team-a", "embed", "<none>", "Ready", "1/1", "queue -/4", "1", "-"]),
        (NEW_FLEET, ["team-a", "fresh", "<none>", "<none>", "-", "-", "-", "-"]),
        (
            fleet("rolled", replicas=2, conditions=[cond("Ready")], rollout={"phase": "RolledBack"}),
            ["team-a", "rolled", "<none>", "RolledBack", "-", "-", "2", "-"],
        ),
        (
            fleet("done", replicas=2, conditions=[cond("Ready")], rollout={"phase": "Promoted"}),
            ["team-a", "done", "<none>", "Ready", "-", "-", "2", "-"],
        ),
        (
            fleet(
                "starved",
                replicas=3,
                readyReplicas=1,
                conditions=[cond("Ready", "False"), cond("CapacityLimited")],
            ),
            ["team-a", "starved", "<none>", "CapacityLimited", "1/-", "-", "3", "-"],
        ),
        (
            fleet("down", conditions=[cond("Ready", "False"), cond("Stalled"), cond("Degraded")]),
            ["team-a", "down", "<none>", "Stalled", "-", "-", "-", "-"],
        ),
        (
            fleet(
                "cpu",
                {"resources": {"cpu": "1"}},
                replicas=3,
                autoscaler={"metric": "gpuUtilization", "metricValue": 71.5, "target": 80},
            ),
            ["team-a", "cpu", "<none>", "<none>", "-", "gpu 71.5%/80%", "0", "-"],
        ),
        (
            fleet("slow", replicas=1, autoscaler={"metric": "ttftP95", "metricValue": 12.5, "target": 2}),
            ["team-a", "slow", "<none>", "<none>", "-", "ttft 12.5s/2s", "1", "-"],
        ),
        (
            fleet("eur", usage={"costPerHour": 3.456, "currency": "EUR"}),
            ["team-a", "eur", "<none>", "<none>", "-", "-", "-", "3.46 EUR"],
        ),
    ],
    ids=lambda v: v["metadata"]["name"] if isinstance(v, dict) else None,
)
def test_fleet_row(obj: Obj, cells: list[str]) -> None:
    figures = top.fleet_figures(obj)
    assert [c.cell(figures) for c in top.FLEET_COLUMNS] == cells


@pytest.mark.parametrize(
    ("obj", "cells"),
    [
        (TRAINING, ["team-a", "llama", "throughput", "Running", "3/4", "2", "32", "41.2", "123.75 USD"]),
        (ELASTIC, ["team-a", "elastic", "<none>", "Running", "3/3 (2-8)", "0", "24", "-", "-"]),
        (FINISHED, ["team-a", "mnist", "<none>", "Succeeded", "0/1", "0", "0", "0.25", "-"]),
        (QUEUED, ["team-a", "waiting", "<none>", "Queued", "-", "-", "-", "-", "-"]),
        (
            job("big", restarts=1, gpuHours=1234.4, usage={"cost": 9.5}),
            ["team-a", "big", "<none>", "<none>", "-", "1", "-", "1234", "9.50"],
        ),
    ],
    ids=lambda v: v["metadata"]["name"] if isinstance(v, dict) else None,
)
def test_job_row(obj: Obj, cells: list[str]) -> None:
    figures = top.job_figures(obj)
    assert [c.cell(figures) for c in top.JOB_COLUMNS] == cells


def test_usage_gpu_hours_win_over_the_operators_own() -> None:
    """The cost accounting's GPU-hours (`status.usage`) are the billed figure; `status.gpuHours` is the
    fallback for operators without it."""
    assert top.job_figures(TRAINING)["gpuHours"] == USAGE["gpuHours"]
    assert top.job_figures(FINISHED)["gpuHours"] == 0.25


def test_table_looks_like_kubectl() -> None:
    text = top.render(top.figures_of({top.FLEETS: [NO_METRICS, SERVING], top.JOBS: [TRAINING]}))
    assert text == (
        "NAMESPACE   NAME    OBJECTIVE   PHASE   READY/DESIRED   METRIC            GPUS   COST/H\n"
        "team-a      chat    latency     Ready   4/4             p95 212ms/300ms   4      12.00 USD\n"
        "team-a      embed   <none>      Ready   1/1             queue -/4         1      -\n"
        "\n"
        "NAMESPACE   NAME    OBJECTIVE    PHASE     WORKERS   RESTARTS   GPUS   GPU-HOURS   COST\n"
        "team-a      llama   throughput   Running   3/4       2          32     41.2        123.75 USD"
    )


def test_a_kind_without_objects_is_left_out_and_nothing_at_all_is_none() -> None:
    only_jobs = top.render(top.figures_of({top.FLEETS: [], top.JOBS: [QUEUED]}))
    assert only_jobs is not None
    assert only_jobs.startswith("NAMESPACE   NAME      OBJECTIVE   PHASE    WORKERS")
    assert top.render(top.figures_of({top.FLEETS: [], top.JOBS: []})) is None


@pytest.mark.parametrize(
    ("key", "names"),
    [
        (None, ["chat", "embed", "fresh", "summarize"]),
        ("gpus", ["summarize", "chat", "embed", "fresh"]),  # largest first, unknown last
        ("cost", ["chat", "embed", "fresh", "summarize"]),  # only chat reports a cost
        ("metric", ["chat", "embed", "fresh", "summarize"]),  # 0.71 of target; embed has no reading
        ("phase", ["summarize", "chat", "embed", "fresh"]),  # alphabetical, no phase last
        ("restarts", ["chat", "embed", "fresh", "summarize"]),  # not a fleet column: name order
    ],
)
def test_sort_fleets(key: str | None, names: list[str]) -> None:
    rows = top.figures_of({top.FLEETS: [NEW_FLEET, MID_CANARY, SERVING, NO_METRICS]}, key)[top.FLEETS]
    assert [r["name"] for r in rows] == names


def test_sort_jobs_by_gpu_hours_and_restarts() -> None:
    jobs = [QUEUED, FINISHED, TRAINING, ELASTIC]
    by_hours = top.figures_of({top.JOBS: jobs}, "gpu-hours")[top.JOBS]
    assert [r["name"] for r in by_hours] == ["llama", "mnist", "elastic", "waiting"]
    by_restarts = top.figures_of({top.JOBS: jobs}, "restarts")[top.JOBS]
    assert [r["name"] for r in by_restarts] == ["llama", "elastic", "mnist", "waiting"]


def test_json_rows_are_plain_values() -> None:
    rows = top.figures_of({top.FLEETS: [SERVING], top.JOBS: [ELASTIC]})
    assert json.loads(json.dumps(rows)) == {
        "inferenceFleets": [
            {
                "namespace": "team-a",
                "name": "chat",
                "objective": "latency",
                "phase": "Ready",
                "readyReplicas": 4,
                "desiredReplicas": 4,
                "replicas": 4,
                "metric": {"name": "latencyP95", "value": 0.2125, "target": 0.3},
                "gpus": 4,
                "costPerHour": 12.0,
                "currency": "USD",
            }
        ],
        "trainingJobs": [
            {
                "namespace": "team-a",
                "name": "elastic",
                "objective": None,
                "phase": "Running",
                "workers": {"ready": 3, "desired": 3, "min": 2, "max": 8},
                "restarts": 0,
                "gpus": 24,
                "gpuHours": None,
                "cost": None,
                "currency": None,
            }
        ],
    }


def test_control_characters_in_a_users_fields_are_spelled_out() -> None:
    """A tenant's objective cannot move the cursor, clear the screen or start a new row."""
    hostile = fleet(
        "x", {"objective": "\x1b[2J\rfake\nrow"}, conditions=[{"type": "Ready", "status": "True"}]
    )
    text = top.render(top.figures_of({top.FLEETS: [hostile]}))
    assert text is not None
    assert len(text.splitlines()) == 2
    assert "\\x1b[2J\\rfake\\nrow" in text
    assert "\x1b" not in text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0"),
        (0.25, "0.25"),
        (3.14159, "3.14"),
        (12.46, "12.5"),
        (1234.5, "1234"),
        (7.0, "7"),
        (-0.5, "-0.5"),
    ],
)
def test_short_number(value: float, text: str) -> None:
    assert top.short_number(value) == text


# -- partial and odd statuses -------------------------------------------------------------------------

ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def partial(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Obj]:
    """Any subset of `fields`, each either its realistic value or something odd."""
    return st.fixed_dictionaries({}, optional={k: st.one_of(v, ODD) for k, v in fields.items()})


USAGE_STATUS = partial(
    {
        "gpuHours": st.floats(0, 1e6),
        "cost": st.floats(0, 1e6),
        "currency": st.sampled_from(["USD", "EUR"]),
        "costPerHour": st.floats(0, 1e4),
        "energyKWh": st.floats(0, 1e6),
        "energySource": st.sampled_from(["dcgm", "utilization", "tdp"]),
        "accountedUntil": st.just("2026-12-01T15:00:00Z"),
    }
)
CONDITIONS = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["Ready", "Degraded", "Stalled", "CapacityLimited"])},
        optional={"status": st.sampled_from(["True", "False", "Unknown"]), "reason": st.text(max_size=5)},
    ),
    max_size=4,
)
FLEET_STATUS = partial(
    {
        "replicas": st.integers(0, 1000),
        "readyReplicas": st.integers(0, 1000),
        "desiredReplicas": st.integers(0, 1000),
        "conditions": CONDITIONS,
        "autoscaler": partial(
            {
                "metric": st.sampled_from([*top.METRIC_LABELS, "query"]),
                "metricValue": st.floats(0, 1e4),
                "target": st.floats(0.001, 1e4),
            }
        ),
        "rollout": partial({"phase": st.sampled_from(["Progressing", "Paused", "Promoted", "Aborted"])}),
        "usage": USAGE_STATUS,
    }
)
JOB_STATUS = partial(
    {
        "phase": st.sampled_from(["Pending", "Queued", "Running", "Restarting", "Succeeded", "Failed"]),
        "workers": partial(
            {
                k: st.integers(0, 64)
                for k in ("desired", "active", "ready", "succeeded", "failed", "current", "min", "max")
            }
        ),
        "restarts": st.integers(0, 100),
        "gpuHours": st.floats(0, 1e6),
        "usage": USAGE_STATUS,
    }
)
SPEC = partial(
    {
        "objective": st.sampled_from(["latency", "throughput", "cost"]),
        "resources": partial({"gpus": st.integers(0, 8)}),
    }
)


def _obj(spec: Any, status: Any) -> Obj:
    return {"metadata": {"name": "x", "namespace": "ns"}, "spec": spec, "status": status}


@pytest.mark.parametrize(
    ("kind", "statuses", "sort_by"),
    [(top.FLEETS, FLEET_STATUS, "metric"), (top.JOBS, JOB_STATUS, "gpu-hours")],
)
@settings(max_examples=300)
@given(data=st.data())
def test_any_status_renders(
    kind: str, statuses: st.SearchStrategy[Obj], sort_by: str, data: st.DataObject
) -> None:
    obj = _obj(data.draw(st.one_of(SPEC, ODD)), data.draw(st.one_of(statuses, ODD)))
    rows = top.figures_of({kind: [obj]}, sort_by)
    text = top.render(rows)
    assert text is not None
    assert len(text.splitlines()) == 2
    json.dumps(rows, allow_nan=False)  # `-o json` stays valid JSON whatever the status held


@given(status=FLEET_STATUS)
def test_a_figure_present_in_the_status_is_shown(status: Obj) -> None:
    """Whatever else is missing, a well-typed ready count or cost per hour reaches its column."""
    cells = {c.header: c.cell(top.fleet_figures(_obj({}, status))) for c in top.FLEET_COLUMNS}
    if isinstance(status.get("readyReplicas"), int) and not isinstance(status["readyReplicas"], bool):
        assert cells["READY/DESIRED"].startswith(f"{status['readyReplicas']}/")
    usage = status.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("costPerHour"), float):
        assert cells["COST/H"].startswith(f"{usage['costPerHour']:.2f}")


# -- the command line ---------------------------------------------------------------------------------


def test_top_flags_parse_like_kubectl() -> None:
    args = build_parser("kubectl kubeforge").parse_args(
        ["top", "tj", "-A", "-w", "-o", "json", "--sort-by", "gpu-hours", "--context", "prod"]
    )
    assert (args.kind, args.all_namespaces, args.watch, args.output, args.sort_by, args.context) == (
        "tj",
        True,
        True,
        "json",
        "gpu-hours",
        "prod",
    )
    assert TOP_KINDS[args.kind] == top.JOBS


def test_namespace_and_all_namespaces_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    from kubeforge.cli import main

    assert main(["top", "-n", "a", "-A"]) == 2
    assert "exclude each other" in capsys.readouterr().err
