"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics.

Several operator replicas run; only the one holding the Lease reconciles, the others keep warm caches and
take over when the holder stops renewing (crash: after about a lease duration) or releases the Lease
(graceful shutdown: within about one retry period). As in client-go's `leaderelection`, which
controller-runtime uses:

- a lease is taken over only when it has no holder, is held by us, or its record has not changed for
  `leaseDurationSeconds` *as measured by our own monotonic clock since we observed the change*. Remote
  timestamps (renewTime) are written for humans and never trusted, so clock skew between nodes does
  not matter;
- acquisition is attempted every retry period plus up to 120 % jitter, renewal every retry period;
- a leader that cannot renew within the renew deadline (counted from the start of its last successful
  renewal) stops leading. `lease_duration > renew_deadline` leaves the gap in which it stops writing
  before a standby may take over.

This module talks to the API server only through the small `LeaseClient` protocol (implemented on the
operator's API client), and reads time only through `Clock`, so it is tested without a cluster or real
sleeping.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)

Obj = dict[str, Any]
T = TypeVar("T")

# client-go's wait.Jitter factor for acquisition retries: a retry waits retry_period * [1, 2.2).
EXPIRY_MARGIN = 0.05
"""Seconds after the observed expiry a standby tries: past it by its own clock, not on the edge."""
JITTER_FACTOR = 1.2

LEASE_API_VERSION = "coordination.k8s.io/v1"


class LeaseConflict(Exception):  # noqa: N818 -- the name the operator's API client raises
    """The API server answered 409: the Lease already exists (create) or changed since we read it (PUT)."""


class LeaseClient(Protocol):
    """The three Lease calls the elector needs. Errors other than 409 propagate as any exception."""

    async def get_lease(self, namespace: str, name: str) -> Obj | None:
        """The Lease object, or None when it does not exist (404)."""

    async def create_lease(self, body: Obj) -> Obj:
        """Create the Lease; raises LeaseConflict on 409 (someone created it first)."""

    async def replace_lease(self, body: Obj) -> Obj:
        """PUT the Lease with `metadata.resourceVersion`; raises LeaseConflict on 409 (stale version)."""


