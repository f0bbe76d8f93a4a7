"""The InferenceFleet autoscaler's pure decisions (KPA-style windows, tolerance, stabilization, limits)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeforge.api.inferencefleet import AutoscalerStatus, Autoscaling
from kubeforge.policy.autoscaler import (
    Memory,
    Observed,
    Reading,
    baseline,
    ceil_div,
    decide,
    memory_from_status,
    per_replica,
    remember,
    stabilized_max,
    status_record,
    update_breach_rate,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def auto(**overrides: Any) -> Autoscaling:
    fields: dict[str, Any] = {
        "minReplicas": 1,
        "maxReplicas": 10,
        "metric": "queueDepth",
        "target": 4.0,
        "scaleDownStabilizationSeconds": 60,
        "stableWindowSeconds": 30,
        "panicWindowSeconds": 6,
    }
    fields.update(overrides)
    return Autoscaling.model_validate(fields)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def obs(ready: int, current: int | None = None, **kw: Any) -> Observed:
    return Observed(ready=ready, current=current if current is not None else ready, scheduled=ready, **kw)


class TestMissingData:
    @pytest.mark.parametrize(
        "reading",
        [
            Reading(error="PrometheusUnreachable", message="connection refused"),
            Reading(error="PrometheusNotConfigured"),
            Reading(error="QueryFailed", message="bad_data"),
            Reading(),  # no series: stale or absent
            Reading(stable=None, panic=0.1, rate=3.0),
        ],
        ids=["unreachable", "not-configured", "query-failed", "no-data", "stable-missing"],
    )
    def test_holds_and_flags(self, reading: Reading) -> None:
        decision = decide(auto(), reading, obs(5), Memory(desired=5), at(0))
        assert decision.desired == 5
        assert decision.direction == "hold"
        assert decision.metrics_unavailable
        assert decision.reason == "MetricsUnavailable"
        assert decision.unavailable_reason == (reading.error or "NoData")

    def test_holds_even_when_the_last_value_said_scale_down(self) -> None:
        spec = auto(scaleDownStabilizationSeconds=0)
        first = decide(spec, Reading(stable=0.5), obs(8), Memory(desired=8), at(0))
        assert first.desired < 8
        second = decide(
            spec, Reading(error="PrometheusUnreachable"), obs(8), replace(first.memory, desired=8), at(10)
        )
        assert second.desired == 8

    def test_latency_without_requests_is_idle_not_missing(self) -> None:
        spec = auto(metric="latencyP95", target=0.5, scaleDownStabilizationSeconds=0)
        decision = decide(
            spec, Reading(stable=None, rate=0.0), obs(4), Memory(desired=4, breach_rate=5.0), at(0)
        )
        assert not decision.metrics_unavailable
        assert decision.desired == 2  # halved: maxScaleDownRate 2


class TestRecommendation:
    @pytest.mark.parametrize(
        ("ready", "value", "expected"),
        [(2, 8.0, 4), (2, 6.0, 3), (3, 4.0, 3), (1, 40.0, 10), (4, 1.0, 2)],
        ids=["double", "one-and-half", "on-target", "capped-at-max", "down-rate-limited"],
    )
    def test_proportional(self, ready: int, value: float, expected: int) -> None:
        spec = auto(scaleDownStabilizationSeconds=0, maxScaleUpRate=100)
        decision = decide(spec, Reading(stable=value), obs(ready), Memory(desired=ready), at(0))
        assert decision.desired == expected

    @pytest.mark.parametrize("value", [3.7, 4.0, 4.39])
    def test_within_tolerance_holds(self, value: float) -> None:
        decision = decide(auto(), Reading(stable=value), obs(3), Memory(desired=3), at(0))
        assert decision.desired == 3
        assert decision.reason == "WithinTolerance"

    @pytest.mark.parametrize(
        ("reading", "unavailable"),
        [(Reading(), False), (Reading(error="PrometheusUnreachable"), True), (Reading(stable=9.0), False)],
        ids=["no-data-is-expected", "outage-still-flagged", "value"],
    )
    def test_no_ready_pods_hold_without_blaming_metrics(self, reading: Reading, unavailable: bool) -> None:
        decision = decide(auto(), reading, Observed(ready=0, current=2), Memory(desired=2), at(0))
        assert decision.desired == 2
        assert decision.metrics_unavailable is unavailable
        assert decision.reason == ("MetricsUnavailable" if unavailable else "NoReadyReplicas")

    def test_no_ready_replicas_holds(self) -> None:
        decision = decide(
            auto(), Reading(stable=100.0), Observed(ready=0, current=2), Memory(desired=2), at(0)
        )
        assert (decision.desired, decision.reason) == (2, "NoReadyReplicas")

    def test_ceil_forgives_float_noise(self) -> None:
        assert ceil_div(3.0000000000001) == 3
        assert ceil_div(3.01) == 4
        assert ceil_div(-1.0) == 0


class TestPanic:
    def test_panic_scales_up_at_once(self) -> None:
        # The stable window has not caught up (within tolerance), the panic window shows 3x.
        spec = auto(maxScaleUpRate=100)
        decision = decide(spec, Reading(stable=4.2, panic=12.0), obs(2), Memory(desired=2), at(0))
        assert decision.mode == "panic"
        assert decision.reason == "PanicScaleUp"
        assert decision.desired == 6
        assert decision.memory.panic_until == at(spec.stable_window_seconds)

    def test_no_panic_below_threshold(self) -> None:
        decision = decide(auto(), Reading(stable=4.0, panic=7.0), obs(2), Memory(desired=2), at(0))
        assert decision.mode == "stable"
        assert decision.desired == 2

    def test_never_scales_down_in_panic(self) -> None:
        spec = auto(scaleDownStabilizationSeconds=0)
        first = decide(spec, Reading(stable=4.0, panic=16.0), obs(2), Memory(desired=2), at(0))
        assert first.desired == 8
        calm = decide(spec, Reading(stable=0.4, panic=0.4), obs(8), first.memory, at(10))
        assert calm.mode == "panic"
        assert calm.desired == 8
        assert calm.reason == "Panic"
        after = decide(spec, Reading(stable=0.4, panic=0.4), obs(8), calm.memory, at(31))
        assert after.mode == "stable"
        assert after.desired == 4  # halved at most


class TestStabilization:
    def test_scale_down_waits_for_the_window(self) -> None:
        spec = auto(scaleDownStabilizationSeconds=30, maxScaleDownRate=100)
        memory = Memory(desired=6)
        memory = decide(spec, Reading(stable=4.0), obs(6), memory, at(0)).memory
        for t in (10, 20, 29):
            decision = decide(spec, Reading(stable=1.0), obs(6), memory, at(t))
            assert decision.desired == 6, t
            assert decision.reason == "Stabilizing"
            memory = decision.memory
        decision = decide(spec, Reading(stable=1.0), obs(6), memory, at(31))
        assert (decision.desired, decision.reason) == (2, "ScaleDown")

    def test_scale_up_is_not_delayed(self) -> None:
        spec = auto(scaleDownStabilizationSeconds=600)
        decision = decide(spec, Reading(stable=8.0), obs(2), Memory(desired=2), at(0))
        assert decision.desired == 4

    @given(
        st.lists(st.tuples(st.integers(0, 100), st.integers(0, 20)), max_size=30),
        st.integers(1, 60),
    )
    def test_remember_keeps_the_window_max(self, events: list[tuple[int, int]], window: int) -> None:
        recs: tuple[tuple[datetime, int], ...] = ()
        seen: list[tuple[datetime, int]] = []
        t = 0
        for step, value in events:
            t += step
            recs = remember(recs, at(t), value, window)
            seen.append((at(t), value))
            expected = max(v for when, v in seen if when >= at(t) - timedelta(seconds=window))
            assert stabilized_max(recs, at(t), window) == expected
            values = [v for _, v in recs]
            assert values == sorted(values, reverse=True)
            assert len(set(values)) == len(values)


class TestLimits:
    @pytest.mark.parametrize(
        ("rate", "ready", "expected"),
        [(2.0, 2, 4), (1.0, 2, 3), (1.5, 3, 5)],
        ids=["x2", "x1-still-one", "x1.5"],
    )
    def test_scale_up_rate(self, rate: float, ready: int, expected: int) -> None:
        spec = auto(maxScaleUpRate=rate)
        decision = decide(spec, Reading(stable=40.0), obs(ready), Memory(desired=ready), at(0))
        assert decision.desired == expected

    @pytest.mark.parametrize(("rate", "expected"), [(2.0, 4), (1.0, 7), (4.0, 2)])
    def test_scale_down_rate(self, rate: float, expected: int) -> None:
        spec = auto(maxScaleDownRate=rate, scaleDownStabilizationSeconds=0)
        decision = decide(spec, Reading(stable=0.1), obs(8), Memory(desired=8), at(0))
        assert decision.desired == expected

    def test_bounds_and_reasons(self) -> None:
        spec = auto(minReplicas=2, maxReplicas=4, scaleDownStabilizationSeconds=0)
        top = decide(spec, Reading(stable=40.0), obs(4), Memory(desired=4), at(0))
        assert (top.desired, top.reason) == (4, "AtMaximum")
        bottom = decide(spec, Reading(stable=0.1), obs(2), Memory(desired=2), at(0))
        assert (bottom.desired, bottom.reason) == (2, "AtMinimum")

    def test_baseline_clamps_a_deployment_outside_the_bounds(self) -> None:
        spec = auto(minReplicas=2, maxReplicas=4)
        assert baseline(spec, Observed(ready=0, current=9), Memory()) == 4
        assert baseline(spec, Observed(ready=0, current=0), Memory()) == 2
        assert baseline(spec, Observed(ready=0, current=9), Memory(desired=3)) == 3


class TestCapacity:
    def test_unschedulable_pods_stop_the_growth(self) -> None:
        spec = auto(maxScaleUpRate=100)
        observed = Observed(ready=2, current=4, scheduled=2, unschedulable=2)
        decision = decide(spec, Reading(stable=40.0), observed, Memory(desired=4), at(0))
        assert decision.capacity_limited
        assert decision.desired == 3  # the two scheduled plus one waiting for capacity
        assert decision.reason == "CapacityLimited"

    def test_never_below_min_for_capacity(self) -> None:
        spec = auto(minReplicas=3)
        observed = Observed(ready=0, current=3, scheduled=0, unschedulable=3)
        decision = decide(spec, Reading(stable=40.0), observed, Memory(desired=3), at(0))
        assert decision.desired == 3

    def test_capacity_appearing_allows_growth_again(self) -> None:
        spec = auto(maxScaleUpRate=100)
        decision = decide(spec, Reading(stable=40.0), obs(3), Memory(desired=3), at(0))
        assert not decision.capacity_limited
        assert decision.desired == 10


class TestLatency:
    @pytest.mark.parametrize(
        ("before", "value", "rate", "after"),
        [
            (None, 1.0, 20.0, 5.0),  # first breach: 5 rps per replica
            (6.0, 1.0, 20.0, 5.0),  # a breach at a lower rate lowers it
            (4.0, 1.0, 20.0, 4.0),  # ... a breach at a higher one does not
            (6.0, 0.5, 20.0, 6.0),  # on target: no breach
            (4.0, 0.3, 20.0, 5.5),  # target met at 5 >= 4: it was too low, now just above 5
            (6.0, 0.3, 20.0, 6.0),  # target met below it: kept
            (6.0, 1.0, None, 6.0),  # no request rate: unchanged
        ],
    )
    def test_breach_rate(
        self, before: float | None, value: float, rate: float | None, after: float | None
    ) -> None:
        got = update_breach_rate(before, value=value, target=0.5, tolerance=0.1, rate=rate, ready=4)
        assert got == after

    def test_scale_down_floored_by_known_breach(self) -> None:
        spec = auto(metric="latencyP95", target=0.5, scaleDownStabilizationSeconds=0, maxScaleDownRate=10)
        # Latency far under target would go to 2; 20 rps with the target broken at 5/replica needs 5.
        decision = decide(
            spec, Reading(stable=0.15, rate=20.0), obs(6), Memory(desired=6, breach_rate=5.0), at(0)
        )
        assert decision.desired == 5
        assert "floored" in decision.message

    @pytest.mark.parametrize("breach_rate", [1.6, 4.0, 5.5])
    def test_a_scale_down_floor_never_scales_up(self, breach_rate: float) -> None:
        """Latency well under target at 5 rps on two replicas, with a breach rate learned too low (from
        a backlog draining): the floor may stop a scale-down, never turn it into a scale-up."""
        spec = auto(metric="latencyP95", target=0.5, scaleDownStabilizationSeconds=0)
        memory = Memory(desired=2, breach_rate=breach_rate)
        decision = decide(spec, Reading(stable=0.2, rate=5.0), obs(2), memory, at(0))
        assert decision.desired <= 2
        assert decision.reason != "ScaleUp"

    @pytest.mark.parametrize(
        ("recent", "learned"),
        [
            (((-2, 50.0, 3),), 16.0),  # the load just fell from 50
            (((-8, 50.0, 3), (-6, 30.0, 3), (-4, 10.0, 3), (-2, 10.0, 3)), 16.0),  # settled, window not
            (((-12, 50.0, 3), (-4, 10.0, 3), (-2, 10.0, 3)), 10.0 / 3),  # the 50 is out of the window
            (((-4, 10.0, 1), (-2, 10.0, 3)), 16.0),  # the window's latency came from one replica
            (((-2, 10.0, 3),), 10.0 / 3),  # steady: a real breach
            ((), 10.0 / 3),  # nothing known (a restart): learned
        ],
    )
    def test_no_breach_is_learned_from_a_window_another_load_made(
        self, recent: tuple[tuple[int, float, int], ...], learned: float
    ) -> None:
        """Load dropped from 50 to 10 rps: latency over the 10 s window still carries the backlog, even
        once the rate reads steady. A breach read now at 3.3 rps per replica would floor every later
        scale-down of the idling fleet (it kept a fleet at 3 replicas at 1 rps for good, and a borrowing
        fleet from ever giving its GPUs back); once the window holds only this load, it is a real one."""
        spec = auto(metric="latencyP95", target=0.5, stableWindowSeconds=10, panicThreshold=100)
        memory = Memory(desired=3, breach_rate=16.0, recent=tuple((at(t), r, n) for t, r, n in recent))
        decision = decide(spec, Reading(stable=2.0, rate=10.0), obs(3), memory, at(0))
        assert decision.memory.breach_rate == pytest.approx(learned)
        assert decision.memory.recent[-1] == (at(0), 10.0, 3)
        assert all(t >= at(-10) for t, _, _ in decision.memory.recent), "only the last window is kept"

    def test_meeting_the_target_is_learned_whatever_the_window_held(self) -> None:
        spec = auto(metric="latencyP95", target=0.5, stableWindowSeconds=10, panicThreshold=100)
        memory = Memory(desired=3, breach_rate=2.0, recent=((at(-2), 50.0, 3),))
        decision = decide(spec, Reading(stable=0.3, rate=10.0), obs(3), memory, at(0))
        assert decision.memory.breach_rate == pytest.approx(10.0 / 3 * 1.1)

    def test_nothing_is_learned_in_panic(self) -> None:
        spec = auto(metric="latencyP95", target=0.5)
        # Already in panic: the high latency is the burst's backlog draining at a low per-replica rate.
        memory = Memory(desired=3, panic_until=at(10), breach_rate=50.0)
        decision = decide(spec, Reading(stable=6.0, panic=4.0, rate=5.0), obs(3), memory, at(0))
        assert decision.memory.breach_rate == 50.0
        # The breach that starts a panic is learned.
        first = decide(spec, Reading(stable=6.0, panic=8.0, rate=30.0), obs(3), Memory(desired=3), at(0))
        assert first.mode == "panic"
        assert first.memory.breach_rate == 10.0

    def test_without_breach_knowledge_latency_scales_down_proportionally(self) -> None:
        spec = auto(metric="latencyP95", target=0.5, scaleDownStabilizationSeconds=0, maxScaleDownRate=10)
        decision = decide(spec, Reading(stable=0.15, rate=20.0), obs(6), Memory(desired=6), at(0))
        assert decision.desired == 2

    def test_unknown_rate_blocks_latency_scale_down(self) -> None:
        spec = auto(metric="latencyP95", target=0.5, scaleDownStabilizationSeconds=0)
        decision = decide(spec, Reading(stable=0.1, rate=None), obs(6), Memory(desired=6), at(0))
        assert decision.desired == 6

    def test_closed_loop_settles_without_flapping(self) -> None:
        """A fleet of servers (5 rps each, 0.1 s service time) under a load step: the autoscaler reaches
        a count that meets the latency target and stays there; when load falls it comes down, once."""
        spec = auto(
            metric="latencyP95",
            target=0.5,
            minReplicas=1,
            maxReplicas=20,
            scaleDownStabilizationSeconds=60,
            stableWindowSeconds=30,
            intervalSeconds=5,
        )

        def latency(rate: float, replicas: int) -> float:
            rho = rate / (replicas * 5.0)
            return 5.0 if rho >= 0.95 else 0.1 * (1 + 3 * rho / (1 - rho))

        memory, ready, history = Memory(desired=1), 1, []
        for step in range(200):
            rate = 24.0 if step < 100 else 6.0
            value = latency(rate, ready)
            decision = decide(
                spec, Reading(stable=value, panic=value, rate=rate), obs(ready), memory, at(5 * step)
            )
            memory, ready = decision.memory, decision.desired  # pods become ready at once
            history.append(ready)
        high, low = history[60:100], history[170:]
        assert len(set(high)) == 1
        assert latency(24.0, high[0]) <= 0.5
        assert len(set(low)) == 1
        assert low[0] < high[0]
        assert latency(6.0, low[0]) <= 0.5
        changes = sum(1 for a, b in itertools.pairwise(history) if a != b)
        assert changes <= 6


class TestScaleToZero:
    spec = auto(
        scaleToZero={"enabled": True, "idleSeconds": 30, "activationThreshold": 0.5, "activationQuery": "x"}
    )

    def test_idle_goes_to_zero_after_idle_seconds(self) -> None:
        memory = Memory(desired=1)
        first = decide(self.spec, Reading(stable=0.0, rate=0.0), obs(1), memory, at(0))
        assert first.desired == 1
        assert first.memory.idle_since == at(0)
        later = decide(self.spec, Reading(stable=0.0, rate=0.0), obs(1), first.memory, at(31))
        assert (later.desired, later.reason) == (0, "ScaledToZero")

    def test_traffic_resets_idle(self) -> None:
        first = decide(self.spec, Reading(stable=0.0, rate=0.0), obs(1), Memory(desired=1), at(0))
        busy = decide(self.spec, Reading(stable=1.0, rate=2.0), obs(1), first.memory, at(20))
        assert busy.memory.idle_since is None

    @pytest.mark.parametrize(
        ("activation", "expected", "reason"),
        [(2.0, 1, "Activated"), (0.2, 0, "ScaledToZero"), (None, 0, "MetricsUnavailable")],
    )
    def test_wake_up(self, activation: float | None, expected: int, reason: str) -> None:
        decision = decide(
            self.spec,
            Reading(activation_rate=activation),
            Observed(ready=0, current=0),
            Memory(desired=0),
            at(0),
        )
        assert (decision.desired, decision.reason) == (expected, reason)


def test_status_round_trip_resumes_the_same_memory() -> None:
    spec = auto(scaleDownStabilizationSeconds=120, metric="latencyP95", target=0.5)
    decision = decide(spec, Reading(stable=2.0, panic=3.0, rate=10.0), obs(2), Memory(desired=2), at(0))
    record = status_record(spec, decision, obs(2), at(0))
    restored = memory_from_status(AutoscalerStatus.model_validate(record))
    assert restored.desired == decision.memory.desired
    assert restored.panic_until == decision.memory.panic_until
    assert restored.recommendations == decision.memory.recommendations
    assert restored.breach_rate == pytest.approx(decision.memory.breach_rate)
    assert record["reason"] == decision.reason
    assert set(record) >= {
        "metricValue",
        "target",
        "currentReplicas",
        "desiredReplicas",
        "lastDecisionTime",
        "mode",
    }


_readings = st.builds(
    Reading,
    stable=st.none() | st.floats(0, 1000, allow_nan=False),
    panic=st.none() | st.floats(0, 1000, allow_nan=False),
    rate=st.none() | st.floats(0, 1000, allow_nan=False),
    error=st.none() | st.sampled_from(["PrometheusUnreachable", "NoData"]),
)


@settings(max_examples=300)
@given(
    reading=_readings,
    ready=st.integers(0, 30),
    scheduled_extra=st.integers(0, 5),
    unschedulable=st.integers(0, 5),
    desired=st.integers(1, 30),
    min_r=st.integers(1, 5),
    span=st.integers(0, 20),
    metric=st.sampled_from(["queueDepth", "latencyP95", "gpuUtilization"]),
    panic_left=st.integers(-30, 30),
)
def test_invariants(
    reading: Reading,
    ready: int,
    scheduled_extra: int,
    unschedulable: int,
    desired: int,
    min_r: int,
    span: int,
    metric: str,
    panic_left: int,
) -> None:
    spec = auto(minReplicas=min_r, maxReplicas=min_r + span, metric=metric)
    observed = Observed(
        ready=ready, current=desired, scheduled=ready + scheduled_extra, unschedulable=unschedulable
    )
    memory = Memory(desired=desired, panic_until=at(panic_left), breach_rate=3.0)
    base = baseline(spec, observed, memory)
    decision = decide(spec, reading, observed, memory, at(0))
    # Always within bounds.
    assert spec.min_replicas <= decision.desired <= spec.max_replicas
    # Never scale on missing data.
    idle = metric == "latencyP95" and reading.rate == 0
    if reading.error is not None or (reading.stable is None and not idle):
        assert decision.desired == base
        assert decision.metrics_unavailable == (reading.error is not None or ready > 0)
    # Never down in panic.
    if decision.mode == "panic":
        assert decision.desired >= base or decision.reason == "CapacityLimited"
    # No runaway of pending pods.
    if unschedulable:
        assert decision.desired <= max(base, observed.scheduled + 1, spec.min_replicas)
        if decision.desired > base:
            assert decision.desired <= max(observed.scheduled + 1, spec.min_replicas)
    assert decision.memory.desired == decision.desired


class TestLoadMetricsAreTotals:
    """Default load queries return the fleet's total; `per_replica` divides by the ready pods."""

    def test_no_overshoot_right_after_a_scale_up(self) -> None:
        # 20 requests/s, reported so far by the 2 old pods only; 5 pods are ready now; 5/s per replica.
        spec = auto(metric="requestsPerSecond", target=5.0, maxScaleUpRate=10)
        reading = per_replica(spec, Reading(stable=20.0, panic=20.0, rate=20.0), ready=5)
        assert reading.stable == pytest.approx(4.0)
        decision = decide(spec, reading, obs(5), Memory(desired=5), at(0))
        assert (decision.recommended, decision.desired) == (4, 4)  # ceil(20 / 5)
        # What an average over the two reporting pods would have said: 10/s "per replica", times 5.
        overshoot = decide(
            spec, Reading(stable=10.0, panic=10.0, rate=20.0), obs(5), Memory(desired=5), at(0)
        )
        assert overshoot.desired == 10

    @pytest.mark.parametrize(
        ("total", "ready", "target", "expected"),
        [(40.0, 2, 10.0, 4), (40.0, 4, 10.0, 4), (40.0, 8, 10.0, 4), (9.0, 3, 4.0, 3)],
    )
    def test_recommendation_is_total_over_target(
        self, total: float, ready: int, target: float, expected: int
    ) -> None:
        spec = auto(
            metric="queueDepth",
            target=target,
            tolerance=0.0,
            scaleDownStabilizationSeconds=0,
            maxScaleDownRate=100,
            maxScaleUpRate=100,
        )
        decision = decide(spec, per_replica(spec, Reading(stable=total), ready), obs(ready), Memory(), at(0))
        assert decision.desired == expected

    def test_custom_queries_and_latency_are_left_alone(self) -> None:
        reading = Reading(stable=0.7, panic=0.9)
        assert per_replica(auto(metric="latencyP95", target=0.5), reading, ready=4) == reading
        custom = Autoscaling.model_validate(
            {"minReplicas": 1, "maxReplicas": 4, "query": "avg(x{$selector})", "target": 1}
        )
        assert per_replica(custom, reading, ready=4) == reading

    def test_no_ready_pod_means_no_per_replica_value(self) -> None:
        spec = auto(metric="concurrency")
        reading = per_replica(spec, Reading(stable=12.0, panic=12.0), ready=0)
        assert reading.stable is None
        assert decide(spec, reading, obs(0, current=2), Memory(desired=2), at(0)).reason == "NoReadyReplicas"
