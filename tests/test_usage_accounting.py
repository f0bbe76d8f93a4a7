"""Cost and energy accounting (`policy.usage`): folds only on rate changes and checkpoints, exact for the
pods the caches show, never double counted across restarts or lost writes; budgets."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeforge.api.catalog import DEFAULT_CATALOG
from kubeforge.api.usage import FleetBudget, TrainingBudget, Usage
from kubeforge.policy.usage import (
    CHECKPOINT_JITTER,
    Held,
    UsageReading,
    account,
    extrapolate,
    fleet_budget_cap,
    held_of,
    replica_rates,
    spread,
    training_over_budget,
    watts_per_gpu,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
H100 = DEFAULT_CATALOG.for_gpu_type("H100")
L4 = DEFAULT_CATALOG.for_gpu_type("L4")
assert H100 is not None
assert L4 is not None
HOUR = timedelta(hours=1)
NODES = {
    "h100-0": {"metadata": {"labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}},
    "l4-spot": {
        "metadata": {"labels": {"nvidia.com/gpu.product": "NVIDIA-L4", "kubeforge.dev/capacity-type": "spot"}}
    },
    "mystery": {"metadata": {"labels": {"nvidia.com/gpu.product": "Acme-X1"}}},
}


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _h100(start: float, end: float | None = None, gpus: int = 1) -> Held:
    return Held(gpus, "H100", False, 4.0, 700.0, _at(start), None if end is None else _at(end))


def test_a_pod_is_priced_by_the_node_it_runs_on_spot_as_spot() -> None:
    on_demand = held_of(2, "h100-0", T0, None, NODES, DEFAULT_CATALOG)
    spot = held_of(1, "l4-spot", T0, None, NODES, DEFAULT_CATALOG)
    assert on_demand is not None
    assert (on_demand.gpu_type, on_demand.spot, on_demand.price) == (
        "H100",
        False,
        4.0,
    )
    assert on_demand.watts == 700.0
    assert spot is not None
    assert (spot.gpu_type, spot.spot, spot.price) == ("L4", True, 0.35)


def test_an_unknown_product_falls_back_to_the_workloads_gpu_type_else_unknown_at_no_price() -> None:
    named = held_of(1, "mystery", T0, None, NODES, DEFAULT_CATALOG, gpu_type="A100")
    unnamed = held_of(1, "mystery", T0, None, NODES, DEFAULT_CATALOG)
    assert named is not None
    assert (named.gpu_type, named.price) == ("A100", 2.5)
    assert unnamed is not None
    assert (unnamed.gpu_type, unnamed.price, unnamed.watts) == ("unknown", 0.0, 0.0)


@pytest.mark.parametrize(("gpus", "node", "start"), [(0, "h100-0", T0), (1, None, T0), (1, "h100-0", None)])
def test_pods_without_gpus_a_node_or_a_start_hold_nothing(
    gpus: int, node: str | None, start: datetime | None
) -> None:
    assert held_of(gpus, node, start, None, NODES, DEFAULT_CATALOG) is None


@pytest.mark.parametrize(
    ("utilization", "watts", "source"),
    [
        (None, 700.0, "tdp"),
        (0.0, 70.0, "utilization"),
        (0.5, 385.0, "utilization"),
        (2.0, 700.0, "utilization"),
    ],
)
def test_power_is_idle_plus_utilization_times_the_range_else_tdp(
    utilization: float | None, watts: float, source: str
) -> None:
    got, used = watts_per_gpu(H100, utilization)
    assert got == pytest.approx(watts)
    assert used == source


def test_first_pods_open_the_account_and_a_steady_state_writes_nothing_until_the_checkpoint() -> None:
    pods = [_h100(0, gpus=2)]
    first = account(None, pods, _at(60), currency="USD")
    assert first.folded
    assert first.usage is not None
    usage = first.usage
    assert usage.gpu_hours == pytest.approx(2 * 60 / 3600)
    assert usage.cost == pytest.approx(8.0 * 60 / 3600)
    assert (usage.gpus, usage.cost_per_hour, usage.watts) == (2, 8.0, 1400.0)
    assert usage.accounted_until == "2026-01-01T12:01:00Z"
    steady = account(usage, pods, _at(600), currency="USD")
    assert not steady.folded
    assert steady.usage is usage
    assert steady.requeue_after == pytest.approx(3600 - 540)
    due = account(usage, pods, _at(60 + 3600), currency="USD")
    assert due.folded
    assert due.usage is not None
    assert due.usage.cost == pytest.approx(8.0 * 3660 / 3600)


def test_nothing_to_account_writes_nothing() -> None:
    assert account(None, [], T0, currency="USD").usage is None
    assert not account(None, [], T0, currency="USD").folded


def test_a_pod_that_stops_folds_its_time_exactly_and_the_rate_drops() -> None:
    usage = account(None, [_h100(0), _h100(0)], _at(10), currency="USD").usage
    stopped = account(usage, [_h100(0), _h100(0, end=100)], _at(130), currency="USD")
    assert stopped.folded
    assert stopped.usage is not None
    assert stopped.usage.gpu_hours == pytest.approx((130 + 100) / 3600)
    assert stopped.usage.cost_per_hour == 4.0


def test_a_pod_in_its_grace_period_holds_its_gpus_and_writes_nothing_until_it_ends() -> None:
    usage = account(None, [_h100(0), _h100(0)], _at(10), currency="USD").usage
    deleting = [_h100(0), _h100(0, end=60)]  # deletionTimestamp: deleted at 30 s with a 30 s grace
    for t in (30, 40, 50):
        assert not account(usage, deleting, _at(t), currency="USD").folded
    ended = account(usage, deleting, _at(70), currency="USD")
    assert ended.folded
    assert ended.usage is not None
    assert ended.usage.gpu_hours == pytest.approx((70 + 60) / 3600)


def test_a_pod_that_ends_in_the_second_of_the_last_fold_is_not_charged_again() -> None:
    # A fold at 15.2 s (written as 15 s) saw the pod running; it ended at 15.5 s (written as 15 s).
    usage = account(None, [_h100(0, gpus=2)], _at(15.2), currency="USD").usage
    ended = account(usage, [_h100(0, end=15, gpus=2)], _at(20), currency="USD")
    assert ended.usage is not None
    assert ended.usage.gpu_hours == pytest.approx(2 * 15 / 3600)


def test_a_pod_gone_from_the_caches_is_charged_at_the_stored_rate_until_now() -> None:
    usage = account(None, [_h100(0), _h100(0)], _at(10), currency="USD").usage
    gone = account(usage, [_h100(0)], _at(70), currency="USD")
    assert gone.usage is not None
    assert gone.usage.gpu_hours == pytest.approx(2 * 70 / 3600)


def test_extrapolation_adds_the_stored_rates_since_accounted_until() -> None:
    usage = account(None, [_h100(0, gpus=2)], _at(0), currency="USD").usage
    later = extrapolate(usage, _at(1800))
    assert (later.gpu_hours, later.cost, later.energy_kwh) == pytest.approx((1.0, 4.0, 0.7))
    assert extrapolate(None, T0).cost == 0


def test_dcgm_power_replaces_the_estimate_for_the_segment() -> None:
    usage = account(None, [_h100(0)], _at(0), currency="USD").usage
    folded = account(
        usage, [_h100(0, end=3600)], _at(3600), currency="USD", reading=UsageReading(watts=250.0)
    )
    assert folded.usage is not None
    assert folded.usage.energy_kwh == pytest.approx(0.25)
    assert folded.usage.energy_source == "dcgm"


def test_utilization_puts_the_energy_between_idle_and_tdp() -> None:
    pod = Held(1, "H100", False, 4.0, 700.0, T0, idle_watts=70.0)
    usage = account(None, [pod], T0, currency="USD").usage
    folded = account(
        usage, [replace(pod, end=_at(3600))], _at(3600), currency="USD", reading=UsageReading(utilization=0.5)
    )
    assert folded.usage is not None
    assert folded.usage.energy_kwh == pytest.approx(0.385)
    assert folded.usage.energy_source == "utilization"


def test_unit_costs_per_requests_and_tokens() -> None:
    usage = account(None, [_h100(0)], _at(0), currency="USD").usage
    folded = account(usage, [], _at(3600), currency="USD", reading=UsageReading(requests=4000.0, tokens=0.0))
    assert folded.usage is not None
    assert folded.usage.cost_per_1k_requests == pytest.approx(1.0)
    assert folded.usage.cost_per_m_tokens is None


# -- never double counted ---------------------------------------------------------------------------

pod_strategy = st.tuples(
    st.integers(0, 5000),  # start
    st.integers(1, 5000),  # duration
    st.integers(1, 8),  # gpus
    st.sampled_from([("H100", False, 4.0, 700.0), ("L4", True, 0.35, 72.0), ("A100", False, 2.5, 400.0)]),
)


def _run(
    pods: list[tuple[int, int, int, tuple[str, bool, float, float]]],
    passes: list[int],
    lost: list[bool],
    vanish_after: int | None,
) -> tuple[Usage | None, float, float]:
    """Replays passes at `passes` (seconds); a lost pass is an operator killed before its status write
    (or a restart: memory is nothing, status is everything). Returns the final usage, the exact cost and
    the most a vanished pod may add to it."""
    usage: Usage | None = None
    final = max([s + d for s, d, _, _ in pods] + passes) + 10
    slack = 0.0
    for t, drop in [*zip(sorted(passes), lost, strict=False), (final, False)]:
        visible = []
        for start, duration, gpus, (name, spot, price, watts) in pods:
            end = start + duration
            if start > t:
                continue
            if vanish_after is not None and end + vanish_after <= t:
                continue
            visible.append(Held(gpus, name, spot, price, watts, _at(start), _at(end) if end <= t else None))
        result = account(usage, visible, _at(t), currency="USD", checkpoint=timedelta(seconds=900))
        if not drop:
            usage = result.usage
    exact = sum(g * d * p[2] / 3600 for _, d, g, p in pods)
    if vanish_after is not None:
        slack = sum(g * p[2] for _, _, g, p in pods) * final / 3600
    return usage, exact, slack


@settings(max_examples=200, deadline=None)
@given(
    pods=st.lists(pod_strategy, min_size=1, max_size=6),
    passes=st.lists(st.integers(0, 12000), max_size=30),
    lost=st.lists(st.booleans(), min_size=30, max_size=30),
)
def test_cost_is_exact_whatever_passes_ran_and_whatever_writes_were_lost(
    pods: list[tuple[int, int, int, tuple[str, bool, float, float]]], passes: list[int], lost: list[bool]
) -> None:
    usage, exact, _ = _run(pods, passes, lost, None)
    assert usage is not None
    assert usage.cost == pytest.approx(exact, rel=1e-6, abs=1e-5)
    assert usage.gpus == 0
    assert usage.cost_per_hour == 0


@settings(max_examples=200, deadline=None)
@given(
    pods=st.lists(pod_strategy, min_size=1, max_size=6),
    passes=st.lists(st.integers(0, 12000), max_size=30),
    lost=st.lists(st.booleans(), min_size=30, max_size=30),
    vanish_after=st.integers(0, 300),
)
def test_pods_gone_from_the_caches_are_never_counted_twice(
    pods: list[tuple[int, int, int, tuple[str, bool, float, float]]],
    passes: list[int],
    lost: list[bool],
    vanish_after: int,
) -> None:
    usage, exact, slack = _run(pods, passes, lost, vanish_after)
    cost = usage.cost if usage is not None else 0.0
    # A pod no pass saw while it ran is not charged; one the stored rates hold is charged up to the
    # pass that misses it: never more than every GPU over the whole run.
    assert cost <= exact + slack + 1e-5


@settings(max_examples=100, deadline=None)
@given(
    pods=st.lists(pod_strategy, min_size=1, max_size=6), passes=st.lists(st.integers(0, 12000), max_size=30)
)
def test_a_pass_repeated_at_the_same_time_changes_nothing(
    pods: list[tuple[int, int, int, tuple[str, bool, float, float]]], passes: list[int]
) -> None:
    usage, _, _ = _run(pods, passes, [False] * 30, None)
    assert usage is not None
    until = usage.accounted_until
    assert until is not None
    again = account(usage, [], datetime.fromisoformat(until.replace("Z", "+00:00")), currency="USD")
    assert again.usage == usage
    assert not again.folded


# -- budgets ----------------------------------------------------------------------------------------


def test_a_replica_costs_what_the_fleets_gpus_cost_now_else_the_catalog_price_of_its_type() -> None:
    usage = Usage(gpus=4, cost_per_hour=1.4, watts=288.0)
    assert replica_rates(usage, 1, "H100", DEFAULT_CATALOG) == pytest.approx((0.35, 72.0))
    assert replica_rates(None, 2, "L4", DEFAULT_CATALOG) == pytest.approx((1.6, 144.0))
    dearest = max(g.price_per_hour.on_demand for g in DEFAULT_CATALOG.gpus)
    assert replica_rates(None, 1, None, DEFAULT_CATALOG)[0] == dearest
    assert replica_rates(usage, 0, "L4", DEFAULT_CATALOG) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("budget", "replicas"),
    [
        (FleetBudget(max_cost_per_hour=3.0), 3),
        (FleetBudget(max_cost_per_hour=0.5), 0),
        (FleetBudget(max_energy_kwh_per_day=24.0), 5),
        (FleetBudget(max_cost_per_hour=3.0, max_energy_kwh_per_day=4.8), 1),
    ],
)
def test_a_fleet_budget_buys_so_many_replicas(budget: FleetBudget, replicas: int) -> None:
    cap = fleet_budget_cap(budget, 0.8, 200.0)
    assert cap is not None
    assert cap.replicas == replicas
    assert "spec.budget" in cap.message


def test_no_budget_binds_nothing() -> None:
    assert fleet_budget_cap(None, 1.0, 1.0) is None
    assert fleet_budget_cap(FleetBudget(), 1.0, 1.0) is None


def test_a_training_job_is_over_budget_once_its_extrapolated_cost_reaches_max_cost() -> None:
    usage = Usage(cost=9.0, cost_per_hour=4.0, gpus=1, accounted_until="2026-01-01T12:00:00Z")
    assert training_over_budget(TrainingBudget(max_cost=10.0), usage, _at(600)) is None
    why = training_over_budget(TrainingBudget(max_cost=10.0), usage, _at(900))
    assert why is not None
    assert "maxCost" in why
    assert training_over_budget(None, usage, _at(9000)) is None


def test_checkpoint_periods_are_spread_per_object_and_stable() -> None:
    """A thousand objects created together must not fold their usage in the same second every hour:
    each gets the period within +-10 %, the same on every pass and after a restart."""
    hour = timedelta(hours=1)
    periods = [spread(hour, f"team-{i % 7}/fleet-{i:05d}") for i in range(1000)]
    assert all(hour * (1 - CHECKPOINT_JITTER) <= p <= hour * (1 + CHECKPOINT_JITTER) for p in periods)
    assert spread(hour, "team-0/fleet-00000") == periods[0]
    # Over the whole 720 s window: cut in 100 slices, nearly every slice holds some, none a crowd.
    slices = Counter(int((p - hour * (1 - CHECKPOINT_JITTER)).total_seconds() // 7.2) for p in periods)
    assert len(slices) >= 90
    assert max(slices.values()) < 30
