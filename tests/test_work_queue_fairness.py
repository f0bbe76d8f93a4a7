"""A tenant in bad faith against operator time: a burst of one namespace's objects in the work queue.

A thousand new fleets of one namespace each wait a second or two on their Service in their first pass
(the API server allocates ClusterIPs one at a time). In one first-in-first-out line, a fleet another
namespace created a moment later, or an existing fleet's autoscaler decision, waited behind all of them:
minutes in the scale benchmark. The work queue now keeps a lane per namespace and serves them
round-robin; within a namespace, the first passes of objects just created take turns with the rest."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from hypothesis import given
from hypothesis import strategies as st

from kubeforge.controllers.runtime import Key, Lanes, WorkQueue


async def _drain(queue: WorkQueue) -> list[Key]:
    served = []
    while len(queue):
        key = await queue.get()
        served.append(key)
        queue.done(key)
    return served


async def test_another_namespaces_key_waits_behind_one_key_of_a_burst_not_the_whole_burst() -> None:
    queue = WorkQueue("test")
    for i in range(1000):
        queue.add(("burst", f"fleet-{i:04d}"))
    queue.add(("other", "fleet"))
    served = await _drain(queue)
    assert served.index(("other", "fleet")) == 1
    assert [k for k in served if k[0] == "burst"] == [("burst", f"fleet-{i:04d}") for i in range(1000)]
    await queue.shutdown()


async def test_an_existing_objects_timer_is_served_within_a_round_of_the_namespaces_waiting() -> None:
    """An autoscaler's requeue (a timer's normal add) while three namespaces each have a burst queued."""
    queue = WorkQueue("test")
    for ns in ("a", "b", "c"):
        for i in range(100):
            queue.add((ns, f"new-{i}"))
    for _ in range(10):
        key = await queue.get()
        queue.done(key)
    queue.add(("serving", "fleet"))
    position = (await _drain(queue)).index(("serving", "fleet"))
    assert position <= 3, position
    await queue.shutdown()


async def test_an_existing_objects_event_waits_behind_one_new_object_of_its_own_namespace() -> None:
    """A fleet whose Deployment just became available, in the namespace that is creating a thousand
    fleets: its pass used to come after every first pass queued before it."""
    queue = WorkQueue("test")
    for i in range(1000):
        queue.add(("team", f"new-{i:04d}"), created=True)
    for _ in range(10):
        key = await queue.get()
        queue.done(key)
    queue.add(("team", "serving"))
    served = await _drain(queue)
    assert served.index(("team", "serving")) <= 1
    rest = [("team", f"new-{i:04d}") for i in range(10, 1000)]
    assert [k for k in served if k != ("team", "serving")] == rest
    await queue.shutdown()


async def test_a_burst_of_creations_still_gets_every_other_turn_against_its_namespaces_busy_objects() -> None:
    """Existing objects that keep asking for passes (say, autoscalers requeued on every pass) do not stop
    the namespace's new objects from being served."""
    queue = WorkQueue("test")
    for i in range(100):
        queue.add(("team", f"new-{i}"), created=True)
    for i in range(20):
        queue.add(("team", f"busy-{i}"))
    served = []
    for _ in range(100):
        key = await queue.get()
        served.append(key)
        queue.done(key)
        if key[1].startswith("busy-"):
            queue.add(key)  # back at once
    assert sum(1 for k in served if k[1].startswith("new-")) == 50
    await queue.shutdown()


async def test_a_new_objects_later_events_are_its_namespaces_ordinary_keys() -> None:
    """Only the first pass of a new object is in the new objects' lane: an event that arrives while it is
    processed (its Deployment created) brings it back as any other key."""
    queue = WorkQueue("test")
    queue.add(("team", "a"), created=True)
    first = await queue.get()
    queue.add(("team", "b"), created=True)
    queue.add(("team", "a"))
    queue.done(first)
    queue.add(("team", "c"), created=True)
    assert await _drain(queue) == [("team", "a"), ("team", "b"), ("team", "c")]
    await queue.shutdown()


async def test_low_priority_keys_are_fair_across_namespaces_too_and_still_wait_behind_normal_ones() -> None:
    queue = WorkQueue("test", low_workers=1)
    for i in range(50):
        queue.add(("converged", f"f-{i}"), low=True)
    queue.add(("quiet", "f"), low=True)
    queue.add(("changed", "f"))
    served = await _drain(queue)
    assert served[0] == ("changed", "f")
    assert served.index(("quiet", "f")) == 2
    await queue.shutdown()


async def test_a_key_moved_up_leaves_its_low_lane_and_joins_its_namespaces_normal_lane() -> None:
    queue = WorkQueue("test")
    queue.add(("a", "x"), low=True)
    queue.add(("a", "y"))
    queue.add(("a", "x"))  # a real event: moved up, behind y in namespace a's lane
    assert len(queue) == 2
    assert await _drain(queue) == [("a", "y"), ("a", "x")]
    await queue.shutdown()


KEY = st.tuples(st.sampled_from(["a", "b", "c", "", "d"]), st.sampled_from([f"o{i}" for i in range(8)]))


