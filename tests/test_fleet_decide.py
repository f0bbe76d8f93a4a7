"""`policy.fleet.decide`: a whole InferenceFleet pass decided without a cluster. What is written and in
which order, the status, which changes are Events, what is counted, when to come back, and the inputs a
plan asks for before it can be carried out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubeforge.api.inferencefleet import InferenceFleetSpec, InferenceFleetStatus
from kubeforge.api.objective import PolicyEntry
from kubeforge.policy import autoscaler
from kubeforge.policy.analysis import MetricSample
from kubeforge.policy.capacity import NodeInfo
from kubeforge.policy.events import Event
from kubeforge.policy.fleet import (
    Apply,
    Capacity,
    Delete,
    FleetMemory,
    FleetObserved,
    FleetPlan,
    Measurement,
    RouteRead,
    Scale,
    decide,
)
from kubeforge.policy.fleet_status import PodSummary, RevisionState
from kubeforge.policy.rollout import MOVING_REQUEUE_SECONDS
from kubeforge.policy.status import status_diff
from test_fleet_controller import AUTO
from test_fleet_status import rev

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NAME, NS = "chat", "ns"
OLD, NEW = "old0000000", "new0000000"
BASE: dict[str, Any] = {"model": {"name": "m"}, "image": "img", "replicas": 4}


def spec(**fields: Any) -> InferenceFleetSpec:
    return InferenceFleetSpec.model_validate({**BASE, **fields})


def deployment(revision: str, replicas: int) -> RevisionState:
    """A revision's Deployment with every replica ready."""
    return rev(replicas, revision=revision)


def observe(s: InferenceFleetSpec | None = None, **fields: Any) -> FleetObserved:
    """A pass over a fleet whose template is revision NEW, by default with nothing deployed yet."""
    base = FleetObserved(
        name=NAME,
        namespace=NS,
        generation=1,
        status=InferenceFleetStatus(),
        now=T0,
        spec=s if s is not None else spec(),
        revision=NEW,
    )
    return replace(base, **fields)


def ready_pods(deployments: Mapping[str, RevisionState]) -> PodSummary:
    total = sum(d.replicas for d in deployments.values())
    ready = sum(d.ready for d in deployments.values())
    return PodSummary(total=total, ready=ready, scheduled=total)


def steady(s: InferenceFleetSpec | None = None, replicas: int = 4, rev: str = NEW) -> FleetObserved:
    """A fleet at rest: revision `rev` serves all replicas, and its status says so."""
    deployments = {rev: deployment(rev, replicas)}
    o = observe(s, revision=rev, deployments=deployments, pods=ready_pods(deployments))
    return replace(o, status=decide(o).status, now=T0 + timedelta(minutes=1))


def reasons(plan: FleetPlan) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for e in plan.events]


def condition(status: InferenceFleetStatus, type_: str) -> tuple[str, str] | None:
    found = next((c for c in status.conditions if c.type == type_), None)
    return None if found is None else (found.status, found.reason)


# -- invalid fleets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("o", "reason"),
    [
        (observe(None, spec=None, invalid="spec is invalid: image is required"), "InvalidSpec"),
        (observe(name="9lives"), "InvalidName"),
    ],
    ids=["invalid-spec", "invalid-name"],
)
def test_an_invalid_fleet_is_degraded_and_nothing_is_written(o: FleetObserved, reason: str) -> None:
    plan = decide(o)
    assert plan.complete
    assert (plan.writes, plan.route) == ((), None)
    assert condition(plan.status, "Degraded") == ("True", reason)
    assert condition(plan.status, "Ready") == ("False", reason)
    assert reasons(plan) == [("Warning", reason)], "Degraded is news; a new fleet not Ready is not"
    assert plan.requeue_after is None


def test_an_invalid_spec_keeps_the_rest_of_the_status() -> None:
    o = steady()
    plan = decide(replace(o, spec=None, invalid="spec is invalid: x", generation=2))
    assert plan.status.rollout == o.status.rollout
    assert plan.status.replicas == o.status.replicas
    assert plan.status.observed_generation == 2


# -- a fleet at rest -------------------------------------------------------------------------------


def test_a_steady_fleet_decides_the_same_status_and_no_news() -> None:
    s = spec()
    o = steady(s)
    plan = decide(o)
    assert plan.complete
    assert status_diff(o.status, plan.status) is None
    assert (plan.events, plan.transitions, plan.outcomes) == ((), (), ())
    assert plan.writes == (
        Apply("Service", s),
        Apply("PodDisruptionBudget", s),
        Apply("ControllerRevision", s, revision=NEW),
        Apply("Deployment", s, revision=NEW, replicas=4),
    ), "children are applied only when they differ from the cached ones: nothing is written"
    assert not plan.in_rollout
    assert plan.requeue_after is None
    assert condition(plan.status, "Ready") == ("True", "Serving")


