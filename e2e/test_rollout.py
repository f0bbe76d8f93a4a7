"""InferenceFleet progressive rollouts end to end: the load simulator plays the model servers (and injects
errors or latency into one revision), a real Prometheus scrapes it every second, the operator (scoped to
the test's namespace) measures each revision from Prometheus only.

Timings are short on purpose: 2 s analysis intervals over a 4 s window, steps of a few seconds."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kubeforge.api.inferencefleet import InferenceFleetSpec
from kubeforge.api.rollout import AnalysisSpec
from kubeforge.builders.inferencefleet import revision as template_revision
from kubeforge.metrics.promql import revision_queries
from kubeforge_e2e import GpuSpec, Kubectl, LocalCluster, NodeSpec, wait_for
from kubeforge_e2e.loadsim import LoadSimulator
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.prometheus import PrometheusProcess
from kubeforge_e2e.workloads import IMAGE, condition, fleet, get_fleet, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[1]
INTERVAL = 2
ANALYSIS: dict[str, Any] = {
    "intervalSeconds": INTERVAL,
    "windowSeconds": 4,
    "maxErrorRate": 0.05,
    "maxLatencyP95": 1.0,
    "failureLimit": 2,
    "inconclusiveLimit": 15,
}
STEPS: list[dict[str, Any]] = [{"weight": 25, "pauseSeconds": 3}, {"weight": 50, "pauseSeconds": 3}]
# 4 slots of 0.2 s: 20 requests/s per replica; 20 requests/s over 4 replicas is light load (p95 ~0.2 s).
MODEL = {"service_seconds": 0.2, "slots": 4}
RPS = 20.0


# -- helpers -----------------------------------------------------------------------------------------


def rollout_of(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return dict(get_fleet(kubectl, namespace, name).get("status", {}).get("rollout") or {})


def deployments(kubectl: Kubectl, namespace: str) -> dict[str, dict[str, Any]]:
    items = kubectl.json("get", "deployments", "-n", namespace, "-o", "json")["items"]
    return {d["metadata"]["labels"]["kubeforge.dev/revision"]: d for d in items}


def replicas_by_revision(kubectl: Kubectl, namespace: str) -> dict[str, int]:
    return {rev: int(d["spec"]["replicas"]) for rev, d in deployments(kubectl, namespace).items()}


def ready_by_revision(kubectl: Kubectl, namespace: str) -> dict[str, int]:
    return {
        rev: int((d.get("status") or {}).get("readyReplicas") or 0)
        for rev, d in deployments(kubectl, namespace).items()
    }


def revision_of(spec: dict[str, Any]) -> str:
    return template_revision(InferenceFleetSpec.model_validate(spec))


def events(kubectl: Kubectl, namespace: str, name: str) -> list[tuple[str, str, str]]:
    items = kubectl.json(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    )["items"]
    return [(e.get("type", ""), e.get("reason", ""), e.get("message", "")) for e in items]


def cli(kubectl: Kubectl, cluster: LocalCluster, namespace: str, *args: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubeforge.cli",
            *args,
            "-n",
            namespace,
            "--kubeconfig",
            str(cluster.kubeconfig),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=cluster.env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubeforge {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def wait_phase(
    kubectl: Kubectl, namespace: str, name: str, phase: str, timeout: float = 90, **fields: Any
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        ro = rollout_of(kubectl, namespace, name)
        if ro.get("phase") != phase:
            return None
        return ro if all(ro.get(k) == v for k, v in fields.items()) else None

    return wait_for(reached, timeout=timeout, interval=0.25, description=f"rollout {phase} {fields}")


def steady_fleet(
    kubectl: Kubectl, loadsim: LoadSimulator | None, namespace: str, name: str, body: dict[str, Any]
) -> str:
    """Apply a fleet, offer it load (unless no simulator is given), wait until it serves with nothing
    rolling out; its revision."""
    if loadsim is not None:
        loadsim.set_load(namespace, name, RPS, **MODEL)
    kubectl.apply(fleet(name, **body), namespace)
    wait_ready(kubectl, namespace, name)
    ro = wait_phase(kubectl, namespace, name, "Promoted")
    stable = str(ro["stableRevision"])
    wait_for(
        lambda: deployments(kubectl, namespace).keys() == {stable},
        timeout=60,
        description="one revision",
    )
    return stable


def base_spec(**extra: Any) -> dict[str, Any]:
    return {
        "replicas": 4,
        "resources": {"cpu": "100m"},
        "placement": {"spreadZones": False, "spreadNodes": False},
        **extra,
    }


# -- tests -------------------------------------------------------------------------------------------


def test_good_revision_walks_its_steps_and_the_old_one_is_scaled_away(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess, loadsim: LoadSimulator
) -> None:
    name = "good"
    body = base_spec(rollout={"steps": STEPS, "analysis": ANALYSIS})
    first = steady_fleet(kubectl, loadsim, namespace, name, body)

    new_body = {**body, "image": IMAGE + "-v2"}
    second = revision_of({**fleet(name, **new_body)["spec"]})
    started = time.monotonic()
    kubectl.apply(fleet(name, **new_body), namespace)

    weights: list[int] = []
    shares: set[tuple[int, int]] = set()

    def promoted() -> dict[str, Any] | None:
        ro = rollout_of(kubectl, namespace, name)
        weights.append(int(ro.get("canaryWeight") or 0))
        reps = replicas_by_revision(kubectl, namespace)
        shares.add((reps.get(first, 0), reps.get(second, 0)))
        if ro.get("phase") == "Promoted" and ro.get("stableRevision") == second:
            return ro
        return None

    ro = wait_for(promoted, timeout=120, interval=0.25, description=f"{second} promoted")
    took = time.monotonic() - started
    assert (3, 1) in shares, f"25% step (3 stable + 1 canary) never seen: {sorted(shares)}"
    assert (2, 2) in shares, f"50% step never seen: {sorted(shares)}"
    assert ro["lastAnalysis"] is None or ro["lastAnalysis"]["verdict"] == "Pass"
    wait_for(
        lambda: deployments(kubectl, namespace).keys() == {second},
        timeout=60,
        description=f"old revision {first} scaled away and deleted",
    )
    obj = wait_ready(kubectl, namespace, name)
    history = {e["revision"]: e for e in obj["status"]["rollout"]["history"]}
    assert history[first]["phase"] == "Superseded"
    assert history[second]["phase"] == "Stable"
    assert history[second]["image"] == IMAGE + "-v2"
    reasons = [r for _, r, _ in events(kubectl, namespace, name)]
    assert "RolloutStarted" in reasons
    assert "StepAdvanced" in reasons
    assert "Promoted" in reasons
    print(f"\ngood rollout: {took:.1f}s from apply to promoted (steps {STEPS})")


def test_bad_revision_is_rolled_back_within_two_intervals_and_never_promoted_again(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    loadsim: LoadSimulator,
    prometheus: PrometheusProcess,
) -> None:
    name = "bad"
    body = base_spec(rollout={"steps": STEPS, "analysis": ANALYSIS})
    stable = steady_fleet(kubectl, loadsim, namespace, name, body)
    bad_body = {**body, "image": IMAGE + "-broken"}
    bad = revision_of(fleet(name, **bad_body)["spec"])
    loadsim.set_fault(namespace, name, bad, error_rate=0.3)
    error_query = revision_queries(AnalysisSpec.model_validate(ANALYSIS), namespace, name, bad).error_rate
    assert error_query is not None

    kubectl.apply(fleet(name, **bad_body), namespace)
    breach_at: float | None = None
    back_at: float | None = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now = time.monotonic()
        if breach_at is None:
            value = prometheus.query(error_query)
            if value is not None and value > ANALYSIS["maxErrorRate"]:
                breach_at = now
        reps = replicas_by_revision(kubectl, namespace)
        ro = rollout_of(kubectl, namespace, name)
        if reps.get(bad, 0) == 0 and reps.get(stable) == 4 and ro.get("phase") == "RolledBack":
            back_at = now
            break
        time.sleep(0.2)
    assert back_at is not None, f"never rolled back: {rollout_of(kubectl, namespace, name)}"
    assert breach_at is not None, "the breach never showed in Prometheus"
    elapsed = back_at - breach_at
    print(f"\nbreach in Prometheus -> replicas back on stable: {elapsed:.1f}s (interval {INTERVAL}s)")
    assert elapsed <= 2 * INTERVAL + 0.5, f"rollback took {elapsed:.1f}s after the breach"

    ro = rollout_of(kubectl, namespace, name)
    assert ro["canaryWeight"] == 0
    assert bad in ro["failedRevisions"]
    assert ro["stableRevision"] == stable
    assert ro["lastAnalysis"]["verdict"] == "Fail"
    obj = get_fleet(kubectl, namespace, name)
    degraded = condition(obj, "Degraded")
    assert degraded is not None
    assert (degraded["status"], degraded["reason"]) == ("True", "RolledBack")
    warnings = [(r, m) for t, r, m in events(kubectl, namespace, name) if t == "Warning"]
    assert any(r == "RolledBack" and bad in m for r, m in warnings), warnings
    # ... and counted in the operator's own metrics.
    assert f'kubeforge_rollout_outcomes_total{{namespace="{namespace}",outcome="RolledBack"}} 1.0' in (
        operator.metrics()
    )

    def holds() -> None:
        ro = rollout_of(kubectl, namespace, name)
        assert ro["phase"] == "RolledBack"
        assert ro["stableRevision"] == stable
        assert replicas_by_revision(kubectl, namespace).get(bad, 0) == 0

    # Not re-promoted on later passes (the resync runs every 5 s, the rollout ticks every 2 s) ...
    for _ in range(10):
        holds()
        time.sleep(0.5)
    # ... nor after an operator restart.
    operator.restart()
    for _ in range(16):
        holds()
        time.sleep(0.5)
    wait_ready(kubectl, namespace, name, timeout=30)

    # A new template is a new revision: it rolls out (and, without the fault, is promoted).
    fixed_body = {**body, "image": IMAGE + "-fixed"}
    kubectl.apply(fleet(name, **fixed_body), namespace)
    fixed = revision_of(fleet(name, **fixed_body)["spec"])
    wait_phase(kubectl, namespace, name, "Promoted", timeout=120, stableRevision=fixed)


def test_full_cluster_rollout_swaps_in_place(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str, operator: OperatorProcess, loadsim: LoadSimulator
) -> None:
    """Eight replicas of one GPU on two nodes of four GPUs of a product nobody else uses: no free GPU."""
    product = f"KF-RO-{namespace[-6:].upper()}"
    nodes = [f"ro-{namespace[-6:]}-{i}" for i in range(2)]
    for node in nodes:
        cluster.add_node(
            NodeSpec(name=node, zone="zone-c", gpu=GpuSpec(product=product, count=4, memory_mib=1024))
        )
    try:
        name = "full"
        body = {
            "replicas": 8,
            "resources": {"gpus": 1, "gpuType": product},
            "rollout": {"steps": [{"weight": 50, "pauseSeconds": 1}, {"weight": 100, "pauseSeconds": 1}]},
        }
        first = steady_fleet(kubectl, loadsim, namespace, name, body)
        new_body = {**body, "image": IMAGE + "-v2"}
        second = revision_of(fleet(name, **new_body)["spec"])
        started = time.monotonic()
        kubectl.apply(fleet(name, **new_body), namespace)
        lowest_ready, most_asked = 8, 8

        def done() -> bool:
            nonlocal lowest_ready, most_asked
            ready = ready_by_revision(kubectl, namespace)
            lowest_ready = min(lowest_ready, sum(ready.values()))
            most_asked = max(most_asked, sum(replicas_by_revision(kubectl, namespace).values()))
            ro = rollout_of(kubectl, namespace, name)
            return (
                ro.get("phase") == "Promoted"
                and ro.get("stableRevision") == second
                and deployments(kubectl, namespace).keys() == {second}
                and ready.get(second) == 8
            )

        wait_for(done, timeout=180, interval=0.25, description="swapped in place and promoted")
        took = time.monotonic() - started
        # The disruption budget allows one pod down (maxUnavailable 1): never fewer than 7 ready.
        assert lowest_ready >= 7, f"ready fell to {lowest_ready}"
        # No surge: the operator never asked for a pod the full cluster could not place.
        assert most_asked == 8, f"asked for {most_asked} pods on 8 GPUs"
        assert first != second
        print(
            f"\nfull-cluster rollout of 8 GPU replicas: {took:.1f}s, lowest ready {lowest_ready},"
            f" most pods asked {most_asked}"
        )
    finally:
        for node in nodes:
            if cluster.get_node(node) is not None:
                cluster.delete_node(node)


def test_pause_promote_abort_and_rollback_from_the_command_line(
    cluster: LocalCluster,
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    loadsim: LoadSimulator,
) -> None:
    name = "manual"
    # One manual step at 50%: the rollout waits there for `kubeforge rollout promote`.
    body = base_spec(rollout={"steps": [{"weight": 50}]})
    v1 = steady_fleet(kubectl, loadsim, namespace, name, body)

    # pause before the template changes: the new revision does not start
    cli(kubectl, cluster, namespace, "rollout", "pause", name)
    v2_body = {**body, "image": IMAGE + "-v2", "rollout": {**body["rollout"], "paused": True}}
    kubectl.apply(fleet(name, **v2_body), namespace)
    v2 = revision_of(fleet(name, **v2_body)["spec"])
    wait_phase(kubectl, namespace, name, "Paused", canaryRevision=v2)
    time.sleep(3)
    assert replicas_by_revision(kubectl, namespace).get(v2, 0) == 0, "paused: no canary pods"

    # resume: the step starts and waits for a promote (no pauseSeconds)
    cli(kubectl, cluster, namespace, "rollout", "resume", name)
    ro = wait_for(
        lambda: (
            (r := rollout_of(kubectl, namespace, name)).get("canaryWeight") == 50
            and "promote" in r.get("message", "")
            and r
        ),
        timeout=60,
        description="50% step waiting for a promote",
    )
    assert ro["phase"] == "Paused"
    status = json.loads(cli(kubectl, cluster, namespace, "rollout", "status", name))
    assert status["canaryRevision"] == v2

    # promote: v2 becomes stable
    cli(kubectl, cluster, namespace, "rollout", "promote", name)
    wait_phase(kubectl, namespace, name, "Promoted", stableRevision=v2)

    # abort a third revision mid-step: everything back on v2
    v3_body = {**body, "image": IMAGE + "-v3"}
    kubectl.apply(fleet(name, **v3_body), namespace)
    v3 = revision_of(fleet(name, **v3_body)["spec"])
    wait_for(
        lambda: rollout_of(kubectl, namespace, name).get("canaryWeight") == 50,
        timeout=60,
        description="v3 at 50%",
    )
    cli(kubectl, cluster, namespace, "rollout", "abort", name)
    wait_phase(kubectl, namespace, name, "Aborted", canaryRevision=v3)
    wait_for(
        lambda: (
            replicas_by_revision(kubectl, namespace).get(v3, 0) == 0
            and replicas_by_revision(kubectl, namespace).get(v2) == 4
        ),
        timeout=30,
        description="v3 at zero, v2 at 4",
    )

    # manual rollback to revision 1 (v1) from the history: a rollout like any other
    history = {e["number"]: e["revision"] for e in rollout_of(kubectl, namespace, name)["history"]}
    number = next(n for n, r in history.items() if r == v1)
    cli(kubectl, cluster, namespace, "rollback", name, "--to-revision", str(number))
    spec = get_fleet(kubectl, namespace, name)["spec"]["rollout"]
    assert spec["targetRevision"] == v1
    wait_for(
        lambda: (
            rollout_of(kubectl, namespace, name).get("canaryRevision") == v1
            and rollout_of(kubectl, namespace, name).get("canaryWeight") == 50
        ),
        timeout=60,
        description="v1 rebuilt from its ControllerRevision and at 50%",
    )
    cli(kubectl, cluster, namespace, "rollout", "promote", name)
    wait_phase(kubectl, namespace, name, "Promoted", stableRevision=v1)
    wait_for(
        lambda: deployments(kubectl, namespace).keys() == {v1},
        timeout=60,
        description="only v1 left",
    )
    pod_images = {
        c["image"]
        for p in kubectl.json("get", "pods", "-n", namespace, "-o", "json")["items"]
        if not p["metadata"].get("deletionTimestamp")
        for c in p["spec"]["containers"]
    }
    assert pod_images == {IMAGE}


def test_operator_killed_mid_rollout_resumes_where_it_was(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess, loadsim: LoadSimulator
) -> None:
    name = "resume"
    steps = [{"weight": 25, "pauseSeconds": 4}, {"weight": 50, "pauseSeconds": 4}, {"weight": 75}]
    body = base_spec(rollout={"steps": steps, "analysis": ANALYSIS})
    first = steady_fleet(kubectl, loadsim, namespace, name, body)
    new_body = {**body, "image": IMAGE + "-v2"}
    second = revision_of(fleet(name, **new_body)["spec"])
    kubectl.apply(fleet(name, **new_body), namespace)
    before = wait_phase(kubectl, namespace, name, "Progressing", timeout=60, currentStep=1, canaryWeight=50)
    operator.kill()  # SIGKILL, mid-step
    time.sleep(6)  # longer than the step's pause: nothing moves without the operator
    reps = replicas_by_revision(kubectl, namespace)
    assert (reps.get(first), reps.get(second)) == (2, 2)
    operator.start()

    seen_steps: list[int] = []

    def at_manual_step() -> dict[str, Any] | None:
        ro = rollout_of(kubectl, namespace, name)
        seen_steps.append(int(ro.get("currentStep") or 0))
        reps = replicas_by_revision(kubectl, namespace)
        assert reps.get(second, 0) >= 2, f"canary went back below the 50% step: {reps}"
        return ro if ro.get("currentStep") == 2 and ro.get("canaryWeight") == 75 else None

    ro = wait_for(at_manual_step, timeout=60, interval=0.25, description="resumed to the 75% step")
    assert min(seen_steps) >= 1, f"the rollout started over: {seen_steps}"
    assert ro["canaryRevision"] == second
    assert ro["stepStartedAt"] >= before["stepStartedAt"]
    starts = [m for _, r, m in events(kubectl, namespace, name) if r == "RolloutStarted"]
    assert len(starts) == 1, f"the rollout was started again: {starts}"
