"""`kubeforge top` as a command, with the API client replaced by one that records its calls: one LIST per
kind and refresh, in the namespace the cluster resolution gives (every namespace with -A), and `-w`
printing only when the figures changed."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from kubeforge import cli

Obj = dict[str, Any]


def _fleet(ready: int) -> Obj:
    return {
        "metadata": {"name": "chat", "namespace": "team-a"},
        "spec": {"resources": {"gpus": 1}},
        "status": {"readyReplicas": ready, "desiredReplicas": 3, "replicas": 3},
    }


class FakeKube:
    """Answers LISTs from `pages` (one dict of kind -> items per refresh, the last one repeated)."""

    pages: list[dict[str, list[Obj]]] = []
    calls: list[tuple[str, str, str | None]] = []

    def __init__(self, access: Any) -> None:
        self.refresh = 0

    async def list(self, api_version: str, kind: str, namespace: str | None = None) -> list[Obj]:
        FakeKube.calls.append(("list", kind, namespace))
        page = FakeKube.pages[min(self.refresh, len(FakeKube.pages) - 1)]
        if kind == "TrainingJob":
            self.refresh += 1
        return page.get(kind, [])

    async def get(self, *args: Any) -> Obj:
        raise AssertionError("top must not read objects one by one")

    async def close(self) -> None:
        pass


@pytest.fixture
def fake_cluster(monkeypatch: pytest.MonkeyPatch) -> type[FakeKube]:
    import kubeforge.kube.client
    import kubeforge.kube.config

    FakeKube.calls = []
    monkeypatch.setattr(kubeforge.kube.client, "Kube", FakeKube)
    monkeypatch.setattr(
        kubeforge.kube.config,
        "resolve_access",
        lambda **kw: SimpleNamespace(namespace=kw["namespace"] or "ctx-ns"),
    )
    return FakeKube


def test_one_list_per_kind_in_the_contexts_namespace(
    fake_cluster: type[FakeKube], capsys: pytest.CaptureFixture[str]
) -> None:
    fake_cluster.pages = [{"InferenceFleet": [_fleet(2)]}]
    assert cli.main(["top"]) == 0
    assert fake_cluster.calls == [("list", "InferenceFleet", "ctx-ns"), ("list", "TrainingJob", "ctx-ns")]
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[:5] == ["team-a", "chat", "<none>", "<none>", "2/3"]


@pytest.mark.parametrize(
    ("argv", "calls"),
    [
        (["top", "-A"], [("list", "InferenceFleet", None), ("list", "TrainingJob", None)]),
        (["top", "jobs", "-n", "other"], [("list", "TrainingJob", "other")]),
    ],
)
def test_namespace_and_kind_flags(
    fake_cluster: type[FakeKube], argv: list[str], calls: list[tuple[str, str, str | None]]
) -> None:
    fake_cluster.pages = [{}]
    assert cli.main(argv) == 0
    assert fake_cluster.calls == calls


def test_nothing_found_is_said_on_stderr(
    fake_cluster: type[FakeKube], capsys: pytest.CaptureFixture[str]
) -> None:
    fake_cluster.pages = [{}]
    assert cli.main(["top", "-n", "empty"]) == 0
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "No resources found in empty namespace.\n")


def test_watch_prints_a_table_only_when_it_changed(
    fake_cluster: type[FakeKube], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_cluster.pages = [{"InferenceFleet": [_fleet(ready)]} for ready in (1, 1, 2, 2, 3)]
    naps = []

    async def nap(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 6:
            raise KeyboardInterrupt  # Ctrl-C

    monkeypatch.setattr(asyncio, "sleep", nap)
    assert cli.main(["top", "-w", "--interval", "0.5", "-o", "json"]) == 130
    lines = capsys.readouterr().out.splitlines()
    ready = [json.loads(line)["inferenceFleets"][0]["readyReplicas"] for line in lines]
    assert ready == [1, 2, 3]  # six refreshes, three different states
    assert naps == [0.5] * 6
    assert len(fake_cluster.calls) == 12  # two LISTs per refresh, nothing else


def test_an_unreachable_api_server_is_a_message_and_watch_carries_on(
    fake_cluster: type[FakeKube], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx2

    fake_cluster.pages = [{"InferenceFleet": [_fleet(3)]}]
    failures = iter([True, False])

    async def flaky(self: FakeKube, api_version: str, kind: str, namespace: str | None = None) -> list[Obj]:
        if kind == "InferenceFleet" and next(failures, False):
            raise httpx2.ConnectError("connection refused")
        return fake_cluster.pages[0].get(kind, [])

    monkeypatch.setattr(FakeKube, "list", flaky)
    assert cli.main(["top"]) == 1
    assert capsys.readouterr().err == "error: connection refused\n"

    failures = iter([True, False])
    naps = iter([None])

    async def one_nap(seconds: float) -> None:
        if next(naps, "stop") == "stop":
            raise KeyboardInterrupt

    monkeypatch.setattr(asyncio, "sleep", one_nap)
    assert cli.main(["top", "-w"]) == 130
    captured = capsys.readouterr()
    assert captured.err == "error: connection refused\n"
    assert "3/3" in captured.out  # the next refresh shows the table
