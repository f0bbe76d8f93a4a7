"""A tenant in bad faith against GPU sharing: gangs admitted for GPUs their workers will never be placed on.

Admission counts GPUs only. A gang whose pods ask for more CPU than any node has (or whose image never
pulls, or that a ResourceQuota on CPU refuses) is admitted, holds its GPUs reserved for
`scheduleTimeoutSeconds` (at most the operator's `--max-schedule-timeout-seconds`, 300 s by default), is
restarted (`maxRestarts` up to 99, `backoffSeconds` 0) and admitted again at once: one TrainingJob keeps
every GPU reserved for hours, and a new one takes over after it fails. The only bound across attempts is
`--max-unplaced-gpus-per-namespace`, which is off (0) unless the operator owner sets it."""

from __future__ import annotations

import copy
from typing import Any, cast

import pytest

from kubeforge.controllers.runtime import OperatorConfig
from kubeforge.controllers.trainingjob import TrainingJobController
from kubeforge.kube.client import Kube
from test_trainingjob_controller import TJ, FakeKube, _trainingjob

Obj = dict[str, Any]


def _in(namespace: str, obj: Obj) -> Obj:
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    return obj


async def _phase_after_passes(kube: FakeKube, controller: TrainingJobController, name: str, ns: str) -> str:
    for _ in range(3):
        obj = await kube.get(*TJ, name, ns)
        assert obj is not None
        await controller.reconcile(obj)
    after = await kube.get(*TJ, name, ns)
    assert after is not None
    return str(after["status"]["phase"])


async def _squat_then_victim(config: OperatorConfig) -> tuple[str, str]:
    """Tenant `evil` asks for all 32 GPUs with workers no node can place; then `good` asks for 2 x 8."""
    kube = FakeKube()
    kube.nodes(4)
    controller = TrainingJobController(cast(Kube, kube), kube.caches(), config)
    # 100000 CPUs: the scheduler will never bind these pods; admission does not look at CPU.
    kube.add(
        _in(
            "evil",
            _trainingjob("squat", workers=4, resources={"gpus": 8, "gpuType": "H100", "cpu": "100000"}),
        )
    )
    squat = await _phase_after_passes(kube, controller, "squat", "evil")
    kube.add(_in("good", _trainingjob("victim", workers=2)))
    victim = await _phase_after_passes(kube, controller, "victim", "good")
    return squat, victim


@pytest.mark.xfail(
    strict=True,
    reason="hole: with the default configuration (--max-unplaced-gpus-per-namespace 0, the chart's"
    " gangAdmission.maxUnplacedGpusPerNamespace: 0) one namespace may hold every GPU reserved but unplaced",
)
async def test_by_default_one_namespace_cannot_reserve_every_gpu_for_workers_that_never_place() -> None:
    squat, victim = await _squat_then_victim(OperatorConfig(resync_seconds=1))
    assert (squat, victim) != ("Pending", "Queued")


async def test_the_owners_cap_keeps_gpus_for_other_namespaces() -> None:
    squat, victim = await _squat_then_victim(
        OperatorConfig(resync_seconds=1, max_unplaced_gpus_per_namespace=16)
    )
    assert (squat, victim) == ("Queued", "Pending")


def _pending_gpu_pod(name: str, namespace: str, gpus: int) -> Obj:
    """A plain pod a tenant made itself (no kubeforge labels, no owner) that the scheduler will never
    place: it asks for GPUs and for more CPU than any node has. `PodScheduled=False, Unschedulable` is
    what kube-scheduler writes on it."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "x",
                    "resources": {"requests": {"nvidia.com/gpu": str(gpus), "cpu": "100000"}},
                }
            ]
        },
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/2 nodes are available: 2 Insufficient cpu.",
                }
            ],
        },
    }


async def test_pods_the_scheduler_cannot_place_do_not_keep_gangs_out_forever() -> None:
    kube = FakeKube()
    kube.nodes(2)
    kube.add(_pending_gpu_pod("hog-0", "evil", 8))
    kube.add(_pending_gpu_pod("hog-1", "evil", 8))
    controller = TrainingJobController(
        cast(Kube, kube), kube.caches(), OperatorConfig(resync_seconds=1, max_unplaced_gpus_per_namespace=16)
    )
    kube.add(_in("good", _trainingjob("victim", workers=2)))
    # Both nodes' 16 GPUs are free: the two pods cannot be placed, and never will be.
    assert await _phase_after_passes(kube, controller, "victim", "good") == "Pending"
