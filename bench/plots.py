"""Charts of the benchmarks, drawn from their JSON results, so they can be redrawn without a rerun.

`make bench` draws them after the benchmarks; `make plots` redraws them from the JSON already in
`build/bench-results/` (`make plots PLOTS_OUT=docs/img` refreshes the README's copies). Each chart comes
from one results file, and a missing file skips its chart:

- `fleet_autoscale.json` -> `bench-fleet-autoscale.png`: replicas (desired, ready) and p95 latency
  (Prometheus, the autoscaler's windows) through the load step, with the target and each decision;
- `rollout.json` -> `bench-rollout.png`: the new revision's weight and error rate through a good
  and a bad rollout, with the limit, each analysis verdict, promotion and rollback;
- `scale.json` -> `bench-scale.png`: how many objects are ready over time, kubeforge's fleets and
  TrainingJobs next to the Deployment controller's Deployments.

Rendering uses matplotlib's Agg canvas only (no display, no pyplot state), so it runs anywhere.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "build" / "bench-results"
DPI = 100
FIGSIZE = (10.0, 6.0)

Report = dict[str, Any]


def _num(value: Any) -> float:
    """A sample's value as a float; missing data becomes NaN, which matplotlib draws as a gap."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def _column(samples: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [_num(s.get(key)) for s in samples]


def _event(timeline: dict[str, Any], what: str) -> dict[str, Any] | None:
    return next((e for e in timeline.get("events", []) if e.get("what") == what), None)


def _mark(ax: Axes, x: float, label: str, color: str, *, text: bool = True, row: int = 0) -> None:
    """A vertical line at `x`, labelled under the top of the axes (`row` moves the label down a line,
    so the labels of two close events do not overlap)."""
    ax.axvline(x, color=color, linestyle=":", linewidth=1.2)
    if text:
        ax.annotate(
            label,
            xy=(x, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12 - 11 * row),
            textcoords="offset points",
            fontsize=8,
            color=color,
        )


def _footer(fig: Figure, report: Report, extra: str = "") -> None:
    when = report.get("started_at") or "date unknown"
    fig.supxlabel(
        f"bench/{report.get('benchmark', '?')}.py, run {when}{extra}",
        x=0.99,
        ha="right",
        fontsize=7,
        color="0.4",
    )


def _pick(rounds: Sequence[Report], index: int | None) -> tuple[int, Report]:
    """The round to draw: the given one, else the one whose breach-to-ready (or promotion, or
    rollback) time is the median, so the chart shows a typical round rather than the luckiest."""
    if not rounds:
        raise ValueError("no rounds recorded")
    if index is not None:
        return index, rounds[index]
    for key in ("breach_to_ready", "breach_to_rollback", "promoted"):
        if all(key in r for r in rounds):
            order = sorted(range(len(rounds)), key=lambda i: float(rounds[i][key]))
            middle = order[(len(order) - 1) // 2]
            return middle, rounds[middle]
    return 0, rounds[0]


# ------------------------------------------------------------------------------ (a) autoscaling
def autoscale_figure(report: Report, round_index: int | None = None) -> Figure:
    index, chosen = _pick(report["rounds"], round_index)
    timeline = chosen["timeline"]
    config = report.get("config", {})
    autoscaling = config.get("autoscaling", {})
    target = float(autoscaling.get("target", math.nan))
    step = _event(timeline, "load step")
    t0 = float(step["t"]) if step else 0.0
    samples = timeline["samples"]
    t = [float(s["t"]) - t0 for s in samples]

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    replicas_ax, latency_ax = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1.3))
    loads = config.get("load_rps") or ["?", "?"]
    fig.suptitle(
        f"InferenceFleet autoscaling: load {loads[0]} -> {loads[-1]} req/s, p95 target {target:g} s "
        f"(round {index + 1} of {len(report['rounds'])})"
    )

    # Desired is drawn wide under ready: where the pods are ready at once the two lines coincide.
    replicas_ax.step(
        t,
        _column(samples, "desired"),
        where="post",
        label="desired (status)",
        color="C0",
        linewidth=4,
        alpha=0.45,
    )
    replicas_ax.step(t, _column(samples, "ready"), where="post", label="ready (status)", color="C2")
    replicas_ax.set_ylabel("replicas")
    most = max((v for v in _column(samples, "desired") if not math.isnan(v)), default=1.0)
    replicas_ax.set_ylim(0, most + 1)
    replicas_ax.yaxis.get_major_locator().set_params(integer=True)

    latency_ax.plot(t, _column(samples, "p95_stable"), label="p95, stable window (Prometheus)", color="C1")
    latency_ax.plot(
        t, _column(samples, "p95_panic"), label="p95, panic window (Prometheus)", color="C1", alpha=0.4
    )
    latency_ax.axhline(target, color="C3", linestyle="--", label=f"target {target:g} s")
    latency_ax.set_ylabel("latency p95 (s)")
    latency_ax.set_xlabel("seconds since the load step")
    # Log scale: a backlog's latency is many times the target, and the target must stay readable.
    latency_ax.set_yscale("log")
    latency_ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    latency_ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    latency_ax.yaxis.set_minor_formatter(NullFormatter())

    for ax in (replicas_ax, latency_ax):
        _mark(ax, 0.0, "load step", "0.3", text=ax is latency_ax)
        breach = _event(timeline, "breach")
        if breach is not None:
            _mark(ax, float(breach["t"]) - t0, "breach", "C3", text=ax is latency_ax, row=1)
    for number, decision in enumerate(timeline.get("decisions", [])):
        x = float(decision["t"]) - t0
        replicas_ax.axvline(x, color="C0", linestyle=":", linewidth=1)
        replicas_ax.annotate(
            f"{decision['from']}->{decision['to']}",
            xy=(x, _num(decision["to"])),
            xytext=(3, 4),
            textcoords="offset points",
            fontsize=8,
            color="C0",
        )
        replicas_ax.plot(
            [x], [_num(decision["to"])], "v", color="C0", label="decision" if number == 0 else "_nolegend_"
        )
    replicas_ax.legend(loc="lower right", fontsize=8)
    latency_ax.legend(loc="upper right", fontsize=8)
    _footer(fig, report, f", sampled every {timeline.get('interval_seconds', '?')} s")
    return fig


