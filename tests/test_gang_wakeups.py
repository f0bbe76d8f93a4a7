"""Which waiting gangs a capacity event wakes (`gangs.woken_by_capacity`), and that a gang kept asleep
behind a like one is woken when that one leaves the queue: fewer passes, never a gang left waiting."""

from __future__ import annotations

import copy
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeforge.controllers.runtime import OperatorConfig
from kubeforge.controllers.trainingjob import TrainingJobController, WaitingGangs
from kubeforge.kube.client import Kube
from kubeforge.policy import gangs
from kubeforge.policy.gangs import Waiting, woken_by_capacity
from test_fleet_controller import FakeKube as FleetKube
from test_fleet_controller import controller as fleet_controller
from test_hostile_gpus import _in
from test_trainingjob_controller import TJ, FakeKube, _trainingjob

Obj = dict[str, Any]


def _gang(order: int, workers: int, *, ns: str = "a", gpus: int = 8, priority: int = 0) -> Waiting:
    return Waiting(
        order=(-priority, f"2026-01-01T00:00:{order:02d}Z", f"{ns}/g{order}"),
        shape=(ns, gpus),
        workers=workers,
    )


@pytest.mark.parametrize(
    ("waiting", "woken"),
    [
        pytest.param({"first": _gang(0, 2), "like": _gang(1, 2)}, {"first"}, id="a like gang behind sleeps"),
        pytest.param({"first": _gang(0, 2), "bigger": _gang(1, 3)}, {"first"}, id="a bigger one too"),
        pytest.param(
            {"first": _gang(0, 2), "smaller": _gang(1, 1)},
            {"first", "smaller"},
            id="a smaller one may backfill",
        ),
        pytest.param(
            {"first": _gang(0, 2), "other-ns": _gang(1, 2, ns="b")},
            {"first", "other-ns"},
            id="another namespace has its own quota and limit",
        ),
        pytest.param(
            {"first": _gang(0, 2), "other-size": _gang(1, 2, gpus=4)},
            {"first", "other-size"},
            id="other GPUs per worker",
        ),
        pytest.param(
            {"old": _gang(0, 2), "urgent": _gang(1, 2, priority=10)},
            {"urgent"},
            id="queue order is priority first",
        ),
        pytest.param({"first": _gang(0, 2), "growing": None}, {"first", "growing"}, id="growth always wakes"),
        pytest.param({}, set(), id="nobody waits"),
    ],
)
def test_woken_by_capacity(waiting: dict[str, Waiting | None], woken: set[str]) -> None:
    assert woken_by_capacity(waiting) == woken


def _fifo(waiting: dict[int, Waiting], pool: int, quota: dict[str, int]) -> set[int]:
    """A model of admission: best-effort FIFO over a GPU pool and each namespace's quota. Every gang's
    pass counts the gangs queued ahead of it that fit (asleep or not), so whichever gangs take a pass,
    each one's verdict is the one this single pass over the whole queue gives it."""
    left, quotas, admitted = pool, dict(quota), set()
    for i, gang in sorted(waiting.items(), key=lambda item: item[1].order):
        ns, gpus = cast(tuple[str, int], gang.shape)
        need = gang.workers * gpus
        if need <= left and need <= quotas[ns]:
            left -= need
            quotas[ns] -= need
            admitted.add(i)
    return admitted


def _need(gang: Waiting) -> tuple[str, int]:
    ns, gpus = cast(tuple[str, int], gang.shape)
    return ns, gang.workers * gpus


