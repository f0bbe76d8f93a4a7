"""InferenceFleet autoscaling end to end: the load simulator plays the model servers, a real Prometheus
scrapes it every second, the operator reads only Prometheus.

Timings are short on purpose (2 s evaluations, 10 s stable window, 4 s panic window, 20 s scale-down
stabilization); the defaults (10 s / 60 s / 6 s / 300 s) behave the same, only slower."""

from __future__ import annotations

import time
from typing import Any

import pytest

from kubeforge.api.inferencefleet import Autoscaling
from kubeforge.metrics.promql import fleet_queries
from kubeforge_e2e import Kubectl, wait_for
from kubeforge_e2e.loadsim import LoadSimulator
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.prometheus import PrometheusProcess
from kubeforge_e2e.workloads import fleet, fleet_pods, get_fleet, is_true, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus, pytest.mark.timeout(420)]

INTERVAL = 2
AUTOSCALING: dict[str, Any] = {
    "minReplicas": 1,
    "maxReplicas": 5,
    "metric": "latencyP95",
    "target": 0.5,
    "intervalSeconds": INTERVAL,
    "stableWindowSeconds": 10,
    "panicWindowSeconds": 4,
    "scaleDownStabilizationSeconds": 20,
    "tolerance": 0.1,
}
# The simulated server: 4 concurrent slots of 0.2 s each, so 20 requests per second per replica.
MODEL = {"service_seconds": 0.2, "slots": 4}


