"""The watch-fed caches against a scripted API server (httpx's mock transport): paginated list, watch from
the list's resourceVersion, relist after 410 Gone with vanished objects reported as deletions, bookmarks,
write-through that a stale event cannot undo, and the projections that keep memory flat."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from kubeforge.controllers.lending import BORROWING
from kubeforge.kube import informer as informer_module
from kubeforge.kube import projections
from kubeforge.kube.client import applied_hash, unchanged
from kubeforge.kube.informer import Informer, Obj, Source
from kubeforge.kube.kinds import DEPLOYMENT, INFERENCEFLEET, POD

OURS = {"app.kubernetes.io/managed-by": "kubeforge", "kubeforge.dev/inferencefleet": "chat"}


def deployment(name: str, rv: int, replicas: int = 1) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "resourceVersion": str(rv),
            "labels": OURS,
            "managedFields": [{"manager": "kubeforge", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "server"}]}}},
        "status": {"readyReplicas": replicas},
    }


class ScriptedServer:
    """Answers LISTs from `pages` (in order) and WATCHes from `watches` (in order; each a list of events,
    or an int status code). Records every request's query."""

    def __init__(self, pages: list[list[Obj]], watches: list[list[dict[str, Any]] | int]) -> None:
        self.pages = pages
        self.watches = watches
        self.requests: list[dict[str, str]] = []
        self.lists = 0

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        query = dict(request.url.params)
        self.requests.append(query)
        if query.get("watch") == "true":
            if not self.watches:
                return httpx2.Response(200, content=b"")  # the server ends the stream: idle
            script = self.watches.pop(0)
            if isinstance(script, int):
                return httpx2.Response(script, json={"kind": "Status", "code": script})
            body = "".join(json.dumps(e) + "\n" for e in script)
            return httpx2.Response(200, content=body.encode())
        self.lists += 1
        page = self.pages.pop(0)
        meta: dict[str, Any] = {"resourceVersion": "100"}
        if page and page[-1].get("kind") == "Continue":  # a test's marker: more pages follow
            page = page[:-1]
            meta["continue"] = f"after-{page[-1]['metadata']['name']}"
        return httpx2.Response(200, json={"kind": "List", "metadata": meta, "items": page})


def informer(server: ScriptedServer, source: Source) -> Informer:
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(server.handler), base_url="https://k8s")
    return Informer(client, source)


@pytest.fixture(autouse=True)
def quick_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(informer_module, "QUICK_WATCH_SECONDS", 0.01)


async def run_until(inf: Informer, condition: Callable[[], bool]) -> None:
    task = asyncio.create_task(inf.run())
    try:
        for _ in range(200):
            if condition():
                break
            await asyncio.sleep(0.01)
        assert condition()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_list_then_watch_from_the_lists_version_with_bookmarks() -> None:
    server = ScriptedServer(
        [[deployment("a", 10)]],
        [
            [
                {"type": "ADDED", "object": deployment("b", 101)},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "150"}}},
            ]
        ],
    )
    inf = informer(server, Source(DEPLOYMENT, projections.child, "app.kubernetes.io/managed-by=kubeforge"))
    seen: list[tuple[str | None, str | None]] = []
    inf.add_handler(
        lambda old, new: seen.append(
            ((old or {}).get("metadata", {}).get("name"), (new or {}).get("metadata", {}).get("name"))
        )
    )
    await run_until(inf, lambda: len(server.requests) >= 3)
    assert inf.synced.is_set()
    assert sorted(k[1] for k in inf.store.objects) == ["a", "b"]
    watch = server.requests[1]
    assert watch["resourceVersion"] == "100"
    assert watch["allowWatchBookmarks"] == "true"
    assert watch["labelSelector"] == "app.kubernetes.io/managed-by=kubeforge"
    # After the stream ended, the next watch resumes from the bookmark: no relist.
    assert server.requests[2]["resourceVersion"] == "150"
    assert server.lists == 1
    assert seen == [(None, "a"), (None, "b")]


