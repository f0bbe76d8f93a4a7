"""What a reconcile does not wait for: Events go out in the background, and a pass's concurrent
writes finish (or are cancelled) before the pass returns."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from lightkube import ApiError

from kubeforge.controllers.runtime import together
from kubeforge.kube import client as client_module
from kubeforge.kube.client import Kube
from kubeforge.kube.config import load_access
from kubeforge.metrics import exposition

INVOLVED = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "uid": "u"}}


class FakeCreate:
    """Stands in for lightkube's create: holds every request until `release` is set."""

    def __init__(self, *, fail: bool = False) -> None:
        self.release = asyncio.Event()
        self.sent: list[str] = []
        self.fail = fail

    async def __call__(self, obj: Any) -> Any:
        await self.release.wait()
        if self.fail:
            raise ApiError(response=_response(500))
        self.sent.append(obj.reason)
        return obj


def _response(code: int) -> Any:
    import httpx2

    return httpx2.Response(
        code,
        json={"kind": "Status", "code": code, "message": "boom"},
        request=httpx2.Request("POST", "https://k8s"),
    )


def kube_with(tmp_path: Path, create: FakeCreate) -> Kube:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "current-context: x\n"
    )
    kube = Kube(load_access(kubeconfig=kubeconfig, in_cluster=False))
    kube._client.create = create  # type: ignore[method-assign, assignment]
    return kube


async def test_an_event_does_not_hold_the_reconcile_up_and_is_sent_in_the_background(tmp_path: Path) -> None:
    create = FakeCreate()
    kube = kube_with(tmp_path, create)
    async with asyncio.timeout(1):
        await kube.event(INVOLVED, type_="Normal", reason="Serving", message="ready")
    assert create.sent == []  # the API server has not answered yet
    create.release.set()
    await kube.flush_events()
    assert create.sent == ["Serving"]
    await kube.close()


async def test_closing_sends_the_events_still_queued(tmp_path: Path) -> None:
    create = FakeCreate()
    kube = kube_with(tmp_path, create)
    for reason in ("A", "B", "C"):
        await kube.event(INVOLVED, type_="Normal", reason=reason, message="")
    create.release.set()
    await kube.close()
    assert sorted(create.sent) == ["A", "B", "C"]


async def test_a_full_queue_drops_and_counts_new_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "EVENT_QUEUE", 2)
    monkeypatch.setattr(client_module, "EVENT_SENDERS", 1)
    create = FakeCreate()
    kube = kube_with(tmp_path, create)
    dropped = exposition.EVENTS_DROPPED._value.get()
    for reason in ("1", "2", "3", "4", "5"):
        await kube.event(INVOLVED, type_="Normal", reason=reason, message="")
        await asyncio.sleep(0)  # the sender takes the first one off the queue
    create.release.set()
    await kube.close()
    assert create.sent == ["1", "2", "3"]  # one in flight, two queued
    assert exposition.EVENTS_DROPPED._value.get() - dropped == 2


async def test_an_event_the_api_server_refuses_is_logged_and_the_next_ones_still_go(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    failing = FakeCreate(fail=True)
    kube = kube_with(tmp_path, failing)
    failing.release.set()
    await kube.event(INVOLVED, type_="Warning", reason="Broken", message="")
    await kube.flush_events()
    assert "could not record event Broken on p" in caplog.text
    working = FakeCreate()
    working.release.set()
    kube._client.create = working  # type: ignore[method-assign, assignment]
    await kube.event(INVOLVED, type_="Normal", reason="Fine", message="")
    await kube.flush_events()
    assert working.sent == ["Fine"]
    await kube.close()


class BoomError(Exception):
    pass


async def test_together_cancels_the_others_and_raises_the_first_error_itself() -> None:
    finished: list[str] = []
    cancelled: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
            finished.append("slow")
        except asyncio.CancelledError:
            cancelled.append("slow")
            raise

    async def fails() -> None:
        await asyncio.sleep(0)
        raise BoomError("child not ours")

    with pytest.raises(BoomError, match="child not ours"):
        await together(slow(), fails())
    assert (finished, cancelled) == ([], ["slow"])


async def test_together_waits_for_every_job() -> None:
    done: list[int] = []

    async def job(n: int) -> None:
        await asyncio.sleep(0.01 * n)
        done.append(n)

    await together(*(job(n) for n in (3, 1, 2)))
    assert done == [1, 2, 3]
