"""`spec.objective` end to end: the same fleet under latency, cost and energy lands on different GPU types
and pools (placed by the real scheduler on the local topology: H100, L4, a T4 spot pool, L40S),
`status.policy` says why, an explicit `gpuType` wins, and a change of objective rolls out. Under the same
load ramp (the load simulator, a real Prometheus) a cost fleet scales down sooner than a latency one."""

from __future__ import annotations

import time
from typing import Any

import pytest

from kubeforge_e2e import Kubectl, KubectlError, wait_for
from kubeforge_e2e.loadsim import LoadSimulator
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.workloads import fleet, fleet_pods, get_fleet, trainingjob, wait_ready
from test_fleet_autoscale import AUTOSCALING, MODEL, desired

# The conftest's operator reads the module's Prometheus (the load-ramp test's autoscaler needs it).
pytestmark = [pytest.mark.e2e, pytest.mark.prometheus, pytest.mark.timeout(300)]

SPOT_LABEL = "kubeforge.dev/capacity-type"
PRODUCT_LABEL = "nvidia.com/gpu.product"


def placed_on(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, str]]:
    """The labels of the nodes the fleet's pods run on, one entry per pod."""
    nodes = []
    for pod in fleet_pods(kubectl, namespace, name):
        node = kubectl.get("node", pod["spec"]["nodeName"])
        assert node is not None
        nodes.append(dict(node["metadata"]["labels"]))
    return nodes