# ------------------------------------------------------------------------------------ (b) rollout
VERDICT_STYLE = {"Pass": ("o", "C2"), "Fail": ("X", "C3"), "Inconclusive": ("s", "0.5")}


def _new_weight(sample: dict[str, Any], new: str | None) -> float:
    """The new revision's share of traffic from the rollout status: the canary weight while it is the
    canary, 100 once it is the stable revision (status.canaryWeight drops to 0 at promotion), 0 after a
    rollback."""
    if new is not None and sample.get("stable_revision") == new:
        return 100.0
    if new is not None and sample.get("canary_revision") not in (None, new):
        return 0.0
    if new is not None and sample.get("phase") == "RolledBack":
        return 0.0
    return _num(sample.get("canary_weight"))


def _rollout_column(weight_ax: Axes, errors_ax: Axes, run: Report, title: str, max_error_rate: float) -> None:
    """One rollout: the new revision's weight above, error rates (with the limit and the verdicts) below."""
    timeline = run["timeline"]
    apply = _event(timeline, "apply")
    t0 = float(apply["t"]) if apply else 0.0
    samples = timeline["samples"]
    t = [float(s["t"]) - t0 for s in samples]
    weight_ax.set_title(title, fontsize=10)
    weight_ax.step(
        t,
        [_new_weight(s, timeline.get("new_revision")) for s in samples],
        where="post",
        color="C0",
        label="new revision's weight (status)",
    )
    weight_ax.set_ylabel("traffic weight (%)")
    weight_ax.set_ylim(0, 110)
    weight_ax.legend(loc="center left", fontsize=8)

    errors_ax.plot(
        t,
        [100 * v for v in _column(samples, "new_error_rate")],
        color="C1",
        label="new revision (Prometheus)",
    )
    errors_ax.plot(
        t,
        [100 * v for v in _column(samples, "old_error_rate")],
        color="C1",
        alpha=0.35,
        label="old revision (Prometheus)",
    )
    errors_ax.axhline(
        100 * max_error_rate, color="C3", linestyle="--", label=f"maxErrorRate {max_error_rate:.0%}"
    )
    for verdict, (marker, color) in VERDICT_STYLE.items():
        found = [a for a in timeline.get("analyses", []) if a.get("verdict") == verdict]
        if found:
            errors_ax.plot(
                [float(a["t"]) - t0 for a in found],
                [100 * _num(a.get("error_rate")) if a.get("error_rate") is not None else 0.0 for a in found],
                marker,
                color=color,
                linestyle="none",
                label=f"analysis: {verdict}",
            )
    errors_ax.set_ylabel("error rate (%)")
    errors_ax.set_xlabel("seconds since the new image was applied")
    errors_ax.set_ylim(bottom=0, top=max(errors_ax.get_ylim()[1], 100 * max_error_rate * 2))
    errors_ax.legend(loc="center right", fontsize=8)

    marks = [("apply", "0.3")] + [
        (what, color)
        for what, color in (
            ("promoted", "C2"),
            ("old revision gone", "0.4"),
            ("breach", "C3"),
            ("rolled back", "C3"),
        )
        if _event(timeline, what) is not None
    ]
    for row, (what, color) in enumerate(marks):
        event = _event(timeline, what)
        x = float(event["t"]) - t0 if event is not None else 0.0
        for ax in (weight_ax, errors_ax):
            _mark(ax, x, what, color, text=ax is weight_ax, row=row % 2)


