"""Leader election on a Lease, driven by virtual time against an in-memory API server.

The fake API server enforces optimistic concurrency (409 on a stale resourceVersion or a second
create) and checks the shape of every Lease written. Each elector has its own clock view over one
virtual timeline (its own monotonic origin and wall-clock skew), so "after a lease duration on the
standby's own clock" is checked exactly, and no test sleeps for real beyond a few milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import heapq
import itertools
import logging
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from types import TracebackType
from typing import Any

import pytest

from kubeforge.kube.leader import (
    LeaderElectionConfig,
    LeaderElector,
    LeaseClient,
    LeaseConflict,
    default_identity,
    micro_time,
)

Obj = dict[str, Any]

NS = "kubeforge-system"
NAME = "kubeforge"
T0 = datetime(2026, 12, 1, 8, 0, 0, tzinfo=UTC)
MICRO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
# Event-loop turns given to the electors after each wake-up; one acquire/renew takes about a dozen.
SETTLE_TURNS = 60

LEASE = 15.0
RENEW = 10.0
RETRY = 2.0


# --- virtual time ------------------------------------------------------------------------------


class FakeTime:
    """One virtual timeline. Sleepers wake in deadline order, only when the test advances time."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), next(self._seq), future))
        await future

    async def settle(self) -> None:
        for _ in range(SETTLE_TURNS):
            await asyncio.sleep(0)

    def _wake_next(self) -> None:
        when, _, future = heapq.heappop(self._sleepers)
        if not future.done():  # cancelled sleepers (timers of finished calls) are skipped
            self.now = when
            future.set_result(None)

    async def advance(self, seconds: float, check: Callable[[], None] | None = None) -> None:
        target = self.now + seconds
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            self._wake_next()
            await self.settle()
            if check is not None:
                check()
        self.now = target
        await self.settle()

    async def run_until(self, condition: Callable[[], bool], within: float) -> float:
        """Advance wake-up by wake-up until `condition` holds; the virtual time it first held."""
        limit = self.now + within
        await self.settle()
        while not condition():
            if not self._sleepers or self._sleepers[0][0] > limit:
                raise AssertionError(f"condition not met within {within}s (now {self.now}s)")
            self._wake_next()
            await self.settle()
        return self.now


@dataclass
class FakeClock:
    """One elector's view of the timeline: its own monotonic origin and a skewed wall clock."""

    time: FakeTime
    mono_offset: float = 0.0
    wall_offset: timedelta = timedelta(0)

    def monotonic(self) -> float:
        return self.time.now + self.mono_offset

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.time.now) + self.wall_offset

    async def sleep(self, seconds: float) -> None:
        await self.time.sleep(seconds)


# --- the in-memory API server ------------------------------------------------------------------


def check_lease(body: Obj) -> None:
    """What the real API server would refuse, plus the formats kubectl and client-go expect."""
    assert body["apiVersion"] == "coordination.k8s.io/v1"
    assert body["kind"] == "Lease"
    assert (body["metadata"]["namespace"], body["metadata"]["name"]) == (NS, NAME)
    spec = body["spec"]
    assert isinstance(spec["holderIdentity"], str)
    assert type(spec["leaseDurationSeconds"]) is int
    assert spec["leaseDurationSeconds"] >= 1
    assert type(spec["leaseTransitions"]) is int
    assert spec["leaseTransitions"] >= 0
    for key in ("acquireTime", "renewTime"):
        assert MICRO_TIME.match(spec[key]), spec[key]


class FakeApiServer:
    """One Lease with resourceVersion-based optimistic concurrency."""

    def __init__(self, time: FakeTime) -> None:
        self.time = time
        self.lease: Obj | None = None
        self.version = 0
        self.writes: list[tuple[float, Obj]] = []  # (virtual time, spec written)
        self.create_conflicts = 0

    def _store(self, body: Obj) -> Obj:
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.lease = stored
        self.writes.append((self.time.now, copy.deepcopy(stored["spec"])))
        return copy.deepcopy(stored)

    def get(self) -> Obj | None:
        return copy.deepcopy(self.lease)

    def create(self, body: Obj) -> Obj:
        check_lease(body)
        assert "resourceVersion" not in body["metadata"]
        if self.lease is not None:
            self.create_conflicts += 1
            raise LeaseConflict("leases.coordination.k8s.io already exists")
        return self._store(body)

    def replace(self, body: Obj) -> Obj:
        check_lease(body)
        if self.lease is None:
            raise LookupError("404: lease not found")
        if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise LeaseConflict("the object has been modified")
        return self._store(body)

    def seed(self, **spec: Any) -> None:
        self._store(
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"namespace": NS, "name": NAME, "labels": {"seeded": "yes"}},
                "spec": spec,
            }
        )

    def touch(self) -> None:
        """A metadata-only write by someone else (a label): a new resourceVersion, same record."""
        assert self.lease is not None
        self.version += 1
        self.lease["metadata"]["labels"] = {"touched": str(self.version)}
        self.lease["metadata"]["resourceVersion"] = str(self.version)

    def spec(self) -> Obj:
        assert self.lease is not None
        spec: Obj = self.lease["spec"]
        return spec


