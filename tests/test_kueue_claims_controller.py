"""The InferenceFleet controller asking Kueue (no cluster): the claim Workloads it makes and deletes, in
which order against its status, and what it never takes over."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx2
import pytest
from lightkube import ApiError

from kubeforge.builders.kueue_claim import FLEET_UID_LABEL
from kubeforge.kube.client import NotOursError
from kubeforge.policy.autoscaler import Reading
from test_arbitration_concurrency import FLEET_SPEC, GPUS, breach, cluster, gpu_pod
from test_fleet_controller import NS, Clock, FakeKube, FakeSource, cond, controller

SPEC: dict[str, Any] = {**FLEET_SPEC, "kueueQueueName": "team-a"}
WORKLOAD = "Workload"


def conflict() -> ApiError:
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": 409,
        "reason": "AlreadyExists",
    }
    request = httpx2.Request("POST", "https://127.0.0.1/apis")
    return ApiError(request=request, response=httpx2.Response(409, json=status, request=request))


class KueueKube(FakeKube):
    """The fake API with POST (409 when the name is taken); it records the order of writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        key = (obj["kind"], meta["namespace"], meta["name"])
        if key in self.objects:
            raise conflict()
        self.writes.append(f"create {meta['name']}")
        self.objects[key] = {**obj, "metadata": {**meta, "uid": f"uid-{meta['name']}"}}
        return self.objects[key]

    async def patch_status(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.writes.append(f"status {args[2]}")
        return await super().patch_status(*args, **kwargs)

    def claims(self) -> dict[str, dict[str, Any]]:
        return {k[2]: o for k, o in self.objects.items() if k[0] == WORKLOAD}


def kueue_cluster(kube: FakeKube) -> None:
    """`cluster()`'s node full with a job that Kueue admitted instead: rigid, preemptible."""
    cluster(kube)
    job = kube.objects[("TrainingJob", NS, "train")]
    job["spec"] = {
        "image": "img",
        "workers": 2,
        "resources": {"gpus": GPUS},
        "queueName": "team-a",
        "preemptible": True,
        "priorityClassName": "low",
    }
    kube.objects[("PriorityClass", "", "low")] = {
        "kind": "PriorityClass",
        "metadata": {"name": "low"},
        "value": -10,
    }
    # Another tenant's server holds the rest of the serving node: the fleet's second replica has no room.
    other = {"kind": "ReplicaSet", "uid": "uid-other-rs", "controller": True}
    kube.objects[("Pod", NS, "other-0")] = gpu_pod("other-0", other, "serve-node")


async def breached(kube: KueueKube) -> tuple[Any, Clock]:
    clock, source = Clock(), FakeSource()
    source.reading = Reading(stable=8.0, panic=8.0, rate=10.0)
    kueue_cluster(kube)
    ctrl = controller(kube, source, clock)
    kube.add_fleet("chat", SPEC)
    await ctrl.reconcile(kube.objects[("InferenceFleet", NS, "chat")])
    breach(kube)
    clock.now += timedelta(seconds=2)
    await ctrl.reconcile(kube.objects[("InferenceFleet", NS, "chat")])
    return ctrl, clock


async def test_a_breaching_fleet_records_its_claim_then_makes_it() -> None:
    kube = KueueKube()
    await breached(kube)
    fleet = kube.objects[("InferenceFleet", NS, "chat")]
    claim = fleet["status"]["kueueClaim"]
    assert (claim["queue"], claim["replicas"]) == ("team-a", 1)
    assert list(kube.claims()) == ["chat-kueue-0"]
    body = kube.claims()["chat-kueue-0"]
    assert body["metadata"]["labels"][FLEET_UID_LABEL] == "uid-chat"
    assert body["spec"]["queueName"] == "team-a"
    requests = body["spec"]["podSets"][0]["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert requests["nvidia.com/gpu"] == str(GPUS)
    # The status that records the claim goes out before the claim: a crash in between leaves a record
    # whose claim the next pass makes, never a claim that nothing records.
    assert kube.writes.index("status chat") < kube.writes.index("create chat-kueue-0")
    assert cond(fleet, "CapacityLimited") == ("True", "WaitingForKueue")
    assert not fleet["status"].get("borrowed"), "nothing is taken from a job Kueue admitted"
    assert ("Normal", "AskedKueue") in [(e["type"], e["reason"]) for e in kube.events]


async def test_a_deleted_fleets_claims_are_deleted_and_so_are_an_older_fleets() -> None:
    kube = KueueKube()
    ctrl, _ = await breached(kube)
    stale = {
        **kube.claims()["chat-kueue-0"],
        "metadata": {
            **kube.claims()["chat-kueue-0"]["metadata"],
            "name": "chat-kueue-7",
            "labels": {**kube.claims()["chat-kueue-0"]["metadata"]["labels"], FLEET_UID_LABEL: "uid-older"},
        },
    }
    kube.objects[(WORKLOAD, NS, "chat-kueue-7")] = stale
    await ctrl.reconcile(kube.objects[("InferenceFleet", NS, "chat")])
    assert "chat-kueue-7" in kube.deleted, "a claim an older fleet of this name left is deleted"
    assert "chat-kueue-0" in kube.claims()
    del kube.objects[("InferenceFleet", NS, "chat")]
    await ctrl.forget(NS, "chat")
    assert kube.claims() == {}


async def test_a_workload_of_the_claims_name_that_is_not_ours_is_never_taken_over() -> None:
    kube = KueueKube()
    kube.objects[(WORKLOAD, NS, "chat-kueue-0")] = {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": WORKLOAD,
        "metadata": {"name": "chat-kueue-0", "namespace": NS, "uid": "uid-someone"},
        "spec": {"queueName": "team-a", "podSets": []},
    }
    with pytest.raises(NotOursError, match="is not a claim of this fleet"):
        await breached(kube)
    assert kube.claims()["chat-kueue-0"]["metadata"]["uid"] == "uid-someone"


async def test_a_new_revision_keeps_the_claims_and_a_new_priority_withdraws_them() -> None:
    kube = KueueKube()
    ctrl, clock = await breached(kube)
    fleet = kube.objects[("InferenceFleet", NS, "chat")]
    fleet["spec"] = {**fleet["spec"], "image": "img:2"}
    fleet["metadata"]["generation"] = 2
    clock.now += timedelta(seconds=2)
    await ctrl.reconcile(fleet)
    assert list(kube.claims()) == ["chat-kueue-0"], "the same GPUs, whatever the image"
    kube.objects[("PriorityClass", "", "serving")] = {
        "kind": "PriorityClass",
        "metadata": {"name": "serving"},
        "value": 100,
    }
    fleet["spec"] = {**fleet["spec"], "priorityClassName": "serving"}
    fleet["metadata"]["generation"] = 3
    clock.now += timedelta(seconds=2)
    await ctrl.reconcile(fleet)
    assert "chat-kueue-0" in kube.deleted
    assert ("Normal", "ReleasedKueueClaim") in [(e["type"], e["reason"]) for e in kube.events]
