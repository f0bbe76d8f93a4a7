"""Watch-fed caches: one list-then-watch stream per kind, kept in memory as small projections.

Why our own informer rather than kopf's watchers and `@kopf.index`:

- *A sync barrier per kind.* The operator must not write anything until every cache holds the state the
  API server had when it started (else it would, for instance, create a Job that already exists, or admit
  a gang into GPUs whose pods it has not seen yet). A list returns a `resourceVersion`; after it the cache
  is complete, and the watch continues exactly from there. That is the signal `/readyz` waits for.
- *Server-side filtering.* Children are watched with the `app.kubernetes.io/managed-by=kubeforge`
  label selector, so a cluster with ten thousand unrelated Deployments costs nothing. kopf filters labels
  in the client, after every event of the kind crossed the wire and was parsed.
- *Projections, not bodies.* A pod in the cache keeps the dozen fields the policies read (node, phase,
  GPU request, owner, container exit codes), not its full spec and managed fields; pods that are not ours
  and hold no GPU are not kept at all. That is what keeps the operator's memory flat at a thousand fleets.
- *Cheap per event.* An event is parsed, projected and stored, and the handlers (which only enqueue keys)
  run inline: no per-object task or diff machinery per event.

Protocol details follow client-go's reflector: paginated LIST (`limit`/`continue`), WATCH from the list's
resourceVersion with bookmarks, resume from the last seen version after a dropped connection, full relist
after `410 Gone`. A relist replaces the store and reports objects that vanished meanwhile as deletions.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx2

from kubeforge.api.names import ATTEMPT_LABEL, TRAININGJOB_LABEL
from kubeforge.kube import projections
from kubeforge.kube.kinds import JOB, NODE, POD, TRAININGJOB, Kind
from kubeforge.metrics import exposition
from kubeforge.policy import capacity

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Key = tuple[str, str]
"""(namespace, name); namespace is "" for cluster-scoped objects."""
Projection = Callable[[Obj], Obj | None]
"""Turns a full object into what the cache keeps; None: do not keep it."""
Handler = Callable[[Obj | None, Obj | None], None]
"""Called with (old, new) after each change; old is None for an add, new is None for a delete."""

LIST_PAGE = 100
"""Objects per page of a LIST. Every informer lists at once when the operator starts; with 500 a page of
pods parsed whole, times a dozen kinds, raised a restarted operator's peak RSS at a thousand fleets
about 50 MiB above what its caches then hold (Python keeps the freed memory). Pages cost round trips
only at startup and after a 410."""
WATCH_SECONDS = 300
"""Server-side watch timeout; jittered so a restart does not make every stream reconnect together."""
MAX_BACKOFF = 30.0
QUICK_WATCH_SECONDS = 1.0


class ForbiddenError(Exception):
    """The API server refused to list this kind (RBAC)."""


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def resource_version(obj: Mapping[str, Any] | None) -> int | None:
    """The object's resourceVersion as an integer, or None. Versions are opaque by contract; etcd-backed
    servers give integers, and comparing them lets a write's response refresh the cache without a later,
    stale watch event undoing it. Non-integer versions simply disable that comparison."""
    raw = ((obj or {}).get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(raw))
    except (TypeError, ValueError):
        return None


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """The UID of the object's controller (the owner reference with `controller: true`), if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("uid"):
            return str(ref["uid"])
    return None


@dataclass(frozen=True)
class Mark:
    """A test the store keeps the passing keys of, so that a read of the few objects it passes does not
    walk every object of the kind. Arbitration's records (fleets with borrowed GPUs) are read on every
    TrainingJob pass: walking a thousand fleets each time made a round of job passes O(jobs x fleets)."""

    name: str
    test: Callable[[Obj], bool]


