"""The InferenceFleet autoscaler's decisions, as pure functions (Knative KPA is the model).

One evaluation takes what Prometheus said (a `Reading`: the metric averaged over the stable window and
over the short panic window, plus the fleet's request rate), what the cluster shows (`Observed`: ready,
scheduled and unschedulable pods) and what earlier evaluations left behind (`Memory`, persisted in
`status.autoscaler` so an operator restart resumes where it was), and returns a `Decision`.

The rules, in the order they apply:

1. No data, stale data or Prometheus unreachable: hold the current count, flag `MetricsUnavailable`.
   The autoscaler never scales down on missing data.
2. Recommendation: `ceil(ready * value / target)`: the metric is read as a load per replica
   (queue depth, concurrency, requests per second, GPU utilisation all are). Latency is not linear in
   replicas, so for `latencyP95`/`ttftP95` this is a proportional *estimate*: good for scaling up, too
   eager for scaling down (a fleet well under its latency target would halve itself straight into a
   breach, then scale up again, and so on). So latency scale-downs are also floored: the autoscaler
   remembers the lowest request rate per replica at which it saw the target broken
   (`breach_rate`), and never scales down to a count that would put more than
   `(1 - tolerance) * breach_rate` on each replica. Each breach lowers it; meeting the target at or
   above it raises it to just above that rate; no breach is learned while in panic (a draining backlog
   keeps latency high after the load has gone), nor while the stable window holds a higher rate or
   fewer ready replicas than now (its latency is that load's). So a fleet may step down once into a
   breach it had no way to know of, and learns from it. Without a request-rate reading it does not scale down.
3. Tolerance: within `tolerance` of the target, keep the current count. A latency target is a ceiling:
   for latency metrics the band is `[target * (1 - tolerance), target]`, so a fleet never settles above it.
4. Panic: when the panic window asks for `panicThreshold` times the ready replicas, scale up at once
   and do not scale down until a whole stable window has passed without another panic trigger.
5. Scale-down stabilization: scale down only to the highest recommendation of the last
   `scaleDownStabilizationSeconds` (HPA's behaviour), so a dip does not drop replicas.
6. Rate limits (`maxScaleUpRate` x ready, at least one more; `maxScaleDownRate`: at most 1/rate fewer,
   at least one fewer), then bounds `[minReplicas, maxReplicas]`.
7. Capacity: when pods of the fleet are unschedulable, ask for at most the scheduled pods plus one,
   so exactly one pod waits for capacity (and shows when it appears) instead of a growing crowd.
   Budget: never scale up past the replicas `spec.budget` buys (`BudgetLimited`), but never below
   `minReplicas`, and the budget alone never scales down.
8. Scale to zero (optional): after `idleSeconds` of zero requests, go to zero; at zero, wake to
   `minReplicas` when the activation rate exceeds `activationThreshold`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from kubeforge.api.inferencefleet import AutoscalerStatus, Autoscaling
from kubeforge.policy.conditions import format_time, parse_time

SLO_METRICS = frozenset({"latencyP95", "ttftP95"})
"""Metrics that are a quality of service rather than a load per replica."""
TOTAL_METRICS = frozenset({"queueDepth", "concurrency", "requestsPerSecond", "gpuUtilization"})
"""Named load metrics whose default query returns the fleet's total; see `per_replica`."""
CAPACITY_MARGIN = 1
"""Pods asked for beyond those scheduled while the fleet is capacity-limited."""
_EPS = 1e-9

Mode = Literal["stable", "panic"]
Direction = Literal["up", "down", "hold"]


@dataclass(frozen=True)
class Reading:
    """What the metric source returned for one evaluation. `error` is a reason code when there is no
    usable value (`PrometheusUnreachable`, `PrometheusNotConfigured`, `QueryFailed`, `NoData`)."""

    stable: float | None = None
    panic: float | None = None
    rate: float | None = None
    """The fleet's total request rate (requests per second) over the stable window."""
    activation_rate: float | None = None
    """Request rate from the scale-to-zero activation query."""
    error: str | None = None
    message: str = ""


