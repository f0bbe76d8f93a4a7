"""The shared reconcile runtime: the work queue's guarantees (one pass per key at a time, coalescing,
earliest requeue wins, backoff), the worker bound, and forgetting deleted objects. Driven through a real
`Informer` store, the way watch events reach it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kubeforge.controllers.runtime import (
    OperatorConfig,
    Runtime,
    Watch,
    WorkQueue,
    label_keys,
    listed_converged,
    owner_keys,
    status_only,
)
from kubeforge.kube.client import NotOursError
from kubeforge.kube.informer import Caches, Informer, Obj, Source
from kubeforge.kube.kinds import POD, TRAININGJOB, Kind
from kubeforge.kube.projections import owned_resource, pod
from kubeforge.metrics import exposition


def trainingjob(name: str, namespace: str = "ns") -> Obj:
    return {
        "apiVersion": TRAININGJOB.api_version,
        "kind": TRAININGJOB.kind,
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "resourceVersion": "1"},
        "spec": {},
    }


class RecordingController:
    kind: Kind = TRAININGJOB

    def __init__(self, *, fail_times: int = 0, delay: float = 0.0, requeue: float | None = None) -> None:
        self.passes: list[str] = []
        self.forgotten: list[tuple[str, str]] = []
        self.warnings: list[tuple[str, str]] = []
        self.not_ours = False
        self.fail_times = fail_times
        self.delay = delay
        self.requeue = requeue
        self.running = 0
        self.most_at_once = 0
        self.watches: tuple[Watch, ...] = (Watch(POD, label_keys("kubeforge.dev/trainingjob")),)
        self.woken: list[tuple[str, str]] = []

    async def reconcile(self, obj: Obj) -> float | None:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            self.passes.append(obj["metadata"]["name"])
            await asyncio.sleep(self.delay)
            if self.not_ours:
                raise NotOursError("Service ns/a exists and is not controlled by this object")
            if self.fail_times > 0:
                self.fail_times -= 1
                raise RuntimeError("boom")
            return self.requeue
        finally:
            self.running -= 1

    async def forget(self, namespace: str, name: str) -> None:
        self.forgotten.append((namespace, name))

    def wakes(self) -> list[tuple[str, str]]:
        woken, self.woken = self.woken, []
        return woken

    async def warn(self, obj: Obj, reason: str, message: str) -> None:
        self.warnings.append((obj["metadata"]["name"], reason))


def setup(controller: RecordingController, workers: int = 4) -> tuple[Caches, Informer, Runtime]:
    jobs = Informer(Any, Source(TRAININGJOB, owned_resource))  # type: ignore[arg-type]
    pods = Informer(Any, Source(POD, pod))  # type: ignore[arg-type]
    caches = Caches([jobs, pods])
    runtime = Runtime(caches, controller, OperatorConfig(max_concurrent_reconciles=workers))
    return caches, jobs, runtime


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


async def test_events_while_a_pass_runs_coalesce_into_one_more_pass() -> None:
    ctrl = RecordingController(delay=0.05)
    _, jobs, runtime = setup(ctrl)
    runtime.start()
    jobs._apply("ADDED", trainingjob("a"))
    await settle(0.01)
    for version in range(2, 12):  # ten changes while the first pass runs
        jobs._apply(
            "MODIFIED",
            {
                **trainingjob("a"),
                "metadata": {**trainingjob("a")["metadata"], "resourceVersion": str(version)},
                "status": {"observedGeneration": version},
            },
        )
    await settle(0.2)
    assert ctrl.passes == ["a", "a"]
    assert ctrl.most_at_once == 1, "one pass per object at a time"
    await runtime.stop()


async def test_workers_bound_concurrency_across_objects() -> None:
    ctrl = RecordingController(delay=0.05)
    _, jobs, runtime = setup(ctrl, workers=3)
    runtime.start()
    for i in range(10):
        jobs._apply("ADDED", trainingjob(f"j{i}"))
    await settle(0.4)
    assert sorted(ctrl.passes) == sorted(f"j{i}" for i in range(10))
    assert ctrl.most_at_once == 3
    await runtime.stop()


async def test_requeue_after_runs_the_object_again_and_failures_back_off() -> None:
    ctrl = RecordingController(requeue=0.05)
    _, jobs, runtime = setup(ctrl)
    runtime.start()
    jobs._apply("ADDED", trainingjob("a"))
    await settle(0.18)
    assert 3 <= len(ctrl.passes) <= 4
    await runtime.stop()

    failing = RecordingController(fail_times=2)
    _, jobs, runtime = setup(failing)
    runtime.start()
    jobs._apply("ADDED", trainingjob("b"))
    await settle(0.3)
    assert failing.passes == ["b"], "the first retry waits 0.5 s"
    await settle(0.4)
    assert failing.passes == ["b", "b"], "the second waits 1 s"
    await settle(1.0)
    assert failing.passes == ["b", "b", "b"]
    await runtime.stop()


async def test_a_deleted_object_is_forgotten_not_reconciled() -> None:
    ctrl = RecordingController()
    _, jobs, runtime = setup(ctrl)
    runtime.start()
    jobs._apply("ADDED", trainingjob("a"))
    await settle()
    jobs._apply("DELETED", trainingjob("a"))
    await settle()
    assert ctrl.passes == ["a"]
    assert ctrl.forgotten == [("ns", "a")]
    await runtime.stop()


async def test_child_events_map_to_their_owner() -> None:
    ctrl = RecordingController()
    caches, _, runtime = setup(ctrl)
    caches.informer(TRAININGJOB)._apply("ADDED", trainingjob("owner"))
    runtime.start()
    await settle()
    worker = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "owner-a0-0",
            "namespace": "ns",
            "resourceVersion": "5",
            "labels": {"app.kubernetes.io/managed-by": "kubeforge", "kubeforge.dev/trainingjob": "owner"},
        },
        "spec": {"containers": [{"name": "worker"}]},
        "status": {"phase": "Running"},
    }
    caches.informer(POD)._apply("ADDED", worker)
    await settle()
    assert ctrl.passes == ["owner", "owner"]
    await runtime.stop()


def _worker_of(owner: str, rv: int = 5, phase: str = "Running") -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{owner}-a0-0",
            "namespace": "ns",
            "resourceVersion": str(rv),
            "labels": {"app.kubernetes.io/managed-by": "kubeforge", "kubeforge.dev/trainingjob": owner},
        },
        "spec": {"containers": [{"name": "worker"}]},
        "status": {"phase": phase},
    }


def _converged(name: str) -> Obj:
    job = trainingjob(name)
    return {**job, "metadata": {**job["metadata"], "generation": 1}, "status": {"observedGeneration": 1}}


async def test_a_leader_taking_over_reconciles_the_object_created_meanwhile_before_the_converged_ones() -> (
    None
):
    """What a standby holds when it takes over: a thousand converged objects and their pods from its first
    lists, and one object created after the leader died (its pod came later, by a watch event). The
    children's listing used to queue every owner at normal priority, so the new object waited behind a
    pass of every other (3.5 s at a thousand fleets, on top of the Lease)."""
    ctrl = RecordingController()
    caches, jobs, runtime = setup(ctrl, workers=1)
    pods = caches.informer(POD)
    for i in range(50):
        jobs._apply("ADDED", _converged(f"old-{i:02d}"))
    pods.in_initial_list = True
    for i in range(50):
        pods._apply("ADDED", _worker_of(f"old-{i:02d}"))
    pods._apply("ADDED", _worker_of("unconverged"))
    pods.in_initial_list = False
    jobs.in_initial_list = True
    jobs._apply("ADDED", trainingjob("unconverged"))  # listed too, but not converged: real work
    jobs.in_initial_list = False
    jobs._apply("ADDED", trainingjob("new"))
    pods._apply("MODIFIED", _worker_of("old-07", rv=9, phase="Failed"))  # a watch event meanwhile
    assert len(runtime.queue._queue) == 3
    assert len(runtime.queue._low) == 49
    runtime.start()
    await settle(0.3)
    assert ctrl.passes[:3] == ["unconverged", "new", "old-07"]
    assert sorted(ctrl.passes[3:]) == sorted(f"old-{i:02d}" for i in range(50) if i != 7)
    await runtime.stop()


def _with_version(obj: Obj, rv: int) -> Obj:
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(rv)}}


async def test_a_standby_that_stood_by_for_long_reconciles_the_object_created_during_the_failover_first() -> (
    None
):
    """A standby's queue takes every event from its caches' sync to its takeover, weeks perhaps: objects
    created meanwhile (which the old leader converged) and every child event of the rest, all at normal
    priority. At takeover that is mostly work already done; the object created while the Lease was
    waited out must not wait behind it. The queue is settled as a fresh start's listing would be."""
    ctrl = RecordingController()
    caches, jobs, runtime = setup(ctrl, workers=1)
    pods = caches.informer(POD)
    jobs.in_initial_list = True
    for i in range(30):
        jobs._apply("ADDED", _converged(f"listed-{i:02d}"))
    jobs.in_initial_list = False
    for i in range(30):  # created while standing by; the leader converged each
        jobs._apply("ADDED", _with_version(trainingjob(f"week-{i:02d}"), 2))
        jobs._apply("MODIFIED", _with_version(_converged(f"week-{i:02d}"), 3))
    for i in range(30):  # the leader's pods came and went
        pods._apply("ADDED", _worker_of(f"listed-{i:02d}", rv=4))
    runtime.backlog_recent = 0.0  # all of that was long ago
    jobs._apply("ADDED", trainingjob("new"))  # the leader is gone: nobody reconciled it yet
    runtime.start()
    for _ in range(100):
        if len(ctrl.passes) >= 61:
            break
        await settle(0.05)
    assert ctrl.passes[0] == "new"
    assert sorted(ctrl.passes[1:]) == sorted(
        [f"listed-{i:02d}" for i in range(30)] + [f"week-{i:02d}" for i in range(30)]
    )
    await runtime.stop()


