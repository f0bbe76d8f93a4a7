"""The load simulator itself (no cluster needed): the queueing model, the exposition, the control API."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeforge_e2e import wait_for
from kubeforge_e2e.loadsim import Fault, FleetModel, LoadSimulator, PodInfo, erlang_c, render

pytestmark = pytest.mark.timeout(60)


def pods(n: int, revision: str = "r1") -> list[PodInfo]:
    return [PodInfo(f"p{i}", revision, True) for i in range(n)]


def model(replicas: int, rps: float) -> FleetModel:
    fleet = FleetModel("ns", "chat", rps=rps, service_seconds=0.2, slots=4)
    fleet.sync_pods(pods(replicas))
    return fleet


@pytest.mark.parametrize(
    ("servers", "offered", "expected"),
    [(1, 0.5, 0.5), (2, 1.0, 1 / 3), (4, 4.0, 1.0), (0, 1.0, 1.0)],
)
def test_erlang_c(servers: int, offered: float, expected: float) -> None:
    assert erlang_c(servers, offered) == pytest.approx(expected)


@given(st.integers(1, 60), st.floats(0.0, 0.99))
def test_erlang_c_is_a_probability_that_grows_with_load(servers: int, rho: float) -> None:
    low = erlang_c(servers, servers * rho * 0.5)
    high = erlang_c(servers, servers * rho)
    assert 0.0 <= low <= high <= 1.0


def test_latency_rises_steeply_towards_saturation() -> None:
    p95 = [model(c, 50).p95() for c in (5, 4, 3)]
    assert p95 == sorted(p95)
    assert p95[0] == pytest.approx(0.2, abs=0.01)  # lightly loaded: the service time
    assert p95[2] > 0.4


def test_overload_builds_a_backlog_that_drains() -> None:
    fleet = model(1, 50)
    for _ in range(10):
        fleet.advance(1.0)
    assert fleet.backlog == pytest.approx(300)
    assert fleet.p95() > 10
    fleet.sync_pods(pods(5))
    for _ in range(7):
        fleet.advance(1.0)
    assert fleet.backlog == 0
    assert fleet.p95() < 0.25


def test_histograms_are_cumulative_and_counters_monotonic() -> None:
    fleet = model(2, 10)
    previous: list[float] = []
    for _ in range(5):
        fleet.advance(0.5)
        series = fleet.pods["p0"]
        assert series.buckets == sorted(series.buckets)
        assert series.buckets[-1] <= series.count + 1e-9
        total = [series.count, series.ok, *series.buckets]
        assert all(a >= b for a, b in zip(total, previous, strict=False))
        previous = total
    assert fleet.pods["p0"].count == pytest.approx(10 / 2 * 2.5)


def test_faults_hit_one_revision() -> None:
    fleet = FleetModel("ns", "chat", rps=20)
    fleet.sync_pods([PodInfo("a", "good", True), PodInfo("b", "bad", True)])
    fleet.faults["bad"] = Fault(error_rate=0.5, extra_latency=1.0)
    fleet.advance(1.0)
    assert fleet.pods["a"].errors == 0
    assert fleet.pods["b"].errors == pytest.approx(5.0)
    assert fleet.pods["b"].buckets[-1] < fleet.pods["a"].buckets[-1]


def test_only_ready_pods_report() -> None:
    fleet = FleetModel("ns", "chat", rps=10)
    fleet.sync_pods([PodInfo("a", "r", True), PodInfo("b", "r", False)])
    fleet.advance(1.0)
    text = render([fleet])
    assert 'pod="a"' in text
    assert 'pod="b"' not in text
    assert 'kubeforge_loadsim_offered_rps{namespace="ns",kubeforge_dev_inferencefleet="chat"} 10.0' in text


def test_exposition_is_parseable() -> None:
    fleet = model(2, 10)
    fleet.advance(1.0)
    names = set()
    for line in render([fleet]).splitlines():
        if line.startswith("#"):
            continue
        name_and_labels, value = line.rsplit(" ", 1)
        float(value)
        names.add(name_and_labels.split("{", 1)[0])
        assert name_and_labels.count("{") == 1
        assert name_and_labels.endswith("}")
    for expected in (
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "http_request_duration_seconds_count",
        "http_requests_total",
        "DCGM_FI_DEV_GPU_UTIL",
    ):
        assert expected in names


def test_http_control_and_metrics() -> None:
    calls: list[tuple[str, str]] = []

    def lister(namespace: str, name: str) -> Sequence[PodInfo]:
        calls.append((namespace, name))
        return pods(2)

    with LoadSimulator(lister, tick=0.05, pod_refresh=0.05) as sim:
        body = json.dumps({"namespace": "ns", "name": "chat", "rps": 12}).encode()
        request = urllib.request.Request(f"{sim.url}/fleets", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

        def ready() -> bool:
            return bool(sim.snapshot("ns", "chat")["ready"] == 2)

        wait_for(ready, timeout=10, interval=0.05, description="pods seen")
        with urllib.request.urlopen(f"{sim.url}/metrics", timeout=5) as response:
            text = response.read().decode()
        assert 'vllm:e2e_request_latency_seconds_count{namespace="ns"' in text
        with urllib.request.urlopen(f"{sim.url}/fleets", timeout=5) as response:
            [state] = json.loads(response.read())
        assert state["rps"] == 12
        assert math.isfinite(state["p95"])
        bad = urllib.request.Request(f"{sim.url}/fleets", data=b'{"name": "x"}', method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(bad, timeout=5)
        assert info.value.code == 400
    assert ("ns", "chat") in calls
