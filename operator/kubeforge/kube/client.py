"""A small, typed facade over lightkube: plain dicts in and out, server-side apply under one field
manager, 404 on delete treated as "already done".

A child is created with a plain POST (which fails when the name is taken) and only then kept current
with forced server-side apply: a forced apply over an object someone else made would take it over, so
the operator forces only on objects whose controller owner reference is its own."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.types import CascadeType, PatchType

from kubeforge.api.names import APPLIED_HASH_ANNOTATION, FIELD_MANAGER
from kubeforge.kube.config import ClusterAccess
from kubeforge.kube.kinds import KINDS as KINDS
from kubeforge.kube.kinds import Kind as Kind
from kubeforge.kube.leader import LeaseConflict
from kubeforge.metrics import exposition

log = logging.getLogger(__name__)

Obj = dict[str, Any]
T = TypeVar("T")

_resources: dict[tuple[str, str], Any] = {}


def _resource(api_version: str, kind: str) -> Any:
    key = (api_version, kind)
    if key not in _resources:
        k = KINDS[key]
        create = create_namespaced_resource if k.namespaced else create_global_resource
        _resources[key] = create(k.group, k.version, k.kind, k.plural)
    return _resources[key]


def is_not_found(error: Exception) -> bool:
    return isinstance(error, ApiError) and error.status.code == 404


def is_conflict(error: Exception) -> bool:
    return isinstance(error, ApiError) and error.status.code == 409


def _plain(obj: Any) -> Obj:
    # Generic resources are dicts already; a copy keeps callers from mutating lightkube's object.
    return dict(obj)


_event_seq = itertools.count()
EVENT_QUEUE = 1000
"""Events waiting to be sent before new ones are dropped (client-go's recorder keeps 1000 too)."""
EVENT_SENDERS = 4
EVENT_FLUSH_SECONDS = 5.0
"""How long closing the client waits for Events still queued (a SIGTERM'd leader reports its last ones)."""


def applied_hash(obj: Mapping[str, Any]) -> str:
    """A stable hash of an object as the operator would apply it (without the hash annotation itself)."""
    meta = dict(obj.get("metadata") or {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != APPLIED_HASH_ANNOTATION}
    meta["annotations"] = annotations
    text = json.dumps({**obj, "metadata": meta}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def unchanged(desired: Mapping[str, Any], cached: Mapping[str, Any] | None) -> bool:
    """Whether applying `desired` would change nothing the operator owns: the cached child carries the hash
    of exactly this desired object. A child someone else edited keeps our hash but has a new generation;
    `Kube.apply_if_changed` catches that through the generation it saw after its own last write."""
    if cached is None:
        return False
    have = ((cached.get("metadata") or {}).get("annotations") or {}).get(APPLIED_HASH_ANNOTATION)
    return have == applied_hash(desired)


WriteObserver = Callable[[Obj], None]


class NotOursError(Exception):
    """A child's name is taken by an object another owner controls: the operator never takes it over."""


def _controller_uid(obj: Mapping[str, Any]) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def _not_ours(obj: Mapping[str, Any]) -> NotOursError:
    meta = obj["metadata"]
    return NotOursError(
        f"{obj['kind']} {meta.get('namespace')}/{meta['name']} exists and is not controlled by this "
        "object; rename one of them or delete the other object (the operator never takes over an "
        "object it did not create)"
    )


class Kube:
    """The operator's API client. One instance per process; coroutine-safe.

    Every request is counted in `kubeforge_api_requests_total{verb,resource,code}`. Objects a write
    returns are handed to `observer` (the caches), so the next pass sees the write at once."""

    def __init__(
        self,
        access: ClusterAccess,
        *,
        field_manager: str = FIELD_MANAGER,
    ) -> None:
        # No pool timeout: with more requests in flight than connections, a request waits for one (a
        # queue bounded by --max-concurrent-reconciles), never fails with PoolTimeout.
        # trust_env: HTTP(S)_PROXY and friends in the pod's environment would otherwise route the
        # operator's credentials through whatever proxy they name; only --use-env-proxy allows that.
        # Credentials ride on the transport, per request: they are refreshed (exec plugins, token files)
        # without rebuilding the client. The transport also decides about proxies, so httpx's own
        # environment lookup stays off.
        self._client = AsyncClient(
            config=access.config,
            field_manager=field_manager,
            timeout=httpx2.Timeout(30, pool=None),
            trust_env=False,
            transport=access.transport(),
        )
        self._access = access
        self.field_manager = field_manager
        self.observer: WriteObserver | None = None
        self._events: asyncio.Queue[Obj] | None = None
        self._senders: list[asyncio.Task[None]] = []
        self._generations: dict[tuple[str, str, str], tuple[str, int]] = {}
        """(kind, namespace, name) -> (hash, generation) of our last apply of that child: one entry per
        child, however often it changes."""

    def watch_client(self) -> httpx2.AsyncClient:
        """A separate HTTP client for long-lived watch streams (one connection each), with the same
        credentials, so watches never hold connections the reconcile workers need."""
        return httpx2.AsyncClient(
            base_url=self._access.server,
            timeout=httpx2.Timeout(30),
            trust_env=False,
            transport=self._access.transport(),
        )

    async def close(self) -> None:
        await self.flush_events()
        for sender in self._senders:
            sender.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)
        self._senders.clear()
        await self._client.close()

    async def _call(self, verb: str, plural: str, request: Awaitable[T]) -> T:
        started = time.monotonic()
        try:
            result = await request
        except ApiError as error:
            exposition.count_api_request(verb, plural, error.status.code or 0, time.monotonic() - started)
            raise
        except httpx2.HTTPError:
            exposition.count_api_request(verb, plural, "<error>", time.monotonic() - started)
            raise
        exposition.count_api_request(verb, plural, 200, time.monotonic() - started)
        return result

    def _seen(self, obj: Obj) -> Obj:
        if self.observer is not None:
            self.observer(obj)
        return obj

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        res = _resource(api_version, kind)
        try:
            found = await self._call(
                "get", KINDS[(api_version, kind)].plural, self._client.get(res, name, namespace=namespace)
            )
        except ApiError as error:
            if is_not_found(error):
                return None
            raise
        return _plain(found)

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        labels: Mapping[str, str] | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> list[Obj]:
        """A LIST straight from the API server. Controllers read caches; this is for the CLI and tools."""
        res = _resource(api_version, kind)
        ns: Any = (
            namespace if namespace is not None else ("*" if KINDS[(api_version, kind)].namespaced else None)
        )

        async def collect() -> list[Obj]:
            return [
                _plain(item)
                async for item in self._client.list(
                    res,
                    namespace=ns,
                    labels=dict(labels) if labels else None,
                    fields=dict(fields) if fields else None,
                )
            ]

        return await self._call("list", KINDS[(api_version, kind)].plural, collect())

    async def apply(self, obj: Obj) -> Obj:
        """Server-side apply, forced: the operator owns the fields it sets on its children. The object
        is stamped with the hash of what was applied (see `unchanged`)."""
        return await self._write_child(
            "apply", obj, lambda res: self._client.apply(res, field_manager=self.field_manager, force=True)
        )

    async def create(self, obj: Obj) -> Obj:
        """Create a child that is not there yet: unlike an apply, a POST fails (409) when the name is
        taken, so an object someone else made is never merged into. Stamped like `apply`."""
        return await self._write_child(
            "create", obj, lambda res: self._client.create(res, field_manager=self.field_manager)
        )

    async def _write_child(self, verb: str, obj: Obj, send: Callable[[Any], Awaitable[Any]]) -> Obj:
        """Stamp the child with the hash of what is written, send it, and remember the generation the
        write produced (see `apply_if_changed`)."""
        meta = obj.setdefault("metadata", {})
        stamp = meta.setdefault("annotations", {})[APPLIED_HASH_ANNOTATION] = applied_hash(obj)
        res = _resource(obj["apiVersion"], obj["kind"])
        written = _plain(
            await self._call(verb, KINDS[(obj["apiVersion"], obj["kind"])].plural, send(res(obj)))
        )
        gen = (written.get("metadata") or {}).get("generation")
        if isinstance(gen, int):
            self._generations[_child_key(obj)] = (stamp, gen)
        return self._seen(written)

    async def apply_if_changed(self, obj: Obj, cached: Obj | None) -> Obj | None:
        """Apply unless the cached child already carries this desired object and nobody changed its spec
        since our last write of it (its generation is the one that write produced). None: nothing sent.

        Raises NotOursError when an object of that name is controlled by another owner, or by none (a
        Service a user made, say): the caches select children by label, so an object missing from them
        is created, and when the name turns out to be taken its owner is checked before anything is
        written."""
        if cached is None:
            try:
                return await self.create(obj)
            except ApiError as error:
                if not is_conflict(error):
                    raise
            meta = obj["metadata"]
            cached = await self.get(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))
            if cached is None:
                raise RuntimeError(f"{obj['kind']} {meta.get('namespace')}/{meta['name']} vanished; retrying")
            if _controller_uid(cached) != _controller_uid(obj):
                raise _not_ours(obj)
            # Ours, but out of the label-selected cache (a label removed by hand): apply restores it.
            return await self.apply(obj)
        if _controller_uid(cached) != _controller_uid(obj):
            raise _not_ours(obj)
        if unchanged(obj, cached):
            assert cached is not None
            ours = self._generations.get(_child_key(obj))
            known = ours[1] if ours is not None and ours[0] == applied_hash(obj) else None
            generation = (cached.get("metadata") or {}).get("generation")
            if known is None or generation is None or generation == known:
                return None
            log.info(
                "%s %s/%s was changed by someone else (generation %s, ours %s); applying it again",
                obj["kind"],
                obj["metadata"].get("namespace"),
                obj["metadata"]["name"],
                generation,
                known,
            )
        return await self.apply(obj)

    async def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        foreground: bool = False,
    ) -> bool:
        """Delete; False when it was already gone. Children of children go in the background unless
        `foreground` (then the object lingers until they are gone)."""
        cascade = CascadeType.FOREGROUND if foreground else CascadeType.BACKGROUND
        self._generations.pop((kind, namespace or "", name), None)
        try:
            await self._call(
                "delete",
                KINDS[(api_version, kind)].plural,
                self._client.delete(_resource(api_version, kind), name, namespace=namespace, cascade=cascade),
            )
        except ApiError as error:
            if is_not_found(error):
                return False
            raise
        return True

    async def patch_status(self, api_version: str, kind: str, name: str, namespace: str, status: Obj) -> Obj:
        """Merge-patch the status subresource. The spec is never written: GitOps tools own it."""
        res = _resource(api_version, kind)
        patched = await self._call(
            "patch",
            KINDS[(api_version, kind)].plural + "/status",
            self._client.patch(
                res.Status, name, {"status": status}, namespace=namespace, patch_type=PatchType.MERGE
            ),
        )
        return self._seen(_plain(patched))

    async def patch(self, api_version: str, kind: str, name: str, namespace: str | None, body: Obj) -> Obj:
        res = _resource(api_version, kind)
        patched = await self._call(
            "patch",
            KINDS[(api_version, kind)].plural,
            self._client.patch(res, name, body, namespace=namespace, patch_type=PatchType.MERGE),
        )
        return self._seen(_plain(patched))

    # -- leases (leader election) --------------------------------------------------------------------

    async def get_lease(self, namespace: str, name: str) -> Obj | None:
        return await self.get("coordination.k8s.io/v1", "Lease", name, namespace)

    async def create_lease(self, body: Obj) -> Obj:
        res = _resource("coordination.k8s.io/v1", "Lease")
        return await self._lease_write("create", self._client.create(res(body)))

    async def replace_lease(self, body: Obj) -> Obj:
        """PUT with the body's resourceVersion: optimistic concurrency is what leader election rests on."""
        res = _resource("coordination.k8s.io/v1", "Lease")
        return await self._lease_write("update", self._client.replace(res(body)))

    async def _lease_write(self, verb: str, request: Awaitable[Any]) -> Obj:
        try:
            return _plain(await self._call(verb, "leases", request))
        except ApiError as error:
            if is_conflict(error):
                raise LeaseConflict(str(error)) from error
            raise

    # -- reviews (who may read /metrics) ------------------------------------------------------------

    async def review_token(self, token: str) -> Obj:
        """A TokenReview: the API server says whose token this is (`status.authenticated`, `user`)."""
        body: Obj = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        }
        res = _resource(body["apiVersion"], body["kind"])
        reviewed = _plain(await self._call("create", "tokenreviews", self._client.create(res(body))))
        return dict(reviewed.get("status") or {})

    async def review_access(self, user: Mapping[str, Any], *, path: str, verb: str) -> bool:
        """A SubjectAccessReview: may `user` (a TokenReview's `status.user`) `verb` the non-resource
        URL `path`, as RBAC's `nonResourceURLs` rules say."""
        spec: Obj = {
            "user": user.get("username", ""),
            "groups": list(user.get("groups") or []),
            "uid": user.get("uid", ""),
            "nonResourceAttributes": {"path": path, "verb": verb},
        }
        if user.get("extra"):
            spec["extra"] = dict(user["extra"])
        body: Obj = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
        res = _resource(body["apiVersion"], body["kind"])
        reviewed = _plain(await self._call("create", "subjectaccessreviews", self._client.create(res(body))))
        return bool((reviewed.get("status") or {}).get("allowed"))

    async def event(self, involved: Mapping[str, Any], *, type_: str, reason: str, message: str) -> None:
        """Record a core/v1 Event on an object, in the background: the reconcile that reports it does
        not wait for the API server (client-go's recorder works the same way). A failure to record is
        logged, never raised; with `EVENT_QUEUE` Events already waiting, the new one is dropped and
        counted (`kubeforge_events_dropped_total`) rather than holding the reconcile up."""
        meta = involved.get("metadata", {})
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body: Obj = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta.get('name')}.{time.time_ns():x}{next(_event_seq):x}",
                "namespace": meta.get("namespace"),
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "kubeforge"},
            "reportingComponent": "kubeforge.dev/operator",
            "reportingInstance": "kubeforge",
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventTime": stamp,
            "action": reason,
            "count": 1,
        }
        if self._events is None:
            self._events = asyncio.Queue(maxsize=EVENT_QUEUE)
            self._senders = [
                asyncio.create_task(self._send_events(self._events)) for _ in range(EVENT_SENDERS)
            ]
        try:
            self._events.put_nowait(body)
        except asyncio.QueueFull:
            exposition.EVENTS_DROPPED.inc()
            log.warning(
                "dropped event %s on %s: %d events waiting to be sent", reason, meta.get("name"), EVENT_QUEUE
            )

    async def _send_events(self, queue: asyncio.Queue[Obj]) -> None:
        while True:
            body = await queue.get()
            try:
                await self._call("create", "events", self._client.create(_resource("v1", "Event")(body)))
            except (ApiError, httpx2.HTTPError) as error:
                involved = body["involvedObject"]
                log.warning("could not record event %s on %s: %s", body["reason"], involved["name"], error)
            finally:
                queue.task_done()

    async def flush_events(self) -> None:
        """Wait (at most `EVENT_FLUSH_SECONDS`) until the Events recorded so far are sent."""
        if self._events is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(EVENT_FLUSH_SECONDS):
                await self._events.join()


def _child_key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return (str(obj.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name")))