async def test_a_paginated_list_is_one_snapshot() -> None:
    server = ScriptedServer([[deployment("a", 10), {"kind": "Continue"}], [deployment("b", 11)]], [])
    inf = informer(server, Source(DEPLOYMENT, projections.child))
    await run_until(inf, inf.synced.is_set)
    assert sorted(k[1] for k in inf.store.objects) == ["a", "b"]
    assert server.requests[0]["limit"] == str(informer_module.LIST_PAGE)
    assert server.requests[1]["continue"] == "after-a"


async def test_gone_relists_and_reports_what_vanished_as_deleted() -> None:
    server = ScriptedServer([[deployment("a", 10), deployment("b", 11)], [deployment("b", 12)]], [410])
    inf = informer(server, Source(DEPLOYMENT, projections.child))
    deleted: list[str] = []
    inf.add_handler(lambda old, new: deleted.append(old["metadata"]["name"]) if new is None and old else None)
    await run_until(inf, lambda: server.lists >= 2 and len(server.requests) >= 4)
    assert list(inf.store.objects) == [("ns", "b")]
    assert deleted == ["a"]


async def test_forbidden_list_leaves_an_empty_synced_cache_marked_forbidden() -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(403, json={"kind": "Status", "code": 403})

    client = httpx2.AsyncClient(transport=httpx2.MockTransport(refuse), base_url="https://k8s")
    inf = Informer(client, Source(POD, projections.pod))
    await run_until(inf, inf.synced.is_set)
    assert inf.forbidden
    assert len(inf.store) == 0


def test_a_write_refreshes_the_cache_and_an_older_event_cannot_undo_it() -> None:
    inf = Informer(None, Source(DEPLOYMENT, projections.child))  # type: ignore[arg-type]
    inf._apply("ADDED", deployment("a", 10, replicas=1))
    inf.observe_write(deployment("a", 12, replicas=3))
    assert inf.get("ns", "a")["spec"]["replicas"] == 3  # type: ignore[index]
    inf._apply("MODIFIED", deployment("a", 11, replicas=2))
    assert inf.get("ns", "a")["spec"]["replicas"] == 3  # type: ignore[index]
    inf._apply("MODIFIED", deployment("a", 13, replicas=4))
    assert inf.get("ns", "a")["spec"]["replicas"] == 4  # type: ignore[index]


def _recording(inf: Informer) -> list[tuple[str | None, str | None]]:
    """(old, new) resourceVersions of every change the handlers are told about."""
    seen: list[tuple[str | None, str | None]] = []
    inf.add_handler(
        lambda old, new: seen.append(
            (
                (old or {}).get("metadata", {}).get("resourceVersion"),
                (new or {}).get("metadata", {}).get("resourceVersion"),
            )
        )
    )
    return seen


@pytest.mark.parametrize("echo_first", [False, True])
def test_a_write_is_news_once_whichever_of_its_response_and_its_event_comes_first(echo_first: bool) -> None:
    """The response of a write and its watch event race. Before, a response stored first made the event
    look like no change to a handler comparing old and new (lending's wake-up of the job a fleet borrows
    from), and a response that came second was never passed on: now the first of the two is the news and
    the second is nothing."""
    inf = Informer(None, Source(DEPLOYMENT, projections.child))  # type: ignore[arg-type]
    inf._apply("ADDED", deployment("a", 10, replicas=1))
    seen = _recording(inf)
    written = deployment("a", 12, replicas=3)
    if echo_first:
        inf._apply("MODIFIED", written)
        inf.observe_write(written)
    else:
        inf.observe_write(written)
        inf._apply("MODIFIED", written)
    assert seen == [("10", "12")]