@given(
    gangs=st.lists(
        st.tuples(st.sampled_from("ab"), st.sampled_from((1, 2, 4)), st.integers(1, 6), st.integers(0, 2)),
        max_size=12,
    ),
    pool=st.integers(0, 48),
    quota=st.fixed_dictionaries({"a": st.integers(0, 48), "b": st.integers(0, 48)}),
)
def test_the_woken_gangs_and_the_chains_they_start_admit_what_waking_everyone_would(
    gangs: list[tuple[str, int, int, int]], pool: int, quota: dict[str, int]
) -> None:
    """Capacity frees up (`pool` GPUs, `quota` per namespace). Round after round only the woken gangs take
    a pass; those admitted leave the queue, and their leaving wakes the gangs they kept asleep. The
    rounds end up admitting exactly the gangs that waking every gang at once would."""
    waiting = {
        i: Waiting(order=(-priority, f"t{i:02d}", str(i)), shape=(ns, gpus), workers=workers)
        for i, (ns, gpus, workers, priority) in enumerate(gangs)
    }
    expected = _fifo(waiting, pool, quota)
    left, quotas, admitted = pool, dict(quota), set[int]()
    while True:
        remaining = {i: g for i, g in waiting.items() if i not in admitted}
        now = woken_by_capacity(remaining) & _fifo(remaining, left, quotas)
        if not now:
            break
        for i in now:
            ns, need = _need(waiting[i])
            left, quotas[ns] = left - need, quotas[ns] - need
        admitted |= now
    assert admitted == expected


# -------------------------------------------------------------------------------------- controller


async def _pass(kube: FakeKube, controller: TrainingJobController, name: str) -> float | None:
    obj = await kube.get(*TJ, name, "team")
    assert obj is not None
    return await controller.reconcile(obj)


async def _queued(names: list[str]) -> tuple[FakeKube, TrainingJobController]:
    """`names` in order, each one pass, on two nodes of 8 GPUs: the first (2 x 8) takes both, the rest
    wait for it, the same shape."""
    kube = FakeKube()
    kube.nodes(2)
    controller = TrainingJobController(cast(Kube, kube), kube.caches(), OperatorConfig(resync_seconds=1))
    for name in names:
        kube.add(_in("team", _trainingjob(name)))
        await _pass(kube, controller, name)
    return kube, controller


HEAD, NEXT, LAST = ("team", "q0"), ("team", "q1"), ("team", "q2")


async def test_a_gang_asleep_behind_a_like_one_is_not_rechecked_and_wakes_when_that_one_is_deleted() -> None:
    kube, controller = await _queued(["big", "q0", "q1", "q2"])
    assert controller._waiting.woken() == {HEAD}
    assert set(controller.wakes()) == set(), "each had its own pass: nobody to wake"
    assert await _pass(kube, controller, "q0") is not None, "the head is rechecked"
    assert await _pass(kube, controller, "q2") is None, "a gang asleep behind a like one is not"

    await controller.forget(*HEAD)  # the runtime's pass of a deleted object
    assert set(controller.wakes()) == {NEXT}
    assert set(controller.wakes()) == set(), "named once"


async def test_a_head_that_stops_being_a_gang_wakes_the_next() -> None:
    """A pass that leaves the queue by any way but admission (here: `policy.gang: false`, created at
    once, Pending) still ends its waiting: the next gang is named after the pass."""
    kube, controller = await _queued(["big", "q0", "q1"])
    head = await kube.get(*TJ, "q0", "team")
    assert head is not None
    head["spec"]["policy"] = {**head["spec"]["policy"], "gang": False}
    head["metadata"]["generation"] = 2
    await controller.reconcile(head)
    assert HEAD not in controller._waiting
    assert set(controller.wakes()) == {NEXT}


async def test_a_priority_class_change_wakes_every_waiting_gang() -> None:
    """Queue order is by priority: a class created (or removed) reorders the waiting gangs, asleep or not."""
    _, controller = await _queued(["big", "q0", "q1", "q2"])
    [by_class] = [w for w in controller.watches if w.kind.kind == "PriorityClass"]
    assert set(by_class.mapper(None, {"metadata": {"name": "high"}, "value": 1000})) == {HEAD, NEXT, LAST}