async def test_a_standbys_queue_time_counts_from_its_takeover() -> None:
    """`workqueue_queue_duration_seconds` is time waiting for a worker: a standby has none to wait for."""
    ctrl = RecordingController()
    _, jobs, runtime = setup(ctrl, workers=1)
    runtime.queue.name = "standby-clock"
    jobs._apply("ADDED", trainingjob("queued-while-standing-by"))
    await settle(0.5)  # standing by
    runtime.start()
    await settle()
    assert ctrl.passes == ["queued-while-standing-by"]
    waited = exposition.WORKQUEUE_QUEUE_SECONDS.labels("standby-clock")._sum.get()
    assert waited < 0.2, waited
    await runtime.stop()


async def test_an_object_first_seen_by_a_watch_event_takes_turns_with_its_namespaces_other_keys() -> None:
    """A TrainingJob created while a hundred others of its namespace wait for their first pass is a new
    object too; a pod event of an existing one waits behind one of them, not the hundred."""
    ctrl = RecordingController()
    caches, jobs, runtime = setup(ctrl, workers=1)
    jobs.in_initial_list = True
    jobs._apply("ADDED", trainingjob("listed"))  # the start's listing: not new, whatever its status
    jobs._apply("ADDED", _converged("old"))
    jobs.in_initial_list = False
    for i in range(100):
        jobs._apply("ADDED", trainingjob(f"new-{i:03d}"))
    caches.informer(POD)._apply("ADDED", _worker_of("old"))
    runtime.start()
    for _ in range(100):  # a loaded machine takes its time over the 102 passes
        if len(ctrl.passes) >= 102:
            break
        await settle(0.05)
    assert ctrl.passes[:4] == ["listed", "new-000", "old", "new-001"]
    await settle()
    assert len(ctrl.passes) == 102
    await runtime.stop()