def test_a_change_to_what_the_cache_does_not_keep_is_no_news() -> None:
    """A PodDisruptionBudget's status moves with every pod of its fleet; nothing reads it."""
    pdb: Obj = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "chat", "namespace": "ns", "resourceVersion": "5", "labels": OURS},
        "spec": {"minAvailable": 1},
        "status": {"currentHealthy": 0},
    }
    inf = Informer(None, Source(DEPLOYMENT, projections.child))  # type: ignore[arg-type]
    inf._apply("ADDED", pdb)
    seen = _recording(inf)
    inf._apply(
        "MODIFIED",
        {**pdb, "metadata": {**pdb["metadata"], "resourceVersion": "6"}, "status": {"currentHealthy": 1}},
    )
    assert seen == []
    assert inf.get("ns", "chat")["metadata"]["resourceVersion"] == "6"  # type: ignore[index]
    inf._apply("MODIFIED", deployment("chat", 7))  # a real change still is news
    assert seen == [("6", "7")]


async def test_only_the_first_lists_objects_are_told_as_the_initial_list() -> None:
    """A watch event, and an object new to a relist after a 410 (a change missed meanwhile), are
    changes; what the first list found was there before the operator started."""
    server = ScriptedServer(
        [[deployment("a", 10)], [deployment("a", 10), deployment("c", 13)]],
        [[{"type": "ADDED", "object": deployment("b", 101)}], 410],
    )
    inf = informer(server, Source(DEPLOYMENT, projections.child))
    told: list[tuple[str, bool]] = []
    inf.add_handler(
        lambda old, new: told.append((new["metadata"]["name"], inf.in_initial_list)) if new else None
    )
    await run_until(inf, lambda: server.lists >= 2 and len(server.requests) >= 4)
    assert sorted(told) == [("a", True), ("b", False), ("c", False)]
    assert not inf.in_initial_list


async def test_a_relist_tells_only_what_changed() -> None:
    server = ScriptedServer(
        [[deployment("a", 10), deployment("b", 11)], [deployment("a", 10), deployment("b", 12, replicas=2)]],
        [410],
    )
    inf = informer(server, Source(DEPLOYMENT, projections.child))
    seen = _recording(inf)
    await run_until(inf, lambda: server.lists >= 2 and len(server.requests) >= 4)
    assert seen == [(None, "10"), (None, "11"), ("11", "12")]


def test_label_index_lists_by_owner() -> None:
    inf = Informer(None, Source(POD, projections.pod, index_labels=("kubeforge.dev/inferencefleet",)))  # type: ignore[arg-type]
    for i, owner in enumerate(["chat", "chat", "code"]):
        inf._apply(
            "ADDED",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"p{i}",
                    "namespace": "ns",
                    "resourceVersion": str(i + 1),
                    "labels": {**OURS, "kubeforge.dev/inferencefleet": owner},
                },
                "spec": {"containers": []},
            },
        )
    assert sorted(
        p["metadata"]["name"] for p in inf.list("ns", {"kubeforge.dev/inferencefleet": "chat"})
    ) == [
        "p0",
        "p1",
    ]
    inf._apply("DELETED", {"metadata": {"name": "p0", "namespace": "ns"}})
    assert [p["metadata"]["name"] for p in inf.list("ns", {"kubeforge.dev/inferencefleet": "chat"})] == ["p1"]