def autoscaler(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return dict(get_fleet(kubectl, namespace, name).get("status", {}).get("autoscaler") or {})


def desired(kubectl: Kubectl, namespace: str, name: str) -> int:
    return int(get_fleet(kubectl, namespace, name).get("status", {}).get("desiredReplicas", 0))


def deployment_replicas(kubectl: Kubectl, namespace: str, name: str) -> int:
    revision = get_fleet(kubectl, namespace, name)["status"]["revision"]
    dep = kubectl.get("deployment", f"{name}-{revision}", namespace)
    return int(dep["spec"]["replicas"]) if dep else -1


def with_condition(kubectl: Kubectl, namespace: str, name: str, type_: str) -> dict[str, Any] | None:
    obj = get_fleet(kubectl, namespace, name)
    return obj if is_true(obj, type_) else None


def settle_on_metrics(kubectl: Kubectl, namespace: str, name: str, replicas: int) -> None:
    def settled() -> bool:
        record = autoscaler(kubectl, namespace, name)
        return record.get("metricValue") is not None and record.get("desiredReplicas") == replicas

    wait_for(
        settled, timeout=60, interval=0.5, description=f"autoscaler reading metrics at {replicas} replicas"
    )


def wait_settled(kubectl: Kubectl, namespace: str, name: str, spec: Autoscaling, hold: float) -> int:
    """Wait for the desired count to stay unchanged for `hold` seconds, ready and under target."""
    last, since = -1, time.monotonic()
    deadline = since + 240
    while time.monotonic() < deadline:
        st = get_fleet(kubectl, namespace, name)["status"]
        count = int(st.get("desiredReplicas", -1))
        value = (st.get("autoscaler") or {}).get("metricValue")
        ok = st.get("readyReplicas") == count and value is not None and value < spec.target
        if count != last or not ok:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= hold:
            return count
        time.sleep(0.5)
    raise TimeoutError(f"fleet {name} never settled (last count {last})")


def test_latency_breach_scales_up_within_one_interval_settles_and_scales_down_after_stabilization(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    loadsim: LoadSimulator,
    prometheus: PrometheusProcess,
) -> None:
    name = "chat"
    spec = Autoscaling.model_validate(AUTOSCALING)
    queries = fleet_queries(spec, namespace, name)
    loadsim.set_load(namespace, name, 5, **MODEL)
    kubectl.apply(fleet(name, resources={"gpus": 1, "gpuType": "L4"}, autoscaling=AUTOSCALING), namespace)
    wait_ready(kubectl, namespace, name)
    settle_on_metrics(kubectl, namespace, name, 1)

    # Step up: 50 rps against one replica that serves 20.
    loadsim.set_load(namespace, name, 50, **MODEL)
    breach_at: float | None = None
    decision_at: float | None = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and decision_at is None:
        now = time.monotonic()
        stable, panic = prometheus.query(queries.stable), prometheus.query(queries.panic)
        breached = (stable is not None and stable > spec.target * (1 + spec.tolerance)) or (
            panic is not None and panic >= spec.panic_threshold * spec.target
        )
        if breached and breach_at is None:
            breach_at = now
        if desired(kubectl, namespace, name) > 1:
            decision_at = time.monotonic()
        time.sleep(0.1)
    assert breach_at is not None, "the breach never showed in Prometheus"
    assert decision_at is not None, "no scale-up decision"
    breach_to_decision = decision_at - breach_at
    print(f"breach-to-decision: {breach_to_decision:.2f}s (interval {INTERVAL}s)")
    assert breach_to_decision <= INTERVAL + 1.0, "a scale-up needs at most one evaluation after the breach"
    record = autoscaler(kubectl, namespace, name)
    assert record["reason"] in ("PanicScaleUp", "ScaleUp", "Panic", "AtMaximum")
    assert record["metric"] == "latencyP95"
    assert record["target"] == 0.5

    # It settles: a ready count that holds latency under target and stays, for longer than the
    # stabilization window (a first scale-down may probe one step too far, breach, and learn from it).
    settled = wait_settled(
        kubectl, namespace, name, spec, hold=spec.scale_down_stabilization_seconds + 5 * INTERVAL
    )
    latency = prometheus.query(queries.stable)
    assert latency is not None
    assert latency < spec.target
    assert loadsim.snapshot(namespace, name)["p95"] < spec.target
    print(f"settled at {settled} replicas, p95 {latency:.3f}s")

    events = kubectl.json(
        "get", "events", "-n", namespace, "--field-selector", "reason=ScaledUp", "-o", "json"
    )["items"]
    assert events, "a count change is an Event"
    assert "kubeforge_autoscaler_decisions_total" in operator.metrics()

    # Load falls: nothing happens before the stabilization window has passed.
    loadsim.set_load(namespace, name, 5, **MODEL)
    fell_at = time.monotonic()
    down_at = None
    while time.monotonic() < fell_at + 90:
        if desired(kubectl, namespace, name) < settled:
            down_at = time.monotonic()
            break
        time.sleep(0.25)
    assert down_at is not None, "never scaled down"
    print(f"scale-down {down_at - fell_at:.1f}s after the load fell")
    assert down_at - fell_at >= spec.scale_down_stabilization_seconds - 1
    assert autoscaler(kubectl, namespace, name)["reason"] == "ScaleDown"
    wait_for(
        lambda: desired(kubectl, namespace, name) <= 2 and len(fleet_pods(kubectl, namespace, name)) <= 2,
        timeout=90,
        description="down to at most 2 replicas",
    )


def test_prometheus_down_holds_replicas_and_flags_metrics_unavailable(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    loadsim: LoadSimulator,
    prometheus: PrometheusProcess,
) -> None:
    name = "held"
    scaling = {**AUTOSCALING, "maxReplicas": 3, "scaleDownStabilizationSeconds": 4}
    loadsim.set_load(namespace, name, 50, **MODEL)
    kubectl.apply(fleet(name, resources={"cpu": "1"}, autoscaling=scaling), namespace)
    wait_for(
        lambda: (
            desired(kubectl, namespace, name) == 3
            and get_fleet(kubectl, namespace, name)["status"].get("readyReplicas") == 3
        ),
        timeout=90,
        description="scaled to 3 under load",
    )
    metrics_ok = get_fleet(kubectl, namespace, name)
    assert not is_true(metrics_ok, "MetricsUnavailable")

    prometheus.stop()
    try:
        loadsim.set_load(namespace, name, 0, **MODEL)  # were it read, this would scale the fleet down
        obj = wait_for(lambda: with_condition(kubectl, namespace, name, "MetricsUnavailable"), timeout=30)
        cond = next(c for c in obj["status"]["conditions"] if c["type"] == "MetricsUnavailable")
        assert cond["reason"] == "PrometheusUnreachable"
        for _ in range(6):  # well beyond the 4 s stabilization window
            assert desired(kubectl, namespace, name) == 3
            assert deployment_replicas(kubectl, namespace, name) == 3
            time.sleep(INTERVAL)
        assert autoscaler(kubectl, namespace, name)["reason"] == "MetricsUnavailable"
    finally:
        prometheus.start()
    wait_for(
        lambda: not is_true(get_fleet(kubectl, namespace, name), "MetricsUnavailable"),
        timeout=60,
        description="MetricsUnavailable cleared after Prometheus is back",
    )


def test_more_replicas_than_gpus_is_capacity_limited_without_runaway(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    loadsim: LoadSimulator,
    prometheus: PrometheusProcess,
) -> None:
    """Four L4 GPUs per replica: the two L4 nodes (4 GPUs each) hold two replicas, the load wants six."""
    name = "big"
    scaling = {**AUTOSCALING, "maxReplicas": 6}
    loadsim.set_load(namespace, name, 200, **MODEL)
    kubectl.apply(fleet(name, resources={"gpus": 4, "gpuType": "L4"}, autoscaling=scaling), namespace)
    obj = wait_for(lambda: with_condition(kubectl, namespace, name, "CapacityLimited"), timeout=90)
    assert "Insufficient nvidia.com/gpu" in next(
        c["message"] for c in obj["status"]["conditions"] if c["type"] == "CapacityLimited"
    )

    def pending_pods() -> int:
        return sum(1 for p in fleet_pods(kubectl, namespace, name) if not p["spec"].get("nodeName"))

    # The scale-up that found the limit may have asked for several pods at once; the next evaluation
    # trims the request to what is scheduled plus one.
    wait_for(lambda: pending_pods() <= 1, timeout=2 * INTERVAL + 5, interval=0.25, description="trimmed")
    max_pending = 0
    end = time.monotonic() + 8 * INTERVAL
    while time.monotonic() < end:
        pods = fleet_pods(kubectl, namespace, name)
        scheduled = sum(1 for p in pods if p["spec"].get("nodeName"))
        pending = len(pods) - scheduled
        max_pending = max(max_pending, pending)
        assert pending <= 1, f"{pending} pods pending: runaway"
        assert desired(kubectl, namespace, name) <= scheduled + 1
        time.sleep(0.5)
    assert is_true(get_fleet(kubectl, namespace, name), "CapacityLimited")
    assert autoscaler(kubectl, namespace, name)["reason"] in ("CapacityLimited", "PanicScaleUp", "Panic")
    print(f"capacity-limited at {desired(kubectl, namespace, name)} desired, at most {max_pending} pending")


def test_operator_restart_resumes_the_autoscaler(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    loadsim: LoadSimulator,
    prometheus: PrometheusProcess,
) -> None:
    """Killed mid-stabilization, the operator comes back with the same desired count and does not drop
    replicas the persisted stabilization window still protects."""
    name = "resume"
    scaling = {**AUTOSCALING, "maxReplicas": 3, "scaleDownStabilizationSeconds": 30}
    loadsim.set_load(namespace, name, 50, **MODEL)
    kubectl.apply(fleet(name, resources={"cpu": "1"}, autoscaling=scaling), namespace)
    wait_for(lambda: desired(kubectl, namespace, name) == 3, timeout=90, description="scaled to 3")
    time.sleep(3)
    loadsim.set_load(namespace, name, 5, **MODEL)
    time.sleep(12)  # the stable window now reads low latency; stabilization still holds 3
    operator.kill()
    assert autoscaler(kubectl, namespace, name)["recommendations"], "window persisted in status"
    operator.start()
    start = time.monotonic()
    while time.monotonic() - start < 8:
        assert desired(kubectl, namespace, name) == 3
        time.sleep(0.5)
    wait_for(
        lambda: desired(kubectl, namespace, name) < 3, timeout=60, description="scale-down after the window"
    )
