"""Rollout guarantees end to end, where the API server, the scheduler and the command line decide: a
baseline-only analysis that could never finish is refused by the CRD (issue 9.11), a fleet of one
replica keeps its stable pod serving at a 10% step when a GPU is free, or swaps in place when none is
(issue 9.10), and `kubeforge rollout undo` goes back to the last revision promoted, never to a canary
that was abandoned (issue 9.12)."""

from __future__ import annotations

from typing import Any

import pytest

from kubeforge_e2e import GpuSpec, Kubectl, KubectlError, LocalCluster, NodeSpec, wait_for
from kubeforge_e2e.workloads import IMAGE, fleet, get_fleet
from test_rollout import (
    cli,
    ready_by_revision,
    replicas_by_revision,
    revision_of,
    rollout_of,
    steady_fleet,
    wait_phase,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


BASELINE_ONLY = {"maxErrorRateIncrease": 0.01}


@pytest.mark.parametrize(
    "rollout",
    [
        {"strategy": "Rolling", "analysis": BASELINE_ONLY},
        {"strategy": "Recreate", "analysis": {"maxLatencyIncreaseRatio": 0.2}},
        {"steps": [{"weight": 10}, {"weight": 100, "pauseSeconds": 5}], "analysis": BASELINE_ONLY},
    ],
    ids=["rolling", "recreate", "last-step-100"],
)
def test_unfinishable_baseline_only_analysis_is_refused_naming_the_field(
    kubectl: Kubectl, namespace: str, crds: None, rollout: dict[str, Any]
) -> None:
    with pytest.raises(KubectlError) as info:
        kubectl.apply(fleet("baseline-only", rollout=rollout), namespace)
    message = str(info.value)
    assert "spec.rollout.analysis" in message, message
    assert "only baseline limits" in message, message
    assert kubectl.get("inferencefleet", "baseline-only", namespace) is None
    # The same limits with an absolute one, or steps ending below 100%, are accepted.
    kubectl.apply(
        fleet("ok", rollout={**rollout, "analysis": {**BASELINE_ONLY, "maxErrorRate": 0.05}}), namespace
    )
    kubectl.apply(fleet("ok2", rollout={"steps": [{"weight": 10}], "analysis": BASELINE_ONLY}), namespace)


@pytest.mark.usefixtures("fleet_operator")
@pytest.mark.parametrize(("gpus_on_node", "stable_kept"), [(2, 1), (1, 0)], ids=["gpu-free", "no-gpu-free"])
def test_one_replica_at_ten_percent(
    cluster: LocalCluster,
    kubectl: Kubectl,
    namespace: str,
    gpus_on_node: int,
    stable_kept: int,
) -> None:
    """One replica of one GPU on a node of a product nobody else uses. With a second GPU free, the 10%
    step surges a canary pod and the stable pod keeps serving (traffic 50/50 by ready pods); with none,
    the pods swap in place (the disruption budget, maxUnavailable 1, allows the one pod down) and the
    operator never asks for a pod the node cannot place."""
    product = f"KF-SM-{namespace[-6:].upper()}"
    node = f"sm-{namespace[-6:]}"
    cluster.add_node(
        NodeSpec(name=node, zone="zone-c", gpu=GpuSpec(product=product, count=gpus_on_node, memory_mib=1024))
    )
    try:
        name = "small"
        body = {
            "replicas": 1,
            "resources": {"gpus": 1, "gpuType": product},
            "placement": {"spreadZones": False, "spreadNodes": False},
            "rollout": {"steps": [{"weight": 10}, {"weight": 100, "pauseSeconds": 0}]},
        }
        first = steady_fleet(kubectl, None, namespace, name, body)
        new_body = {**body, "image": IMAGE + "-v2"}
        second = revision_of(fleet(name, **new_body)["spec"])
        kubectl.apply(fleet(name, **new_body), namespace)
        lowest_stable, most_asked = 1, 1

        def at_step() -> dict[str, Any] | None:
            nonlocal lowest_stable, most_asked
            ready = ready_by_revision(kubectl, namespace)
            lowest_stable = min(lowest_stable, ready.get(first, 0))
            most_asked = max(most_asked, sum(replicas_by_revision(kubectl, namespace).values()))
            ro = rollout_of(kubectl, namespace, name)
            settled = ready.get(second) == 1 and ready.get(first, 0) == stable_kept
            return ro if settled and ro.get("phase") == "Paused" and ro.get("currentStep") == 0 else None

        ro = wait_for(at_step, timeout=120, interval=0.25, description="canary ready at the 10% step")
        if stable_kept:
            assert lowest_stable == 1, "the stable pod stopped serving"
            assert most_asked == 2
            assert ro["canaryWeight"] == 50  # one ready pod of each: the traffic each really gets
            assert ro["stableReadyReplicas"] == 1
        else:
            assert most_asked == 1, f"asked for {most_asked} pods on one GPU"
            assert ro["canaryWeight"] == 100
    finally:
        if cluster.get_node(node) is not None:
            cluster.delete_node(node)


@pytest.mark.usefixtures("fleet_operator")
def test_undo_goes_back_to_the_last_promoted_revision_never_an_abandoned_canary(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str
) -> None:
    name = "undo"
    body = {
        "replicas": 2,
        "resources": {"cpu": "100m"},
        "placement": {"spreadZones": False, "spreadNodes": False},
        "rollout": {"steps": [{"weight": 50}]},
    }
    v1 = steady_fleet(kubectl, None, namespace, name, body)
    # v2 is abandoned at its step: v3 replaces the template before anyone promotes v2.
    v2_body, v3_body = {**body, "image": IMAGE + "-v2"}, {**body, "image": IMAGE + "-v3"}
    v2, v3 = revision_of(fleet(name, **v2_body)["spec"]), revision_of(fleet(name, **v3_body)["spec"])
    kubectl.apply(fleet(name, **v2_body), namespace)
    wait_phase(kubectl, namespace, name, "Paused", canaryRevision=v2, canaryWeight=50)
    kubectl.apply(fleet(name, **v3_body), namespace)
    wait_phase(kubectl, namespace, name, "Paused", canaryRevision=v3, canaryWeight=50)
    cli(kubectl, cluster, namespace, "rollout", "promote", name)
    ro = wait_phase(kubectl, namespace, name, "Promoted", stableRevision=v3)
    history = {e["revision"]: e for e in ro["history"]}
    assert history[v2]["phase"] == "Abandoned"
    assert "promotedAt" not in history[v2]
    assert "promotedAt" in history[v1]
    assert history[v1]["phase"] == "Superseded"
    assert "promotedAt" in history[v3]

    cli(kubectl, cluster, namespace, "rollout", "undo", name)
    assert get_fleet(kubectl, namespace, name)["spec"]["rollout"]["targetRevision"] == v1
    wait_phase(kubectl, namespace, name, "Paused", canaryRevision=v1, canaryWeight=50)
