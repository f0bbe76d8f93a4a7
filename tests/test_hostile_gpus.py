"""A tenant in bad faith against GPU sharing: gangs admitted for GPUs their workers will never be placed on.

Admission counts GPUs only. A gang whose pods ask for more CPU than any node has (or whose image never
pulls, or that a ResourceQuota on CPU refuses) is admitted when nothing else waits, and holds its GPUs
reserved for `scheduleTimeoutSeconds` (at most the operator's `--max-schedule-timeout-seconds`, 300 s by
default). Then it gives them back and queues from that moment (`status.requeuedAt`), behind the gangs
that waited meanwhile: it used to queue by its creation time and take every GPU back at once, restart
after restart, keeping a contended cluster to itself for hours. `--max-unplaced-gpus-per-namespace`
(off unless the operator owner sets it) also bounds what one namespace may hold unplaced at a time."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from kubeforge.controllers import trainingjob as trainingjob_controller
from kubeforge.controllers.runtime import OperatorConfig
from kubeforge.controllers.trainingjob import TrainingJobController
from kubeforge.kube.client import Kube
from kubeforge.policy.conditions import format_time
from test_trainingjob_controller import TJ, FakeKube, _trainingjob

Obj = dict[str, Any]


def _in(namespace: str, obj: Obj) -> Obj:
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    return obj


async def _phase_after_passes(
    kube: FakeKube, controller: TrainingJobController, name: str, ns: str, passes: int = 3
) -> str:
    for _ in range(passes):
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


async def test_a_gang_that_never_places_holds_the_gpus_one_schedule_timeout_then_queues_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the default configuration the squatter is admitted (nothing else waits) and holds every GPU
    for one schedule timeout. Then it gives them back and queues from that moment (`requeuedAt`), so
    the gang that waited meanwhile goes first: however often the squatter's passes run, it cannot take
    the GPUs back before the victim. (It used to queue by its creation time and was admitted again at
    once, for every restart it had.)"""
    kube = FakeKube()
    kube.nodes(4)
    controller = TrainingJobController(cast(Kube, kube), kube.caches(), OperatorConfig(resync_seconds=1))
    squat = _in(
        "evil", _trainingjob("squat", workers=4, resources={"gpus": 8, "gpuType": "H100", "cpu": "100000"})
    )
    kube.add(squat)
    assert await _phase_after_passes(kube, controller, "squat", "evil") == "Pending"
    kube.add(_in("good", _trainingjob("victim", workers=2)))
    assert await _phase_after_passes(kube, controller, "victim", "good") == "Queued"

    later = datetime.now(UTC) + timedelta(seconds=301)
    monkeypatch.setattr(trainingjob_controller, "_now", lambda: later)
    # A pass at a time: this fake API server stamps new Jobs with the wall clock, which the operator's
    # clock is now ahead of (a Job made from here on would look unscheduled for 301 s at once).
    assert await _phase_after_passes(kube, controller, "squat", "evil", passes=1) == "Queued"
    stored = await kube.get(*TJ, "squat", "evil")
    assert stored is not None
    assert stored["status"]["requeuedAt"] == format_time(later)
    # Its next pass finds every GPU free, and the victim ahead of it.
    assert await _phase_after_passes(kube, controller, "squat", "evil", passes=1) == "Queued"
    assert await _phase_after_passes(kube, controller, "victim", "good", passes=1) == "Pending"
    assert await _phase_after_passes(kube, controller, "squat", "evil", passes=1) == "Queued"


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