def rollout_figure(report: Report, round_index: int | None = None) -> Figure:
    config = report.get("config", {})
    max_error_rate = float(config.get("analysis", {}).get("maxErrorRate", math.nan))
    good_index, good = _pick(report["good"], round_index)
    bad_index, bad = _pick(report["bad"], round_index)
    steps = "/".join(str(s["weight"]) for s in config.get("steps", []))
    fig = Figure(figsize=(FIGSIZE[0] * 1.4, FIGSIZE[1] * 1.2), dpi=DPI, layout="constrained")
    (good_weight, bad_weight), (good_errors, bad_errors) = fig.subplots(2, 2, sharex="col")
    fig.suptitle(
        f"InferenceFleet rollout: {config.get('replicas', '?')} replicas, "
        f"{config.get('load_rps', '?')} req/s, canary steps {steps}%"
    )
    good_title = f"good revision (round {good_index + 1}): promoted"
    _rollout_column(good_weight, good_errors, good, good_title, max_error_rate)
    bad_rate = config.get("bad_error_rate")
    what = f"fails {float(bad_rate):.0%} of requests" if bad_rate is not None else "fails requests"
    bad_title = f"bad revision (round {bad_index + 1}, {what}): rolled back"
    _rollout_column(bad_weight, bad_errors, bad, bad_title, max_error_rate)
    _footer(fig, report)
    return fig


# -------------------------------------------------------------------------------------- (c) scale
def scale_figure(report: Report) -> Figure:
    config = report.get("config", {})
    fleets, jobs = config.get("fleets", "?"), config.get("jobs", "?")
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.subplots()
    fig.suptitle(
        f"Time to ready: {fleets} InferenceFleets + {jobs} TrainingJobs vs {fleets} Deployments "
        f"({config.get('nodes', '?')} nodes x {config.get('gpus_per_node', '?')} GPUs)"
    )
    # (section of the results, its curve, the column, label, color, line style)
    curves = [
        (
            "baseline",
            "available_curve",
            "available",
            "Deployments available (Deployment controller)",
            "0.3",
            "-",
        ),
        (
            "baseline_children",
            "available_curve",
            "available",
            "Deployments + Service, ControllerRevision available",
            "0.6",
            "--",
        ),
        ("kubeforge", "ready_curve", "fleets_ready", "InferenceFleets Ready (kubeforge)", "C0", "-"),
        ("kubeforge", "ready_curve", "jobs_succeeded", "TrainingJobs Succeeded (kubeforge)", "C2", "-"),
    ]
    for section_name, curve_name, column, label, color, style in curves:
        section = report.get(section_name)
        curve = section.get(curve_name) if isinstance(section, dict) else None
        if not curve or column not in curve:
            continue
        ax.step(curve["t"], curve[column], where="post", label=label, color=color, linestyle=style)
        if curve["t"]:
            # Labelled where the count first reached its final value: the jobs finish long before the
            # fleets, and the wait (so the curve) goes on until both are done.
            final = curve[column][-1]
            done = next(t for t, count in zip(curve["t"], curve[column], strict=True) if count == final)
            ax.annotate(
                f"{done:.0f} s",
                xy=(done, final),
                xytext=(4, -10),
                textcoords="offset points",
                fontsize=8,
                color=color,
            )
    ax.set_xlabel("seconds since the first object was created")
    ax.set_ylabel("objects ready")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    # Where the curves leave room: they end up anywhere, depending on the run.
    ax.legend(loc="best", fontsize=8)
    commit = (report.get("operator") or {}).get("commit")
    _footer(fig, report, f", kubeforge {commit}" if commit else "")
    return fig


# ----------------------------------------------------------------------------------- rendering
CHARTS: dict[str, tuple[str, Callable[[Report], Figure]]] = {
    "fleet_autoscale.json": ("bench-fleet-autoscale.png", autoscale_figure),
    "rollout.json": ("bench-rollout.png", rollout_figure),
    "scale.json": ("bench-scale.png", scale_figure),
}


def render(results: Path, out: Path) -> list[Path]:
    """Every chart whose results file is in `results`, written to `out`; the paths written."""
    written: list[Path] = []
    out.mkdir(parents=True, exist_ok=True)
    for source, (target, draw) in CHARTS.items():
        path = results / source
        if not path.exists():
            continue
        figure = draw(json.loads(path.read_text()))
        figure.savefig(out / target, dpi=DPI)
        written.append(out / target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of the JSON results")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder the PNGs go to")
    args = parser.parse_args(argv)
    written = render(args.results, args.out)
    for path in written:
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
    if not written:
        print(f"no benchmark results in {args.results}; run `make bench` first", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
