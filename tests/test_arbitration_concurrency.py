"""Two fleets in a breach at once, one lendable worker: the runtime runs different fleets' passes at the
same time, so both may decide before either has written what it took. Only one may take the worker;
the other must see that take and stay `CapacityLimited`, or both record the same GPUs, the job shrinks
once, and one fleet's record keeps the job shrunk for GPUs nobody got."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from kubeforge.api.names import COMPLETION_INDEX_ANNOTATION, GPU_RESOURCE
from kubeforge.policy.autoscaler import Reading
from test_fleet_controller import NS, Clock, FakeKube, FakeSource, cond, controller

GPUS = 4
FLEET_SPEC: dict[str, Any] = {
    "model": {"name": "m"},
    "image": "img",
    "resources": {"gpus": GPUS},
    "autoscaling": {
        "minReplicas": 1,
        "maxReplicas": 2,
        "metric": "queueDepth",
        "target": 1,
        "intervalSeconds": 1,
        "scaleDownStabilizationSeconds": 0,
    },
}


def node(name: str) -> dict[str, Any]:
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": {}},
        "status": {
            "allocatable": {GPU_RESOURCE: "8", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def gpu_pod(name: str, owner: dict[str, Any], node_name: str | None, **meta: Any) -> dict[str, Any]:
    scheduled = {"type": "PodScheduled", "status": "True"}
    if node_name is None:
        scheduled = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "ownerReferences": [owner], **meta},
        "spec": {
            "containers": [{"name": "worker", "resources": {"limits": {GPU_RESOURCE: str(GPUS)}}}],
            **({"nodeName": node_name} if node_name else {}),
        },
        "status": {
            "phase": "Running" if node_name else "Pending",
            "conditions": [scheduled, {"type": "Ready", "status": "True" if node_name else "False"}],
        },
    }


def cluster(kube: FakeKube) -> None:
    """Two 8-GPU nodes: one full with an elastic job's two 4-GPU workers (one above its minimum, so
    one lendable), one with each fleet's first replica."""
    for name in ("train-node", "serve-node"):
        kube.objects[("Node", "", name)] = node(name)
    kube.objects[("TrainingJob", NS, "train")] = {
        "apiVersion": "kubeforge.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "train", "namespace": NS, "uid": "uid-tj", "generation": 1},
        "spec": {"image": "img", "elastic": {"minWorkers": 1, "maxWorkers": 2}, "resources": {"gpus": GPUS}},
        "status": {"phase": "Running", "startTime": "2026-03-01T00:00:00Z", "workers": 2},
    }
    kube.objects[("Job", NS, "train-a0")] = {
        "kind": "Job",
        "metadata": {
            "name": "train-a0",
            "namespace": NS,
            "uid": "uid-job",
            "ownerReferences": [{"kind": "TrainingJob", "uid": "uid-tj", "controller": True}],
        },
    }
    job_owner = {"kind": "Job", "uid": "uid-job", "controller": True}
    for rank in (0, 1):
        annotations = {COMPLETION_INDEX_ANNOTATION: str(rank)}
        kube.objects[("Pod", NS, f"train-{rank}")] = gpu_pod(
            f"train-{rank}", job_owner, "train-node", annotations=annotations
        )


def breach(kube: FakeKube) -> None:
    """Each fleet's Deployment asks for 2 replicas: one runs, the other cannot be placed."""
    for dep in kube.deployments():
        name = dep["metadata"]["name"]
        dep["status"] = {"observedGeneration": 1, "replicas": 2, "readyReplicas": 1, "availableReplicas": 1}
        kube.objects[("ReplicaSet", NS, f"{name}-rs")] = {
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{name}-rs",
                "namespace": NS,
                "uid": f"uid-ReplicaSet-{name}-rs",
                "ownerReferences": [{"uid": dep["metadata"]["uid"], "controller": True}],
            },
        }
        labels = dep["spec"]["template"]["metadata"]["labels"]
        owner = kube.pod_owner(name)[0]
        kube.objects[("Pod", NS, f"{name}-0")] = gpu_pod(f"{name}-0", owner, "serve-node", labels=labels)
        kube.objects[("Pod", NS, f"{name}-1")] = gpu_pod(f"{name}-1", owner, None, labels=labels)


class SlowStatusKube(FakeKube):
    """A status write takes a while to come back, as on a busy API server: other passes run meanwhile."""

    async def patch_status(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        return await super().patch_status(*args, **kwargs)


async def test_two_fleets_in_a_breach_at_once_never_take_the_same_worker() -> None:
    kube, clock, source = SlowStatusKube(), Clock(), FakeSource()
    source.reading = Reading(stable=8.0, panic=8.0, rate=10.0)
    cluster(kube)
    ctrl = controller(kube, source, clock)
    for name in ("chat", "code"):
        kube.add_fleet(name, FLEET_SPEC)
        await ctrl.reconcile(kube.objects[("InferenceFleet", NS, name)])
    breach(kube)
    for _ in range(3):
        clock.now += timedelta(seconds=2)
        await asyncio.gather(
            *(ctrl.reconcile(kube.objects[("InferenceFleet", NS, name)]) for name in ("chat", "code"))
        )
    records = {n: kube.objects[("InferenceFleet", NS, n)]["status"].get("borrowed") for n in ("chat", "code")}
    takers = [name for name, record in records.items() if record]
    assert len(takers) == 1, records
    assert [(e["job"], e["workers"], e["gpus"]) for e in records[takers[0]] or []] == [("ns/train", 1, GPUS)]
    (other,) = {"chat", "code"} - set(takers)
    limited = cond(kube.objects[("InferenceFleet", NS, other)], "CapacityLimited")
    assert limited is not None
    assert limited[0] == "True", limited
    await ctrl.forget(NS, "chat")
    await ctrl.forget(NS, "code")
