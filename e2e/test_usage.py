"""Cost and energy accounting and budgets end to end (docs/cost.md): a fleet and a TrainingJob accumulate
GPU-hours and cost in `status.usage` matching the catalog price x the pods' own times; an operator restart
neither loses nor double counts; a fleet with a low `maxCostPerHour` under rising load holds at what its
budget buys with `BudgetLimited`.

The hand computation reads only the pods (their `startTime`, their containers' `finishedAt`) and the
operator's built-in catalog (L4 0.80/h, H100 4.00/h on demand; the local nodes are not spot)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from kubeforge.api.catalog import DEFAULT_CATALOG
from kubeforge_e2e import Kubectl, wait_for
from kubeforge_e2e.loadsim import LoadSimulator
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.prometheus import PrometheusProcess
from kubeforge_e2e.workloads import condition, fleet, fleet_pods, get_fleet, wait_ready
from test_fleet_autoscale import AUTOSCALING, MODEL, with_condition

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus, pytest.mark.timeout(300)]

Obj = dict[str, Any]
TOLERANCE = 0.01
"""The issue's bar: within 1 % of the hand computation."""
LAG_SECONDS = 2.0
"""How late a pass may see a pod's end (its watch event after a fold that still saw it running)."""


def _price(gpu_type: str) -> float:
    offering = DEFAULT_CATALOG.for_gpu_type(gpu_type)
    assert offering is not None
    return offering.price_per_hour.on_demand


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _extrapolated_cost(usage: Obj, at: datetime) -> float:
    """What `status.usage` says the cost is at `at`: total + rate x (at - accountedUntil)."""
    hours = (at - _time(usage["accountedUntil"])).total_seconds() / 3600
    return float(usage["cost"]) + float(usage["costPerHour"]) * hours