@dataclass
class Store:
    """Objects of one kind by key, indexed by the values of a few labels per namespace (owner names) and
    by the UID of their controller. Labels only narrow a search; who owns an object is decided by the
    controller UID, which a tenant cannot copy from a label onto a pod of their own."""

    index_labels: tuple[str, ...] = ()
    marks: tuple[Mark, ...] = ()
    objects: dict[Key, Obj] = field(default_factory=dict)
    _index: dict[tuple[str, str, str], set[Key]] = field(default_factory=dict)
    _controlled: dict[str, set[Key]] = field(default_factory=dict)
    _marked: dict[str, set[Key]] = field(default_factory=dict)

    def get(self, namespace: str, name: str) -> Obj | None:
        return self.objects.get((namespace, name))

    def values(self, namespace: str | None = None) -> Iterator[Obj]:
        for (ns, _), obj in self.objects.items():
            if namespace is None or ns == namespace:
                yield obj

    def by_index(self, label: str, namespace: str, value: str) -> list[Obj]:
        return [self.objects[k] for k in self._index.get((label, namespace, value), ()) if k in self.objects]

    def marked(self, mark: Mark) -> list[Obj]:
        """The objects that pass `mark`, which the store must have been made with."""
        if mark not in self.marks:
            raise ValueError(f"this store keeps no mark {mark.name!r}")
        return [self.objects[k] for k in self._marked.get(mark.name, ())]

    def controlled_by(self, uid: str) -> list[Obj]:
        """Objects whose controller owner reference has this UID."""
        return [self.objects[k] for k in self._controlled.get(uid, ()) if k in self.objects]

    def __len__(self) -> int:
        return len(self.objects)

    def _slots(self, obj: Obj) -> list[tuple[str, str, str]]:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        namespace = key_of(obj)[0]
        return [(label, namespace, str(labels[label])) for label in self.index_labels if label in labels]

    def put(self, obj: Obj) -> Obj | None:
        key = key_of(obj)
        old = self.objects.get(key)
        if old is not None:
            self._unindex(key, old)
        self.objects[key] = obj
        for slot in self._slots(obj):
            self._index.setdefault(slot, set()).add(key)
        if (uid := controller_uid(obj)) is not None:
            self._controlled.setdefault(uid, set()).add(key)
        for mark in self.marks:
            passing = self._marked.setdefault(mark.name, set())
            if mark.test(obj):
                passing.add(key)
            else:
                passing.discard(key)
        return old

    def pop(self, key: Key) -> Obj | None:
        old = self.objects.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def _unindex(self, key: Key, obj: Obj) -> None:
        for slot in self._slots(obj):
            keys = self._index.get(slot)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._index[slot]
        for passing in self._marked.values():
            passing.discard(key)
        uid = controller_uid(obj)
        owned = self._controlled.get(uid) if uid is not None else None
        if uid is not None and owned is not None:
            owned.discard(key)
            if not owned:
                del self._controlled[uid]


@dataclass(frozen=True)
class Source:
    """What one informer watches."""

    kind: Kind
    project: Projection
    label_selector: str | None = None
    namespaces: tuple[str, ...] = ()
    """Empty: every namespace (or the cluster-scoped kind). Otherwise one stream per namespace."""
    index_labels: tuple[str, ...] = ()
    marks: tuple[Mark, ...] = ()