class FakeLeaseClient:
    """One replica's connection to the fake server; it can fail, hang or be handed 409s."""

    def __init__(self, server: FakeApiServer) -> None:
        self.server = server
        self.failing = False
        self.hanging = False
        self.injected_conflicts = 0
        self.conflicts = 0

    async def _network(self) -> None:
        await asyncio.sleep(0)  # a real call yields to the event loop
        if self.hanging:
            await asyncio.Event().wait()
        if self.failing:
            raise ConnectionError("connection refused")

    async def get_lease(self, namespace: str, name: str) -> Obj | None:
        await self._network()
        assert (namespace, name) == (NS, NAME)
        return self.server.get()

    async def create_lease(self, body: Obj) -> Obj:
        await self._network()
        try:
            return self.server.create(body)
        except LeaseConflict:
            self.conflicts += 1
            raise

    async def replace_lease(self, body: Obj) -> Obj:
        await self._network()
        if self.injected_conflicts:
            self.injected_conflicts -= 1
            self.conflicts += 1
            raise LeaseConflict("injected")
        try:
            return self.server.replace(body)
        except LeaseConflict:
            self.conflicts += 1
            raise


# --- harness -----------------------------------------------------------------------------------


@dataclass
class Node:
    elector: LeaderElector
    client: FakeLeaseClient
    changes: list[bool] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    @property
    def identity(self) -> str:
        return self.elector.identity


