"""A tenant in bad faith against operator time: thousands of queued gangs.

Every queued gang used to be woken by every GPU pod that binds or finishes anywhere (and rechecked every
minute), and each of its passes reads every TrainingJob of the cluster: with N gangs queued, one pod
event cost O(N^2). Measured with the unit fakes (no copies): 2000 gangs queued by one namespace took
~15 ms a pass, ~30 s of the operator's single event loop per wave, during which other tenants' objects
waited in the same queue. What holds now: the work one pod event causes does not grow with the number
of like gangs one namespace keeps queued (`gangs.woken_by_capacity`). Still open: a namespace queueing
gangs of ever fewer workers (each could backfill what the one before could not), or gangs whose
objective chooses their GPU product (each is like no other), is woken whole."""

from __future__ import annotations

from typing import Any, cast

from kubeforge.controllers.runtime import OperatorConfig
from kubeforge.controllers.trainingjob import TrainingJobController
from kubeforge.kube.client import Kube
from test_hostile_gpus import _in
from test_trainingjob_controller import TJ, FakeKube, _trainingjob

Obj = dict[str, Any]


async def _woken_by_a_bind(queued: int) -> set[tuple[str, str]]:
    """Gangs a GPU pod binding wakes, with `queued` gangs of namespace `evil` waiting behind a full
    cluster and one gang of namespace `good`."""
    kube = FakeKube()
    kube.nodes(2)
    controller = TrainingJobController(cast(Kube, kube), kube.caches(), OperatorConfig(resync_seconds=1))
    kube.add(_in("evil", _trainingjob("big")))  # 2 x 8: the whole cluster
    names = [("evil", "big")]
    for i in range(queued):
        kube.add(_in("evil", _trainingjob(f"q{i}")))
        names.append(("evil", f"q{i}"))
    kube.add(_in("good", _trainingjob("victim")))
    names.append(("good", "victim"))
    for ns, name in names:
        obj = await kube.get(*TJ, name, ns)
        assert obj is not None
        await controller.reconcile(obj)
    unbound: Obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "elsewhere", "uid": "p"},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"nvidia.com/gpu": "1"}}}]},
        "status": {"phase": "Pending"},
    }
    bound = {**unbound, "spec": {**unbound["spec"], "nodeName": "h100-0"}}
    return set(controller._pod_keys(unbound, bound))


async def test_the_gangs_a_pod_event_wakes_do_not_grow_with_one_namespaces_queue() -> None:
    """Every GPU pod bind used to wake every waiting gang: one namespace's queue of N like gangs made each
    pod event cost N passes of O(N) each. Now only the gangs the event may admit wake."""
    few, many = await _woken_by_a_bind(3), await _woken_by_a_bind(60)
    assert ("good", "victim") in many
    assert len(many) == len(few), (len(few), len(many))


async def test_a_bind_wakes_the_other_namespaces_waiting_gang() -> None:
    assert ("good", "victim") in await _woken_by_a_bind(3)
