"""A tenant in bad faith against operator time: a burst of one namespace's objects in the work queue.

A thousand new fleets of one namespace each wait a second or two on their Service in their first pass
(the API server allocates ClusterIPs one at a time). In one first-in-first-out line, a fleet another
namespace created a moment later, or an existing fleet's autoscaler decision, waited behind all of them:
minutes in the scale benchmark. The work queue now keeps a lane per namespace and serves them
round-robin."""

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


KEYS = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", "", "d"]), st.sampled_from([f"o{i}" for i in range(8)])),
    max_size=60,
)


@given(KEYS)
def test_lanes_serve_each_key_once_fifo_within_a_namespace_and_round_robin_across(keys: list[Key]) -> None:
    lanes = Lanes()
    for key in keys:
        lanes.push(key)
    unique = list(dict.fromkeys(keys))
    assert len(lanes) == len(unique)
    served = []
    while lanes:
        served.append(lanes.pop())
    assert sorted(served) == sorted(unique), "each key once"
    by_ns: dict[str, list[Key]] = defaultdict(list)
    for key in unique:
        by_ns[key[0]].append(key)
    for ns, order in by_ns.items():
        assert [k for k in served if k[0] == ns] == order, "first in, first out within a namespace"
    # Round-robin: the n-th key of a namespace is served within n rounds of every namespace.
    namespaces = len(by_ns)
    for order in by_ns.values():
        for n, key in enumerate(order):
            assert served.index(key) < (n + 1) * namespaces


@given(KEYS, st.data())
def test_lanes_remove_leaves_the_rest_in_order(keys: list[Key], data: st.DataObject) -> None:
    lanes = Lanes()
    for key in keys:
        lanes.push(key)
    unique = list(dict.fromkeys(keys))
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