def test_a_gang_that_joins_the_woken_without_a_pass_of_its_own_is_announced_once() -> None:
    waiting = WaitingGangs()
    first, like = ("a", "first"), ("a", "like")
    waiting.add(first, _gang(0, 2))
    waiting.add(like, _gang(1, 2))
    assert waiting.woken() == {first}
    assert waiting.newly_woken() == set(), "both just had their pass"
    waiting.discard(first)  # admitted
    assert waiting.newly_woken() == {like}
    assert waiting.newly_woken() == set()
    with waiting.passing(like):
        waiting.add(like, _gang(1, 2))  # its pass: still waiting, unchanged
    assert waiting.woken() == {like}
    assert waiting.newly_woken() == set()


async def test_gangs_whose_objective_chooses_their_gpu_sleep_behind_nobody() -> None:
    """The product such a gang asks for is chosen from the cluster at its own pass: a like gang's choice,
    made earlier, may not be this one's now."""
    kube, controller = await _queued(["big"])
    for name in ("c0", "c1"):
        job = _in("team", _trainingjob(name))
        del job["spec"]["resources"]["gpuType"]
        kube.add(job)
        await _pass(kube, controller, name)
    gangs = controller._waiting._gangs
    chosen = gangs[("team", "c0")]
    assert chosen is not None
    assert chosen.shape[2], "the objective chose a product"
    assert {("team", "c0"), ("team", "c1")} <= controller._waiting.woken()


def test_a_pass_that_fails_leaves_the_gang_waiting_as_it_was() -> None:
    waiting = WaitingGangs()
    waiting.add(("a", "head"), _gang(0, 2))
    with pytest.raises(RuntimeError), waiting.passing(("a", "head")):
        raise RuntimeError("the API server refused a write")
    assert waiting.woken() == {("a", "head")}
    with waiting.passing(("a", "head")):
        pass  # a pass that did not keep it
    assert waiting.woken() == set()


# ------------------------------------------- room given back that no capacity event reports (waking)


def _admitted(phase: str = "Pending", *, elastic: bool = False, deleting: bool = False) -> Obj:
    meta: Obj = {"name": "big", "namespace": "team"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {"elastic": {"minWorkers": 1, "maxWorkers": 4}} if elastic else {},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Admitted", "status": "True", "reason": "GangAdmitted"}],
        },
    }


def _queued_again() -> Obj:
    obj = _admitted("Queued")
    obj["status"]["conditions"] = [{"type": "Admitted", "status": "False", "reason": "ScheduleTimeout"}]
    return obj


@pytest.mark.parametrize(
    ("old", "new", "gave_back"),
    [
        pytest.param(_admitted(), None, True, id="deleted while Pending"),
        pytest.param(_admitted(), _admitted(deleting=True), True, id="being deleted (foreground)"),
        pytest.param(_admitted(), _admitted("Suspended"), True, id="suspended"),
        pytest.param(_admitted(), _admitted("Failed"), True, id="failed while Pending"),
        pytest.param(_admitted(), _queued_again(), True, id="schedule timeout: queued again"),
        pytest.param(_admitted(), _admitted(), False, id="still holding"),
        pytest.param(_admitted(), _admitted("Running"), False, id="running: its pods hold the GPUs now"),
        pytest.param(_admitted("Running", elastic=True), None, True, id="growing elastic job deleted"),
        pytest.param(
            _admitted("Running", elastic=True),
            _admitted("Running", elastic=True, deleting=True),
            True,
            id="growing elastic job being deleted",
        ),
        pytest.param(_admitted("Running"), None, False, id="a running gang's pods report it themselves"),
        pytest.param(_queued_again(), None, False, id="a queued gang held nothing"),
        pytest.param(None, _admitted(), False, id="created"),
    ],
)
def test_gave_back_admission(old: Obj | None, new: Obj | None, gave_back: bool) -> None:
    assert gangs.gave_back_admission(old, new) is gave_back