def test_a_new_fleet_creates_its_children_and_is_not_news_yet() -> None:
    plan = decide(observe())
    assert [w.kind for w in plan.writes if isinstance(w, Apply)] == [
        "Service",
        "PodDisruptionBudget",
        "ControllerRevision",
        "Deployment",
    ]
    assert plan.events == ()
    assert condition(plan.status, "Ready") == ("False", "WaitingForReplicas")
    assert plan.status.desired_replicas == 4


# -- a new revision --------------------------------------------------------------------------------

L4 = NodeInfo("n", "NVIDIA-L4", 8, True)
FULL_NODE = Capacity(nodes=(L4, NodeInfo("h", "NVIDIA-H100-80GB-HBM3", 8, True)), free={"n": 0, "h": 8})
ROOM = Capacity(nodes=(L4,), free={"n": 4})
GPU = {"resources": {"gpus": 1, "gpuType": "L4"}}


@pytest.mark.parametrize(
    ("fields", "room", "writes"),
    [
        # Rolling (no spec.rollout), as a Deployment: one pod down (maxUnavailable) and one above the
        # desired count (maxSurge), the scale-down written first.
        ({}, None, [("Scale", OLD, 3), ("Deployment", NEW, 2)]),
        # A canary surges onto free GPUs: stable keeps serving.
        ({**GPU, "rollout": {}}, ROOM, [("Deployment", NEW, 1)]),
        # No free GPU: swap in place, the stable pod goes first.
        ({**GPU, "rollout": {}}, FULL_NODE, [("Scale", OLD, 3), ("Deployment", NEW, 1)]),
    ],
    ids=["rolling", "canary-surge", "canary-swap"],
)
def test_a_template_change_starts_a_new_revision_within_the_surge(
    fields: dict[str, Any], room: Capacity | None, writes: list[tuple[str, str, int]]
) -> None:
    s = spec(**fields)
    before = steady(s, rev=OLD)
    deployments = {OLD: deployment(OLD, 4)}
    o = replace(before, revision=NEW, deployments=deployments, pods=ready_pods(deployments))
    plan = decide(o)
    if s.resources.gpus:
        assert plan.needs_capacity, "a surge of GPU pods is bounded by the free GPUs"
        plan = decide(replace(o, capacity=room))
    assert plan.complete
    revisions = [
        ("Scale", w.deployment.removeprefix(f"{NAME}-"), w.replicas)
        if isinstance(w, Scale)
        else (w.kind, w.revision, w.replicas)
        for w in plan.writes
        if isinstance(w, Scale) or (isinstance(w, Apply) and w.kind == "Deployment")
    ]
    assert revisions == writes
    assert plan.in_rollout, "freed GPUs wake it"
    assert [r for _, r in reasons(plan)][:1] == ["RolloutStarted"]
    assert plan.requeue_after == MOVING_REQUEUE_SECONDS


def test_a_drained_revision_is_rebuilt_from_its_stored_template() -> None:
    """A rollback (`targetRevision`) to a revision in the history whose Deployment was deleted."""
    o = steady(spec(rollout={"targetRevision": OLD}))
    rollout = o.status.rollout
    assert rollout is not None
    drained = rollout.history[0].model_copy(update={"revision": OLD, "number": 0, "phase": "Superseded"})
    rollout = rollout.model_copy(update={"history": [drained, *rollout.history]})
    o = replace(o, status=o.status.model_copy(update={"rollout": rollout}))

    assert decide(o).needs_templates == (OLD,)
    stored = spec(image="img-old")
    rebuilt = decide(replace(o, templates={OLD: stored}))
    assert Apply("Deployment", stored, revision=OLD, replicas=1) in rebuilt.writes
    lost = decide(replace(o, templates={OLD: None}))
    assert condition(lost.status, "Degraded") == ("True", "RevisionNotFound")
    assert not any(isinstance(w, Apply) and w.revision == OLD for w in lost.writes)


def test_drained_revisions_and_templates_out_of_the_history_are_deleted() -> None:
    o = steady()
    deployments = {NEW: deployment(NEW, 4), OLD: deployment(OLD, 0)}
    o = replace(o, deployments=deployments, templates_kept={f"{NAME}-{NEW}": NEW, f"{NAME}-gone": "gone"})
    plan = decide(o)
    deletes = [w for w in plan.writes if isinstance(w, Delete)]
    assert deletes == [
        Delete("Deployment", f"{NAME}-{OLD}", OLD),
        Delete("Service", f"{NAME}-{OLD}", OLD),
        Delete("ControllerRevision", f"{NAME}-gone", "gone"),
    ]