class Clock(Protocol):
    """Time as the elector sees it: monotonic for every decision, wall time only for the record."""

    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def default_identity() -> str:
    """hostname (the pod name in Kubernetes) + "_" + a random UUID, as controller-runtime builds it: the
    suffix keeps a restarted process with the same hostname from mistaking the old holder for itself."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


@dataclass(frozen=True)
class LeaderElectionConfig:
    """Where the Lease is and the timings, in seconds (client-go's defaults)."""

    namespace: str
    name: str
    identity: str = field(default_factory=default_identity)
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        for attr in ("namespace", "name", "identity"):
            if not getattr(self, attr):
                raise ValueError(f"leader election {attr} must not be empty")
        if self.retry_period <= 0:
            raise ValueError(f"retry period must be positive, got {self.retry_period}s")
        if self.lease_duration < 1:
            # leaseDurationSeconds is a whole number of seconds and the API server refuses 0.
            raise ValueError(f"lease duration must be at least 1s, got {self.lease_duration}s")
        if self.lease_duration <= self.renew_deadline:
            raise ValueError(
                f"lease duration ({self.lease_duration}s) must be greater than the renew deadline "
                f"({self.renew_deadline}s): a leader that cannot renew must stop before a standby takes over"
            )
        if self.renew_deadline <= JITTER_FACTOR * self.retry_period:
            raise ValueError(
                f"renew deadline ({self.renew_deadline}s) must be greater than {JITTER_FACTOR} x the retry "
                f"period ({self.retry_period}s), so that at least one jittered retry fits in it"
            )

    @property
    def lease_duration_seconds(self) -> int:
        # Rounded up, never down: standbys then wait at least `lease_duration`, which is what the
        # leader's renew deadline is checked against.
        return math.ceil(self.lease_duration)


@dataclass(frozen=True)
class _Record:
    """The Lease fields leader election owns; what decides whether the record "changed"."""

    holder: str
    lease_duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int

    @staticmethod
    def of(lease: Obj) -> _Record:
        spec = lease.get("spec") or {}
        return _Record(
            holder=spec.get("holderIdentity") or "",
            lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )


def micro_time(moment: datetime) -> str:
    """A metav1.MicroTime: RFC 3339 in UTC with exactly six fractional digits."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _with_spec(lease: Obj, **fields: Any) -> Obj:
    """A copy of `lease` (metadata and resourceVersion included, for the PUT) with spec fields set;
    spec fields we do not own (e.g. a newer API's `strategy`) are kept."""
    body = copy.deepcopy(lease)
    body["spec"] = {**(body.get("spec") or {}), **fields}
    return body


def _consume(task: asyncio.Future[Any]) -> None:
    # A call abandoned after its timeout may still fail later; retrieve that so asyncio does not
    # log "exception was never retrieved".
    if not task.cancelled():
        task.exception()


class LeaderElector:
    """Campaigns for one Lease and keeps it while it can.

    Typical use by the operator::

        elector = LeaderElector(client, config, on_change=gauge_setter)
        task = asyncio.create_task(elector.run())
        if await elector.wait_elected():
            ...start the controllers...
            await elector.wait_lost()          # or a shutdown signal, whichever comes first
        # on SIGTERM: stop the controllers first, then
        await elector.release()

    `run()` is single-use: it returns when leadership is lost, and the process is expected to exit then
    (as controller-runtime does) rather than campaign again with stale in-memory state.
    """

    def __init__(
        self,
        client: LeaseClient,
        config: LeaderElectionConfig,
        *,
        on_change: Callable[[bool], None] | None = None,
        clock: Clock | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._client = client
        self._config = config
        self._on_change = on_change
        self._clock: Clock = clock or SystemClock()
        self._rand = rand
        # The last Lease object we read or wrote (its resourceVersion is what the next PUT sends), its
        # record, and the local monotonic time at which that record last *changed*.
        self._observed: Obj | None = None
        self._record: _Record | None = None
        self._observed_at = 0.0
        # While leading: the monotonic time at which the last successful renewal *started*.
        self._leading = False
        self._renewed_at = 0.0
        self._elected = asyncio.Event()
        self._stopped = asyncio.Event()
        self._run_task: asyncio.Task[None] | None = None

    # --- public state --------------------------------------------------------------------------

    @property
    def config(self) -> LeaderElectionConfig:
        return self._config

    @property
    def identity(self) -> str:
        return self._config.identity

    @property
    def is_leader(self) -> bool:
        """True while we hold the Lease. It turns False as soon as the renew deadline passes, even if
        the renewal loop has not run since (a blocked event loop), so a check before a write is safe."""
        return self._leading and self._clock.monotonic() < self._renewed_at + self._config.renew_deadline

    @property
    def holder(self) -> str | None:
        """The holder in the last Lease record we saw ("" when released), None before the first read."""
        return self._record.holder if self._record is not None else None

    async def wait_elected(self) -> bool:
        """Wait until we lead (True), or until `run()` ended without ever leading (False)."""
        elected = asyncio.ensure_future(self._elected.wait())
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({elected, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            elected.cancel()
            stopped.cancel()
        return self._elected.is_set()

    async def wait_lost(self) -> None:
        """Wait until `run()` has ended: leadership lost (renew deadline passed, or another holder
        took the Lease), released, or cancelled. The operator exits then."""
        await self._stopped.wait()

    # --- the campaign --------------------------------------------------------------------------

    async def run(self) -> None:
        """Acquire the Lease (retrying forever), then renew it until that fails for longer than the
        renew deadline. Returns on loss; cancel it (or call `release()`) to stop."""
        if self._run_task is not None:
            raise RuntimeError("LeaderElector.run() was already called; create a new elector")
        self._run_task = asyncio.current_task()
        cfg = self._config
        log.info("campaigning for Lease %s/%s as %s", cfg.namespace, cfg.name, cfg.identity)
        try:
            await self._acquire()
            await self._renew_until_lost()
        finally:
            if self._leading:
                # Cancelled while leading: we no longer renew, so we must no longer act as leader.
                log.info("stopped leading Lease %s/%s as %s", cfg.namespace, cfg.name, cfg.identity)
                self._set_leading(False)
            self._stopped.set()

    async def release(self) -> bool:
        """Stop `run()` and, if we hold the Lease, hand it over: holderIdentity "" and
        leaseDurationSeconds 1 (acquireTime/renewTime kept), as client-go's ReleaseOnCancel does, so
        a standby takes it at its next retry instead of waiting a lease duration.

        Call it only after the controllers stopped writing: from the release on, a standby may lead.
        Returns True when the Lease was released by this call."""
        task = self._run_task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                # Re-raise only if *we* are being cancelled, not because we cancelled run().
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        cfg = self._config
        try:
            released = await self._bounded(self._release_once(), cfg.renew_deadline)
        except Exception as error:
            log.warning(
                "could not release Lease %s/%s as %s: %s", cfg.namespace, cfg.name, cfg.identity, error
            )
            return False
        if released:
            log.info("released Lease %s/%s as %s", cfg.namespace, cfg.name, cfg.identity)
        return released

    async def _release_once(self) -> bool:
        for _ in range(2):
            if self._observed is None or self._record is None or self._record.holder != self.identity:
                return False
            body = _with_spec(self._observed, holderIdentity="", leaseDurationSeconds=1)
            try:
                self._observe(await self._client.replace_lease(body), self._clock.monotonic())
                return True
            except LeaseConflict:
                # Our copy is stale: read it again and release only if we still hold it.
                current = await self._client.get_lease(self._config.namespace, self._config.name)
                if current is None:
                    return False
                self._observe(current, self._clock.monotonic())
        return False

    async def _acquire(self) -> None:
        cfg = self._config
        while True:
            if await self._attempt(within=cfg.renew_deadline):
                log.info(
                    "acquired Lease %s/%s as %s (transitions: %d)",
                    cfg.namespace,
                    cfg.name,
                    cfg.identity,
                    self._record.transitions if self._record else 0,
                )
                self._set_leading(True)
                return
            await self._clock.sleep(self._standby_wait())

    def _standby_wait(self) -> float:
        """How long a replica that does not lead waits before its next attempt.

        While someone else holds a live Lease, it polls every half retry period without jitter (a GET a
        second by default, cheap), so it sees each renewal, and a release on SIGTERM, within that, and it
        wakes exactly when the record it saw expires by its own clock: failover then takes at most lease
        duration + half a retry period after the leader's last renewal, and about a second after a
        release (client-go's jittered polling adds up to two jittered periods to either). Jitter stays
        for a free or expired Lease, where several replicas may try at once."""
        cfg = self._config
        jittered = cfg.retry_period * (1 + JITTER_FACTOR * self._rand())
        if self._record is None or not self._record.holder or self._holds() or not self._valid():
            return jittered
        expires_in = self._observed_at + self._record.lease_duration_seconds - self._clock.monotonic()
        return max(0.0, min(cfg.retry_period / 2, expires_in + EXPIRY_MARGIN))

    async def _renew_until_lost(self) -> None:
        cfg = self._config
        while True:
            await self._clock.sleep(cfg.retry_period)
            reason = await self._renew_once()
            if reason is not None:
                log.warning(
                    "lost leadership of Lease %s/%s as %s: %s", cfg.namespace, cfg.name, cfg.identity, reason
                )
                self._set_leading(False)
                return

    async def _renew_once(self) -> str | None:
        """One renewal; None while we still lead, else why we stopped."""
        deadline = self._renewed_at + self._config.renew_deadline
        remaining = deadline - self._clock.monotonic()
        if remaining > 0 and await self._attempt(within=remaining):
            return None
        if self._record is not None and self._record.holder != self.identity:
            return f"the Lease is now held by {self._record.holder or 'nobody'}"
        if self._clock.monotonic() >= deadline:
            return f"could not renew within the renew deadline ({self._config.renew_deadline}s)"
        return None

    async def _attempt(self, within: float) -> bool:
        """client-go's tryAcquireOrRenew, bounded to `within` seconds; any error fails the attempt."""
        started = self._clock.monotonic()
        try:
            ok = await self._bounded(self._try_acquire_or_renew(), within)
        except Exception as error:
            log.warning(
                "Lease %s/%s: acquire/renew failed: %s", self._config.namespace, self._config.name, error
            )
            return False
        if ok:
            self._renewed_at = started
        return ok

    async def _try_acquire_or_renew(self) -> bool:
        cfg = self._config
        now = micro_time(self._clock.now())
        ours = {
            "holderIdentity": cfg.identity,
            "leaseDurationSeconds": cfg.lease_duration_seconds,
            "renewTime": now,
        }
        # 1. Fast path for the leader: update the copy we hold, assuming nobody else wrote since.
        if self._holds() and self._valid() and self._observed is not None and self._record is not None:
            try:
                body = _with_spec(self._observed, **ours, leaseTransitions=self._record.transitions)
                self._observe(await self._client.replace_lease(body), self._clock.monotonic())
                return True
            except LeaseConflict:
                log.debug("Lease %s/%s changed under us; reading it again", cfg.namespace, cfg.name)

        # 2. Read the Lease, or create it.
        current = await self._client.get_lease(cfg.namespace, cfg.name)
        if current is None:
            body = {
                "apiVersion": LEASE_API_VERSION,
                "kind": "Lease",
                "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                "spec": {**ours, "acquireTime": now, "leaseTransitions": 0},
            }
            try:
                created = await self._client.create_lease(body)
            except LeaseConflict:
                return False  # another replica created it first; it is the leader
            self._observe(created, self._clock.monotonic())
            return True

        # 3. Someone else holds a lease that has not expired by our clock: wait.
        self._observe(current, self._clock.monotonic())
        record = _Record.of(current)
        if record.holder and self._valid() and not self._holds():
            return False

        # 4. Take it over (new acquireTime, one more transition) or renew it (both kept).
        if self._holds():
            fields = {
                **ours,
                "acquireTime": record.acquire_time or now,
                "leaseTransitions": record.transitions,
            }
        else:
            fields = {**ours, "acquireTime": now, "leaseTransitions": record.transitions + 1}
        try:
            written = await self._client.replace_lease(_with_spec(current, **fields))
        except LeaseConflict:
            return False  # someone wrote in between; the next attempt reads again
        self._observe(written, self._clock.monotonic())
        return True

    # --- helpers -------------------------------------------------------------------------------

    def _holds(self) -> bool:
        return self._record is not None and self._record.holder == self.identity

    def _valid(self) -> bool:
        """Whether the observed record is still within its lease duration, by our own clock."""
        if self._record is None:
            return False
        return self._clock.monotonic() < self._observed_at + self._record.lease_duration_seconds

    def _observe(self, lease: Obj, at: float) -> None:
        record = _Record.of(lease)
        if record != self._record:
            if record.holder != self.identity and (
                self._record is None or record.holder != self._record.holder
            ):
                log.info(
                    "Lease %s/%s is held by %s",
                    self._config.namespace,
                    self._config.name,
                    record.holder or "nobody",
                )
            self._record = record
            self._observed_at = at
        self._observed = lease

    def _set_leading(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        if leading:
            self._elected.set()
        if self._on_change is not None:
            try:
                self._on_change(leading)
            except Exception:
                log.exception("leader election on_change callback failed")

    async def _bounded(self, call: Awaitable[T], within: float) -> T:
        """Await `call`, giving up after `within` seconds of the elector's clock (a hung request must
        not keep a leader that cannot renew believing it leads)."""
        task = asyncio.ensure_future(call)
        timer = asyncio.ensure_future(self._clock.sleep(within))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not task.done():
                task.cancel()
                task.add_done_callback(_consume)
        if task.done() and not task.cancelled():
            return task.result()
        raise TimeoutError(f"no answer from the API server within {within:.1f}s")
