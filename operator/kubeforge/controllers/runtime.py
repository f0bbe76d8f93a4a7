"""The reconcile loop every kind shares.

Kopf delivers watch events; we turn each one (of the object or of any child carrying its label) into a
request to reconcile that object. Requests for one object are coalesced: at most one pass runs at a
time and at most one more is queued behind it, however many pod events arrive meanwhile. A periodic
resync lists every object and requests a pass too, so a missed event or a failed pass heals itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from kubeforge.kube.client import Kind, Kube, Obj
from kubeforge.metrics import exposition

log = logging.getLogger(__name__)

Key = tuple[str, str]


@dataclass(frozen=True)
class OperatorConfig:
    """Settings from the command line that controllers need."""

    namespaces: tuple[str, ...] = ()
    prometheus_url: str | None = None
    resync_seconds: float = 10.0


class Controller(Protocol):
    """One kind's reconcile logic; `reconcile` must be idempotent and converge from any state."""

    kind: Kind
    child_kinds: tuple[Kind, ...]

    async def reconcile(self, obj: Obj) -> None: ...

    async def forget(self, namespace: str, name: str) -> None: ...


@dataclass
class _State:
    running: bool = False
    dirty: bool = False
    failures: int = 0
    retry: asyncio.TimerHandle | None = None


class Runtime:
    """Per-kind request queue: coalescing, retry with backoff, and the resync loop."""

    def __init__(self, kube: Kube, controller: Controller, config: OperatorConfig) -> None:
        self.kube = kube
        self.controller = controller
        self.config = config
        self._states: dict[Key, _State] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def kind_name(self) -> str:
        return self.controller.kind.kind

    def request(self, namespace: str, name: str) -> None:
        """Ask for a reconcile of one object; returns at once."""
        state = self._states.setdefault((namespace, name), _State())
        if state.running:
            state.dirty = True
            return
        state.running = True
        task = asyncio.get_running_loop().create_task(self._drain((namespace, name), state))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, key: Key, state: _State) -> None:
        try:
            while True:
                state.dirty = False
                await self._pass(key, state)
                if not state.dirty:
                    break
        finally:
            state.running = False

    async def _pass(self, key: Key, state: _State) -> None:
        namespace, name = key
        kind = self.controller.kind
        started = time.monotonic()
        try:
            obj = await self.kube.get(kind.api_version, kind.kind, name, namespace)
            if obj is None:
                await self._forget(key)
                return
            await self.controller.reconcile(obj)
        except asyncio.CancelledError:
            raise
        except Exception:
            state.failures += 1
            delay = min(60.0, 0.5 * 2 ** min(state.failures, 7))
            log.exception(
                "%s %s/%s: reconcile failed (attempt %d), retrying in %.1fs",
                kind.kind,
                namespace,
                name,
                state.failures,
                delay,
            )
            exposition.RECONCILES.labels(kind.kind, "error").inc()
            self._schedule_retry(key, state, delay)
        else:
            state.failures = 0
            exposition.RECONCILES.labels(kind.kind, "success").inc()
        finally:
            exposition.RECONCILE_SECONDS.labels(kind.kind).observe(time.monotonic() - started)

    def _schedule_retry(self, key: Key, state: _State, delay: float) -> None:
        if state.retry is not None:
            state.retry.cancel()
        state.retry = asyncio.get_running_loop().call_later(delay, self.request, *key)

    async def _forget(self, key: Key) -> None:
        state = self._states.pop(key, None)
        if state is not None and state.retry is not None:
            state.retry.cancel()
        await self.controller.forget(*key)
        exposition.forget(self.kind_name, *key)

    async def resync_forever(self) -> None:
        """List every object now and then and request a pass for each: the safety net under watches."""
        kind = self.controller.kind
        while True:
            try:
                for obj in await self._list_all(kind):
                    meta = obj["metadata"]
                    self.request(meta["namespace"], meta["name"])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("resync of %s failed", kind.plural)
            await asyncio.sleep(self.config.resync_seconds)

    async def _list_all(self, kind: Kind) -> list[Obj]:
        if not self.config.namespaces:
            return await self.kube.list(kind.api_version, kind.kind)
        found: list[Obj] = []
        for namespace in self.config.namespaces:
            found.extend(await self.kube.list(kind.api_version, kind.kind, namespace))
        return found

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Controllers that hold tasks or clients (the fleet autoscaler loops, the Prometheus client)
        # may release them here; the protocol keeps this optional.
        close = getattr(self.controller, "close", None)
        if callable(close):
            result = close()
            if asyncio.iscoroutine(result):
                await result


def owner_of(child: Obj, kind: Kind) -> str | None:
    """The name of the owning object of a child, from its controller owner reference."""
    for ref in child.get("metadata", {}).get("ownerReferences", []) or []:
        if ref.get("kind") == kind.kind and ref.get("apiVersion") == kind.api_version:
            return str(ref["name"])
    return None