async def test_an_admitted_gang_deleted_before_its_workers_run_lets_the_head_of_the_queue_in() -> None:
    """`big` holds both nodes for workers that never got pods; nothing else changes. Deleting it used to
    leave the queue asleep until its 60 s recheck: no pod freed anything."""
    kube, controller = await _queued(["big", "q0", "q1"])
    big = await kube.get(*TJ, "big", "team")
    assert big is not None
    assert gangs.holds_admission(big)
    [by_job] = [w for w in controller.watches if w.kind.kind == "TrainingJob"]
    await kube.delete(*TJ, "big", "team")
    assert set(by_job.mapper(big, None)) == {HEAD}, "the deletion's watch event wakes the head"
    # That pass may come before the runtime's pass of the deleted object, which forgets this process's
    # own record of the admission: then the head still counts it, and the forgetting wakes it again.
    await _pass(kube, controller, "q0")
    assert HEAD in controller._waiting
    await controller.forget("team", "big")
    assert HEAD in set(controller.wakes())
    await _pass(kube, controller, "q0")
    assert HEAD not in controller._waiting, "admitted"
    assert set(controller.wakes()) == {NEXT}


async def test_an_admitted_gang_suspended_before_its_workers_run_wakes_the_queue() -> None:
    kube, controller = await _queued(["big", "q0"])
    before = await kube.get(*TJ, "big", "team")
    assert before is not None
    kube.objects[(*TJ, "team", "big")]["spec"]["suspend"] = True
    kube.objects[(*TJ, "team", "big")]["metadata"]["generation"] = 2
    await _pass(kube, controller, "big")
    after = await kube.get(*TJ, "big", "team")
    [by_job] = [w for w in controller.watches if w.kind.kind == "TrainingJob"]
    assert set(by_job.mapper(before, after)) == {HEAD}
    await _pass(kube, controller, "q0")
    assert HEAD not in controller._waiting, "admitted"


def _gpu_pod(**spec: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "elsewhere", "uid": "p"},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"nvidia.com/gpu": "8"}}}], **spec},
        "status": {"phase": "Pending"},
    }


async def test_an_unbound_gpu_pod_deleted_wakes_the_queue() -> None:
    """Admission counts a GPU pod the scheduler has not placed yet as taking room (wherever it may land);
    its deletion gives that room back, with no node in its last state."""
    _, controller = await _queued(["big", "q0"])
    assert HEAD in set(controller._pod_keys(_gpu_pod(), None))
    assert HEAD in set(controller._pod_keys(_gpu_pod(nodeName="h100-0"), None)), "bound, as before"
    finished = {**_gpu_pod(), "status": {"phase": "Failed"}}
    assert HEAD not in set(controller._pod_keys(finished, None)), "it held nothing any more"
    cpu_only = {**_gpu_pod(), "spec": {"containers": [{"name": "c"}]}}
    assert HEAD not in set(controller._pod_keys(cpu_only, None))


async def test_an_admitted_gang_being_deleted_gives_this_processs_record_of_it_back_at_once() -> None:
    """A finalizer (another controller's, or foreground deletion waiting for the pods) keeps a deleted
    gang for a while: its pass must drop the admission this process recorded, or the head, woken by the
    deletion, still counts it until the object is gone."""
    kube, controller = await _queued(["big", "q0"])
    kube.objects[(*TJ, "team", "big")]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    await _pass(kube, controller, "big")
    assert HEAD in set(controller.wakes())
    await _pass(kube, controller, "q0")
    assert HEAD not in controller._waiting, "admitted"