@dataclass(frozen=True)
class Observed:
    """The fleet's pods as the cluster shows them."""

    ready: int
    current: int
    """Replicas currently asked for (the Deployment's spec.replicas)."""
    scheduled: int = 0
    """Pods bound to a node (ready or still starting)."""
    unschedulable: int = 0
    """Pods Pending because the scheduler found no node (PodScheduled=False, Unschedulable)."""
    budget_replicas: int | None = None
    """The most replicas `spec.budget` buys (`policy.usage.fleet_budget_cap`); None: no budget."""
    budget_message: str = ""


@dataclass(frozen=True)
class Memory:
    """What one evaluation hands to the next; mirrored in status.autoscaler."""

    desired: int | None = None
    panic_until: datetime | None = None
    recommendations: tuple[tuple[datetime, int], ...] = ()
    breach_rate: float | None = None
    """Lowest per-replica request rate seen to break a latency target (latency metrics only)."""
    idle_since: datetime | None = None
    last_scale_time: datetime | None = None
    recent: tuple[tuple[datetime, float, int], ...] = ()
    """(time, request rate, ready replicas) of this process's evaluations over the last stable window:
    the load the window's latency came from (not kept in status: after a restart there is none)."""


@dataclass(frozen=True)
class Decision:
    desired: int
    previous: int
    reason: str
    message: str
    mode: Mode
    memory: Memory
    recommended: int | None = None
    value: float | None = None
    panic_value: float | None = None
    metrics_unavailable: bool = False
    unavailable_reason: str = ""
    capacity_limited: bool = False
    budget_limited: bool = False
    """The budget held the count below what the load asked for."""
    notes: tuple[str, ...] = field(default=())

    @property
    def direction(self) -> Direction:
        if self.desired > self.previous:
            return "up"
        if self.desired < self.previous:
            return "down"
        return "hold"


def per_replica(spec: Autoscaling, reading: Reading, ready: int) -> Reading:
    """A load metric's fleet total as a load per ready replica, the unit of `target` and of `decide`.

    So `ceil(ready * value / target)` is `ceil(total / target)`: the right count however many of the
    ready pods have reported yet. With no ready pod there is no per-replica load (a hold). A custom
    `query` is the user's and is taken as already per replica."""
    if spec.query is not None or spec.metric not in TOTAL_METRICS:
        return reading
    if ready <= 0:
        return replace(reading, stable=None, panic=None)
    return replace(
        reading,
        stable=None if reading.stable is None else reading.stable / ready,
        panic=None if reading.panic is None else reading.panic / ready,
    )


def ceil_div(value: float) -> int:
    """`ceil`, forgiving float noise: 3.0000000001 replicas is 3."""
    return max(0, math.ceil(value - _EPS))


def clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def baseline(spec: Autoscaling, observed: Observed, memory: Memory) -> int:
    """The count in force before this evaluation: the last decision, else what the Deployment runs
    (an autoscaler switched on for a running fleet starts from it), within bounds."""
    if memory.desired is not None:
        if memory.desired == 0 and _zero_allowed(spec):
            return 0
        return clamp(memory.desired, spec.min_replicas, spec.max_replicas)
    if observed.current == 0 and _zero_allowed(spec):
        return 0
    return clamp(observed.current, spec.min_replicas, spec.max_replicas)


def _zero_allowed(spec: Autoscaling) -> bool:
    return spec.scale_to_zero is not None and spec.scale_to_zero.enabled


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _metric_label(spec: Autoscaling) -> str:
    return spec.metric or "query"


def stabilized_max(
    recommendations: tuple[tuple[datetime, int], ...], now: datetime, window: float
) -> int | None:
    start = now - timedelta(seconds=window)
    inside = [r for t, r in recommendations if t >= start]
    return max(inside) if inside else None


def remember(
    recommendations: tuple[tuple[datetime, int], ...], now: datetime, value: int, window: float
) -> tuple[tuple[datetime, int], ...]:
    """Add a recommendation and keep only those that can still be the window's maximum: inside the
    window, and not followed by a larger or equal one. The result decreases strictly with time, so it
    stays short enough to persist in status."""
    start = now - timedelta(seconds=window)
    kept = [(t, r) for t, r in recommendations if t >= start and r > value and t <= now]
    kept.append((now, value))
    return tuple(kept)