# -- conditions as news ----------------------------------------------------------------------------

STUCK = PodSummary(total=5, ready=4, scheduled=4, unschedulable=1, unschedulable_message="Insufficient gpu")


def test_capacity_limited_is_a_warning_and_its_end_a_normal_event() -> None:
    o = steady()
    limited = decide(replace(o, pods=STUCK))
    assert ("Warning", "Unschedulable") in reasons(limited)
    event = next(e for e in limited.events if e.reason == "Unschedulable")
    assert event.message.startswith("CapacityLimited=True: 1 pod(s) cannot be scheduled")
    assert condition(limited.status, "CapacityLimited") == ("True", "Unschedulable")
    assert {c.type for c in limited.transitions} >= {"CapacityLimited"}

    back = decide(replace(o, status=limited.status, now=o.now + timedelta(minutes=1)))
    assert ("Normal", "Schedulable") in reasons(back)
    assert condition(back.status, "CapacityLimited") == ("False", "Schedulable")


@pytest.mark.parametrize("type_", ["CapacityLimited", "Degraded"])
def test_a_conditions_first_healthy_value_is_no_news(type_: str) -> None:
    o = steady()
    without = o.status.model_copy(update={"conditions": [c for c in o.status.conditions if c.type != type_]})
    plan = decide(replace(o, status=without))
    assert condition(plan.status, type_) is not None
    assert plan.events == ()
    assert [c.type for c in plan.transitions] == [type_], "still counted as a transition"


def test_metrics_unavailable_first_seen_is_a_warning() -> None:
    s = spec(autoscaling=AUTO["autoscaling"])
    o = steady(s, replicas=1)
    down = autoscaler.Reading(error="PrometheusUnreachable", message="refused")
    plan = decide(replace(o, reading=down))
    assert ("Warning", "PrometheusUnreachable") in reasons(plan)


# -- the autoscaler --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total_queue", "direction", "desired"),
    [(32.0, "ScaledUp", 6), (2.0, "ScaledDown", 1), (8.0, None, 2)],
    ids=["up", "down", "hold"],
)
def test_an_autoscaler_decision_is_applied_announced_and_remembered(
    total_queue: float, direction: str | None, desired: int
) -> None:
    s = spec(autoscaling=AUTO["autoscaling"])
    o = steady(s, replicas=2)
    assert o.status.desired_replicas == 2
    plan = decide(replace(o, reading=autoscaler.Reading(stable=total_queue, panic=total_queue, rate=1.0)))
    assert plan.evaluation is not None
    assert plan.memory.decision == plan.evaluation
    assert plan.status.desired_replicas == desired
    assert Apply("Deployment", s, revision=NEW, replicas=desired) in plan.writes
    assert plan.status.autoscaler is not None
    assert plan.status.autoscaler.desired_replicas == desired
    scaled = [e for e in plan.events if e.reason in ("ScaledUp", "ScaledDown")]
    if direction is None:
        assert scaled == []
    else:
        why = f"({plan.evaluation.reason}): {plan.evaluation.message}"
        assert scaled == [Event("Normal", direction, f"2 -> {desired} replicas {why}")]

    # Between evaluations the count is the remembered decision.
    later = decide(replace(o, status=plan.status, memory=plan.memory, now=o.now + timedelta(seconds=1)))
    assert later.evaluation is None
    assert later.memory == plan.memory
    assert later.status.desired_replicas == desired


def test_turning_the_autoscaler_off_forgets_it() -> None:
    s = spec(autoscaling=AUTO["autoscaling"])
    o = steady(s, replicas=2)
    remembered = decide(replace(o, reading=autoscaler.Reading(stable=32.0, rate=1.0))).memory
    off = decide(replace(o, spec=spec(), memory=remembered))
    assert off.memory == FleetMemory()
    assert off.status.autoscaler is None
    assert condition(off.status, "MetricsUnavailable") is None
    assert off.status.desired_replicas == 4


# -- rollout outcomes ------------------------------------------------------------------------------

ANALYSIS: dict[str, Any] = {"intervalSeconds": 1, "maxErrorRate": 0.05, "failureLimit": 1}
CANARY: dict[str, Any] = {"rollout": {"steps": [{"weight": 50, "pauseSeconds": 0}], "analysis": ANALYSIS}}