def policy(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {e["setting"]: (e["value"], e["source"]) for e in obj["status"].get("policy") or []}


def serving(objective: str, **extra: Any) -> dict[str, Any]:
    return fleet(objective, replicas=2, resources={"gpus": 1}, objective=objective, **extra)


def test_the_same_fleet_lands_on_different_gpus_and_pools_per_objective(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    for objective in ("latency", "cost", "energy"):
        kubectl.apply(serving(objective), namespace)
    landed = {o: wait_ready(kubectl, namespace, o) for o in ("latency", "cost", "energy")}

    # latency: the fastest GPU for inference the cluster has, spread over nodes.
    assert policy(landed["latency"])["gpuType"] == ("H100", "catalog")
    nodes = placed_on(kubectl, namespace, "latency")
    assert {n[PRODUCT_LABEL] for n in nodes} == {"NVIDIA-H100-80GB-HBM3"}

    # cost: the cheapest GPU, priced as spot where spot nodes of it exist: the T4 spot pool.
    assert policy(landed["cost"])["gpuType"] == ("T4", "catalog")
    assert policy(landed["cost"])["spotPool"] == ("preferred", "objective")
    nodes = placed_on(kubectl, namespace, "cost")
    assert {n[PRODUCT_LABEL] for n in nodes} == {"Tesla-T4"}
    assert all(n.get(SPOT_LABEL) == "spot" for n in nodes), nodes

    # energy: the most inference per watt (L4), off the spot pool (a reclaim is a model reload).
    assert policy(landed["energy"])["gpuType"] == ("L4", "catalog")
    assert policy(landed["energy"])["spotPool"] == ("avoided", "objective")
    nodes = placed_on(kubectl, namespace, "energy")
    assert {n[PRODUCT_LABEL] for n in nodes} == {"NVIDIA-L4"}
    assert not any(n.get(SPOT_LABEL) == "spot" for n in nodes), nodes

    header, row = kubectl("get", "inferencefleet", "cost", "-n", namespace).stdout.splitlines()[:2]
    assert row.split()[header.split().index("OBJECTIVE")] == "cost"


def test_an_explicit_gpu_type_wins_over_the_objective(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    kubectl.apply(
        fleet("pinned", replicas=1, objective="cost", resources={"gpus": 1, "gpuType": "L40S"}), namespace
    )
    obj = wait_ready(kubectl, namespace, "pinned")
    assert policy(obj)["gpuType"] == ("L40S", "explicit")
    assert {n[PRODUCT_LABEL] for n in placed_on(kubectl, namespace, "pinned")} == {"NVIDIA-L40S"}


def test_changing_the_objective_rolls_out_a_new_revision(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    kubectl.apply(serving("latency") | {"metadata": {"name": "moving"}}, namespace)
    before = wait_ready(kubectl, namespace, "moving")["status"]["revision"]
    assert {n[PRODUCT_LABEL] for n in placed_on(kubectl, namespace, "moving")} == {"NVIDIA-H100-80GB-HBM3"}

    kubectl(
        "patch",
        "inferencefleet",
        "moving",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"objective":"cost"}}',
    )

    def moved() -> bool:
        obj = get_fleet(kubectl, namespace, "moving")
        status = obj["status"]
        if status.get("revision") == before or status.get("readyReplicas") != 2:
            return False
        if status.get("observedGeneration") != obj["metadata"]["generation"]:
            return False
        pods = fleet_pods(kubectl, namespace, "moving")
        return len(pods) == 2 and all(
            p["metadata"]["labels"]["kubeforge.dev/revision"] == status["revision"] for p in pods
        )

    wait_for(moved, timeout=180, interval=1, description="fleet rolled to the cost objective's revision")
    old = kubectl.get("deployment", f"moving-{before}", namespace)
    assert old is None or old["spec"]["replicas"] == 0, "the old revision drained"
    assert {n[PRODUCT_LABEL] for n in placed_on(kubectl, namespace, "moving")} == {"Tesla-T4"}
    assert policy(get_fleet(kubectl, namespace, "moving"))["gpuType"] == ("T4", "catalog")


def gang(name: str, objective: str) -> dict[str, Any]:
    """Two workers of four GPUs, no GPU type, running long enough to be looked at."""
    return trainingjob(name, {"run-seconds": "120"}, workers=2, resources={"gpus": 4}, objective=objective)


def worker_nodes(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, str]] | None:
    """The labels of the nodes the job's workers run on, once both are Running."""
    pods = kubectl.json("get", "pods", "-n", namespace, "-l", f"kubeforge.dev/trainingjob={name}")["items"]
    if len(pods) != 2 or any(p["status"].get("phase") != "Running" for p in pods):
        return None
    return [dict(kubectl.get("node", p["spec"]["nodeName"])["metadata"]["labels"]) for p in pods]


def test_a_gang_packs_into_one_zone_under_throughput_and_takes_the_spot_pool_under_cost(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    # A worker needs a whole spot node (4 GPUs): wait for other tests' pods to leave the spot pool, or
    # the preference would rightly send it elsewhere.
    spot_nodes = kubectl.json("get", "nodes", "-l", f"{SPOT_LABEL}=spot")["items"]

    def spot_pool_free() -> bool:
        for node in spot_nodes:
            selector = f"spec.nodeName={node['metadata']['name']}"
            if kubectl.json("get", "pods", "-A", "--field-selector", selector)["items"]:
                return False
        return True

    wait_for(spot_pool_free, timeout=90, interval=1, description="the spot pool free")
    kubectl.apply(gang("fast", "throughput"), namespace)
    kubectl.apply(gang("cheap", "cost"), namespace)

    fast = wait_for(lambda: worker_nodes(kubectl, namespace, "fast"), timeout=90, description="fast running")
    assert {n[PRODUCT_LABEL] for n in fast} == {"NVIDIA-H100-80GB-HBM3"}  # training per price
    assert len({n["topology.kubernetes.io/zone"] for n in fast}) == 1, "the gang stays in one zone"

    cheap = wait_for(
        lambda: worker_nodes(kubectl, namespace, "cheap"), timeout=90, description="cheap running"
    )
    assert {n[PRODUCT_LABEL] for n in cheap} == {"Tesla-T4"}
    assert all(n.get(SPOT_LABEL) == "spot" for n in cheap), cheap

    status = kubectl.get("trainingjob", "cheap", namespace)["status"]
    assert policy({"status": status})["spotPool"] == ("preferred", "objective")
    assert policy({"status": status})["gpuType"] == ("T4", "catalog")


def test_a_privacy_fleet_is_confined_to_its_region_and_owns_a_network_policy(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    privacy = {"dataRegion": "local", "allowedNamespaces": ["gateway"], "egress": ["10.20.0.0/16"]}
    kubectl.apply(
        fleet("private", replicas=1, resources={"gpus": 1}, objective="privacy", privacy=privacy), namespace
    )
    obj = wait_ready(kubectl, namespace, "private")
    assert policy(obj)["dataRegion"] == ("local", "explicit")
    guard = wait_for(
        lambda: kubectl.get("networkpolicy", "private", namespace), timeout=30, description="NetworkPolicy"
    )
    assert guard["metadata"]["ownerReferences"][0]["kind"] == "InferenceFleet"
    sources = [s["namespaceSelector"]["matchLabels"] for s in guard["spec"]["ingress"][0]["from"]]
    assert sources == [{"kubernetes.io/metadata.name": namespace}, {"kubernetes.io/metadata.name": "gateway"}]

    # Without the objective the confinement goes with it.
    kubectl(
        "patch",
        "inferencefleet",
        "private",
        "-n",
        namespace,
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/spec/objective","value":"latency"},{"op":"remove","path":"/spec/privacy"}]',
    )
    wait_for(
        lambda: kubectl.get("networkpolicy", "private", namespace) is None,
        timeout=30,
        description="NetworkPolicy removed",
    )


@pytest.mark.timeout(420)
def test_under_the_same_load_ramp_cost_scales_down_sooner_than_latency(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess, loadsim: LoadSimulator
) -> None:
    # The fleets differ only in their objective; the scale-down stabilization is left at its default,
    # so latency keeps 300 s and cost derives 60 s.
    scaling = {k: v for k, v in AUTOSCALING.items() if k != "scaleDownStabilizationSeconds"}
    for name in ("latency", "cost"):
        loadsim.set_load(namespace, name, 50, **MODEL)
        kubectl.apply(fleet(name, resources={"gpus": 1}, objective=name, autoscaling=scaling), namespace)
    peaks: dict[str, int] = {}
    for name in ("latency", "cost"):
        wait_for(lambda: desired(kubectl, namespace, name) >= 3, timeout=90, description=f"{name} up")  # noqa: B023
        peaks[name] = desired(kubectl, namespace, name)
    entry = policy(get_fleet(kubectl, namespace, "cost"))["autoscaling.scaleDownStabilizationSeconds"]
    assert entry == ("60", "objective")

    for name in ("latency", "cost"):
        loadsim.set_load(namespace, name, 5, **MODEL)
    dropped = time.monotonic()
    wait_for(
        lambda: desired(kubectl, namespace, "cost") < peaks["cost"],
        timeout=150,
        interval=1,
        description="cost scales down after its 60 s stabilization",
    )
    cost_after = time.monotonic() - dropped
    print(f"cost scaled down {cost_after:.0f}s after the load dropped")
    # Latency's 300 s window still holds its peak (or more: it may have grown before the drop showed).
    assert desired(kubectl, namespace, "latency") >= peaks["latency"]


REFUSED = [
    ("unknown-objective", {"objective": "speed"}, "spec.objective"),
    (
        "privacy-without-region",
        {"objective": "privacy"},
        "spec.objective privacy needs spec.privacy.dataRegion",
    ),
    ("privacy-elsewhere", {"objective": "cost", "privacy": {"dataRegion": "eu"}}, "applies only with"),
    (
        "bad-cidr",
        {"objective": "privacy", "privacy": {"dataRegion": "eu", "egress": ["10.0.0.0/33"]}},
        "CIDRs",
    ),
    (
        "bad-namespace",
        {"objective": "privacy", "privacy": {"dataRegion": "eu", "allowedNamespaces": ["Not_A_Namespace"]}},
        "spec.privacy.allowedNamespaces",
    ),
]


@pytest.mark.parametrize(("case", "change", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_the_api_server_refuses_an_objective_it_cannot_honour(
    kubectl: Kubectl, namespace: str, crds: None, case: str, change: dict[str, Any], message: str
) -> None:
    for manifest in (fleet(f"bad-{case}", **change), trainingjob(f"bad-{case}", **change)):
        with pytest.raises(KubectlError) as info:
            kubectl.apply(manifest, namespace)
        assert "is invalid" in str(info.value), info.value
        assert message in str(info.value), info.value


def test_a_cost_fleet_whose_model_needs_30_gib_skips_the_gpus_too_small_for_it(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    """T4 (16 GiB) and L4 (24 GiB) are cheaper, but one of them cannot hold the model: the cheapest
    product that can, L40S (48 GiB), is chosen, and the fleet's pod runs there."""
    model = {"name": "llama-3.1-8b", "uri": "s3://models/llama-3.1-8b", "memoryGiB": 30}
    kubectl.apply(fleet("roomy", replicas=1, resources={"gpus": 1}, objective="cost", model=model), namespace)
    landed = wait_ready(kubectl, namespace, "roomy")
    assert policy(landed)["gpuType"] == ("L40S", "catalog")
    assert {n[PRODUCT_LABEL] for n in placed_on(kubectl, namespace, "roomy")} == {"NVIDIA-L40S"}


def test_a_latency_fleets_canary_analysis_is_tight_and_says_so(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    rollout = {"strategy": "Canary", "analysis": {"maxErrorRate": 0.01}}
    kubectl.apply(fleet("tight", replicas=1, resources={"gpus": 1}, rollout=rollout), namespace)
    landed = wait_ready(kubectl, namespace, "tight")
    assert policy(landed)["rollout.analysis.intervalSeconds"] == ("5", "objective")
    assert policy(landed)["rollout.analysis.inconclusiveLimit"] == ("6", "objective")
    stored = kubectl.get("inferencefleet", "tight", namespace)
    assert stored is not None
    assert stored["spec"]["rollout"]["analysis"].get("intervalSeconds", 10) == 10, "the spec is not written"