def update_breach_rate(
    breach: float | None, *, value: float, target: float, tolerance: float, rate: float | None, ready: int
) -> float | None:
    """The lowest per-replica request rate known to break a latency target.

    A breach (any value above the target) at per-replica rate r lowers it to r. Meeting the target at r
    at or above it proves it too low (a breach seen while a backlog drained, or the workload changed):
    it rises to just above r, r * (1 + tolerance), rather than being forgotten, so the fleet does not
    probe below a count it has just seen work."""
    if rate is None or ready <= 0:
        return breach
    per_replica = rate / ready
    if value > target and per_replica > 0:
        return per_replica if breach is None else min(breach, per_replica)
    if value <= target and breach is not None and per_replica >= breach:
        return per_replica * (1 + tolerance)
    return breach


def decide(
    spec: Autoscaling, reading: Reading, observed: Observed, memory: Memory, now: datetime
) -> Decision:
    """One evaluation of the autoscaler."""
    base = baseline(spec, observed, memory)
    metric = _metric_label(spec)
    panic_until = memory.panic_until if memory.panic_until is not None and memory.panic_until > now else None
    memory = replace(memory, panic_until=panic_until, desired=base)

    def hold(reason: str, message: str, *, unavailable: str = "", mode: Mode | None = None) -> Decision:
        return Decision(
            desired=base,
            previous=base,
            reason=reason,
            message=message,
            mode=mode or ("panic" if panic_until else "stable"),
            memory=memory,
            value=reading.stable,
            panic_value=reading.panic,
            metrics_unavailable=bool(unavailable),
            unavailable_reason=unavailable,
            capacity_limited=observed.unschedulable > 0,
        )

    stz = spec.scale_to_zero
    if base == 0 and stz is not None and stz.enabled:
        if reading.activation_rate is None:
            return hold(
                "MetricsUnavailable",
                f"scaled to zero; activation rate unavailable ({reading.error or 'NoData'}): holding at 0",
                unavailable=reading.error or "NoData",
            )
        if reading.activation_rate > stz.activation_threshold:
            return _finish(
                spec,
                base,
                spec.min_replicas,
                "Activated",
                f"request rate {_fmt(reading.activation_rate)}/s above activation threshold "
                f"{_fmt(stz.activation_threshold)}: waking to {spec.min_replicas}",
                reading,
                observed,
                replace(memory, idle_since=None, desired=spec.min_replicas, last_scale_time=now),
                now,
                mode="stable",
            )
        return hold("ScaledToZero", f"idle (request rate {_fmt(reading.activation_rate)}/s): staying at 0")

    value = reading.stable
    ready = observed.ready
    if value is None and metric in SLO_METRICS and reading.error is None and reading.rate == 0:
        value = 0.0  # no requests in the window: no latency to speak of, and nothing to serve
    if reading.error is None and value is None and ready <= 0:
        # Pods that are not ready report nothing: expected, not a metrics outage (but still a hold).
        return hold("NoReadyReplicas", f"waiting for a ready replica, holding {base}")
    if value is None or reading.error is not None:
        why = reading.error or "NoData"
        detail = reading.message or f"no value for {metric}"
        return hold("MetricsUnavailable", f"{detail}: holding {base} replicas", unavailable=why)
    if ready <= 0:
        return hold("NoReadyReplicas", f"{metric} {_fmt(value)}: waiting for a ready replica, holding {base}")

    target = spec.target
    ratio = value / target
    stable_rec = ceil_div(ready * ratio)
    panic_rec = ceil_div(ready * reading.panic / target) if reading.panic is not None else None
    notes: list[str] = []

    breach_rate = memory.breach_rate
    # Learn from stable conditions only: in panic, latency still carries the backlog of the burst (it
    # lags the load), so it says nothing about what a replica can carry. The breach that triggers a
    # panic is still learned: the evaluation that sees it is not yet in panic.
    # Nor from a window whose latency another load made: while the rate was higher (or the fleet had
    # fewer ready replicas) at any evaluation of the last stable window, latency still carries that
    # load's backlog, and a breach read at today's lower rate per replica would floor every later
    # scale-down of a fleet that now idles. Comparing with the last evaluation alone was not enough: a
    # rate that has just settled after a drop reads steady while the window still holds the backlog.
    # (Request counters count completions, so a draining backlog itself reads as a higher rate: the
    # window is clean once a whole stable window of readings is back at today's rate.)
    since = now - timedelta(seconds=spec.stable_window_seconds)
    recent = tuple(r for r in memory.recent if r[0] >= since)
    other_load = reading.rate is not None and any(
        rate > reading.rate * (1 + spec.tolerance) or ready_then < ready for _, rate, ready_then in recent
    )
    if metric in SLO_METRICS and panic_until is None and not (other_load and value > target):
        breach_rate = update_breach_rate(
            breach_rate, value=value, target=target, tolerance=spec.tolerance, rate=reading.rate, ready=ready
        )

    panicking = panic_until is not None
    # KPA: panic when the panic window asks for panicThreshold times the ready pods (unrounded).
    if reading.panic is not None and reading.panic / target >= spec.panic_threshold - _EPS:
        panic_until = now + timedelta(seconds=spec.stable_window_seconds)
        panicking = True

    if metric in SLO_METRICS:
        # A latency target is a ceiling, not a set point: above it is a breach, however slight.
        within = 1.0 - spec.tolerance <= ratio <= 1.0
    else:
        within = abs(ratio - 1.0) <= spec.tolerance
    rec = base if within else stable_rec
    if metric in SLO_METRICS and rec < base:
        # A floor under a scale-down, never a reason to scale up: latency is on target at `base`, and
        # a breach rate learned too low (from a backlog draining) would otherwise add replicas.
        floor = min(base, _slo_floor(reading.rate, breach_rate, spec.tolerance, base))
        if floor > rec:
            notes.append(
                f"latency scale-down floored at {floor} (rate {_fmt(reading.rate)}/s, "
                f"target broken at {_fmt(breach_rate)}/s per replica)"
            )
            rec = floor

    if panicking:
        rec = max(rec, stable_rec, panic_rec or 0)
    recommendations = remember(memory.recommendations, now, rec, spec.scale_down_stabilization_seconds)

    if panicking:
        desired = max(base, rec)
        reason = "PanicScaleUp" if desired > base else "Panic"
    elif rec > base:
        desired, reason = rec, "ScaleUp"
    elif rec < base:
        window_max = stabilized_max(recommendations, now, spec.scale_down_stabilization_seconds) or rec
        desired = min(base, max(rec, window_max))
        reason = "ScaleDown" if desired < base else "Stabilizing"
        if desired > rec:
            notes.append(f"stabilization window keeps {desired} (recommended {rec})")
    else:
        desired, reason = base, "WithinTolerance" if within else "Steady"

    # Rate limits, relative to what is ready (up) and to what is asked (down).
    up_limit = max(ceil_div(max(ready, 1) * spec.max_scale_up_rate), ready + 1, base)
    if desired > up_limit:
        notes.append(f"scale-up limited to {up_limit} by maxScaleUpRate {spec.max_scale_up_rate:g}")
        desired = up_limit
    down_limit = min(math.floor(base / spec.max_scale_down_rate), base - 1)
    if desired < down_limit:
        notes.append(f"scale-down limited to {down_limit} by maxScaleDownRate {spec.max_scale_down_rate:g}")
        desired = down_limit
    bounded = clamp(desired, spec.min_replicas, spec.max_replicas)
    if bounded != desired:
        notes.append(f"bounded by [{spec.min_replicas}, {spec.max_replicas}]")
        if bounded == base and reason in ("ScaleUp", "PanicScaleUp"):
            reason = "AtMaximum"
        elif bounded == base and reason == "ScaleDown":
            reason = "AtMinimum"
        desired = bounded

    idle_since = memory.idle_since
    if stz is not None and stz.enabled and reading.rate is not None and reading.rate <= 0:
        idle_since = idle_since or now
        if not panicking and (now - idle_since).total_seconds() >= stz.idle_seconds:
            desired, reason = 0, "ScaledToZero"
            notes.append(f"no requests for {stz.idle_seconds}s")
    else:
        idle_since = None

    message = (
        f"{metric} {_fmt(value)} (panic {_fmt(reading.panic)}) vs target {_fmt(target)} "
        f"with {ready} ready: recommends {rec}"
    )
    new_memory = replace(
        memory,
        panic_until=panic_until,
        recommendations=recommendations,
        breach_rate=breach_rate,
        idle_since=idle_since,
        recent=recent if reading.rate is None else (*recent, (now, reading.rate, ready)),
    )
    return _finish(
        spec,
        base,
        desired,
        reason,
        message,
        reading,
        observed,
        new_memory,
        now,
        mode="panic" if panicking else "stable",
        recommended=rec,
        value=value,
        notes=tuple(notes),
    )