def run_rollout(s: InferenceFleetSpec, error_rate: Callable[[str], float]) -> list[FleetPlan]:
    """Walk a rollout from OLD to NEW, playing the cluster: every replica asked for is ready at once,
    and each measurement gives the revision's `error_rate`."""
    start = steady(s, rev=OLD)
    world = {OLD: 4}
    status, now, plans = start.status, start.now, []
    for _ in range(10):
        deployments = {r: deployment(r, n) for r, n in world.items()}
        o = replace(start, revision=NEW, status=status, now=now, deployments=deployments)
        o = replace(o, pods=ready_pods(deployments))
        plan = decide(o)
        while not plan.complete:
            assert plan.measure is not None, plan
            rev = plan.measure.revision
            measured = Measurement(rev, MetricSample(error_rate(rev), 0.1), MetricSample(0.0, 0.1))
            o = replace(o, measurement=measured)
            plan = decide(o)
        plans.append(plan)
        for write in plan.writes:
            if isinstance(write, Apply) and write.kind == "Deployment":
                world[write.revision] = write.replicas
            elif isinstance(write, Scale):
                world[write.deployment.removeprefix(f"{NAME}-")] = write.replicas
            elif isinstance(write, Delete) and write.kind == "Deployment" and write.revision is not None:
                world.pop(write.revision, None)
        status, now = plan.status, now + timedelta(seconds=2)
        if not plan.in_rollout and plan.outcomes:
            break
    return plans


@pytest.mark.parametrize(
    ("error_rate", "outcome", "stable"),
    [(0.0, "Promoted", NEW), (0.5, "RolledBack", OLD)],
    ids=["promoted", "rolled-back"],
)
def test_a_rollout_ends_in_one_outcome(error_rate: float, outcome: str, stable: str) -> None:
    plans = run_rollout(spec(**CANARY), lambda rev: error_rate)
    assert [o for p in plans for o in p.outcomes] == [outcome]
    last = plans[-1]
    assert last.status.rollout is not None
    assert last.status.rollout.stable_revision == stable
    assert any(e.reason == outcome for e in last.events)
    if outcome == "RolledBack":
        assert condition(last.status, "Degraded") == ("True", "RolledBack")
        assert not any(e.reason == "RolledBack" and e.message.startswith("Degraded") for e in last.events), (
            "the rollout announces its own rollback; the condition's transition is not a second event"
        )


def test_an_analysis_is_asked_for_when_due_and_judged_here() -> None:
    plans = run_rollout(spec(**CANARY), lambda rev: 0.5)
    runs = [p.status.rollout.last_analysis for p in plans if p.status.rollout is not None]
    failed = [r for r in runs if r is not None and r.verdict == "Fail"]
    assert failed
    assert failed[0].revision == NEW
    assert "error rate" in failed[0].message


def test_without_prometheus_a_measurement_is_inconclusive() -> None:
    o = steady(spec(**CANARY), rev=OLD)
    deployments = {OLD: deployment(OLD, 4), NEW: deployment(NEW, 2)}
    o = replace(o, revision=NEW, deployments=deployments, pods=ready_pods(deployments))
    first = decide(o)
    assert first.measure is not None
    assert (first.measure.revision, first.measure.baseline) == (NEW, OLD)
    plan = decide(
        replace(o, measurement=Measurement(NEW, error="the operator runs without --prometheus-url"))
    )
    assert plan.status.rollout is not None
    assert plan.status.rollout.last_analysis is not None
    assert plan.status.rollout.last_analysis.verdict == "Inconclusive"


# -- when to come back -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moving", "next_evaluation", "measured", "expected"),
    [
        (False, None, None, None),
        (False, 7.0, None, 7.0),
        (True, None, None, MOVING_REQUEUE_SECONDS),
        (True, 30.0, None, MOVING_REQUEUE_SECONDS),
        (True, 2.5, None, 2.5),
        (True, -1.0, None, 0.0),
    ],
    ids=["steady", "evaluation", "rollout", "rollout-first", "evaluation-first", "overdue"],
)
def test_requeue_after_is_the_earliest_of_the_next_evaluation_and_the_rollout(
    moving: bool, next_evaluation: float | None, measured: tuple[str, float] | None, expected: float | None
) -> None:
    o = steady()
    if moving:
        deployments = {NEW: deployment(NEW, 4), OLD: deployment(OLD, 2)}
        o = replace(o, deployments=deployments, pods=ready_pods(deployments))
    plan = decide(replace(o, next_evaluation_in=next_evaluation, measured=measured))
    assert plan.requeue_after == expected