def test_owner_keys_follow_owner_references_of_the_kind() -> None:
    child = {
        "metadata": {
            "namespace": "ns",
            "ownerReferences": [
                {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob", "name": "tj"},
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "other"},
            ],
        }
    }
    assert set(owner_keys(TRAININGJOB)(None, child)) == {("ns", "tj")}
    assert set(owner_keys(TRAININGJOB)(child, None)) == {("ns", "tj")}


async def test_delayed_adds_keep_the_earliest_time() -> None:
    queue = WorkQueue("test")
    queue.add_after(("ns", "a"), 5.0)
    queue.add_after(("ns", "a"), 0.02)
    queue.add_after(("ns", "a"), 3.0)
    key = await asyncio.wait_for(queue.get(), timeout=1.0)
    assert key == ("ns", "a")
    queue.done(key)
    await queue.shutdown()


@pytest.mark.parametrize("failures", [1, 2, 5, 30])
async def test_backoff_grows_and_is_capped(failures: int) -> None:
    queue = WorkQueue("test")
    delays = [queue.add_rate_limited(("ns", "a")) for _ in range(failures)]
    assert delays == sorted(delays)
    assert delays[0] == 0.5
    assert delays[-1] <= 300.0
    queue.forget(("ns", "a"))
    assert queue.add_rate_limited(("ns", "a")) == 0.5
    await queue.shutdown()


