"""The canary verdict: absolute limits, the stable baseline, and no promotion on no data."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeforge.api.rollout import AnalysisSpec
from kubeforge.policy.analysis import MetricSample, Thresholds, clean, evaluate, unavailable

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
ABSOLUTE = Thresholds(max_error_rate=0.05, max_latency_p95=0.5)
BASELINE = Thresholds(max_error_rate_increase=0.01, max_latency_increase_ratio=0.2)
ALL = Thresholds(0.05, 0.5, 0.01, 0.2)


@pytest.mark.parametrize(
    ("canary", "baseline", "thresholds", "verdict", "in_message"),
    [
        # absolute limits
        (MetricSample(0.01, 0.2), None, ABSOLUTE, "Pass", "error rate 0.01 <= 0.05"),
        (MetricSample(0.05, 0.5), None, ABSOLUTE, "Pass", "<="),  # limits are inclusive
        (MetricSample(0.06, 0.2), None, ABSOLUTE, "Fail", "error rate 0.06 above 0.05"),
        (MetricSample(0.01, 0.9), None, ABSOLUTE, "Fail", "p95 latency 0.9s above 0.5s"),
        (MetricSample(0.5, 0.9), None, ABSOLUTE, "Fail", "error rate 0.5 above"),
        # missing canary data is never a pass
        (MetricSample(None, None), None, ABSOLUTE, "Inconclusive", "no data"),
        (MetricSample(0.01, None), None, ABSOLUTE, "Inconclusive", "p95 latency: no data"),
        (MetricSample(math.nan, 0.1), None, ABSOLUTE, "Inconclusive", "error rate: no data"),
        (MetricSample(0.01, math.inf), None, ABSOLUTE, "Inconclusive", "no data"),
        # ... but a breach is a breach even with another metric missing
        (MetricSample(0.2, None), None, ABSOLUTE, "Fail", "error rate 0.2 above"),
        # baseline comparison
        (MetricSample(0.015, 0.22), MetricSample(0.01, 0.2), BASELINE, "Pass", "stable"),
        (MetricSample(0.03, 0.2), MetricSample(0.01, 0.2), BASELINE, "Fail", "error rate vs stable 0.03"),
        (MetricSample(0.01, 0.25), MetricSample(0.01, 0.2), BASELINE, "Fail", "p95 latency vs stable"),
        (MetricSample(0.01, 0.24), MetricSample(0.01, 0.2), BASELINE, "Pass", "x 1.2"),
        # baseline missing: only baseline checks -> nothing judged -> inconclusive
        (MetricSample(0.01, 0.2), None, BASELINE, "Inconclusive", "no baseline data"),
        (MetricSample(0.01, 0.2), MetricSample(None, None), BASELINE, "Inconclusive", "no baseline"),
        # baseline missing with absolute checks judged: pass, the skip is reported
        (MetricSample(0.01, 0.2), None, ALL, "Pass", "no baseline data"),
        (MetricSample(0.01, 0.2), MetricSample(0.0, 0.1), ALL, "Fail", "p95 latency vs stable 0.2"),
        # no limits at all cannot pass
        (MetricSample(0.0, 0.1), None, Thresholds(), "Inconclusive", "no limits"),
        # negative noise is clamped to zero
        (MetricSample(-0.001, 0.1), MetricSample(0.0, 0.1), ALL, "Pass", "error rate 0 <="),
    ],
)
def test_verdicts(
    canary: MetricSample,
    baseline: MetricSample | None,
    thresholds: Thresholds,
    verdict: str,
    in_message: str,
) -> None:
    outcome = evaluate(canary, baseline, thresholds)
    assert outcome.verdict == verdict
    assert in_message in outcome.message


def test_thresholds_from_spec_and_record() -> None:
    spec = AnalysisSpec.model_validate({"maxErrorRate": 0.02, "maxLatencyIncreaseRatio": 0.5})
    thresholds = Thresholds.from_spec(spec)
    assert thresholds == Thresholds(max_error_rate=0.02, max_latency_increase_ratio=0.5)
    run = evaluate(MetricSample(0.01, 0.3), MetricSample(0.0, 0.25), thresholds).record(
        revision="abc", now=T0
    )
    assert run.verdict == "Pass"
    assert run.time == "2026-01-01T12:00:00Z"
    assert (run.error_rate, run.latency_p95, run.baseline_error_rate, run.baseline_latency_p95) == (
        0.01,
        0.3,
        0.0,
        0.25,
    )
    assert run.to_wire()["baselineLatencyP95"] == 0.25


def test_unavailable_is_inconclusive() -> None:
    outcome = unavailable("connection refused")
    assert outcome.verdict == "Inconclusive"
    assert "connection refused" in outcome.message


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), (math.nan, None), (-math.inf, None), (-1.0, 0.0), (0.3, 0.3)]
)
def test_clean(value: float | None, expected: float | None) -> None:
    assert clean(value) == expected


maybe_rate = st.none() | st.floats(min_value=0, max_value=1) | st.just(math.nan)
maybe_latency = st.none() | st.floats(min_value=0, max_value=100) | st.just(math.nan)
maybe_limit = st.none() | st.floats(min_value=0, max_value=1)


@given(
    canary=st.builds(MetricSample, maybe_rate, maybe_latency),
    baseline=st.none() | st.builds(MetricSample, maybe_rate, maybe_latency),
    thresholds=st.builds(Thresholds, maybe_limit, maybe_limit, maybe_limit, maybe_limit),
)
def test_properties(canary: MetricSample, baseline: MetricSample | None, thresholds: Thresholds) -> None:
    outcome = evaluate(canary, baseline, thresholds)
    # Never a pass without canary data for every configured absolute limit.
    if outcome.verdict == "Pass":
        if thresholds.max_error_rate is not None:
            assert clean(canary.error_rate) is not None
            assert clean(canary.error_rate) <= thresholds.max_error_rate  # type: ignore[operator]
        if thresholds.max_latency_p95 is not None:
            assert clean(canary.latency_p95) is not None
        assert any(c.result == "pass" for c in outcome.checks)
    # A breach of an absolute limit always fails.
    rate = clean(canary.error_rate)
    if thresholds.max_error_rate is not None and rate is not None and rate > thresholds.max_error_rate:
        assert outcome.verdict == "Fail"
    assert outcome.message
