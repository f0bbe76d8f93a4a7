"""The benchmark charts (bench/plots.py) drawn from small results files in tests/fixtures/bench/, and the
time series recorder the benchmarks use (bench/_timeline.py). The figures are inspected as matplotlib
objects (axes, labels, the data of each series), not as pixels."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

BENCH = Path(__file__).resolve().parents[1] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import plots  # noqa: E402
import run_all  # noqa: E402
from _timeline import Timeline, changes  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "bench"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def load(name: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return report


def lines(ax: Axes) -> dict[str, Line2D]:
    """The axes' series by legend label."""
    return {
        str(line.get_label()): line for line in ax.get_lines() if not str(line.get_label()).startswith("_")
    }


def xs(line: Line2D) -> list[float]:
    values: list[float] = np.asarray(line.get_xdata(), dtype=float).tolist()
    return values


def ys(line: Line2D) -> list[float]:
    values: list[float] = np.asarray(line.get_ydata(), dtype=float).tolist()
    return values


def same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(
        (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y) for x, y in zip(a, b, strict=True)
    )


# ------------------------------------------------------------------------------------ autoscaling
def test_autoscale_chart_draws_the_median_round_from_the_load_step() -> None:
    report = load("fleet_autoscale.json")
    fig = plots.autoscale_figure(report)
    replicas_ax, latency_ax = fig.axes
    assert replicas_ax.get_ylabel() == "replicas"
    assert latency_ax.get_ylabel() == "latency p95 (s)"
    assert latency_ax.get_xlabel() == "seconds since the load step"
    # breach-to-ready of the rounds: 4.0, 2.0, 9.0 -> the median is round 1.
    assert fig.get_suptitle().endswith("(round 1 of 3)")
    chosen = report["rounds"][0]["timeline"]
    step = next(e["t"] for e in chosen["events"] if e["what"] == "load step")
    series = lines(replicas_ax)
    assert set(series) >= {"desired (status)", "ready (status)", "decision"}
    assert xs(series["desired (status)"]) == [s["t"] - step for s in chosen["samples"]]
    assert ys(series["desired (status)"]) == [s["desired"] for s in chosen["samples"]]
    assert ys(series["ready (status)"]) == [s["ready"] for s in chosen["samples"]]


def test_autoscale_chart_shows_latency_target_and_decisions() -> None:
    report = load("fleet_autoscale.json")
    fig = plots.autoscale_figure(report, round_index=2)
    replicas_ax, latency_ax = fig.axes
    timeline = report["rounds"][2]["timeline"]
    step = next(e["t"] for e in timeline["events"] if e["what"] == "load step")
    series = lines(latency_ax)
    stable = series["p95, stable window (Prometheus)"]
    # A sample without data is a gap (NaN), not a zero.
    assert same(
        ys(stable), [math.nan if s["p95_stable"] is None else s["p95_stable"] for s in timeline["samples"]]
    )
    assert "p95, panic window (Prometheus)" in series
    assert set(ys(series["target 0.5 s"])) == {0.5}
    assert latency_ax.get_yscale() == "log"
    decision = lines(replicas_ax)["decision"]
    assert xs(decision) == [d["t"] - step for d in timeline["decisions"]]
    assert ys(decision) == [d["to"] for d in timeline["decisions"]]
    assert [t.get_text() for t in replicas_ax.texts] == ["1->3"]
    labels = [t.get_text() for t in latency_ax.texts]
    assert labels == ["load step", "breach"]


# ---------------------------------------------------------------------------------------- rollout
# The new revision's weight: the canary weight while it is the canary, 100 once promoted (the status's
# canaryWeight is 0 again then), 0 after the rollback.
WEIGHTS = {
    "good": [0, 0, 0, 0, 25, 25, 25, 50, 50, 50, 100, 100],
    "bad": [0, 0, 0, 0, 25, 25, 25, 25, 0, 0],
}


def test_rollout_chart_has_a_good_and_a_bad_column_with_weight_over_error_rate() -> None:
    report = load("rollout.json")
    fig = plots.rollout_figure(report)
    good_weight, bad_weight, good_errors, bad_errors = fig.axes
    assert good_weight.get_title().startswith("good revision")
    assert bad_weight.get_title().startswith("bad revision")
    assert "30%" in bad_weight.get_title()
    for weight_ax, errors_ax, run in ((good_weight, good_errors, "good"), (bad_weight, bad_errors, "bad")):
        timeline = report[run][0]["timeline"]
        apply = next(e["t"] for e in timeline["events"] if e["what"] == "apply")
        assert weight_ax.get_ylabel() == "traffic weight (%)"
        assert errors_ax.get_ylabel() == "error rate (%)"
        assert errors_ax.get_xlabel() == "seconds since the new image was applied"
        weight = lines(weight_ax)["new revision's weight (status)"]
        assert xs(weight) == [s["t"] - apply for s in timeline["samples"]]
        assert ys(weight) == WEIGHTS[run]
        errors = lines(errors_ax)
        expected = [
            math.nan if s["new_error_rate"] is None else 100 * s["new_error_rate"]
            for s in timeline["samples"]
        ]
        assert same(ys(errors["new revision (Prometheus)"]), expected)
        assert "old revision (Prometheus)" in errors
        assert set(ys(errors["maxErrorRate 5%"])) == {5.0}