def _fleet(name: str, rv: int, borrowed: bool = False, deleting: bool = False) -> Obj:
    meta: Obj = {"name": name, "namespace": "ns", "resourceVersion": str(rv), "uid": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    status: Obj = {"borrowed": [{"job": "ns/train", "gpus": 1}]} if borrowed else {}
    return {
        "apiVersion": INFERENCEFLEET.api_version,
        "kind": "InferenceFleet",
        "metadata": meta,
        "status": status,
    }


def test_a_mark_keeps_exactly_the_objects_that_pass_it_through_every_change() -> None:
    inf = Informer(None, Source(INFERENCEFLEET, projections.owned_resource, marks=(BORROWING,)))  # type: ignore[arg-type]

    def marked() -> list[str]:
        return sorted(f["metadata"]["name"] for f in inf.store.marked(BORROWING))

    inf._apply("ADDED", _fleet("a", 1, borrowed=True))
    inf._apply("ADDED", _fleet("b", 2))
    assert marked() == ["a"]
    inf._apply("MODIFIED", _fleet("b", 3, borrowed=True))
    inf._apply("MODIFIED", _fleet("a", 4))  # gave its GPUs back
    assert marked() == ["b"]
    inf._apply("MODIFIED", _fleet("b", 5, borrowed=True, deleting=True))  # a fleet going holds nothing
    assert marked() == []
    inf._apply("MODIFIED", _fleet("a", 6, borrowed=True))
    inf._apply("DELETED", _fleet("a", 7, borrowed=True))
    assert marked() == []
    with pytest.raises(ValueError, match="no mark"):
        Informer(None, Source(INFERENCEFLEET, projections.owned_resource)).store.marked(BORROWING)  # type: ignore[arg-type]


GPU_POD: Obj = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "other",
        "namespace": "team-b",
        "annotations": {"big": "x" * 10_000, "batch.kubernetes.io/job-completion-index": "3"},
        "managedFields": [{"manager": "kubelet"}],
    },
    "spec": {
        "nodeName": "h100-0",
        "containers": [
            {
                "name": "c",
                "image": "img",
                "env": [{"name": "A", "value": "1"}],
                "resources": {"limits": {"nvidia.com/gpu": "2", "cpu": "4"}},
            }
        ],
    },
    "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]},
}


@pytest.mark.parametrize(
    ("pod", "kept"),
    [
        (GPU_POD, True),
        ({**GPU_POD, "status": {"phase": "Succeeded"}}, False),
        ({**GPU_POD, "spec": {"containers": [{"name": "c"}]}}, False),
        (
            {**GPU_POD, "metadata": {"name": "w", "labels": OURS}, "spec": {"containers": [{"name": "c"}]}},
            True,
        ),
    ],
    ids=["gpu-pod", "finished", "cpu-only-not-ours", "ours-without-gpu"],
)
def test_pod_projection_keeps_what_policies_read(pod: Obj, kept: bool) -> None:
    projected = projections.pod(pod)
    assert (projected is not None) == kept
    if projected is None or pod is not GPU_POD:
        return
    assert projected["spec"] == {
        "nodeName": "h100-0",
        "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "2"}}}],
    }
    assert projected["metadata"]["annotations"] == {"batch.kubernetes.io/job-completion-index": "3"}
    assert "managedFields" not in projected["metadata"]
    assert "podIP" not in projected["status"]
    assert len(json.dumps(projected)) < len(json.dumps(pod)) / 10


def test_applied_hash_ignores_the_annotation_it_writes_and_sees_any_other_change() -> None:
    desired = deployment("a", 1)
    desired["metadata"].pop("resourceVersion")
    stamped = json.loads(json.dumps(desired))
    stamped["metadata"]["annotations"] = {"kubeforge.dev/applied-hash": applied_hash(desired)}
    assert applied_hash(stamped) == applied_hash(desired)
    assert unchanged(desired, projections.child(stamped))
    changed = json.loads(json.dumps(desired))
    changed["spec"]["replicas"] = 2
    assert not unchanged(changed, projections.child(stamped))
    assert not unchanged(desired, None)


class FakeLightkube:
    """The one lightkube call `Kube.apply` makes: server-side apply, answered like an API server that
    bumps `generation` when the spec changes."""

    def __init__(self) -> None:
        self.applied: list[Obj] = []
        self.generation = 0
        self.last_spec: Any = None

    async def apply(self, obj: Any, field_manager: str, force: bool) -> Obj:
        body = json.loads(json.dumps(dict(obj)))
        self.applied.append(body)
        if body.get("spec") != self.last_spec:
            self.generation += 1
            self.last_spec = body.get("spec")
        body["metadata"]["generation"] = self.generation
        return dict(body)


def fake_kube() -> tuple[Any, FakeLightkube]:
    from kubeforge.kube.client import Kube

    kube = object.__new__(Kube)
    fake = FakeLightkube()
    kube._client = fake  # type: ignore[assignment]
    kube.field_manager = "kubeforge"
    kube.observer = None
    kube._generations = {}
    return kube, fake


