"""Budgets and usage as the two kinds' decisions apply them: a fleet stops scaling up at what its budget
buys (`BudgetLimited`), a TrainingJob whose cost reached `maxCost` is suspended (`BudgetExceeded`), and
`status.usage` is folded only when a rate changes or the checkpoint is due."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from kubeforge.api.usage import Usage
from kubeforge.metrics.promql import training_usage_queries, usage_queries
from kubeforge.policy import autoscaler
from kubeforge.policy import training as training_policy
from kubeforge.policy.capacity import NodeInfo
from kubeforge.policy.fleet import Capacity, FleetObserved, FleetPlan
from kubeforge.policy.fleet import decide as fleet_decide
from kubeforge.policy.status import status_diff
from kubeforge.policy.usage import Held, UsageReading
from test_fleet_controller import AUTO
from test_fleet_decide import T0, spec, steady
from test_trainingjob_policy import FITS, NOW, _cond, _job, _obs, _pod, _running, _spec

H100_1: dict[str, Any] = {"gpus": 1, "gpuType": "H100"}


ROOMY = Capacity(nodes=(NodeInfo("h", "NVIDIA-H100-80GB-HBM3", 16, True),), free={"h": 16})


def decide_fleet(o: FleetObserved) -> FleetPlan:
    """A fleet pass, with the free GPUs given when the plan asks for them."""
    plan = fleet_decide(o)
    return fleet_decide(replace(o, capacity=ROOMY)) if plan.needs_capacity else plan


def _held(n: int, since: timedelta = timedelta(minutes=5)) -> tuple[Held, ...]:
    return tuple(Held(1, "H100", False, 4.0, 700.0, T0 - since) for _ in range(n))


def test_a_fleet_under_load_stops_at_what_its_budget_buys_and_says_so() -> None:
    s = spec(autoscaling=AUTO["autoscaling"], resources=H100_1, budget={"maxCostPerHour": 12.0})
    o = replace(steady(s, replicas=2), held=_held(2))
    plan = decide_fleet(replace(o, reading=autoscaler.Reading(stable=32.0, panic=32.0, rate=1.0)))
    assert plan.evaluation is not None
    assert plan.evaluation.reason == "BudgetLimited"
    assert plan.status.desired_replicas == 3  # 12/h buys 3 H100s at 4/h, the load asked for 6
    assert plan.status.autoscaler is not None
    assert plan.status.autoscaler.reason == "BudgetLimited"
    [limited] = [c for c in plan.status.conditions if c.type == "BudgetLimited"]
    assert (limited.status, limited.reason) == ("True", "BudgetLimited")
    assert "maxCostPerHour" in limited.message
    assert ("Warning", "BudgetLimited") in [(e.type, e.reason) for e in plan.events]
    # Under the same load at the budget, the count holds.
    held = decide_fleet(
        replace(
            o,
            status=plan.status,
            memory=plan.memory,
            now=T0 + timedelta(seconds=20),
            held=_held(3),
            reading=autoscaler.Reading(stable=48.0, panic=48.0, rate=1.0),
        )
    )
    assert held.status.desired_replicas == 3


def test_a_fleet_within_budget_scales_as_the_load_asks() -> None:
    s = spec(autoscaling=AUTO["autoscaling"], resources=H100_1, budget={"maxCostPerHour": 100.0})
    o = replace(steady(s, replicas=2), held=_held(2))
    plan = decide_fleet(replace(o, reading=autoscaler.Reading(stable=32.0, panic=32.0, rate=1.0)))
    assert plan.status.desired_replicas == 6
    [limited] = [c for c in plan.status.conditions if c.type == "BudgetLimited"]
    assert limited.status == "False"


def test_a_budget_never_takes_a_fleet_below_min_replicas() -> None:
    auto = {**AUTO["autoscaling"], "minReplicas": 2}
    s = spec(autoscaling=auto, resources=H100_1, budget={"maxCostPerHour": 1.0})
    o = replace(steady(s, replicas=2), held=_held(2))
    plan = decide_fleet(replace(o, reading=autoscaler.Reading(stable=32.0, panic=32.0, rate=1.0)))
    assert plan.status.desired_replicas == 2


def test_a_fleets_usage_is_written_when_its_gpus_change_and_not_in_between() -> None:
    s = spec(resources=H100_1)
    o = replace(steady(s, replicas=2), held=_held(2))
    first = decide_fleet(o)
    assert first.status.usage is not None
    assert (first.status.usage.gpus, first.status.usage.cost_per_hour) == (2, 8.0)
    assert first.status.usage.cost == pytest.approx(
        2 * 4.0 * (6 / 60)
    )  # both pods since 5 min before T0; now is T0+1m
    assert first.requeue_after is not None
    assert first.requeue_after <= 3600
    quiet = decide_fleet(replace(o, status=first.status, now=o.now + timedelta(minutes=5)))
    assert status_diff(first.status, quiet.status) is None
    one_more = (*_held(2), Held(1, "H100", False, 4.0, 700.0, o.now + timedelta(minutes=4)))
    grown = decide_fleet(replace(o, status=first.status, now=o.now + timedelta(minutes=5), held=one_more))
    assert grown.status.usage is not None
    assert grown.status.usage.gpus == 3


# -- TrainingJob ----------------------------------------------------------------------------------------


def _spent(cost: float, per_hour: float = 32.0) -> Usage:
    return Usage(cost=cost, cost_per_hour=per_hour, gpus=8, accounted_until="2026-01-01T11:59:00Z")


def test_a_training_job_over_its_budget_is_suspended_with_budget_exceeded() -> None:
    spec = _spec(budget={"maxCost": 10.0})
    status = _running().model_copy(update={"usage": _spent(9.9)})
    plan = training_policy.decide(_obs(spec, status, jobs=(_job(),), pods=(_pod(0), _pod(1))))
    assert plan.status.phase == "Suspended"
    assert plan.delete_jobs == ("tj-a0",)
    assert _cond(plan, "BudgetExceeded") == ("True", "MaxCostReached")
    assert _cond(plan, "Admitted") == ("False", "BudgetExceeded")
    [event] = plan.events
    assert (event.type, event.reason) == ("Warning", "BudgetExceeded")
    # Raising the budget lets it be admitted again, as a resume.
    resumed = training_policy.decide(_obs(_spec(budget={"maxCost": 100.0}), plan.status, now=NOW))
    assert resumed.needs_admission
    # Taking the budget out does too, and takes its condition with it.
    unbudgeted = training_policy.decide(_obs(_spec(), plan.status, now=NOW))
    assert unbudgeted.needs_admission
    admitted = training_policy.decide(_obs(_spec(), plan.status, now=NOW, admission=FITS))
    assert admitted.status.phase == "Pending"
    assert "BudgetExceeded" not in {c.type for c in admitted.status.conditions}


def test_a_training_job_within_budget_runs_and_comes_back_when_it_would_run_out() -> None:
    spec = _spec(budget={"maxCost": 10.0})
    status = _running().model_copy(update={"usage": _spent(1.0)})
    plan = training_policy.decide(_obs(spec, status, jobs=(_job(),), pods=(_pod(0), _pod(1))))
    assert plan.status.phase == "Running"
    assert _cond(plan, "BudgetExceeded") == ("False", "WithinBudget")
    assert plan.requeue_after is not None
    # 1.0 stored at 11:59 plus 32/h for a minute leaves 8.47: 953 s at 32/h.
    assert abs(plan.requeue_after - (10.0 - 1.0 - 32.0 / 60) / 32.0 * 3600) < 1


def test_a_training_jobs_usage_counts_every_worker_from_its_start() -> None:
    held = (Held(4, "H100", False, 4.0, 700.0, NOW - timedelta(seconds=20)),) * 2
    observed = replace(_obs(_spec(), _running(), jobs=(_job(),), pods=(_pod(0), _pod(1))), held=held)
    plan = training_policy.decide(observed)
    assert plan.status.usage is not None
    assert plan.status.usage.gpu_hours * 3600 == pytest.approx(8 * 20)
    assert plan.status.usage.cost_per_hour == 32.0


def test_a_training_jobs_fold_asks_what_its_gpus_drew_and_uses_dcgm_power() -> None:
    held = (Held(4, "H100", False, 4.0, 700.0, NOW - timedelta(hours=2)),) * 2
    running = replace(_obs(_spec(), _running(), jobs=(_job(),), pods=(_pod(0), _pod(1))), held=held)
    first = training_policy.decide(running)
    assert first.status.usage is not None
    later = replace(running, status=first.status, now=NOW + timedelta(hours=1), measures_usage=True)
    asked = training_policy.decide(later)
    assert asked.needs_usage == 3600.0
    assert asked.status == later.status, "an asking plan changes nothing"
    measured = training_policy.decide(replace(later, usage_reading=UsageReading(watts=2000.0)))
    usage = measured.status.usage
    assert usage is not None
    assert measured.needs_usage is None
    assert usage.energy_source == "dcgm"
    assert usage.energy_kwh - first.status.usage.energy_kwh == pytest.approx(2.0)  # 2 kW for an hour
    # No DCGM series for the job: the TDP estimate, as without Prometheus.
    estimated = training_policy.decide(replace(later, usage_reading=UsageReading()))
    assert estimated.status.usage is not None
    assert estimated.status.usage.energy_source == "tdp"


def test_a_training_decision_carrying_an_admission_does_not_ask_for_usage() -> None:
    held = (Held(4, "H100", False, 4.0, 700.0, NOW - timedelta(hours=2)),) * 2
    running = replace(_obs(_spec(), _running(), jobs=(_job(),), pods=(_pod(0), _pod(1))), held=held)
    first = training_policy.decide(running)
    later = replace(running, status=first.status, now=NOW + timedelta(hours=1), measures_usage=True, room=0)
    plan = training_policy.decide(later)
    assert plan.needs_usage is None
    assert plan.status.usage is not None
    assert plan.status.usage.energy_source == "tdp"


def test_training_usage_queries_read_only_the_jobs_namespace_and_worker_pods() -> None:
    queries = training_usage_queries("team-a", "llama", 3600)
    assert set(queries) == {"watts", "utilization"}
    for text in queries.values():
        assert 'namespace="team-a"' in text
        assert "[1h]" in text
    pods = re.search(r'pod=~"([^"]+)"', queries["watts"])
    assert pods is not None
    pattern = re.compile(pods.group(1))  # PromQL regexes are anchored: fullmatch
    assert pattern.fullmatch("llama-a0-3-x2x9k")
    assert pattern.fullmatch("llama-a12-0-bq7zt")
    assert not pattern.fullmatch("llama-2-a0-0-x2x9k"), "another job whose name starts alike"
    assert not pattern.fullmatch("llama-0123456789-7d9f8c6b5-x2x9k"), "a fleet's pod"
    # A long-named job's Job name is shortened in its pods' names, the index kept.
    assert pattern.fullmatch("llama-a-10-x2x9k")
    assert pattern.fullmatch("llama--100-x2x9k")
    assert not pattern.fullmatch("llama-a1-a0-0-x2x9k"), "job llama-a1's pod"


def test_a_fleets_fold_asks_what_prometheus_measured_over_the_segment() -> None:
    s = spec(resources=H100_1)
    o = replace(steady(s, replicas=2), held=_held(2))
    first = decide_fleet(o)
    later = replace(o, status=first.status, now=o.now + timedelta(hours=1), measures_usage=True)
    asked = decide_fleet(later)
    assert asked.needs_usage == 3600.0
    assert not asked.complete
    measured = decide_fleet(
        replace(later, usage_reading=UsageReading(watts=300.0, requests=2000.0, tokens=4e5))
    )
    usage = measured.status.usage
    assert usage is not None
    assert usage.energy_source == "dcgm"
    assert usage.energy_kwh - first.status.usage.energy_kwh == pytest.approx(0.3)  # type: ignore[union-attr]
    assert usage.cost_per_1k_requests == pytest.approx(8.0 / 2)  # 8/h for an hour over 2,000 requests
    assert usage.cost_per_m_tokens == pytest.approx(20.0)
    assert usage.watts == pytest.approx(300.0)


def test_usage_queries_read_only_the_fleets_namespace_and_pods() -> None:
    queries = usage_queries("team-a", "chat", 3600)
    assert set(queries) == {"watts", "utilization", "requests", "tokens"}
    for text in queries.values():
        assert 'namespace="team-a"' in text
        assert "[1h]" in text  # the segment, as the confinement prints it
    assert "DCGM_FI_DEV_POWER_USAGE" in queries["watts"]
    assert 'pod=~"chat-' in queries["watts"]


def test_usage_metrics_are_extrapolated_at_scrape_and_go_away_with_their_object() -> None:
    from prometheus_client import generate_latest

    from kubeforge.api.common import Condition
    from kubeforge.metrics import exposition

    usage = Usage(
        cost=1.0,
        cost_per_hour=4.0,
        gpus=2,
        watts=1400.0,
        gpu_hours=0.5,
        accounted_until="2026-03-01T12:00:00Z",
    )
    limited = Condition(
        type="BudgetLimited", status="True", reason="BudgetLimited", message="", last_transition_time="x"
    )
    saved = exposition.USAGE.clock
    exposition.USAGE.clock = lambda: T0 + timedelta(minutes=30)
    try:
        exposition.record_usage("InferenceFleet", "team-a", "chat", usage, [limited], "BudgetLimited")
        text = generate_latest(exposition.REGISTRY).decode()
        labels = 'kind="InferenceFleet",name="chat",namespace="team-a"'
        assert f'kubeforge_cost_total{{currency="USD",{labels}}} 3.0' in text
        assert f"kubeforge_gpu_hours_total{{{labels}}} 1.5" in text
        assert f"kubeforge_energy_kwh_total{{{labels}}} 0.7" in text
        assert f'kubeforge_cost_per_hour{{currency="USD",{labels}}} 4.0' in text
        assert f"kubeforge_budget_limited{{{labels}}} 1.0" in text
        exposition.forget("InferenceFleet", "team-a", "chat")
        assert labels not in generate_latest(exposition.REGISTRY).decode()
    finally:
        exposition.USAGE.clock = saved
