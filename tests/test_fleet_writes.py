"""What an InferenceFleet costs in API writes, against the in-memory API of test_fleet_controller.py:
a fleet holding at a rollout step or converged writes nothing pass after pass, a new fleet and an image
change reach Ready with the writes they need and no more."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import timedelta
from typing import Any, cast

import pytest

from fakecaches import FakeCaches
from kubeforge.controllers.inferencefleet import InferenceFleetController
from kubeforge.controllers.runtime import OperatorConfig
from kubeforge.kube.client import Kube
from kubeforge.policy.capacity import Ledger
from kubeforge.policy.fleet import Apply, FleetPlan, Scale, budget_protects, decide
from kubeforge.policy.fleet_status import RevisionPods, RevisionState
from kubeforge.policy.status import status_diff
from test_fleet_controller import NS, Clock, FakeKube, cond, controller
from test_fleet_decide import (
    NEW,
    OLD,
    ROOM,
    T0,
    condition,
    deployment,
    observe,
    ready_pods,
    reasons,
    spec,
)
from test_fleet_rollout import fleet, replicas, rev, rollout


class CountingKube(FakeKube):
    """FakeKube that counts the requests that change something on the API server, by verb and kind
    (an `apply_if_changed` that sends nothing is no write)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: Counter[tuple[str, str]] = Counter()

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        known = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]) in self.objects
        self.writes["apply" if known else "create", obj["kind"]] += 1
        return await super().apply(obj)

    async def patch(
        self, api_version: str, kind: str, name: str, namespace: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        self.writes["patch", kind] += 1
        return await super().patch(api_version, kind, name, namespace, body)

    async def patch_status(
        self, api_version: str, kind: str, name: str, namespace: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        self.writes["patch", f"{kind}/status"] += 1
        return await super().patch_status(api_version, kind, name, namespace, status)

    async def delete(self, api_version: str, kind: str, *args: Any, **kwargs: Any) -> bool:
        self.writes["delete", kind] += 1
        return await super().delete(api_version, kind, *args, **kwargs)

    async def event(self, involved: Any, *, type_: str, reason: str, message: str) -> None:
        self.writes["create", "Event"] += 1
        await super().event(involved, type_=type_, reason=reason, message=message)

    def total(self) -> int:
        return sum(self.writes.values())


PAUSED: dict[str, Any] = {
    "model": {"name": "m"},
    "image": "img",
    "replicas": 4,
    "rollout": {"steps": [{"weight": 25, "pauseSeconds": 3600}, {"weight": 100, "pauseSeconds": 0}]},
}


async def hold_at_first_step(kube: CountingKube, clock: Clock) -> Any:
    """A 4-replica fleet whose new template reached its first canary step (25 %, an hour's pause)."""
    ctrl = controller(kube, None, clock)
    obj = kube.add_fleet("chat", PAUSED)
    await ctrl.reconcile(obj)
    kube.run_deployment()
    await ctrl.reconcile(fleet(kube))
    fleet(kube)["spec"] = {**PAUSED, "image": "img2"}
    for _ in range(6):
        await ctrl.reconcile(fleet(kube))
        kube.run_deployment()
        clock.now += timedelta(seconds=1)
    await ctrl.reconcile(fleet(kube))
    assert replicas(kube) == {rev(PAUSED): 3, rev(fleet(kube)["spec"]): 1}
    assert rollout(kube)["currentStep"] == 0
    assert rollout(kube)["phase"] == "Progressing"
    return ctrl


@pytest.mark.parametrize("later", [1, 10, 599, 1800, 3590])
async def test_a_fleet_holding_at_a_step_writes_nothing_until_the_pause_ends(later: int) -> None:
    """Every pass of the pause (requeues, resyncs, other fleets' freed GPUs) decides the status it
    already has: no countdown in any message, no write, no Event; the pass comes back when it ends."""
    kube, clock = CountingKube(), Clock()
    ctrl = await hold_at_first_step(kube, clock)
    kube.writes.clear()
    clock.now += timedelta(seconds=later)
    requeue = await ctrl.reconcile(fleet(kube))
    assert kube.writes == Counter(), f"{later}s into the pause: {dict(kube.writes)}"
    assert requeue is not None
    assert 0 < requeue <= 3600 - later + 10
    await ctrl.forget(NS, "chat")


async def test_a_pause_says_when_it_ends_and_the_step_then_advances() -> None:
    kube, clock = CountingKube(), Clock()
    ctrl = await hold_at_first_step(kube, clock)
    message = rollout(kube)["message"]
    assert "until 2026-03-01T01:00:0" in message, (
        message
    )  # a deadline (step ready at ~00:00:0x), no countdown
    clock.now += timedelta(seconds=3600)
    await ctrl.reconcile(fleet(kube))
    assert rollout(kube)["currentStep"] == 1
    await ctrl.forget(NS, "chat")


def test_recomputing_the_status_during_a_long_pause_changes_nothing() -> None:
    """`decide` over the stored status at several times of a pause: the same status (no patch)."""
    s = spec(rollout={"steps": [{"weight": 50, "pauseSeconds": 7200}]})
    deployments = {OLD: deployment(OLD, 2), NEW: deployment(NEW, 2)}
    o = observe(s, deployments=deployments, pods=ready_pods(deployments))
    stable = observe(s, revision=OLD, deployments={OLD: deployment(OLD, 4)})
    o = replace(o, status=decide(stable).status)
    for _ in range(3):  # the canary's step is reached and its pause starts
        o = replace(o, now=o.now + timedelta(minutes=1))
        o = replace(o, status=decide(o).status)
    assert o.status.rollout is not None
    assert o.status.rollout.step_ready_at is not None
    for minutes in (1, 17, 60, 115):
        plan = decide(replace(o, now=o.now + timedelta(minutes=minutes)))
        assert status_diff(o.status, plan.status) is None, f"{minutes} min: {plan.status.rollout}"
        assert plan.events == ()


# -- a namespace-restricted operator: free GPUs unknown ----------------------------------------------


@pytest.mark.parametrize(
    ("fields", "surged", "swapped"),
    [
        # Rolling (no spec.rollout): one pod down and one above the count when the surge fits.
        ({}, 5, 4),
        # A canary surges onto free GPUs, stable keeps serving; unknown, a stable pod makes room.
        ({"rollout": {}}, 5, 4),
    ],
    ids=["rolling", "canary"],
)
def test_unknown_capacity_swaps_in_place_and_says_so(
    fields: dict[str, Any], surged: int, swapped: int
) -> None:
    """With pods of other namespaces unreadable, a node that looks empty may be full: no surge however
    free it looks, a stable pod goes first (within maxUnavailable), and the fleet says why."""
    s = spec(resources={"gpus": 1, "gpuType": "L4"}, **fields)
    deployments = {OLD: deployment(OLD, 4)}
    before = observe(s, revision=OLD, deployments=deployments, pods=ready_pods(deployments))
    before = replace(before, revision_pods={OLD: RevisionPods(alive=4)})
    before = replace(before, status=decide(replace(before, capacity=ROOM)).status)
    o = replace(before, revision=NEW)

    seen = decide(replace(o, capacity=ROOM))
    assert asked(seen) == {OLD: surged - 1, NEW: 1} or sum(asked(seen).values()) == surged
    assert condition(seen.status, "CapacityLimited") == ("False", "Schedulable")

    plan = decide(replace(o, capacity=replace(ROOM, scope=("team-a",))))
    assert sum(asked(plan).values()) <= swapped, "never more pods than the fleet's count"
    assert asked(plan)[OLD] < 4, "a stable pod makes room"
    assert condition(plan.status, "CapacityLimited") == ("True", "CapacityUnknown")
    limited = next(c for c in plan.status.conditions if c.type == "CapacityLimited")
    assert "team-a" in limited.message
    assert "swap in place" in limited.message
    assert ("Warning", "CapacityUnknown") in reasons(plan)


def test_unknown_capacity_is_no_news_when_nothing_moves() -> None:
    """A converged fleet asks for no capacity, so a restricted operator says nothing about it."""
    s = spec(resources={"gpus": 1, "gpuType": "L4"})
    deployments = {NEW: deployment(NEW, 4)}
    o = observe(s, deployments=deployments, pods=ready_pods(deployments))
    o = replace(o, status=decide(replace(o, capacity=ROOM)).status, now=T0 + timedelta(minutes=1))
    plan = decide(o)
    assert plan.complete, "nothing moves: no capacity asked for"
    assert condition(plan.status, "CapacityLimited") == ("False", "Schedulable")
    assert plan.events == ()


def asked(plan: FleetPlan) -> dict[str, int]:
    """The replicas each revision is asked for once the plan's writes are done."""
    out = {OLD: 4}
    for w in plan.writes:
        if isinstance(w, Scale):
            out[w.deployment.removeprefix("chat-")] = w.replicas
        elif isinstance(w, Apply) and w.kind == "Deployment":
            out[w.revision] = w.replicas
    return out


class ScopedCaches(FakeCaches):
    """The caches of an operator that may read pods only in `scope` (`Ledger.scope`)."""

    def __init__(self, kube: FakeKube, scope: tuple[str, ...]) -> None:
        super().__init__(kube.caches()._entries)
        self.scope = scope

    def capacity(self) -> Ledger:
        ledger = super().capacity()
        ledger.scope = self.scope
        return ledger


@pytest.mark.parametrize(("scope", "most"), [((NS,), 1), ((), 2)], ids=["restricted", "cluster-wide"])
async def test_a_restricted_operator_rolls_a_fleet_in_place_on_an_empty_node(
    scope: tuple[str, ...], most: int
) -> None:
    """The controller hands the ledger's scope to the policy: on a node whose 8 GPUs all look free, a
    one-replica fleet's new revision replaces its pod instead of adding one when the operator cannot
    read every namespace's pods, and the fleet says why (a Warning Event too) until the rollout is over.
    An operator that reads them all surges."""
    kube, clock = CountingKube(), Clock()
    kube.objects[("Node", "", "n0")] = {
        "metadata": {"name": "n0", "labels": {"nvidia.com/gpu.product": "NVIDIA-L4"}},
        "spec": {},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "allocatable": {"nvidia.com/gpu": "8"},
        },
    }
    ctrl = InferenceFleetController(
        cast(Kube, kube),
        ScopedCaches(kube, scope),
        OperatorConfig(namespaces=(NS,)),
        clock=clock,
        monotonic=clock.monotonic,
    )
    one: dict[str, Any] = {"model": {"name": "m"}, "image": "img", "replicas": 1, "rollout": {}}
    one["resources"] = {"gpus": 1, "gpuType": "L4"}
    await ctrl.reconcile(kube.add_fleet("chat", one))
    kube.run_deployment()
    await ctrl.reconcile(fleet(kube))
    fleet(kube)["spec"] = {**one, "image": "img2"}
    await ctrl.reconcile(fleet(kube))
    peak = sum(replicas(kube).values())
    expected = ("True", "CapacityUnknown") if scope else ("False", "Schedulable")
    assert cond(fleet(kube), "CapacityLimited") == expected
    for _ in range(12):
        kube.run_deployment()
        clock.now += timedelta(minutes=5)  # past every step's pause
        await ctrl.reconcile(fleet(kube))
        peak = max(peak, sum(replicas(kube).values()))
    assert peak == most
    assert replicas(kube) == {rev(fleet(kube)["spec"]): 1}
    assert (("Warning", "CapacityUnknown") in [(e["type"], e["reason"]) for e in kube.events]) == bool(scope)
    assert cond(fleet(kube), "CapacityLimited") == ("False", "Schedulable")
    await ctrl.forget(NS, "chat")


# -- writes of a new fleet and of an image change ----------------------------------------------------


def deployment_controller(kube: FakeKube, *, ready: bool) -> None:
    """One step of the Deployment controller, scheduler and kubelets: every pod a Deployment asks for
    exists on a node, ready or not yet; pods of a Deployment scaled down are gone."""
    kube.run_deployment()
    if ready:
        return
    for dep in kube.deployments():
        dep["status"] = {**dep["status"], "readyReplicas": 0, "availableReplicas": 0}
    for (kind, _, _), pod in kube.objects.items():
        if kind == "Pod":
            pod["status"]["conditions"] = [
                {"type": "Ready", "status": "False"},
                {"type": "PodScheduled", "status": "True"},
            ]


async def converge(ctrl: InferenceFleetController, kube: CountingKube, clock: Clock) -> None:
    """Passes as the watches bring them: the fleet's change, the Deployment controller's status, pods
    becoming ready; then resyncs and requeues that find nothing new."""
    for ready in (False, True, True, True):
        await ctrl.reconcile(fleet(kube))
        deployment_controller(kube, ready=ready)
        clock.now += timedelta(seconds=2)
    for _ in range(3):
        await ctrl.reconcile(fleet(kube))
        clock.now += timedelta(seconds=300)


ONE: dict[str, Any] = {"model": {"name": "m"}, "image": "img", "replicas": 1}


async def test_a_new_one_replica_fleet_is_ready_in_seven_writes() -> None:
    """Its three children (created once each; no disruption budget, which could refuse nothing), three
    statuses (nothing yet, its pod not ready, Ready) and one Event (it serves); then nothing."""
    kube, clock = CountingKube(), Clock()
    ctrl = controller(kube, None, clock)
    kube.add_fleet("chat", ONE)
    await converge(ctrl, kube, clock)
    assert cond(fleet(kube), "Ready") == ("True", "Serving")
    assert kube.writes == Counter(
        {
            ("create", "Service"): 1,
            ("create", "ControllerRevision"): 1,
            ("create", "Deployment"): 1,
            ("patch", "InferenceFleet/status"): 3,
            ("create", "Event"): 1,
        }
    )
    await ctrl.forget(NS, "chat")


async def test_an_image_change_of_a_one_replica_fleet_costs_nine_writes() -> None:
    """With the default strategy: the new revision's template and Deployment, the old one scaled down
    and deleted, a status per step the fleet shows (rollout started, pods moved, promoted),
    `RolloutStarted` and `Promoted`; no `Ready` Event on top of `Promoted`, no second status for a
    drained revision's message."""
    kube, clock = CountingKube(), Clock()
    ctrl = controller(kube, None, clock)
    kube.add_fleet("chat", ONE)
    await converge(ctrl, kube, clock)
    kube.writes.clear()
    kube.events.clear()
    fleet(kube)["spec"] = {**ONE, "image": "img2"}
    fleet(kube)["metadata"]["generation"] = 2
    await converge(ctrl, kube, clock)
    assert replicas(kube) == {rev(fleet(kube)["spec"]): 1}
    assert cond(fleet(kube), "Ready") == ("True", "Serving")
    assert [e["reason"] for e in kube.events] == ["RolloutStarted", "Promoted"]
    assert kube.writes == Counter(
        {
            ("create", "ControllerRevision"): 1,
            ("create", "Deployment"): 1,
            ("patch", "Deployment"): 1,  # the old revision scaled down (one pod swapped: maxUnavailable 1)
            ("delete", "Deployment"): 1,
            ("patch", "InferenceFleet/status"): 3,
            ("create", "Event"): 2,
        }
    )
    assert kube.total() <= 12
    await ctrl.forget(NS, "chat")


def test_a_canary_pod_being_created_and_placed_rewrites_no_status() -> None:
    """Between the pass that asks for a canary pod and the one that sees it ready, the pod is asked
    for, then created without a node, then bound: none of that is news while it is not ready (an
    unschedulable pod is: `CapacityLimited`)."""
    s = spec(resources={"gpus": 1, "gpuType": "L4"}, rollout={})
    deployments = {OLD: deployment(OLD, 4)}
    before = observe(s, revision=OLD, deployments=deployments, pods=ready_pods(deployments))
    before = replace(before, status=decide(replace(before, capacity=ROOM)).status)
    started = decide(replace(before, revision=NEW, capacity=ROOM))
    assert asked(started)[NEW] == 1
    canary = RevisionState(revision=NEW, name=f"chat-{NEW}", spec_replicas=1)
    moments = [
        {},  # asked for, not made yet
        {NEW: RevisionPods(alive=1, pending=1)},  # made, no node yet
        {NEW: RevisionPods(alive=1)},  # bound, starting
    ]
    status = started.status
    for i, pods in enumerate(moments):
        o = replace(
            before,
            revision=NEW,
            capacity=ROOM,
            status=status,
            deployments={**deployments, NEW: canary},
            revision_pods={OLD: RevisionPods(alive=4), **pods},
            now=T0 + timedelta(seconds=1 + i),
        )
        plan = decide(o)
        if i > 0:
            assert status_diff(status, plan.status) is None, f"{pods}: {status_diff(status, plan.status)}"
            assert plan.events == ()
        status = plan.status


# -- the disruption budget exists only where it can refuse an eviction ---------------------------------


@pytest.mark.parametrize(
    ("fleet_spec", "protects"),
    [
        ({"replicas": 1}, False),  # the default maxUnavailable 1 covers the only replica
        ({"replicas": 0}, False),
        ({"replicas": 2}, True),
        ({"replicas": 1, "disruption": {"maxUnavailable": 0}}, True),
        ({"replicas": 4, "disruption": {"maxUnavailable": "25%"}}, True),
        ({"replicas": 3, "disruption": {"maxUnavailable": "100%"}}, False),
        (
            {"replicas": 1, "disruption": {"maxUnavailable": "10%"}},
            False,
        ),  # rounds up to 1, as the controller does
        ({"replicas": 1, "autoscaling": {"maxReplicas": 3, "target": 1}}, True),  # it may grow
        ({"replicas": 1, "autoscaling": {"maxReplicas": 1, "target": 1}}, False),
        ({"replicas": 3, "autoscaling": {"enabled": False, "maxReplicas": 3, "target": 1}}, True),
    ],
)
def test_a_budget_is_kept_only_when_it_could_refuse_an_eviction(
    fleet_spec: dict[str, Any], protects: bool
) -> None:
    assert budget_protects(spec(**fleet_spec)) is protects


async def test_a_fleet_gets_its_budget_when_it_grows_and_loses_it_when_it_shrinks_back() -> None:
    kube, clock = CountingKube(), Clock()
    ctrl = controller(kube, None, clock)
    kube.add_fleet("chat", ONE)
    await converge(ctrl, kube, clock)
    pdb = ("PodDisruptionBudget", NS, "chat")
    assert pdb not in kube.objects
    for count, kept in ((3, True), (1, False)):
        fleet(kube)["spec"] = {**ONE, "replicas": count}
        await converge(ctrl, kube, clock)
        assert (pdb in kube.objects) is kept, count
    assert cond(fleet(kube), "Ready") == ("True", "Serving")
    await ctrl.forget(NS, "chat")
