"""InferenceFleet scale to zero end to end: the load simulator plays the model servers and, as a gateway in
front of the fleet would, counts the offered load per fleet (`kubeforge_loadsim_offered_rps`), which is
what wakes a fleet that has no pods to report anything. A real Prometheus scrapes it every second; the
operator reads only Prometheus.

Windows are short on purpose (1 s evaluations, 5 s stable window, the minimum idleSeconds of 10 s)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from kubeforge_e2e import Kubectl, wait_for
from kubeforge_e2e.loadsim import LoadSimulator
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.prometheus import PrometheusProcess
from kubeforge_e2e.workloads import condition, fleet, fleet_pods, get_fleet, is_true

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus, pytest.mark.timeout(420)]

INTERVAL = 1
IDLE_SECONDS = 10
THRESHOLD = 0.5
AUTOSCALING: dict[str, Any] = {
    "minReplicas": 1,
    "maxReplicas": 3,
    "metric": "requestsPerSecond",
    "target": 10,
    "intervalSeconds": INTERVAL,
    "stableWindowSeconds": 5,
    "panicWindowSeconds": 3,
    "scaleDownStabilizationSeconds": 4,
    "scaleToZero": {
        "enabled": True,
        "idleSeconds": IDLE_SECONDS,
        "activationThreshold": THRESHOLD,
        "activationQuery": "sum(kubeforge_loadsim_offered_rps{$selector})",
    },
}
# 4 slots of 0.2 s: 20 requests/s per replica.
MODEL = {"service_seconds": 0.2, "slots": 4}


def status_of(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return dict(get_fleet(kubectl, namespace, name).get("status") or {})


def deployment_replicas(kubectl: Kubectl, namespace: str, name: str) -> int:
    items = kubectl.json("get", "deployments", "-n", namespace, "-o", "json")["items"]
    return sum(int(d["spec"]["replicas"]) for d in items)


def scaled_events(kubectl: Kubectl, namespace: str, name: str) -> list[tuple[str, str]]:
    items = kubectl.json(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    )["items"]
    return [(e["reason"], e.get("message", "")) for e in items if e["reason"] in ("ScaledUp", "ScaledDown")]


def test_idle_fleet_scales_to_zero_and_load_above_the_activation_threshold_wakes_it(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    loadsim: LoadSimulator,
    prometheus: PrometheusProcess,
) -> None:
    name = "sleepy"
    loadsim.set_load(namespace, name, 5.0, **MODEL)
    kubectl.apply(fleet(name, resources={"cpu": "100m"}, autoscaling=AUTOSCALING), namespace)

    def serving_on_metrics() -> dict[str, Any] | None:
        st = status_of(kubectl, namespace, name)
        record = st.get("autoscaler") or {}
        ok = st.get("readyReplicas") == 1 and record.get("metricValue") is not None
        return st if ok and is_true(get_fleet(kubectl, namespace, name), "Ready") else None

    wait_for(
        serving_on_metrics, timeout=90, interval=0.5, description="1 replica, autoscaler reading metrics"
    )

    # -- idle: no load for longer than idleSeconds ------------------------------------------------------
    loadsim.set_load(namespace, name, 0.0, **MODEL)
    idle_from = time.monotonic()
    zero_at: float | None = None
    deadline = idle_from + IDLE_SECONDS + 60
    while time.monotonic() < deadline:
        st = status_of(kubectl, namespace, name)
        if st.get("desiredReplicas") == 0:
            zero_at = time.monotonic()
            break
        assert st.get("desiredReplicas", 0) >= 1
        time.sleep(0.25)
    assert zero_at is not None, f"never scaled to zero: {status_of(kubectl, namespace, name)}"
    to_zero = zero_at - idle_from
    # Not before idleSeconds of no requests (the rate needs up to a stable window to read zero first).
    assert to_zero >= IDLE_SECONDS, f"scaled to zero {to_zero:.1f}s after the load stopped"
    wait_for(
        lambda: (
            deployment_replicas(kubectl, namespace, name) == 0 and not fleet_pods(kubectl, namespace, name)
        ),
        timeout=30,
        description="no pods left",
    )
    obj = wait_for(
        lambda: (
            (o := get_fleet(kubectl, namespace, name))["status"].get("replicas") == 0
            and is_true(o, "Ready")
            and o
        ),
        timeout=30,
        description="Ready at zero",
    )
    ready = condition(obj, "Ready")
    assert ready is not None
    assert ready["reason"] == "ScaledToZero", ready
    assert not is_true(obj, "MetricsUnavailable"), condition(obj, "MetricsUnavailable")
    assert obj["status"]["autoscaler"]["reason"] == "ScaledToZero"
    assert any(r == "ScaledDown" and "-> 0 replicas" in m for r, m in scaled_events(kubectl, namespace, name))

    # -- load at or below the activation threshold does not wake it --------------------------------------
    loadsim.set_load(namespace, name, THRESHOLD * 0.4, **MODEL)
    quiet_until = time.monotonic() + 6 * INTERVAL + AUTOSCALING["stableWindowSeconds"]
    while time.monotonic() < quiet_until:
        st = status_of(kubectl, namespace, name)
        assert st.get("desiredReplicas") == 0, f"woke below the activation threshold: {st.get('autoscaler')}"
        assert deployment_replicas(kubectl, namespace, name) == 0
        time.sleep(0.5)
    record = status_of(kubectl, namespace, name)["autoscaler"]
    assert record["reason"] == "ScaledToZero", record

    # -- load above the threshold wakes it to minReplicas, Ready ------------------------------------------
    loadsim.set_load(namespace, name, 10.0, **MODEL)
    woke_from = time.monotonic()

    def awake() -> dict[str, Any] | None:
        obj = get_fleet(kubectl, namespace, name)
        st = obj.get("status") or {}
        ok = st.get("desiredReplicas", 0) >= 1 and st.get("readyReplicas", 0) >= 1 and is_true(obj, "Ready")
        return obj if ok else None

    obj = wait_for(awake, timeout=60, interval=0.25, description="awake and Ready")
    to_ready = time.monotonic() - woke_from
    ready = condition(obj, "Ready")
    assert ready is not None
    assert ready["reason"] != "ScaledToZero", ready
    assert any(
        r == "ScaledUp" and "0 -> 1 replicas (Activated)" in m
        for r, m in scaled_events(kubectl, namespace, name)
    ), scaled_events(kubectl, namespace, name)

    # ... and, with load, it stays awake (for longer than idleSeconds).
    awake_until = time.monotonic() + IDLE_SECONDS + 2
    while time.monotonic() < awake_until:
        st = status_of(kubectl, namespace, name)
        assert st.get("desiredReplicas", 0) >= 1, f"went back to zero under load: {st.get('autoscaler')}"
        time.sleep(0.5)
    assert status_of(kubectl, namespace, name).get("readyReplicas", 0) >= 1
    print(
        f"\nscale to zero: {to_zero:.1f}s after the load stopped (idleSeconds {IDLE_SECONDS}); "
        f"awake and Ready {to_ready:.1f}s after load returned"
    )
