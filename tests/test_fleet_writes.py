"""What an InferenceFleet costs in API writes, against the in-memory API of test_fleet_controller.py:
a fleet holding at a rollout step or converged writes nothing pass after pass, a new fleet and an image
change reach Ready with the writes they need and no more."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from kubeforge.policy.fleet import decide
from kubeforge.policy.status import status_diff
from test_fleet_controller import NS, Clock, FakeKube, controller
from test_fleet_decide import NEW, OLD, deployment, observe, ready_pods, spec
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

    async def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        foreground: bool = False,
    ) -> bool:
        self.writes["delete", kind] += 1
        return await super().delete(api_version, kind, name, namespace, foreground=foreground)

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