def test_rollout_chart_marks_verdicts_promotion_and_rollback() -> None:
    fig = plots.rollout_figure(load("rollout.json"))
    good_weight, bad_weight, good_errors, bad_errors = fig.axes
    assert {"analysis: Pass", "analysis: Inconclusive"} <= set(lines(good_errors))
    assert "analysis: Fail" not in lines(good_errors)
    fail = lines(bad_errors)["analysis: Fail"]
    assert xs(fail) == [1.5, 2.0]
    assert ys(fail) == pytest.approx([30.0, 28.0])
    assert [t.get_text() for t in good_weight.texts] == ["apply", "promoted", "old revision gone"]
    assert [t.get_text() for t in bad_weight.texts] == ["apply", "breach", "rolled back"]
    # The same moments cross the error-rate row, unlabelled.
    assert len(bad_errors.lines) - len(lines(bad_errors)) >= 3


# ------------------------------------------------------------------------------------------ scale
def test_scale_chart_puts_kubeforge_next_to_the_deployment_controller() -> None:
    report = load("scale.json")
    fig = plots.scale_figure(report)
    (ax,) = fig.axes
    series = lines(ax)
    assert set(series) == {
        "Deployments available (Deployment controller)",
        "InferenceFleets Ready (kubeforge)",
        "TrainingJobs Succeeded (kubeforge)",
    }
    curve = report["kubeforge"]["ready_curve"]
    assert xs(series["InferenceFleets Ready (kubeforge)"]) == curve["t"]
    assert ys(series["InferenceFleets Ready (kubeforge)"]) == curve["fleets_ready"]
    assert ys(series["TrainingJobs Succeeded (kubeforge)"]) == curve["jobs_succeeded"]
    assert (
        ys(series["Deployments available (Deployment controller)"])
        == report["baseline"]["available_curve"]["available"]
    )
    assert "10 InferenceFleets + 4 TrainingJobs vs 10 Deployments" in fig.get_suptitle()
    assert ax.get_xlabel() == "seconds since the first object was created"
    # Each curve is labelled with the time it took to reach its final count.
    assert sorted(t.get_text() for t in ax.texts) == ["3 s", "3 s", "5 s"]


def test_scale_chart_draws_the_second_baseline_when_it_ran() -> None:
    report = load("scale.json")
    report["baseline_children"] = {"available_curve": {"t": [0.0, 4.0], "available": [0, 10]}}
    series = lines(plots.scale_figure(report).axes[0])
    assert ys(series["Deployments + Service, ControllerRevision available"]) == [0, 10]


# -------------------------------------------------------------------------------------- rendering
def test_render_writes_a_png_per_results_file(tmp_path: Path) -> None:
    written = plots.render(FIXTURES, tmp_path / "out")
    assert sorted(p.name for p in written) == [
        "bench-fleet-autoscale.png",
        "bench-rollout.png",
        "bench-scale.png",
    ]
    for path in written:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert 10_000 < len(data) < 150 * 1024


def test_render_skips_charts_whose_results_are_missing(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    shutil.copy(FIXTURES / "scale.json", results)
    assert [p.name for p in plots.render(results, tmp_path)] == ["bench-scale.png"]


def test_main_fails_without_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert plots.main(["--results", str(tmp_path), "--out", str(tmp_path)]) == 1
    assert "run `make bench` first" in capsys.readouterr().err
    shutil.copy(FIXTURES / "rollout.json", tmp_path)
    assert plots.main(["--results", str(tmp_path), "--out", str(tmp_path / "png")]) == 0
    assert (tmp_path / "png" / "bench-rollout.png").stat().st_size > 0


def test_figures_are_plain_figures_without_pyplot() -> None:
    """No pyplot: nothing global is created, so rendering in a loop or a test leaks no figures."""
    assert isinstance(plots.scale_figure(load("scale.json")), Figure)
    assert "matplotlib.pyplot" not in sys.modules


def test_make_bench_draws_the_charts_after_every_benchmark_even_a_failed_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran: list[str] = []

    def fake_run(command: list[str], check: bool) -> subprocess.CompletedProcess[bytes]:
        ran.append(Path(command[-1]).name)
        return subprocess.CompletedProcess(command, 1 if ran[-1] == "rollout.py" else 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert run_all.main() == 1
    benchmarks = sorted(
        p.name
        for p in BENCH.glob("*.py")
        if not p.name.startswith("_") and p.name not in ("run_all.py", "plots.py")
    )
    assert "fleet_autoscale.py" in benchmarks
    assert ran == [*benchmarks, "plots.py"]


# ------------------------------------------------------------------------------------ the recorder
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, 1, 1], []),
        ([None, 1, 1, 3, 3, 2], [(3.0, 1, 3), (5.0, 3, 2)]),
        ([1, None, 2], [(2.0, 1, 2)]),
    ],
)
def test_changes_are_the_samples_where_a_value_moves(
    values: list[int | None], expected: list[tuple[float, int, int]]
) -> None:
    samples: list[dict[str, float | int | str | None]] = [
        {"t": float(i), "desired": v, "reason": f"r{i}"} for i, v in enumerate(values)
    ]
    found = changes(samples, "desired", "reason")
    assert [(c["t"], c["from"], c["to"]) for c in found] == expected
    assert all(c["reason"] == f"r{int(float(str(c['t'])))}" for c in found)


def test_timeline_samples_on_its_own_thread_and_skips_failed_probes() -> None:
    calls = 0
    enough = threading.Event()

    def probe() -> dict[str, float | int | str | None]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("API server busy")
        if calls >= 5:
            enough.set()
        return {"n": calls}

    timeline = Timeline(probe, interval=0.01).start()
    timeline.mark("apply", image="v2")
    assert enough.wait(10)
    timeline.stop()
    data = timeline.as_json()
    assert data["failed_samples"] == 1
    assert 2 not in [s["n"] for s in data["samples"]]
    times = [float(s["t"]) for s in data["samples"]]
    assert times == sorted(times)
    assert data["events"][0]["what"] == "apply"
    assert data["events"][0]["image"] == "v2"
    json.dumps(data)  # goes into the results file as it is