async def test_a_gang_admitted_by_another_pass_whose_status_is_not_cached_yet_is_counted_once() -> None:
    """Two woken gangs pass at once: `a`'s pass admits it and awaits its writes, so the cache still
    shows it Queued when `b`'s pass runs. `b` used to count it twice (admitted, and queued ahead), be
    refused although there was room for both, and wait for the next recheck: `a`'s admission wakes
    nobody."""
    kube = FakeKube()
    kube.nodes(2)
    controller = TrainingJobController(cast(Kube, kube), kube.caches(), OperatorConfig(resync_seconds=1))
    kube.add(_in("team", _trainingjob("big")))  # 2 x 8: both nodes
    await _pass(kube, controller, "big")
    for name in ("a", "b"):  # 2 x 4 each
        kube.add(_in("team", _trainingjob(name, resources={"gpus": 4, "gpuType": "H100"})))
        await _pass(kube, controller, name)
    await kube.delete(*TJ, "big", "team")
    await controller.forget("team", "big")
    queued = copy.deepcopy(kube.objects[(*TJ, "team", "a")])
    assert queued["status"]["phase"] == "Queued"
    await _pass(kube, controller, "a")
    assert "team/a" in controller._reserved
    kube.objects[(*TJ, "team", "a")] = queued  # its status write not in the cache yet
    await _pass(kube, controller, "b")
    assert ("team", "b") not in controller._waiting, "admitted: 8 of the 16 GPUs are still free"


FIRST, SMALL = ("a", "first"), ("a", "small")


def _two_shapes_woken() -> WaitingGangs:
    """`first` (4 x 8 GPUs) and `small` (2 x 4, behind it): both woken, both just had their pass."""
    waiting = WaitingGangs()
    waiting.add(FIRST, _gang(0, 4, gpus=8))
    waiting.add(SMALL, _gang(1, 2, gpus=4))
    assert waiting.woken() == {FIRST, SMALL}
    assert waiting.newly_woken() == set()
    return waiting


def test_a_queued_gang_changed_while_it_waits_wakes_the_gangs_it_was_ahead_of() -> None:
    """`first` asks for fewer workers (or a lower priority): `small`, of another shape, counted its old
    demand ahead of it."""
    waiting = _two_shapes_woken()
    with waiting.passing(FIRST):
        waiting.add(FIRST, _gang(0, 1, gpus=8))
    assert waiting.newly_woken() == {FIRST, SMALL}
    with waiting.passing(FIRST):
        waiting.add(FIRST, _gang(0, 1, gpus=8))  # unchanged: nothing to say
    assert waiting.newly_woken() == set()


def test_a_gang_admitted_frees_nothing_for_the_gangs_behind_it() -> None:
    """Its demand moves from ahead of them to admitted; its pods binding are the events that wake them."""
    waiting = _two_shapes_woken()
    with waiting.passing(FIRST):
        waiting.admitted(FIRST)
    assert FIRST not in waiting
    assert waiting.newly_woken() == set()


def test_a_queued_gang_of_another_shape_leaving_wakes_the_gangs_it_was_ahead_of() -> None:
    """Both were woken and had their pass; `small` did not fit because `first` was ahead of it. When
    `first` leaves the queue, `small` is not new to the woken ones, but must look again all the same."""
    waiting = _two_shapes_woken()
    waiting.discard(FIRST)
    assert waiting.newly_woken() == {SMALL}
    assert waiting.newly_woken() == set(), "once"
    waiting.add(("a", "growing"))  # an elastic job waiting for room: always woken, never ahead of anyone
    waiting.newly_woken()
    waiting.discard(("a", "growing"))
    assert waiting.newly_woken() == set()


def test_a_fleet_in_a_rollout_is_woken_when_a_gang_gives_back_gpus_its_workers_never_got() -> None:
    """A surge waiting for room counts admitted gangs' unplaced workers too."""
    fleets = fleet_controller(FleetKube())
    [by_job] = [w for w in fleets.watches if w.kind.kind == "TrainingJob"]
    assert set(by_job.mapper(_admitted(), None)) == set(), "no fleet waits"
    fleets._waiting.add(("team", "serving"))
    assert set(by_job.mapper(_admitted(), None)) == {("team", "serving")}
    assert set(by_job.mapper(_admitted(), _admitted())) == set()