def _slo_floor(rate: float | None, breach_rate: float | None, tolerance: float, base: int) -> int:
    """The fewest replicas that keep each replica clear of the rate known to break the latency target;
    `base` (no scale-down) when the rate is unknown."""
    if rate is None:
        return base
    if rate <= 0 or breach_rate is None or breach_rate <= 0:
        return 0
    return ceil_div(rate / (breach_rate * (1 - tolerance)))


def _finish(
    spec: Autoscaling,
    base: int,
    desired: int,
    reason: str,
    message: str,
    reading: Reading,
    observed: Observed,
    memory: Memory,
    now: datetime,
    *,
    mode: Mode,
    recommended: int | None = None,
    value: float | None = None,
    notes: tuple[str, ...] = (),
) -> Decision:
    """Apply the capacity limit, then record the outcome in memory."""
    capacity_limited = observed.unschedulable > 0
    if capacity_limited:
        cap = max(observed.scheduled + CAPACITY_MARGIN, spec.min_replicas)
        if desired > cap:
            notes = (*notes, f"{observed.unschedulable} pod(s) unschedulable: asking for at most {cap}")
            desired = cap
            reason = "CapacityLimited"
    budget_limited = False
    if observed.budget_replicas is not None:
        # Never above what the budget buys when scaling up; never below minReplicas (an availability
        # floor the user set explicitly) and never a scale-down forced by the budget alone.
        ceiling = max(observed.budget_replicas, spec.min_replicas, min(base, desired))
        if desired > ceiling:
            notes = (*notes, f"{observed.budget_message}: asking for at most {ceiling}")
            desired = ceiling
            reason = "BudgetLimited"
        budget_limited = reason == "BudgetLimited" or (
            recommended is not None and recommended > desired and desired >= observed.budget_replicas
        )
    if notes:
        message = f"{message}; " + "; ".join(notes)
    if desired != base:
        memory = replace(memory, last_scale_time=now)
    memory = replace(memory, desired=desired)
    return Decision(
        desired=desired,
        previous=base,
        reason=reason,
        message=message,
        mode=mode,
        memory=memory,
        recommended=recommended,
        value=value if value is not None else reading.stable,
        panic_value=reading.panic,
        capacity_limited=capacity_limited,
        budget_limited=budget_limited,
        notes=notes,
    )