class Informer:
    """Keeps one kind's Store current. `synced` is set after the first complete list of every stream."""

    def __init__(self, http: httpx2.AsyncClient, source: Source) -> None:
        self.http = http
        self.source = source
        self.kind = source.kind
        self.store = Store(index_labels=source.index_labels, marks=source.marks)
        self.synced = asyncio.Event()
        self.forbidden = False
        """True when RBAC refused the list: the cache stays empty and callers must treat it as unknown."""
        self._handlers: list[Handler] = []
        self._streams_synced = 0
        self.in_initial_list = False
        """True while the handlers are told about the objects of a stream's first list (controller-
        runtime's IsInInitialList): what was there before the operator started, not a change."""

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)

    # -- reading -------------------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> Obj | None:
        return self.store.get(namespace, name)

    def controlled(self, namespace: str, owner_uids: Iterable[str]) -> list[Obj]:
        return [o for uid in owner_uids for o in self.store.controlled_by(uid) if key_of(o)[0] == namespace]

    def list(self, namespace: str | None = None, labels: Mapping[str, str] | None = None) -> list[Obj]:
        index = next((label for label in self.store.index_labels if label in (labels or {})), None)
        if labels and index is not None and namespace is not None:
            candidates: Iterable[Obj] = self.store.by_index(index, namespace, labels[index])
        else:
            candidates = self.store.values(namespace)
        if not labels:
            return list(candidates)
        return [o for o in candidates if _matches(o, labels)]

    def _project(self, obj: Obj) -> Obj | None:
        projected = self.source.project(obj)
        return None if projected is None else projections.shared(projected)

    # -- writing through -----------------------------------------------------------------------------

    def observe_write(self, obj: Obj) -> None:
        """Store what a write returned, when it is newer than the cached copy, and tell the handlers: the
        next pass then sees its own write even before the watch event arrives (no second, identical
        write), and every handler sees the change once, whichever of the response and the watch event
        comes first (the event that follows the response changes nothing and is not passed on: a handler
        comparing the old and new object, as lending's does, would otherwise see no change at all)."""
        projected = self._project(obj)
        if projected is None:
            return
        current = self.store.get(*key_of(projected))
        new_rv, old_rv = resource_version(projected), resource_version(current)
        if current is not None and (new_rv is None or old_rv is None or new_rv <= old_rv):
            return
        self._put(current, projected)

    # -- the streams ---------------------------------------------------------------------------------

    async def run(self) -> None:
        namespaces: tuple[str | None, ...] = self.source.namespaces or (None,)
        if not self.kind.namespaced:
            namespaces = (None,)
        await asyncio.gather(*(self._stream(ns, len(namespaces)) for ns in namespaces))

    def _path(self, namespace: str | None) -> str:
        kind = self.kind
        base = f"/api/{kind.version}" if not kind.group else f"/apis/{kind.group}/{kind.version}"
        if namespace is not None:
            return f"{base}/namespaces/{namespace}/{kind.plural}"
        return f"{base}/{kind.plural}"

    async def _stream(self, namespace: str | None, streams: int) -> None:
        failures = 0
        synced_once = False
        listed_once = False  # a first list refused (Forbidden) and allowed later is still the first
        version: str | None = None
        while True:
            try:
                if version is None:
                    version = await self._relist(namespace, initial=not listed_once)
                    listed_once = True
                    if not synced_once:
                        synced_once = True
                        self._streams_synced += 1
                        if self._streams_synced >= streams:
                            self.synced.set()
                started = asyncio.get_running_loop().time()
                version = await self._watch(namespace, version)
                failures = 0
                if asyncio.get_running_loop().time() - started < QUICK_WATCH_SECONDS:
                    # A stream the server ends at once (overload, a proxy's idle cut) must not turn into
                    # a tight reconnect loop.
                    await asyncio.sleep(QUICK_WATCH_SECONDS * random.uniform(0.5, 1.0))
            except asyncio.CancelledError:
                raise
            except ForbiddenError:
                if not synced_once:
                    synced_once = True
                    self.forbidden = True
                    self._streams_synced += 1
                    if self._streams_synced >= streams:
                        self.synced.set()
                log.warning("%s: listing is forbidden; this cache stays empty", self.kind.plural)
                await asyncio.sleep(MAX_BACKOFF * 10)
            except Exception as error:  # network errors, 5xx, malformed lines: back off, resume
                failures += 1
                delay = min(MAX_BACKOFF, 0.5 * 2 ** min(failures, 6)) * random.uniform(0.8, 1.2)
                log.warning(
                    "%s watch stream failed (%s: %s); retrying in %.1fs",
                    self.kind.plural,
                    type(error).__name__,
                    error,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _relist(self, namespace: str | None, *, initial: bool = False) -> str:
        params: dict[str, Any] = {"limit": LIST_PAGE}
        if self.source.label_selector:
            params["labelSelector"] = self.source.label_selector
        seen: dict[Key, Obj] = {}
        version = ""
        while True:
            response = await self.http.get(self._path(namespace), params=params)
            exposition.count_api_request("list", self.kind.plural, response.status_code)
            if response.status_code == 403:
                raise ForbiddenError(response.text[:200])
            response.raise_for_status()
            body = response.json()
            for item in body.get("items") or []:
                # Items of a list carry no kind; the projections and later writes expect it.
                item.setdefault("apiVersion", self.kind.api_version)
                item.setdefault("kind", self.kind.kind)
                projected = self._project(item)
                if projected is not None:
                    seen[key_of(projected)] = projected
            meta = body.get("metadata") or {}
            version = str(meta.get("resourceVersion") or "")
            cont = meta.get("continue")
            if not cont:
                break
            params["continue"] = cont
        stale = [k for k in self.store.objects if (namespace is None or k[0] == namespace) and k not in seen]
        for key in stale:
            self._emit(self.store.pop(key), None)
        # No await from here to the end of the loop: no other stream's event can see the flag.
        self.in_initial_list = initial
        try:
            for key, obj in seen.items():
                self._put(self.store.get(*key), obj)
        finally:
            self.in_initial_list = False
        log.debug("%s: listed %d in %s", self.kind.plural, len(seen), namespace or "all namespaces")
        return version

    async def _watch(self, namespace: str | None, version: str) -> str | None:
        """Follow the stream until the server ends it; the version to resume from, or None to relist."""
        seconds = int(WATCH_SECONDS * random.uniform(0.9, 1.1))
        params: dict[str, Any] = {
            "watch": "true",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": seconds,
        }
        if self.source.label_selector:
            params["labelSelector"] = self.source.label_selector
        timeout = httpx2.Timeout(30.0, read=seconds + 30.0)
        async with self.http.stream("GET", self._path(namespace), params=params, timeout=timeout) as response:
            exposition.count_api_request("watch", self.kind.plural, response.status_code)
            if response.status_code == 410:
                return None
            if response.status_code == 403:
                raise ForbiddenError("watch refused")
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        return None  # too old: the server compacted past our version
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                new_version = (obj.get("metadata") or {}).get("resourceVersion")
                if kind != "BOOKMARK":
                    self._apply(kind, obj)
                if new_version:
                    version = str(new_version)
        return version

    def _apply(self, kind: str, obj: Obj) -> None:
        key = key_of(obj)
        if kind == "DELETED":
            self._emit(self.store.pop(key), None)
            return
        projected = self._project(obj)
        if projected is None:
            # No longer of interest (a pod that finished and is not ours, a label removed).
            old = self.store.pop(key)
            if old is not None:
                self._emit(old, None)
            return
        current = self.store.get(*key)
        new_rv, old_rv = resource_version(projected), resource_version(current)
        if new_rv is not None and old_rv is not None and new_rv < old_rv:
            return  # older than what a write already put here
        self._put(current, projected)

    def _put(self, current: Obj | None, projected: Obj) -> None:
        """Store `projected` and tell the handlers, unless nothing the cache keeps changed (the echo of a
        write already seen, a status field no policy reads, a relist of an unchanged object): no news
        is no pass."""
        self.store.put(projected)
        if current is None or not same_but_version(current, projected):
            self._emit(current, projected)

    def _emit(self, old: Obj | None, new: Obj | None) -> None:
        for handler in self._handlers:
            try:
                handler(old, new)
            except Exception:
                log.exception("%s: event handler failed", self.kind.plural)


def same_but_version(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """The same projection but for `metadata.resourceVersion`."""
    if old.keys() != new.keys():
        return False
    for k, value in old.items():
        if k != "metadata":
            if value != new[k]:
                return False
            continue
        meta = new[k]
        if value.keys() != meta.keys() or any(
            v != meta[m] for m, v in value.items() if m != "resourceVersion"
        ):
            return False
    return True


def _matches(obj: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    have = (obj.get("metadata") or {}).get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


class Reader(Protocol):
    """What controllers read the cluster through (the caches; a fake in unit tests)."""

    def get(self, kind: Kind, name: str, namespace: str | None = None) -> Obj | None: ...

    def list(
        self, kind: Kind, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[Obj]: ...

    def controlled(self, kind: Kind, namespace: str, owner_uids: Iterable[str]) -> builtins.list[Obj]:
        """Objects of `kind` in `namespace` whose controller is one of `owner_uids`: how a controller
        finds its pods (never by label, which anyone who can create a pod can copy)."""
        ...

    def capacity(self) -> capacity.Ledger:
        """GPU capacity: the nodes and what bound pods hold, kept current by the pod and node caches."""
        ...

    def marked(self, kind: Kind, mark: Mark) -> builtins.list[Obj]:
        """The objects of `kind` that pass `mark` (a test the cache of that kind keeps an index of)."""
        ...

    def serves(self, kind: Kind) -> bool:
        """`kind` is watched and readable (an optional API, such as Kueue's, may be neither)."""
        ...

    def forbidden(self, kind: Kind) -> bool:
        """`kind` is watched but RBAC refused to list it: what the cache shows of it is not the truth."""
        ...


class Caches:
    """Every informer of the operator, by kind; the one place controllers read the cluster from."""

    def __init__(self, informers: Iterable[Informer]) -> None:
        self.informers: dict[tuple[str, str], Informer] = {
            (i.kind.api_version, i.kind.kind): i for i in informers
        }
        self._ledger = capacity.Ledger()
        if POD in self:
            self.informer(POD).add_handler(self._on_pod)
            if JOB in self and TRAININGJOB in self:
                self.informer(JOB).add_handler(self._on_owner)
                self.informer(TRAININGJOB).add_handler(self._on_owner)
        if NODE in self:
            self.informer(NODE).add_handler(self._on_node)

    def _on_pod(self, old: Obj | None, new: Obj | None) -> None:
        if new is not None:
            self._ledger.put_pod(capacity.pod_info(self._attributed(new)))
        elif old is not None:
            self._ledger.remove_pod(*key_of(old))

    def _attributed(self, pod: Obj) -> Obj:
        """The pod as GPU accounting may read it: its TrainingJob (and attempt) labels count only when
        its controller is a Job, by UID, that the TrainingJob it names controls, by UID. A tenant's pod
        copying a gang's labels would otherwise count as one of its placed workers (so the gang's
        reservation would shrink) or be left out of the GPUs in use while that gang is admitted."""
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        name = labels.get(TRAININGJOB_LABEL)
        if name is None or JOB not in self or TRAININGJOB not in self or self._is_worker_of(pod, str(name)):
            return pod
        kept = {k: v for k, v in labels.items() if k not in (TRAININGJOB_LABEL, ATTEMPT_LABEL)}
        return {**pod, "metadata": {**meta, "labels": kept}}

    def _is_worker_of(self, pod: Obj, trainingjob: str) -> bool:
        namespace = key_of(pod)[0]
        ref = next(
            (r for r in (pod.get("metadata") or {}).get("ownerReferences") or [] if r.get("controller")), None
        )
        if ref is None or ref.get("kind") != JOB.kind:
            return False
        job = self.get(JOB, str(ref.get("name")), namespace)
        owner = self.get(TRAININGJOB, trainingjob, namespace)
        if job is None or owner is None or str((job.get("metadata") or {}).get("uid")) != str(ref.get("uid")):
            return False
        return controller_uid(job) == str((owner.get("metadata") or {}).get("uid"))

    def _on_owner(self, old: Obj | None, new: Obj | None) -> None:
        """A Job or TrainingJob that appears (a relist may list pods first) or goes: its pods are
        attributed again."""
        if (old is None) == (new is None):
            return
        obj = new if new is not None else old
        assert obj is not None
        uid = str((obj.get("metadata") or {}).get("uid"))
        jobs = [obj] if obj.get("kind") == JOB.kind else self.informer(JOB).store.controlled_by(uid)
        pods = self.informer(POD).store
        for job in jobs:
            for pod in pods.controlled_by(str((job.get("metadata") or {}).get("uid"))):
                self._on_pod(None, pod)

    def _on_node(self, old: Obj | None, new: Obj | None) -> None:
        if new is not None:
            self._ledger.put_node(capacity.node_info(new))
        elif old is not None:
            self._ledger.remove_node(key_of(old)[1])

    def capacity(self) -> capacity.Ledger:
        return self._ledger

    def informer(self, kind: Kind) -> Informer:
        return self.informers[(kind.api_version, kind.kind)]

    def __contains__(self, kind: Kind) -> bool:
        return (kind.api_version, kind.kind) in self.informers

    def serves(self, kind: Kind) -> bool:
        return kind in self and not self.informer(kind).forbidden

    def forbidden(self, kind: Kind) -> bool:
        return kind in self and self.informer(kind).forbidden

    def get(self, kind: Kind, name: str, namespace: str | None = None) -> Obj | None:
        return self.informer(kind).get(namespace or "", name)

    def list(
        self, kind: Kind, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[Obj]:
        return self.informer(kind).list(namespace, labels)

    def controlled(self, kind: Kind, namespace: str, owner_uids: Iterable[str]) -> builtins.list[Obj]:
        return self.informer(kind).controlled(namespace, owner_uids)

    def marked(self, kind: Kind, mark: Mark) -> builtins.list[Obj]:
        return self.informer(kind).store.marked(mark)

    def observe_write(self, obj: Obj) -> None:
        informer = self.informers.get((str(obj.get("apiVersion")), str(obj.get("kind"))))
        if informer is not None:
            informer.observe_write(obj)

    @property
    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers.values())

    async def wait_synced(self) -> None:
        await asyncio.gather(*(i.synced.wait() for i in self.informers.values()))

    def sizes(self) -> dict[str, int]:
        return {i.kind.plural: len(i.store) for i in self.informers.values()}