class Harness:
    def __init__(self) -> None:
        self.time = FakeTime()
        self.server = FakeApiServer(self.time)
        self.nodes: list[Node] = []

    def node(
        self,
        identity: str,
        *,
        rand: float = 0.5,
        mono_offset: float = 0.0,
        wall_offset: timedelta = timedelta(0),
        on_change: Callable[[bool], None] | None = None,
    ) -> Node:
        client = FakeLeaseClient(self.server)
        changes: list[bool] = []
        config = LeaderElectionConfig(
            namespace=NS,
            name=NAME,
            identity=identity,
            lease_duration=LEASE,
            renew_deadline=RENEW,
            retry_period=RETRY,
        )
        elector = LeaderElector(
            client,
            config,
            on_change=on_change or changes.append,
            clock=FakeClock(self.time, mono_offset, wall_offset),
            rand=lambda: rand,
        )
        node = Node(elector, client, changes)
        self.nodes.append(node)
        return node

    def start(self, *nodes: Node) -> None:
        for node in nodes:
            node.task = asyncio.create_task(node.elector.run())

    async def crash(self, node: Node) -> None:
        """The process dies: it stops renewing and releases nothing."""
        assert node.task is not None
        node.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await node.task

    def leaders(self) -> list[str]:
        return [n.identity for n in self.nodes if n.elector.is_leader]

    def last_write_by(self, identity: str) -> float:
        return max(t for t, spec in self.server.writes if spec["holderIdentity"] == identity)

    async def __aenter__(self) -> Harness:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        tasks = [n.task for n in self.nodes if n.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_fake_client_satisfies_the_protocol() -> None:
    client: LeaseClient = FakeLeaseClient(FakeApiServer(FakeTime()))
    assert client is not None


# --- acquiring ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "transitions"),
    [
        (None, 0),
        ({"holderIdentity": "", "leaseDurationSeconds": 1, "leaseTransitions": 3}, 4),
        ({}, 1),
        ({"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 5}, 5),
    ],
    ids=["no-lease", "released-lease", "lease-without-spec", "held-by-ourselves"],
)
async def test_acquires_a_free_lease_at_once(seed: Obj | None, transitions: int) -> None:
    async with Harness() as h:
        if seed is not None:
            h.server.seed(**seed)
        a = h.node("a")
        h.start(a)
        await h.time.settle()
        assert a.elector.is_leader
        assert await a.elector.wait_elected() is True
        assert a.changes == [True]
        spec = h.server.spec()
        assert spec["holderIdentity"] == "a"
        assert spec["leaseDurationSeconds"] == 15
        assert spec["leaseTransitions"] == transitions
        assert spec["acquireTime"] == spec["renewTime"] == "2026-12-01T08:00:00.000000Z"
        if seed is not None:
            assert h.server.lease is not None
            assert h.server.lease["metadata"]["labels"] == {"seeded": "yes"}  # metadata kept


async def test_renewals_keep_acquire_time_and_advance_renew_time() -> None:
    async with Harness() as h:
        a = h.node("a")
        h.start(a)
        await h.time.advance(7.0)
        specs = [spec for _, spec in h.server.writes]
        assert [t for t, _ in h.server.writes] == [0.0, 2.0, 4.0, 6.0]  # renewed every retry period
        assert {s["acquireTime"] for s in specs} == {"2026-12-01T08:00:00.000000Z"}
        assert specs[-1]["renewTime"] == "2026-12-01T08:00:06.000000Z"
        assert {s["leaseTransitions"] for s in specs} == {0}
        assert a.changes == [True]


@pytest.mark.parametrize("rand", [0.0, 0.5, 0.99])
async def test_two_electors_contend_and_exactly_one_leads(rand: float) -> None:
    async with Harness() as h:
        a, b = h.node("a", rand=rand), h.node("b", rand=rand)
        h.start(a, b)  # same instant: both read "no lease", both create, one gets 409

        def one_leader_at_most() -> None:
            assert len(h.leaders()) <= 1, h.leaders()

        await h.time.advance(120.0, check=one_leader_at_most)
        assert len(h.leaders()) == 1
        leader, standby = (a, b) if a.elector.is_leader else (b, a)
        assert h.server.spec()["holderIdentity"] == leader.identity
        assert leader.changes == [True]
        assert standby.changes == []
        assert h.server.create_conflicts == 1
        assert standby.elector.holder == leader.identity


# --- failover ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "skew", [timedelta(hours=-1), timedelta(0), timedelta(hours=1)], ids=["behind", "same", "ahead"]
)
async def test_standby_takes_over_a_lease_duration_after_the_last_renewal_on_its_own_clock(
    skew: timedelta,
) -> None:
    async with Harness() as h:
        a = h.node("a")
        # The standby's wall clock is skewed and its monotonic clock has another origin: neither
        # matters, only how long *it* has seen the record unchanged.
        b = h.node("b", mono_offset=12345.0, wall_offset=skew)
        h.start(a)
        await h.time.advance(1.0)
        h.start(b)
        await h.time.advance(20.0)
        assert h.leaders() == ["a"]

        await h.crash(a)
        assert a.changes == [True, False]
        last_renewal = h.last_write_by("a")
        took_over = await h.time.run_until(lambda: b.elector.is_leader, within=60.0)

        assert took_over >= last_renewal + LEASE
        # A standby polls a live Lease every half retry period (no jitter), so it saw the last renewal
        # within one, and it tries again the moment that record expires by its clock.
        assert took_over <= last_renewal + LEASE + RETRY / 2 + 0.1
        assert h.server.spec()["holderIdentity"] == "b"
        assert h.server.spec()["leaseTransitions"] == 1
        assert b.changes == [True]


@pytest.mark.parametrize("rand", [0.0, 0.5, 0.99])
async def test_release_hands_over_at_the_standbys_next_retry(
    rand: float, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kubeforge.kube.leader")
    async with Harness() as h:
        a, b = h.node("a"), h.node("b", rand=rand)
        h.start(a)
        await h.time.settle()
        h.start(b)
        await h.time.advance(20.0)
        held = copy.deepcopy(h.server.spec())

        assert await a.elector.release() is True
        released_at = h.time.now
        assert not a.elector.is_leader
        assert a.changes == [True, False]
        await asyncio.wait_for(a.elector.wait_lost(), timeout=1)
        assert h.server.spec() == {
            **held,
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
        }

        took_over = await h.time.run_until(lambda: b.elector.is_leader, within=10.0)
        # A standby polls a live Lease every half retry period: it sees the release within one and
        # takes the Lease in the same attempt, whatever its jitter.
        assert took_over - released_at <= RETRY / 2
        assert h.server.spec()["holderIdentity"] == "b"
        assert h.server.spec()["leaseTransitions"] == 1

    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert any(m.startswith("acquired") and "as a " in m for m in messages), messages
    assert any(m.startswith("released") and "as a" in m for m in messages), messages
    assert any(m.startswith("acquired") and "as b " in m for m in messages), messages


async def test_release_by_a_standby_changes_nothing() -> None:
    async with Harness() as h:
        a, b = h.node("a"), h.node("b")
        h.start(a)
        await h.time.settle()
        h.start(b)
        await h.time.advance(5.0)
        writes = len(h.server.writes)
        assert await b.elector.release() is False
        assert await b.elector.wait_elected() is False  # run() ended without leading
        await asyncio.wait_for(b.elector.wait_lost(), timeout=1)
        assert len(h.server.writes) == writes
        await h.time.advance(5.0)
        assert h.leaders() == ["a"]
        assert b.changes == []


async def test_release_before_run_is_a_no_op() -> None:
    async with Harness() as h:
        a = h.node("a")
        assert await a.elector.release() is False
        assert h.server.lease is None


# --- losing leadership -------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["error", "hang"])
async def test_leader_that_cannot_renew_within_the_deadline_steps_down_before_a_standby_leads(
    failure: str,
) -> None:
    async with Harness() as h:
        a, b = h.node("a"), h.node("b")
        h.start(a)
        await h.time.settle()
        h.start(b)
        await h.time.advance(20.0)
        assert h.leaders() == ["a"]

        if failure == "error":
            a.client.failing = True
        else:
            a.client.hanging = True
        last_renewal = h.last_write_by("a")
        lost_at = await h.time.run_until(lambda: a.changes == [True, False], within=30.0)
        assert lost_at <= last_renewal + RENEW
        assert lost_at >= last_renewal + RENEW - RETRY  # transient failures are retried meanwhile
        await asyncio.wait_for(a.elector.wait_lost(), timeout=1)
        assert a.task is not None
        assert a.task.done()

        took_over = await h.time.run_until(lambda: b.elector.is_leader, within=30.0)
        assert took_over > lost_at  # never two leaders
        assert took_over >= last_renewal + LEASE


async def test_failures_shorter_than_the_renew_deadline_are_ridden_out() -> None:
    async with Harness() as h:
        a = h.node("a")
        h.start(a)
        await h.time.advance(20.0)
        a.client.failing = True
        await h.time.advance(RENEW - RETRY - 0.5)
        assert a.elector.is_leader
        a.client.failing = False
        await h.time.advance(30.0)
        assert a.elector.is_leader
        assert a.changes == [True]


async def test_is_leader_turns_false_at_the_deadline_even_if_the_loop_is_stalled() -> None:
    async with Harness() as h:
        a = h.node("a")
        h.start(a)
        await h.time.advance(4.0)
        assert a.elector.is_leader
        h.time.now += RENEW  # time passes but nothing runs (a blocked event loop)
        assert not a.elector.is_leader


async def test_leader_steps_down_at_once_when_another_holder_took_the_lease() -> None:
    async with Harness() as h:
        a = h.node("a")
        h.start(a)
        await h.time.advance(20.5)
        spec = h.server.spec()
        h.server.touch()
        assert h.server.lease is not None
        h.server.lease["spec"] = {**spec, "holderIdentity": "intruder", "leaseTransitions": 1}
        lost_at = await h.time.run_until(lambda: a.changes == [True, False], within=RENEW)
        assert lost_at == 22.0  # the next renewal, not the renew deadline
        assert h.server.spec()["holderIdentity"] == "intruder"


async def test_cancelling_run_stops_leading_without_releasing() -> None:
    async with Harness() as h:
        a = h.node("a")
        h.start(a)
        await h.time.advance(3.0)
        await h.crash(a)
        assert not a.elector.is_leader
        assert a.changes == [True, False]
        assert h.server.spec()["holderIdentity"] == "a"


# --- transitions and conflicts -----------------------------------------------------------------


async def test_lease_transitions_count_holder_changes() -> None:
    async with Harness() as h:
        a, b, c = h.node("a"), h.node("b"), h.node("c")
        h.start(a)
        await h.time.settle()
        h.start(b)
        await h.time.advance(10.0)
        await a.elector.release()
        await h.time.run_until(lambda: b.elector.is_leader, within=10.0)
        h.start(c)
        await h.time.advance(10.0)
        await h.crash(b)
        await h.time.run_until(lambda: c.elector.is_leader, within=60.0)

        history = [(s["holderIdentity"], s["leaseTransitions"]) for _, s in h.server.writes]
        assert [k for k, _ in itertools.groupby(history)] == [("a", 0), ("", 0), ("b", 1), ("c", 2)]


@pytest.mark.parametrize("conflicts", [1, 2, 4])
async def test_conflicts_on_renewal_are_retried_not_fatal(conflicts: int) -> None:
    async with Harness() as h:
        a = h.node("a")
        h.start(a)
        await h.time.advance(10.0)
        a.client.injected_conflicts = conflicts
        await h.time.advance(20.0)
        assert a.client.injected_conflicts == 0
        assert a.client.conflicts == conflicts
        assert a.elector.is_leader
        assert a.changes == [True]
        assert h.server.spec()["holderIdentity"] == "a"


async def test_someone_elses_metadata_write_costs_one_reread_not_the_lease() -> None:
    async with Harness() as h:
        a = h.node("a")
        h.start(a)
        await h.time.advance(10.5)
        h.server.touch()  # e.g. a label added by kubectl: the optimistic PUT gets 409
        await h.time.advance(2.0)
        assert a.client.conflicts == 1
        assert h.last_write_by("a") == 12.0  # renewed in the same attempt after re-reading
        assert a.changes == [True]


async def test_a_failing_on_change_callback_does_not_stop_the_elector() -> None:
    def boom(leading: bool) -> None:
        raise RuntimeError("gauge exploded")

    async with Harness() as h:
        a = h.node("a", on_change=boom)
        h.start(a)
        await h.time.advance(10.0)
        assert a.elector.is_leader


async def test_run_is_single_use() -> None:
    async with Harness() as h:
        a = h.node("a")
        h.start(a)
        await h.time.settle()
        with pytest.raises(RuntimeError, match="already called"):
            await a.elector.run()


async def test_real_clock_acquires_and_releases_in_milliseconds() -> None:
    server = FakeApiServer(FakeTime())
    config = LeaderElectionConfig(
        namespace=NS, name=NAME, identity="real", lease_duration=1, renew_deadline=0.5, retry_period=0.1
    )
    elector = LeaderElector(FakeLeaseClient(server), config)
    task = asyncio.create_task(elector.run())
    try:
        assert await asyncio.wait_for(elector.wait_elected(), timeout=1) is True
        assert await elector.release() is True
        assert server.spec()["holderIdentity"] == ""
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- configuration -----------------------------------------------------------------------------


def test_config_defaults_are_client_gos() -> None:
    config = LeaderElectionConfig(namespace=NS, name=NAME)
    assert (config.lease_duration, config.renew_deadline, config.retry_period) == (15.0, 10.0, 2.0)
    assert config.lease_duration_seconds == 15
    assert config.identity.startswith(socket.gethostname() + "_")


def test_default_identity_is_unique_per_process_start() -> None:
    first, second = default_identity(), default_identity()
    assert first != second
    assert first.rpartition("_")[0] == socket.gethostname()


def test_lease_duration_seconds_round_up() -> None:
    config = LeaderElectionConfig(namespace=NS, name=NAME, lease_duration=15.2)
    assert config.lease_duration_seconds == 16


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lease_duration": 10.0}, "lease duration .* must be greater than the renew deadline"),
        ({"lease_duration": 9.0}, "lease duration .* must be greater than the renew deadline"),
        ({"renew_deadline": 2.4}, r"renew deadline .* must be greater than 1.2 x the retry period"),
        ({"retry_period": 9.0}, r"renew deadline .* must be greater than 1.2 x the retry period"),
        ({"retry_period": 0.0}, "retry period must be positive"),
        ({"lease_duration": 0.5, "renew_deadline": 0.3, "retry_period": 0.1}, "at least 1s"),
        ({"namespace": ""}, "namespace must not be empty"),
        ({"name": ""}, "name must not be empty"),
        ({"identity": ""}, "identity must not be empty"),
    ],
)
def test_config_refuses_unsafe_timings(overrides: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"namespace": NS, "name": NAME, **overrides}
    with pytest.raises(ValueError, match=message):
        LeaderElectionConfig(**fields)


def test_config_accepts_the_tightest_valid_timings() -> None:
    LeaderElectionConfig(namespace=NS, name=NAME, lease_duration=2.5, renew_deadline=2.41, retry_period=2.0)


def test_micro_time_is_utc_with_microseconds() -> None:
    moment = datetime(2026, 12, 1, 9, 52, 4, 123456, tzinfo=UTC)
    assert micro_time(moment) == "2026-12-01T09:52:04.123456Z"
    cet = moment.astimezone(timezone(timedelta(hours=1)))
    assert micro_time(cet) == "2026-12-01T09:52:04.123456Z"