async def test_a_name_taken_by_another_owner_is_a_warning_on_the_object_and_is_retried() -> None:
    ctrl = RecordingController()
    ctrl.not_ours = True
    _, jobs, runtime = setup(ctrl)
    runtime.start()
    jobs._apply("ADDED", trainingjob("a"))
    await settle()
    assert ctrl.warnings == [("a", "NameConflict")]
    await settle(0.6)
    assert len(ctrl.passes) == 2, "retried with backoff"
    await runtime.stop()


async def test_low_priority_keys_wait_behind_normal_ones_and_move_up_on_a_normal_add() -> None:
    queue = WorkQueue("test")
    for i in range(3):
        queue.add(("ns", f"converged-{i}"), low=True)
    queue.add(("ns", "changed"))
    queue.add(("ns", "converged-2"))  # a real event for a key waiting at low priority
    queue.add(("ns", "converged-0"), low=True)  # already queued: nothing changes
    assert len(queue) == 4
    order = []
    for _ in range(4):
        key = await queue.get()
        order.append(key[1])
        queue.done(key)
    assert order == ["changed", "converged-2", "converged-0", "converged-1"]
    assert len(queue) == 0
    # A key moved up and processed leaves a stale low entry behind: it is skipped, never served twice.
    queue.add(("ns", "again"), low=True)
    queue.add(("ns", "again"))
    key = await queue.get()
    queue.done(key)
    queue.add(("ns", "other"), low=True)
    assert (await queue.get()) == ("ns", "other")
    assert len(queue) == 0


@pytest.mark.parametrize(
    ("old", "new", "low"),
    [
        (None, {"metadata": {"generation": 2}, "status": {"observedGeneration": 2}}, True),
        (None, {"metadata": {"generation": 3}, "status": {"observedGeneration": 2}}, False),
        (None, {"metadata": {"generation": 1}}, False),
        ({"metadata": {}}, {"metadata": {"generation": 2}, "status": {"observedGeneration": 2}}, False),
        ({"metadata": {"generation": 2}}, None, False),
    ],
)
def test_only_objects_listed_converged_wait_at_low_priority(
    old: Obj | None, new: Obj | None, low: bool
) -> None:
    assert listed_converged(old, new) is low


META: Obj = {"name": "f", "generation": 2, "resourceVersion": "7", "labels": {"a": "b"}}
FLEET: Obj = {"metadata": META, "spec": {"x": 1}}


@pytest.mark.parametrize(
    ("change", "low"),
    [
        ({"status": {"observedGeneration": 2}}, True),
        ({"metadata": {**META, "resourceVersion": "8"}, "status": {"phase": "Ready"}}, True),
        ({"metadata": {**META, "generation": 3}, "spec": {"x": 2}}, False),
        ({"metadata": {**META, "annotations": {"kubeforge.dev/preempt": "now"}}}, False),
        ({"metadata": {**META, "deletionTimestamp": "2026-12-02T00:00:00Z"}}, False),
    ],
    ids=["status", "status-new-version", "spec", "annotation", "deleted"],
)
def test_a_change_of_the_status_alone_waits_at_low_priority(change: Obj, low: bool) -> None:
    assert status_only(FLEET, {**FLEET, **change}) is low
    assert not status_only(None, FLEET)
    assert not status_only(FLEET, None)


