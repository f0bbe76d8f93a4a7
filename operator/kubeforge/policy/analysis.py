"""The verdict of one canary measurement, from metric samples only (no Prometheus here).

Every configured limit is a check that passes, fails, or cannot be judged. The verdict is:

- `Fail` when any check fails (a breach is a breach, even if another metric is missing);
- `Inconclusive` when the canary has no data for a check (no traffic, no series, Prometheus down), or when
  no check could be judged at all: the rollout never promotes on no data;
- `Pass` otherwise. A baseline check is skipped, not inconclusive, when the stable revision has no data
  (e.g. at a 100% step it serves nothing) and an absolute check on the canary was judged.

Limits are inclusive: a value equal to its limit passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from kubeforge.api.rollout import AnalysisRun, AnalysisSpec, Verdict
from kubeforge.policy.conditions import format_time

CheckResult = Literal["pass", "fail", "no-data", "no-baseline"]
"""`no-data`: the canary has no value; `no-baseline`: only the stable revision has none."""


@dataclass(frozen=True)
class MetricSample:
    """A revision's metrics over the analysis window; None when Prometheus had no data."""

    error_rate: float | None = None
    """Share of failed requests, 0..1."""
    latency_p95: float | None = None
    """95th-percentile latency, seconds."""


@dataclass(frozen=True)
class Thresholds:
    max_error_rate: float | None = None
    max_latency_p95: float | None = None
    max_error_rate_increase: float | None = None
    max_latency_increase_ratio: float | None = None

    @classmethod
    def from_spec(cls, spec: AnalysisSpec) -> Thresholds:
        return cls(
            max_error_rate=spec.max_error_rate,
            max_latency_p95=spec.max_latency_p95,
            max_error_rate_increase=spec.max_error_rate_increase,
            max_latency_increase_ratio=spec.max_latency_increase_ratio,
        )


@dataclass(frozen=True)
class Check:
    name: str
    result: CheckResult
    detail: str


@dataclass(frozen=True)
class AnalysisOutcome:
    verdict: Verdict
    message: str
    canary: MetricSample
    baseline: MetricSample
    checks: tuple[Check, ...]

    def record(self, *, revision: str, now: datetime) -> AnalysisRun:
        """The measurement as `status.rollout.lastAnalysis` stores it, and as `plan_rollout` takes it."""
        return AnalysisRun(
            time=format_time(now),
            revision=revision,
            verdict=self.verdict,
            error_rate=self.canary.error_rate,
            latency_p95=self.canary.latency_p95,
            baseline_error_rate=self.baseline.error_rate,
            baseline_latency_p95=self.baseline.latency_p95,
            message=self.message,
        )


def clean(value: float | None) -> float | None:
    """NaN (0/0: no requests) and infinities are no data, and negative values are noise."""
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return max(value, 0.0)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _absolute(name: str, value: float | None, limit: float | None, unit: str) -> Check | None:
    if limit is None:
        return None
    if value is None:
        return Check(name, "no-data", f"{name}: no data")
    if value > limit:
        return Check(name, "fail", f"{name} {_fmt(value)}{unit} above {_fmt(limit)}{unit}")
    return Check(name, "pass", f"{name} {_fmt(value)}{unit} <= {_fmt(limit)}{unit}")


def _baseline(
    name: str, value: float | None, base: float | None, allowed: float | None, *, ratio: bool
) -> Check | None:
    if allowed is None:
        return None
    if value is None:
        return Check(name, "no-data", f"{name}: no canary data")
    if base is None:
        return Check(name, "no-baseline", f"{name}: no baseline data")
    limit = base * (1.0 + allowed) if ratio else base + allowed
    shown = f"stable {_fmt(base)} {'x' if ratio else '+'} {_fmt(1.0 + allowed if ratio else allowed)}"
    if value > limit:
        return Check(name, "fail", f"{name} {_fmt(value)} above {shown}")
    return Check(name, "pass", f"{name} {_fmt(value)} <= {shown}")


def evaluate(canary: MetricSample, baseline: MetricSample | None, thresholds: Thresholds) -> AnalysisOutcome:
    """Judge one measurement of the canary against absolute limits and the stable baseline."""
    canary = MetricSample(clean(canary.error_rate), clean(canary.latency_p95))
    base = MetricSample() if baseline is None else baseline
    base = MetricSample(clean(base.error_rate), clean(base.latency_p95))
    absolute = [
        c
        for c in (
            _absolute("error rate", canary.error_rate, thresholds.max_error_rate, ""),
            _absolute("p95 latency", canary.latency_p95, thresholds.max_latency_p95, "s"),
        )
        if c is not None
    ]
    relative = [
        c
        for c in (
            _baseline(
                "error rate vs stable",
                canary.error_rate,
                base.error_rate,
                thresholds.max_error_rate_increase,
                ratio=False,
            ),
            _baseline(
                "p95 latency vs stable",
                canary.latency_p95,
                base.latency_p95,
                thresholds.max_latency_increase_ratio,
                ratio=True,
            ),
        )
        if c is not None
    ]
    checks = (*absolute, *relative)
    failed = [c for c in checks if c.result == "fail"]
    verdict: Verdict
    if failed:
        verdict = "Fail"
        message = "; ".join(c.detail for c in failed)
    elif not checks:
        verdict, message = "Inconclusive", "no limits configured"
    elif any(c.result == "no-data" for c in checks) or not any(c.result == "pass" for c in checks):
        verdict = "Inconclusive"
        message = "; ".join(c.detail for c in checks if c.result != "pass")
    else:
        verdict = "Pass"
        message = "; ".join(c.detail for c in checks)
    return AnalysisOutcome(verdict=verdict, message=message, canary=canary, baseline=base, checks=checks)


def unavailable(reason: str) -> AnalysisOutcome:
    """An inconclusive measurement when Prometheus could not be asked (unreachable, bad query)."""
    return AnalysisOutcome(
        verdict="Inconclusive",
        message=f"metrics unavailable: {reason}",
        canary=MetricSample(),
        baseline=MetricSample(),
        checks=(),
    )