@given(st.lists(st.tuples(KEY, st.booleans()), max_size=60))
def test_lanes_serve_each_key_once_fifo_within_a_lane_and_round_robin_across(
    pushes: list[tuple[Key, bool]],
) -> None:
    lanes = Lanes()
    for key, created in pushes:
        lanes.push(key, created=created)
    lane_of: dict[Key, bool] = {}
    for key, created in pushes:
        lane_of.setdefault(key, created)  # a key already waiting stays in the lane it is in
    unique = list(lane_of)
    assert len(lanes) == len(unique)
    served = []
    while lanes:
        served.append(lanes.pop())
    assert sorted(served) == sorted(unique), "each key once"
    by_ns: dict[str, list[Key]] = defaultdict(list)
    for key in unique:
        by_ns[key[0]].append(key)
    for ns, keys in by_ns.items():
        for created in (False, True):
            lane = [k for k in keys if lane_of[k] == created]
            assert [k for k in served if k in lane] == lane, "first in, first out within a lane"
        # Within a namespace the two lanes alternate while both have keys, the existing objects first.
        mine = [lane_of[k] for k in served if k[0] == ns]
        both = min(mine.count(True), mine.count(False))
        assert mine[: 2 * both] == [False, True] * both
    # Round-robin: the n-th key of a namespace is served within n rounds of every namespace.
    namespaces = len(by_ns)
    for ns in by_ns:
        for n, key in enumerate(k for k in served if k[0] == ns):
            assert served.index(key) < (n + 1) * namespaces


@given(st.lists(st.tuples(KEY, st.booleans()), max_size=60), st.data())
def test_lanes_remove_leaves_the_rest_in_order(pushes: list[tuple[Key, bool]], data: st.DataObject) -> None:
    lanes = Lanes()
    for key, created in pushes:
        lanes.push(key, created=created)
    unique = list(dict.fromkeys(key for key, _ in pushes))
    gone = set(data.draw(st.lists(st.sampled_from(unique), max_size=len(unique))) if unique else [])
    for key in gone:
        lanes.remove(key)
        lanes.remove(key)  # twice: no effect
        assert key not in lanes
    assert len(lanes) == len(unique) - len(gone)
    served = []
    while lanes:
        served.append(lanes.pop())
    assert sorted(served) == sorted(k for k in unique if k not in gone)


async def test_a_low_key_is_not_starved_by_a_steady_stream_of_normal_ones() -> None:
    """An owner listed converged whose worker failed while no operator ran waits at low priority; a
    tenant that keeps creating objects must not keep it waiting for ever: after `low_max_wait` it is
    served as a normal key, in its namespace's lane."""
    queue = WorkQueue("test", low_max_wait=0.2)
    queue.add(("other", "failed-worker"), low=True)
    served: list[Key] = []
    for i in range(200):
        queue.add(("burst", f"new-{i}"))
        key = await queue.get()
        served.append(key)
        queue.done(key)
        if key == ("other", "failed-worker"):
            break
        await asyncio.sleep(0.005)
    assert ("other", "failed-worker") in served
    assert 10 < len(served) < 150, len(served)
    await queue.shutdown()


async def test_a_low_key_that_ages_while_the_low_workers_are_busy_goes_to_an_idle_worker() -> None:
    queue = WorkQueue("test", low_workers=1, low_max_wait=0.1)
    queue.add(("ns", "slow"), low=True)
    busy = await queue.get()  # a low pass that takes its time (say, a Prometheus read)
    queue.add(("ns", "waiting"), low=True)
    idle = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0.02)
    assert not idle.done(), "the one low slot is taken"
    assert (await asyncio.wait_for(idle, timeout=1.0)) == ("ns", "waiting")
    queue.done(("ns", "waiting"))
    queue.done(busy)
    await queue.shutdown()


async def test_a_worker_cancelled_while_it_waits_does_not_swallow_a_wake() -> None:
    queue = WorkQueue("test", low_workers=1, low_max_wait=5.0)
    queue.add(("ns", "low"), low=True)
    busy = await queue.get()
    gone = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0.01)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    waiting = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0.01)
    queue.add(("ns", "changed"))
    assert (await asyncio.wait_for(waiting, timeout=1.0)) == ("ns", "changed")
    queue.done(busy)
    await queue.shutdown()


async def test_keys_listed_low_while_standing_by_do_not_all_age_up_at_the_takeover() -> None:
    """A standby's listing put its converged objects at low priority when it synced, perhaps weeks
    before it leads. Their wait at low priority counts from the takeover: otherwise the first `get()`
    moved them all up at once, and an object created just after the takeover waited behind every one."""
    queue = WorkQueue("test", low_workers=1, low_max_wait=0.3)
    for i in range(60):
        queue.add((f"ns-{i:02d}", "converged"), low=True)
    await asyncio.sleep(0.5)  # standing by
    queue.start_clock()
    first = await queue.get()  # nothing else waits: a low key
    queue.add(("new", "fleet"))
    assert await queue.get() == ("new", "fleet")
    queue.done(first)
    await queue.shutdown()