def test_the_next_measurement_is_an_interval_after_the_last() -> None:
    s = spec(**{"rollout": {"steps": [{"weight": 50, "pauseSeconds": 60}], "analysis": ANALYSIS}})
    o = steady(s, rev=OLD)
    deployments = {OLD: deployment(OLD, 2), NEW: deployment(NEW, 2)}
    o = replace(o, revision=NEW, deployments=deployments, pods=ready_pods(deployments))
    measured = Measurement(NEW, MetricSample(0.0, 0.1), MetricSample(0.0, 0.1))
    plan = decide(replace(o, measurement=measured, measured=(NEW, 0.4)))
    assert plan.requeue_after == pytest.approx(0.6)


# -- the HTTPRoute ---------------------------------------------------------------------------------

ROUTED = spec(rollout={"httpRoute": {"name": "web"}})
ROUTE: dict[str, Any] = {"metadata": {"name": "web"}, "spec": {"rules": [{"backendRefs": [{"name": NAME}]}]}}
ELSEWHERE: dict[str, Any] = {
    "metadata": {"name": "web"},
    "spec": {"rules": [{"backendRefs": [{"name": "someone-else"}, {"name": NAME, "namespace": "other"}]}]},
}
"""A route whose backends are none of the fleet's: weights set on it would reach nothing of the fleet."""


@pytest.mark.parametrize(
    ("read", "expected", "weighted"),
    [
        (RouteRead(), ("False", "HTTPRouteNotFound"), False),
        (RouteRead(read_error="forbidden"), ("False", "HTTPRouteUnreadable"), False),
        (RouteRead(route=ROUTE), ("True", "WeightsSet"), True),
        (RouteRead(route=ROUTE, patch_error="conflict"), ("False", "HTTPRoutePatchFailed"), False),
        (RouteRead(route=ELSEWHERE), ("False", "NoFleetBackend"), False),
    ],
    ids=["missing", "unreadable", "weighted", "patch-failed", "no-fleet-backend"],
)
def test_the_httproute_is_read_when_needed_and_weighted(
    read: RouteRead, expected: tuple[str, str], weighted: bool
) -> None:
    o = steady(ROUTED)
    assert decide(o).needs_route == "web"
    plan = decide(replace(o, route=read))
    assert condition(plan.status, "TrafficRouted") == expected
    assert Apply("RevisionService", ROUTED, revision=NEW) in plan.writes
    if weighted:
        assert plan.route is not None
        assert (plan.route.name, dict(plan.route.weights), plan.route.port) == ("web", {NEW: 100}, 8000)
    else:
        assert plan.route is None
        assert ("Warning", expected[1]) in reasons(plan)


def test_a_feature_taken_out_of_the_spec_takes_its_condition_with_it() -> None:
    routed = decide(replace(steady(ROUTED), route=RouteRead(route=ROUTE)))
    assert condition(routed.status, "TrafficRouted") == ("True", "WeightsSet")
    plain = decide(replace(steady(spec()), status=routed.status))
    assert condition(plain.status, "TrafficRouted") is None
    budgeted = spec(budget={"maxCostPerHour": 100})
    limited = decide(steady(budgeted))
    assert condition(limited.status, "BudgetLimited") is not None
    assert condition(decide(replace(steady(spec()), status=limited.status)).status, "BudgetLimited") is None


def test_a_fleet_name_too_long_for_revision_services_is_not_routed() -> None:
    name = "a" * 55
    o = replace(steady(ROUTED), name=name)
    plan = decide(o)
    assert plan.complete, "no route is read when its backends cannot exist"
    assert condition(plan.status, "TrafficRouted") == ("False", "InvalidBackendName")
    assert not any(isinstance(w, Apply) and w.kind == "RevisionService" for w in plan.writes)


def test_a_privacy_fleet_applies_its_network_policy_and_drops_it_when_the_objective_changes() -> None:
    private = spec(objective="privacy", privacy={"dataRegion": "eu"})
    assert Apply("NetworkPolicy", private) in decide(steady(private)).writes
    plain = spec()
    assert not any(
        isinstance(w, Apply | Delete) and w.kind == "NetworkPolicy" for w in decide(steady(plain)).writes
    )
    left = decide(replace(steady(plain), network_policy=True)).writes
    assert Delete("NetworkPolicy", NAME, None) in left


def test_status_policy_is_the_derived_one_and_a_steady_fleet_does_not_rewrite_it() -> None:
    entries = (PolicyEntry(setting="gpuType", value="L4", source="catalog", reason="cheapest"),)
    first = decide(replace(steady(), policy=entries))
    assert first.status.policy == list(entries)
    again = replace(steady(), policy=entries, status=first.status)
    assert status_diff(first.status, decide(again).status) is None