def memory_from_status(status: AutoscalerStatus | None) -> Memory:
    """Resume after an operator restart from what the last decision wrote."""
    if status is None:
        return Memory()
    recs: list[tuple[datetime, int]] = []
    for rec in status.recommendations:
        when = parse_time(rec.time)
        if when is not None:
            recs.append((when, rec.replicas))
    return Memory(
        desired=status.desired_replicas,
        panic_until=parse_time(status.panic_until),
        recommendations=tuple(recs),
        breach_rate=status.breach_rate_per_replica,
        idle_since=parse_time(status.idle_since),
        last_scale_time=parse_time(status.last_scale_time),
    )


def status_record(spec: Autoscaling, decision: Decision, observed: Observed, now: datetime) -> dict[str, Any]:
    """status.autoscaler as the API stores it. Every key is present (None for absent) so that a JSON
    merge patch removes what no longer applies."""
    mem = decision.memory

    def t(value: datetime | None) -> str | None:
        return format_time(value) if value is not None else None

    def num(value: float | None) -> float | None:
        return None if value is None or not math.isfinite(value) else round(value, 6)

    return {
        "metric": _metric_label(spec),
        "metricValue": num(decision.value),
        "panicValue": num(decision.panic_value),
        "target": spec.target,
        "currentReplicas": observed.ready,
        "desiredReplicas": decision.desired,
        "recommendedReplicas": decision.recommended,
        "reason": decision.reason,
        "message": decision.message,
        "mode": decision.mode,
        "lastDecisionTime": format_time(now),
        "lastScaleTime": t(mem.last_scale_time),
        "panicUntil": t(mem.panic_until),
        "idleSince": t(mem.idle_since),
        "breachRatePerReplica": num(mem.breach_rate),
        "recommendations": [{"time": format_time(when), "replicas": n} for when, n in mem.recommendations],
    }
