"""The shared reconcile runtime: coalescing, retry with backoff, forgetting deleted objects."""

from __future__ import annotations

import asyncio
from typing import Any

from kubeforge.controllers.runtime import OperatorConfig, Runtime, owner_of
from kubeforge.kube.client import KINDS, Kind, Obj

TJ = KINDS[("kubeforge.dev/v1alpha1", "TrainingJob")]


class FakeKube:
    """Just enough of `Kube` for the runtime: `get` and `list` over a dict."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], Obj] = {}

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        return self.objects.get((namespace or "", name))

    async def list(self, api_version: str, kind: str, namespace: str | None = None, **_: Any) -> list[Obj]:
        return [o for (ns, _n), o in self.objects.items() if namespace in (None, ns)]


class RecordingController:
    kind: Kind = TJ
    child_kinds: tuple[Kind, ...] = ()

    def __init__(self, *, fail_times: int = 0, delay: float = 0.0) -> None:
        self.passes: list[str] = []
        self.forgotten: list[tuple[str, str]] = []
        self.fail_times = fail_times
        self.delay = delay
        self.closed = False

    async def reconcile(self, obj: Obj) -> None:
        self.passes.append(obj["metadata"]["name"])
        await asyncio.sleep(self.delay)
        if self.fail_times:
            self.fail_times -= 1
            raise RuntimeError("API hiccup")

    async def forget(self, namespace: str, name: str) -> None:
        self.forgotten.append((namespace, name))

    async def close(self) -> None:
        self.closed = True


def _obj(name: str) -> Obj:
    return {"metadata": {"name": name, "namespace": "ns"}}


async def _settle(runtime: Runtime, seconds: float = 0.2) -> None:
    await asyncio.sleep(seconds)


async def test_requests_during_a_pass_coalesce_into_one_more_pass() -> None:
    kube, controller = FakeKube(), RecordingController(delay=0.05)
    kube.objects[("ns", "a")] = _obj("a")
    runtime = Runtime(kube, controller, OperatorConfig())  # type: ignore[arg-type]
    runtime.request("ns", "a")
    runtime.request("ns", "a")  # before the pass has read anything: the same pass serves it
    await asyncio.sleep(0.02)
    for _ in range(9):
        runtime.request("ns", "a")
    await _settle(runtime)
    # One pass for the first two requests, one for the nine that arrived while it ran.
    assert controller.passes == ["a", "a"]
    await runtime.stop()
    assert controller.closed


async def test_failed_pass_is_retried_with_backoff() -> None:
    kube, controller = FakeKube(), RecordingController(fail_times=1)
    kube.objects[("ns", "a")] = _obj("a")
    runtime = Runtime(kube, controller, OperatorConfig())  # type: ignore[arg-type]
    runtime.request("ns", "a")
    await asyncio.sleep(1.3)  # first retry after 1 s
    assert controller.passes == ["a", "a"]
    await runtime.stop()


async def test_deleted_object_is_forgotten_not_reconciled() -> None:
    kube, controller = FakeKube(), RecordingController()
    runtime = Runtime(kube, controller, OperatorConfig())  # type: ignore[arg-type]
    runtime.request("ns", "gone")
    await _settle(runtime)
    assert controller.passes == []
    assert controller.forgotten == [("ns", "gone")]
    await runtime.stop()


async def test_resync_requests_every_object_in_the_watched_namespaces() -> None:
    kube, controller = FakeKube(), RecordingController()
    kube.objects[("ns", "a")] = _obj("a")
    kube.objects[("other", "b")] = {"metadata": {"name": "b", "namespace": "other"}}
    runtime = Runtime(kube, controller, OperatorConfig(namespaces=("ns",), resync_seconds=60))  # type: ignore[arg-type]
    task = asyncio.create_task(runtime.resync_forever())
    await _settle(runtime)
    task.cancel()
    assert controller.passes == ["a"]
    await runtime.stop()


def test_owner_of_reads_the_controller_reference() -> None:
    child = {
        "metadata": {"ownerReferences": [{"apiVersion": TJ.api_version, "kind": "TrainingJob", "name": "x"}]}
    }
    assert owner_of(child, TJ) == "x"
    assert owner_of({"metadata": {}}, TJ) is None