async def test_a_low_add_while_the_key_is_processed_comes_back_at_low_priority() -> None:
    queue = WorkQueue("test")
    queue.add(("ns", "fleet"))
    key = await queue.get()
    queue.add(key, low=True)  # its own status write, seen while its pass runs
    queue.add(("ns", "changed"))
    queue.done(key)
    assert (await queue.get()) == ("ns", "changed"), "the pass with work to do goes first"
    queue.done(("ns", "changed"))
    assert (await queue.get()) == key
    queue.add(key, low=True)
    queue.add(key)  # and a real event for it while processed: back at normal priority
    queue.add(("ns", "other"))
    queue.done(key)
    assert [await queue.get(), await queue.get()] == [("ns", "other"), key]
    await queue.shutdown()


async def test_a_key_moved_up_leaves_nothing_behind_and_low_keys_keep_their_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue = WorkQueue("test")
    clock = [100.0]
    monkeypatch.setattr("kubeforge.controllers.runtime.time.monotonic", lambda: clock[0])
    queue.add(("ns", "a"), low=True)
    queue.add(("ns", "b"), low=True)
    for _ in range(1000):  # a fleet whose status writes are each followed by a real event
        queue.add(("ns", "a"))
        key = await queue.get()
        queue.add(key, low=True)
        queue.done(key)
    assert list(queue._low) == [("ns", "b"), ("ns", "a")], "nothing stale; b waited longer"
    assert len(queue) == 2
    # Moved up by a timer a minute later: it has waited for a worker since then, not since the low add.
    clock[0] += 60
    queue.add(("ns", "a"))
    assert queue._added_at[("ns", "a")] == 160.0
    assert (await queue.get()) == ("ns", "a")
    await queue.shutdown()


async def test_one_low_priority_key_at_a_time_while_normal_keys_go_past() -> None:
    queue = WorkQueue("test")
    queue.add(("ns", "low-a"), low=True)
    queue.add(("ns", "low-b"), low=True)
    first = await queue.get()
    assert first == ("ns", "low-a")
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0.01)
    assert not second.done(), "a second low key waits for the first to be done"
    queue.add(("ns", "changed"))
    assert (await asyncio.wait_for(second, timeout=1.0)) == ("ns", "changed")
    queue.done(("ns", "changed"))
    third = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0.01)
    assert not third.done()
    queue.done(first)
    assert (await asyncio.wait_for(third, timeout=1.0)) == ("ns", "low-b")
    await queue.shutdown()


async def test_a_worker_lets_the_event_loop_run_between_passes_that_never_wait() -> None:
    """Passes that need no I/O never suspend, and a key is handed out at once while others wait: a
    worker must still yield between passes, or a burst of them starves Lease renewals and watches."""
    log: list[str] = []

    class Busy(RecordingController):
        async def reconcile(self, obj: Obj) -> float | None:
            log.append("pass")
            return None

    async def ticker() -> None:
        while True:
            log.append("tick")
            await asyncio.sleep(0)

    _, jobs, runtime = setup(Busy(), workers=2)
    for i in range(40):
        jobs._apply("ADDED", trainingjob(f"j{i}"))
    ticking = asyncio.ensure_future(ticker())
    runtime.start()
    await settle(0.1)
    ticking.cancel()
    await runtime.stop()
    assert log.count("pass") == 40
    runs = "".join("p" if entry == "pass" else "." for entry in log).split(".")
    assert max(len(run) for run in runs) <= 2, "at most one pass per worker between two ticks"


async def test_objects_a_pass_wakes_get_a_pass_of_their_own() -> None:
    ctrl = RecordingController()
    _, jobs, runtime = setup(ctrl)
    runtime.start()
    jobs._apply("ADDED", trainingjob("b"))
    await settle()
    ctrl.passes.clear()
    ctrl.woken = [("ns", "b")]  # what a's pass will wake
    jobs._apply("ADDED", trainingjob("a"))
    await settle(0.2)
    assert sorted(ctrl.passes) == ["a", "b"]
    await runtime.stop()