async def test_apply_if_changed_writes_only_what_differs_and_repairs_what_others_changed() -> None:
    kube, server = fake_kube()
    desired = deployment("a", 1)
    desired["metadata"].pop("resourceVersion")
    desired["metadata"].pop("managedFields")
    fresh = json.loads(json.dumps(desired))
    cached = projections.child(await kube.apply(json.loads(json.dumps(desired))))
    assert cached is not None
    assert len(server.applied) == 1
    assert await kube.apply_if_changed(json.loads(json.dumps(fresh)), cached) is None, "converged: no write"
    # Someone scaled it by hand: same annotation, new generation. Ours wins again.
    edited = json.loads(json.dumps(cached))
    edited["metadata"]["generation"] = cached["metadata"]["generation"] + 1
    assert await kube.apply_if_changed(json.loads(json.dumps(fresh)), edited) is not None
    assert len(server.applied) == 2
    # A restarted operator (nothing in memory) trusts the annotation: no write either.
    restarted, server2 = fake_kube()
    assert await restarted.apply_if_changed(json.loads(json.dumps(fresh)), cached) is None
    assert server2.applied == []
    # A real change is written.
    changed = json.loads(json.dumps(fresh))
    changed["spec"]["replicas"] = 3
    assert await restarted.apply_if_changed(changed, cached) is not None


async def test_a_child_controlled_by_another_owner_is_never_written() -> None:
    from kubeforge.kube.client import NotOursError

    kube, server = fake_kube()
    desired = deployment("a", 1)
    desired["metadata"].pop("resourceVersion")
    desired["metadata"]["ownerReferences"] = [
        {"kind": "TrainingJob", "name": "a", "uid": "tj", "controller": True}
    ]
    theirs = json.loads(json.dumps(desired))
    theirs["metadata"]["ownerReferences"] = [
        {"kind": "InferenceFleet", "name": "a", "uid": "fl", "controller": True}
    ]
    with pytest.raises(NotOursError, match="not controlled by this object"):
        await kube.apply_if_changed(desired, projections.child(theirs))
    assert server.applied == []


def test_cached_objects_share_their_keys_and_short_values() -> None:
    """Two objects the informer cached from separate events hold the same key and repeated-value
    strings (one copy in memory), equal to what was decoded; long values and values unique by nature
    (UIDs, timestamps) are left as they came."""
    long_value = "x" * (projections.SHARED_MAX + 1)

    def event(name: str) -> Obj:
        text = json.dumps(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": name,
                    "namespace": "team-a",
                    "uid": "0ca9cadf-eee1-402c-9ddc-a0142d6e5136",
                    "resourceVersion": "7",
                    "labels": {"app": "chat", "note": long_value},
                },
                "status": {
                    "conditions": [{"type": "Available", "lastTransitionTime": "2026-12-01T00:00:00Z"}]
                },
            }
        )
        decoded: Obj = json.loads(text)
        return decoded

    inf = Informer(None, Source(DEPLOYMENT, projections.child))  # type: ignore[arg-type]
    inf._apply("ADDED", event("a"))
    inf._apply("ADDED", event("b"))
    first, second = inf.store.get("team-a", "a"), inf.store.get("team-a", "b")
    assert first is not None
    assert second is not None
    assert first == projections.child(event("a"))
    assert all(a is b for a, b in zip(first["metadata"], second["metadata"], strict=True))
    assert first["metadata"]["namespace"] is second["metadata"]["namespace"]
    assert first["metadata"]["labels"]["app"] is second["metadata"]["labels"]["app"]
    assert first["status"]["conditions"][0]["type"] is second["status"]["conditions"][0]["type"]
    assert first["metadata"]["labels"]["note"] is not second["metadata"]["labels"]["note"]
    assert first["metadata"]["uid"] is not second["metadata"]["uid"]
    stamp = "lastTransitionTime"
    assert first["status"]["conditions"][0][stamp] is not second["status"]["conditions"][0][stamp]