def _hand_cost(pods: list[Obj], price: float, at: datetime) -> float:
    """Catalog price x each pod's GPUs x the time from its start to its end (or `at`)."""
    total = 0.0
    for pod in pods:
        start = pod["status"].get("startTime")
        if not start:
            continue
        ends = [
            _time(s["state"]["terminated"]["finishedAt"])
            for s in pod["status"].get("containerStatuses") or []
            if (s.get("state") or {}).get("terminated")
        ]
        end = min(max(ends), at) if ends else at
        gpus = sum(
            int((c.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu", 0))
            for c in pod["spec"]["containers"]
        )
        total += gpus * price * max(0.0, (end - _time(start)).total_seconds()) / 3600
    return total


def _usage(kubectl: Kubectl, kind: str, namespace: str, name: str) -> Obj:
    obj = kubectl.get(kind, name, namespace)
    return dict(((obj or {}).get("status") or {}).get("usage") or {})


def test_a_fleet_accounts_its_cost_and_an_operator_restart_neither_loses_nor_double_counts(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    name = "costed"
    price = _price("L4")
    kubectl.apply(fleet(name, replicas=2, resources={"gpus": 1, "gpuType": "L4"}), namespace)
    wait_ready(kubectl, namespace, name)
    wait_for(
        lambda: _usage(kubectl, "inferencefleet", namespace, name).get("gpus") == 2,
        timeout=60,
        description="status.usage holding the fleet's 2 GPUs",
    )
    time.sleep(20)
    usage = _usage(kubectl, "inferencefleet", namespace, name)
    assert usage["currency"] == "USD"
    assert usage["costPerHour"] == pytest.approx(2 * price)
    assert usage["pools"] == [
        {"gpuType": "L4", "spot": False, "gpus": 2, "pricePerGpuHour": price, "wattsPerGpu": 72.0}
    ]
    assert usage["energySource"] == "tdp"
    now = datetime.now(UTC).replace(microsecond=0)
    hand = _hand_cost(fleet_pods(kubectl, namespace, name), price, now)
    assert _extrapolated_cost(usage, now) == pytest.approx(hand, rel=TOLERANCE)
    # Steady: no status write for accounting in between (it was written when the GPUs appeared).
    assert _usage(kubectl, "inferencefleet", namespace, name)["accountedUntil"] == usage["accountedUntil"]

    # The operator restarts while the fleet keeps its GPUs, then the fleet grows (a rate change: a fold).
    operator.restart()
    time.sleep(5)
    kubectl.run(
        "patch", "inferencefleet", name, "-n", namespace, "--type=merge", "-p", '{"spec":{"replicas":3}}'
    )
    wait_for(
        lambda: _usage(kubectl, "inferencefleet", namespace, name).get("gpus") == 3,
        timeout=60,
        description="status.usage holding 3 GPUs",
    )
    usage = _usage(kubectl, "inferencefleet", namespace, name)
    folded_at = _time(usage["accountedUntil"])
    hand = _hand_cost(fleet_pods(kubectl, namespace, name), price, folded_at)
    assert float(usage["cost"]) == pytest.approx(hand, rel=TOLERANCE)
    assert float(usage["gpuHours"]) == pytest.approx(hand / price, rel=TOLERANCE)

    # /metrics: a team's spend, by namespace, extrapolated at scrape.
    text = operator.metrics()
    assert (
        f'kubeforge_cost_total{{currency="USD",kind="InferenceFleet",name="{name}",namespace="{namespace}"}}'
        in text
    )
    assert "kubeforge_cost_per_hour{" in text
    assert "kubeforge_energy_kwh_total{" in text


def test_a_training_job_accounts_its_workers_cost_to_the_second(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    name = "costed-train"
    price = _price("H100")
    body = {
        "apiVersion": "kubeforge.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "image": "registry.invalid/kubeforge/trainer:1",
            "workers": 2,
            "resources": {"gpus": 2, "gpuType": "H100"},
            "podMetadata": {"annotations": {"e2e.kubeforge.dev/run-seconds": "15"}},
        },
    }
    kubectl.apply(body, namespace)
    wait_for(
        lambda: (
            (kubectl.get("trainingjob", name, namespace) or {}).get("status", {}).get("phase") == "Succeeded"
        ),
        timeout=120,
        description="the TrainingJob Succeeded",
    )
    usage = wait_for(
        lambda: (u := _usage(kubectl, "trainingjob", namespace, name)) and u.get("gpus") == 0 and u,
        timeout=30,
        description="the final fold of the TrainingJob's usage",
    )
    pods = kubectl.json("get", "pods", "-n", namespace, "-l", f"kubeforge.dev/trainingjob={name}")["items"]
    hand = _hand_cost(pods, price, datetime.now(UTC))
    assert hand > 0
    # Never less than the pods' own times. More by at most what the documented bound allows: a worker
    # that ended is charged up to the pass that saw it end (a fold for the other worker's end may see it
    # running a second past its finishedAt). 1 % of this 15 s run is 0.15 s, below the one-second
    # precision of pod timestamps; the fleet test above holds the 1 % bar over a longer run.
    cost = float(usage["cost"])
    lag = len(pods) * 2 * LAG_SECONDS * price / 3600.0  # two GPUs per worker
    assert hand * (1 - 1e-6) <= cost <= hand + lag, (cost, hand)
    assert float(usage["energyKWh"]) == pytest.approx(cost / price * 0.7, rel=1e-6)  # 700 W TDP


def test_a_fleet_at_its_budget_holds_its_replicas_under_rising_load(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    loadsim: LoadSimulator,
    prometheus: PrometheusProcess,
) -> None:
    name = "thrifty"
    autoscaling = {**AUTOSCALING, "maxReplicas": 6}
    model = MODEL  # 20 requests per second per replica
    loadsim.set_load(namespace, name, 5, **model)
    # 0.80/h per L4 replica: 1.70/h buys two.
    spec = {"replicas": 1, "resources": {"gpus": 1, "gpuType": "L4"}, "autoscaling": autoscaling}
    kubectl.apply(fleet(name, **spec, budget={"maxCostPerHour": 1.7}), namespace)
    wait_ready(kubectl, namespace, name)
    for rps in (60, 100, 140):  # rising load, far above what two replicas serve
        loadsim.set_load(namespace, name, rps, **model)
        obj = wait_for(
            lambda: with_condition(kubectl, namespace, name, "BudgetLimited"),
            timeout=60,
            description="BudgetLimited under load",
        )
        for _ in range(5):
            obj = get_fleet(kubectl, namespace, name)
            assert obj["status"]["desiredReplicas"] == 2
            assert len(fleet_pods(kubectl, namespace, name)) <= 2
            time.sleep(1)
    limited = condition(obj, "BudgetLimited")
    assert limited is not None
    assert "maxCostPerHour" in limited["message"]
    assert obj["status"]["autoscaler"]["reason"] == "BudgetLimited"
    events = kubectl.json(
        "get", "events", "-n", namespace, "--field-selector", "reason=BudgetLimited", "-o", "json"
    )["items"]
    assert events
    assert events[0]["type"] == "Warning"
    text = operator.metrics()
    assert (
        f'kubeforge_budget_limited{{kind="InferenceFleet",name="{name}",namespace="{namespace}"}} 1.0' in text
    )
