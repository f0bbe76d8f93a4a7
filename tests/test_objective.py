"""policy/objective.py: what each objective derives, that explicit fields win, and that what the builders
make of it is what gang admission and a fleet's surge count."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeforge.api.catalog import DEFAULT_CATALOG
from kubeforge.api.common import gpu_products
from kubeforge.api.inferencefleet import InferenceFleetSpec
from kubeforge.api.objective import OBJECTIVES, Objective
from kubeforge.api.trainingjob import TrainingJobSpec
from kubeforge.builders import inferencefleet as fleet_build
from kubeforge.builders.trainingjob import Owner, build_pod_template
from kubeforge.policy.capacity import pod_products
from kubeforge.policy.objective import ClusterFacts, NodeFacts, cluster_facts, derive_fleet, derive_training

H100 = "NVIDIA-H100-80GB-HBM3"
L4 = "NVIDIA-L4"
L40S = "NVIDIA-L40S"

# The local topology's shape: H100 in zone-a, L4 on demand in zone-b, an L4 spot pool, L40S in zone-c.
CLUSTER = ClusterFacts(
    (
        NodeFacts("h100-0", H100, 8, "zone-a", "eu"),
        NodeFacts("h100-1", H100, 8, "zone-a", "eu"),
        NodeFacts("l4-0", L4, 4, "zone-b", "eu"),
        NodeFacts("l4-1", L4, 4, "zone-b", "eu"),
        NodeFacts("l4-spot-0", L4, 4, "zone-b", "eu", spot=True),
        NodeFacts("l4-spot-1", L4, 4, "zone-b", "eu", spot=True),
        NodeFacts("l40s-0", L40S, 4, "zone-c", "us"),
        NodeFacts("l40s-1", L40S, 4, "zone-c", "us"),
    )
)


def fleet(objective: Objective = "latency", gpus: int = 1, **extra: Any) -> InferenceFleetSpec:
    spec: dict[str, Any] = {
        "model": {"name": "m"},
        "image": "vllm:1",
        "resources": {"gpus": gpus},
        "objective": objective,
        **extra,
    }
    if objective == "privacy" and "privacy" not in spec:
        spec["privacy"] = {"dataRegion": "us"}
    return InferenceFleetSpec.model_validate(spec)


def job(
    objective: Objective = "throughput", workers: int = 2, gpus: int = 4, **extra: Any
) -> TrainingJobSpec:
    spec: dict[str, Any] = {
        "image": "trainer:1",
        "workers": workers,
        "resources": {"gpus": gpus},
        "objective": objective,
        **extra,
    }
    if objective == "privacy" and "privacy" not in spec:
        spec["privacy"] = {"dataRegion": "us"}
    return TrainingJobSpec.model_validate(spec)


def entry(entries: Any, setting: str) -> tuple[str, str]:
    found = next(e for e in entries if e.setting == setting)
    return found.value, found.source


@pytest.mark.parametrize(
    ("objective", "gpu", "spot", "spread_zones"),
    [
        ("latency", "H100", "any", True),  # fastest for inference
        ("throughput", "H100", "any", False),  # inference per price: H100 ties L4, then the faster
        ("cost", "L4", "prefer", False),  # cheapest, and spot L4 nodes exist
        ("energy", "L4", "shun", False),  # most inference per watt
        ("reliability", "H100", "avoid", True),  # no spot; zones tie, then the fastest
        ("privacy", "L40S", "any", True),  # the only GPU in region `us`
    ],
)
def test_each_objective_chooses_a_gpu_the_cluster_has_and_places_for_it(
    objective: Objective, gpu: str, spot: str, spread_zones: bool
) -> None:
    derived = derive_fleet(fleet(objective), DEFAULT_CATALOG, CLUSTER)
    assert derived.pod.gpu_required == gpu_products(gpu)
    assert entry(derived.entries, "gpuType") == (gpu, "catalog")
    assert derived.pod.spot == spot
    assert derived.spec.placement.spread_zones is spread_zones
    assert len(derived.entries) <= 12


@pytest.mark.parametrize(
    ("objective", "gpu", "packing"),
    [
        ("throughput", "H100", "gang"),  # training per price
        ("latency", "H100", "none"),
        ("cost", "L4", "binpack"),
        ("energy", "L4", "binpack"),
        ("reliability", "H100", "none"),
        ("privacy", "L40S", "gang"),
    ],
)
def test_a_training_job_gets_the_objectives_gpu_and_packing(
    objective: Objective, gpu: str, packing: str
) -> None:
    derived = derive_training(job(objective), DEFAULT_CATALOG, CLUSTER)
    assert derived.pod.gpu_required == gpu_products(gpu)
    assert derived.products == gpu_products(gpu)
    assert derived.pod.packing == packing


def test_the_best_gpu_without_room_gives_way_to_the_best_one_with_room() -> None:
    # Cost ranks L4 first, but no L4 node has 8 GPUs: only H100 can hold a pod.
    derived = derive_fleet(fleet("cost", gpus=8), DEFAULT_CATALOG, CLUSTER)
    assert derived.pod.gpu_required == gpu_products("H100")


def test_a_gang_no_gpu_type_can_hold_is_only_preferred() -> None:
    # Four workers of 8 GPUs: the two H100 nodes hold two. Requiring H100 would strand the gang.
    derived = derive_training(job("throughput", workers=4, gpus=8), DEFAULT_CATALOG, CLUSTER)
    assert derived.pod.gpu_required == ()
    assert derived.pod.gpu_preferred == gpu_products("H100")
    assert derived.products is None
    assert entry(derived.entries, "gpuTypePreferred")[0] == "H100"


def test_an_explicit_gpu_type_wins_over_every_objective() -> None:
    for objective in OBJECTIVES:
        derived = derive_fleet(
            fleet(objective, resources={"gpus": 1, "gpuType": "L40S"}), DEFAULT_CATALOG, CLUSTER
        )
        assert derived.pod.gpu_required == ()
        assert entry(derived.entries, "gpuType") == ("L40S", "explicit")
        template = fleet_build.pod_template(derived.spec, "f", "r", derived.pod)
        assert pod_products(template["spec"]) == tuple(sorted(gpu_products("L40S")))


def test_explicit_placement_and_autoscaler_fields_win() -> None:
    auto = {"maxReplicas": 4, "metric": "latencyP95", "target": 0.5, "scaleDownStabilizationSeconds": 120}
    spec = fleet("cost", autoscaling=auto, placement={"requireZoneSpread": True})
    derived = derive_fleet(spec, DEFAULT_CATALOG, CLUSTER)
    assert derived.spec.placement.require_zone_spread is True
    assert derived.spec.placement.spread_nodes is False  # left at its default: the objective's
    assert derived.spec.autoscaling is not None
    assert derived.spec.autoscaling.scale_down_stabilization_seconds == 120
    assert entry(derived.entries, "autoscaling.scaleDownStabilizationSeconds") == ("120", "explicit")
    # Left at its default, the objective sets it.
    derived = derive_fleet(
        fleet("cost", autoscaling={**auto, "scaleDownStabilizationSeconds": 300}), DEFAULT_CATALOG, CLUSTER
    )
    assert derived.spec.autoscaling is not None
    assert derived.spec.autoscaling.scale_down_stabilization_seconds == 60


def test_the_default_objectives_change_no_autoscaler_or_placement_default() -> None:
    auto = {"maxReplicas": 4, "metric": "latencyP95", "target": 0.5}
    spec = fleet("latency", autoscaling=auto)
    derived = derive_fleet(spec, DEFAULT_CATALOG, CLUSTER)
    assert derived.spec.autoscaling == spec.autoscaling
    assert derived.spec.placement == spec.placement
    assert entry(derived.entries, "autoscaling.panicWindowSeconds") == ("6", "objective")


def test_reliability_keeps_two_replicas_across_zones() -> None:
    derived = derive_fleet(fleet("reliability"), DEFAULT_CATALOG, CLUSTER)
    assert derived.spec.replicas == 2
    assert derived.spec.placement.require_zone_spread is True
    auto = {"maxReplicas": 4, "metric": "latencyP95", "target": 0.5}
    derived = derive_fleet(fleet("reliability", autoscaling=auto), DEFAULT_CATALOG, CLUSTER)
    assert derived.spec.autoscaling is not None
    assert derived.spec.autoscaling.min_replicas == 2


def test_reliability_slows_a_canary_that_names_no_steps() -> None:
    derived = derive_fleet(fleet("reliability", rollout={"strategy": "Canary"}), DEFAULT_CATALOG, CLUSTER)
    assert derived.spec.rollout is not None
    assert [s.weight for s in derived.spec.rollout.steps] == [10, 25, 50, 75]
    own = {"strategy": "Canary", "steps": [{"weight": 50, "pauseSeconds": 10}]}
    derived = derive_fleet(fleet("reliability", rollout=own), DEFAULT_CATALOG, CLUSTER)
    assert derived.spec.rollout is not None
    assert [s.weight for s in derived.spec.rollout.steps] == [50]
    assert entry(derived.entries, "rollout.steps") == ("1", "explicit")


def test_cost_scales_to_zero_only_with_an_activation_query() -> None:
    auto: dict[str, Any] = {"maxReplicas": 4, "metric": "latencyP95", "target": 0.5}
    derived = derive_fleet(fleet("cost", autoscaling=auto), DEFAULT_CATALOG, CLUSTER)
    assert entry(derived.entries, "scaleToZero")[0] == "false"
    zero = {"activationQuery": "sum(rate(x[1m]))"}
    derived = derive_fleet(fleet("cost", autoscaling={**auto, "scaleToZero": zero}), DEFAULT_CATALOG, CLUSTER)
    assert derived.spec.autoscaling is not None
    assert derived.spec.autoscaling.scale_to_zero is not None
    assert derived.spec.autoscaling.scale_to_zero.enabled
    assert derived.spec.autoscaling.scale_down_stabilization_seconds == 60


def test_the_builders_put_the_derived_settings_into_the_pod_template() -> None:
    derived = derive_fleet(fleet("cost"), DEFAULT_CATALOG, CLUSTER)
    pod = fleet_build.pod_template(derived.spec, "f", "r", derived.pod)["spec"]
    node = pod["affinity"]["nodeAffinity"]
    assert pod_products(pod) == tuple(sorted(gpu_products("L4")))
    spot = node["preferredDuringSchedulingIgnoredDuringExecution"][0]["preference"]["matchExpressions"]
    assert spot == [{"key": "kubeforge.dev/capacity-type", "operator": "In", "values": ["spot"]}]
    assert "podAffinity" in pod["affinity"]
    assert "topologySpreadConstraints" not in pod

    derived = derive_fleet(fleet("energy"), DEFAULT_CATALOG, CLUSTER)
    node = fleet_build.pod_template(derived.spec, "f", "r", derived.pod)["spec"]["affinity"]["nodeAffinity"]
    shun = node["preferredDuringSchedulingIgnoredDuringExecution"][0]["preference"]["matchExpressions"]
    assert shun == [{"key": "kubeforge.dev/capacity-type", "operator": "NotIn", "values": ["spot"]}]

    derived_tj = derive_training(job("reliability"), DEFAULT_CATALOG, CLUSTER)
    worker = build_pod_template(job("reliability"), Owner("j", "ns", "u"), 0, derived_tj.pod)["spec"]
    term = worker["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert {"key": "kubeforge.dev/capacity-type", "operator": "NotIn", "values": ["spot"]} in term[0][
        "matchExpressions"
    ]
    assert pod_products(worker) == tuple(sorted(gpu_products("H100")))


def test_changing_the_objective_makes_a_new_revision() -> None:
    assert fleet_build.revision(fleet("latency")) != fleet_build.revision(fleet("cost"))
    # The default objective written out is the same template as left out.
    plain = InferenceFleetSpec.model_validate(
        {"model": {"name": "m"}, "image": "vllm:1", "resources": {"gpus": 1}}
    )
    assert fleet_build.revision(plain) == fleet_build.revision(fleet("latency"))


def test_privacy_needs_a_region_and_only_privacy_takes_one() -> None:
    with pytest.raises(ValueError, match=r"needs spec\.privacy\.dataRegion"):
        InferenceFleetSpec.model_validate({"model": {"name": "m"}, "image": "i", "objective": "privacy"})
    with pytest.raises(ValueError, match=r"applies only with spec\.objective: privacy"):
        fleet("cost", privacy={"dataRegion": "us"})
    with pytest.raises(ValueError, match="must be CIDRs"):
        fleet("privacy", privacy={"dataRegion": "us", "egress": ["not-a-cidr"]})


def test_node_facts_come_from_the_node_labels() -> None:
    node = {
        "metadata": {
            "name": "n",
            "labels": {
                "nvidia.com/gpu.product": L4,
                "topology.kubernetes.io/zone": "z",
                "kubeforge.dev/capacity-type": "spot",
            },
        },
        "status": {
            "allocatable": {"nvidia.com/gpu": "4"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    cpu = {"metadata": {"name": "c"}, "status": {"allocatable": {}}}
    facts = cluster_facts([node, cpu], DEFAULT_CATALOG)
    assert facts.nodes == (NodeFacts("n", L4, 4, "z", None, spot=True, schedulable=True),)


# -- properties -----------------------------------------------------------------------------------------

PRODUCTS = [H100, L4, L40S, "NVIDIA-A100-SXM4-80GB", "Tesla-T4", "unknown-gpu"]
nodes = st.lists(
    st.builds(
        NodeFacts,
        name=st.text("abc", min_size=1, max_size=4),
        product=st.sampled_from(PRODUCTS),
        gpus=st.integers(1, 8),
        zone=st.sampled_from(["a", "b", "c"]),
        region=st.sampled_from(["us", "eu"]),
        spot=st.booleans(),
        schedulable=st.booleans(),
    ),
    max_size=8,
).map(lambda found: ClusterFacts(tuple(found)))


@settings(max_examples=200, deadline=None)
@given(
    facts=nodes,
    objective=st.sampled_from(OBJECTIVES),
    gpus=st.integers(0, 8),
    workers=st.integers(1, 4),
    gpu_type=st.sampled_from([None, "H100", "L4"]),
)
def test_derived_policies_hold_their_promises(
    facts: ClusterFacts, objective: Objective, gpus: int, workers: int, gpu_type: str | None
) -> None:
    resources: dict[str, Any] = {"gpus": gpus}
    if gpu_type and gpus:
        resources["gpuType"] = gpu_type
    tj = derive_training(job(objective, workers=workers, resources=resources), DEFAULT_CATALOG, facts)
    fl = derive_fleet(fleet(objective, resources=resources), DEFAULT_CATALOG, facts)
    for derived in (tj, fl):
        pod = derived.pod
        if gpu_type and gpus:
            # Explicit always wins: nothing derived about the GPU.
            assert pod.gpu_required == ()
            assert pod.gpu_preferred == ()
        chosen = pod.gpu_required or pod.gpu_preferred
        if chosen:
            # The derived GPU exists on a node the objective may use.
            usable = [
                n
                for n in facts.nodes
                if n.schedulable
                and n.product in chosen
                and not (objective == "reliability" and n.spot)
                and (objective != "privacy" or n.region == "us")
            ]
            assert usable
        if objective == "reliability":
            assert pod.spot == "avoid"  # never on spot, whatever else is chosen
        assert len(derived.entries) <= 12


def test_a_privacy_fleet_owns_a_network_policy_that_admits_only_the_listed_namespaces() -> None:
    privacy = {"dataRegion": "us", "allowedNamespaces": ["gateway"], "egress": ["10.20.0.0/16"]}
    spec = fleet("privacy", privacy=privacy)
    policy = fleet_build.build_network_policy(spec, name="f", namespace="ns", uid="u")["spec"]
    sources = [
        s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for s in policy["ingress"][0]["from"]
    ]
    assert sources == ["ns", "gateway"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["egress"][1] == {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]}
    assert {p["port"] for p in policy["egress"][0]["ports"]} == {53}
    derived = derive_fleet(spec, DEFAULT_CATALOG, CLUSTER)
    pod = fleet_build.pod_template(derived.spec, "f", "r", derived.pod)["spec"]
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]
    assert {"key": "topology.kubernetes.io/region", "operator": "In", "values": ["us"]} in term[
        "matchExpressions"
    ]


@pytest.mark.parametrize(
    ("gpus", "memory", "gpu"),
    [
        (1, None, "L4"),  # the cheapest, as without a stated need
        (1, 20.0, "L4"),  # 24 GiB holds it
        (1, 40.0, "L40S"),  # L4's 24 GiB does not: the cheapest that does
        (2, 40.0, "L4"),  # two L4s hold 48 GiB
        (1, 70.0, "H100"),
    ],
)
def test_the_gpu_chosen_holds_the_model(gpus: int, memory: float | None, gpu: str) -> None:
    model = {"name": "m"} | ({"memoryGiB": memory} if memory is not None else {})
    derived = derive_fleet(fleet("cost", gpus=gpus, model=model), DEFAULT_CATALOG, CLUSTER)
    assert derived.pod.gpu_required == gpu_products(gpu)
    assert entry(derived.entries, "gpuType") == (gpu, "catalog")


def test_a_model_no_gpu_present_holds_prefers_the_most_memory_and_says_why() -> None:
    derived = derive_fleet(fleet("cost", model={"name": "m", "memoryGiB": 200}), DEFAULT_CATALOG, CLUSTER)
    assert derived.pod.gpu_required == ()
    assert derived.pod.gpu_preferred == gpu_products("H100")  # 80 GiB, the most of those present
    value, source = entry(derived.entries, "gpuTypePreferred")
    assert (value, source) == ("H100", "catalog")
    reason = next(e.reason for e in derived.entries if e.setting == "gpuTypePreferred")
    assert "200 GiB" in reason
    assert "model.memoryGiB" in reason


def test_an_explicit_gpu_type_too_small_for_the_model_wins_and_is_flagged() -> None:
    spec = fleet("cost", model={"name": "m", "memoryGiB": 40}, resources={"gpus": 1, "gpuType": "L4"})
    derived = derive_fleet(spec, DEFAULT_CATALOG, CLUSTER)
    assert entry(derived.entries, "gpuType") == ("L4", "explicit")
    assert entry(derived.entries, "modelMemoryGiB") == ("40", "explicit")


def test_stating_the_model_memory_changes_no_revision_until_set() -> None:
    plain = fleet("latency")
    assert fleet_build.revision(plain) == fleet_build.revision(fleet("latency", model={"name": "m"}))
    assert fleet_build.revision(plain) != fleet_build.revision(
        fleet("latency", model={"name": "m", "memoryGiB": 40})
    )


ROLLOUT_WITH_ANALYSIS: dict[str, Any] = {"strategy": "Canary", "analysis": {"maxErrorRate": 0.01}}


def test_latency_measures_a_canary_twice_as_often_keeping_the_seconds_without_data() -> None:
    derived = derive_fleet(fleet("latency", rollout=ROLLOUT_WITH_ANALYSIS), DEFAULT_CATALOG, CLUSTER)
    assert derived.spec.rollout is not None
    analysis = derived.spec.rollout.analysis
    assert analysis is not None
    assert (analysis.interval_seconds, analysis.inconclusive_limit, analysis.failure_limit) == (5, 6, 2)
    assert analysis.window == 30, "the query window is unchanged"
    assert entry(derived.entries, "rollout.analysis.intervalSeconds") == ("5", "objective")
    assert entry(derived.entries, "rollout.analysis.inconclusiveLimit") == ("6", "objective")


@pytest.mark.parametrize(
    ("analysis", "kept"),
    [
        # Written by the user: kept.
        ({"intervalSeconds": 2}, (2, 3)),
        # `intervalSeconds: 10` reads as left out (the default), but a limit the user counted in
        # measurements 10 s apart would tolerate half the time at 5 s: the interval stays.
        ({"intervalSeconds": 10, "inconclusiveLimit": 6}, (10, 6)),
    ],
    ids=["explicit-interval", "explicit-inconclusive-limit"],
)
def test_an_analysis_interval_the_user_chose_wins_over_latency(
    analysis: dict[str, Any], kept: tuple[int, int]
) -> None:
    rollout = {"strategy": "Canary", "analysis": {"maxErrorRate": 0.01, **analysis}}
    derived = derive_fleet(fleet("latency", rollout=rollout), DEFAULT_CATALOG, CLUSTER)
    assert derived.spec.rollout is not None
    written = derived.spec.rollout.analysis
    assert written is not None
    assert (written.interval_seconds, written.inconclusive_limit) == kept
    assert entry(derived.entries, "rollout.analysis.intervalSeconds") == (str(kept[0]), "explicit")


@pytest.mark.parametrize("objective", ["cost", "energy", "throughput", "reliability"])
def test_other_objectives_leave_the_analysis_as_written(objective: Objective) -> None:
    derived = derive_fleet(fleet(objective, rollout=ROLLOUT_WITH_ANALYSIS), DEFAULT_CATALOG, CLUSTER)
    assert derived.spec.rollout is not None
    assert derived.spec.rollout.analysis is not None
    assert derived.spec.rollout.analysis.interval_seconds == 10
    assert all(not e.setting.startswith("rollout.analysis") for e in derived.entries)


def test_throughput_says_whether_a_preemption_checkpoints_first() -> None:
    checkpointed = derive_training(
        job("throughput", checkpoint={"gracePeriodSeconds": 300}), DEFAULT_CATALOG, CLUSTER
    )
    assert entry(checkpointed.entries, "preemption") == ("checkpoint first (up to 300s)", "explicit")
    no_wait = derive_training(
        job("throughput", checkpoint={"gracePeriodSeconds": 0}), DEFAULT_CATALOG, CLUSTER
    )
    assert entry(no_wait.entries, "preemption") == ("immediate", "explicit")
    plain = derive_training(job("throughput"), DEFAULT_CATALOG, CLUSTER)
    assert entry(plain.entries, "preemption") == ("immediate", "objective")
    assert all(
        e.setting != "preemption" for e in derive_training(job("cost"), DEFAULT_CATALOG, CLUSTER).entries
    )


@pytest.mark.parametrize(
    ("objective", "placement", "label", "source"),
    [
        ("latency", {}, "spread", "objective"),
        ("latency", {"spreadZones": False, "spreadNodes": False}, "no spreading", "explicit"),
        ("latency", {"spreadZones": False}, "spread across nodes", "explicit"),
        ("latency", {"requireZoneSpread": True}, "spread (zones required)", "explicit"),
        ("cost", {}, "binpack", "objective"),
        ("cost", {"requireZoneSpread": True}, "binpack", "objective"),  # no zone spread to require
        ("reliability", {}, "spread (zones required)", "objective"),
        ("reliability", {"spreadZones": False}, "spread across nodes", "explicit"),
    ],
)
def test_the_placement_entry_names_the_placement_the_pods_get(
    objective: Objective, placement: dict[str, Any], label: str, source: str
) -> None:
    derived = derive_fleet(fleet(objective, placement=placement), DEFAULT_CATALOG, CLUSTER)
    assert entry(derived.entries, "placement") == (label, source)
    template = fleet_build.pod_template(derived.spec, "f", "r", derived.pod)
    spread_keys = {c["topologyKey"] for c in template["spec"].get("topologySpreadConstraints") or []}
    zones = label in ("spread", "spread (zones required)", "spread across zones")
    nodes = label in ("spread", "spread (zones required)", "spread across nodes")
    assert ("topology.kubernetes.io/zone" in spread_keys) is zones
    assert ("kubernetes.io/hostname" in spread_keys) is nodes


def test_an_explicit_placement_entry_names_the_fields_set() -> None:
    spec = fleet("latency", placement={"spreadZones": False, "maxSkew": 2})
    derived = derive_fleet(spec, DEFAULT_CATALOG, CLUSTER)
    (found,) = [e for e in derived.entries if e.setting == "placement"]
    assert found.reason == "placement.spreadZones, maxSkew set in the spec"


@pytest.mark.parametrize(
    ("fields", "setting", "value", "source", "replicas"),
    [
        ({}, "replicas", "2", "objective", 2),
        ({"replicas": 5}, "replicas", "5", "explicit", 5),
        # A disabled autoscaler sets nothing: replicas do, and the objective says so of them.
        (
            {"autoscaling": {"enabled": False, "maxReplicas": 4, "metric": "queueDepth", "target": 4}},
            "replicas",
            "2",
            "objective",
            2,
        ),
        (
            {"autoscaling": {"maxReplicas": 1, "metric": "queueDepth", "target": 4}},
            "autoscaling.minReplicas",
            "1",
            "objective",
            None,
        ),
    ],
    ids=["default", "explicit", "autoscaler-off", "one-at-most"],
)
def test_reliability_reports_the_replicas_the_fleet_gets(
    fields: dict[str, Any], setting: str, value: str, source: str, replicas: int | None
) -> None:
    derived = derive_fleet(fleet("reliability", **fields), DEFAULT_CATALOG, CLUSTER)
    assert entry(derived.entries, setting) == (value, source)
    if replicas is not None:
        assert derived.spec.replicas == replicas
        assert "autoscaling.minReplicas" not in {e.setting for e in derived.entries}
    else:
        assert derived.spec.autoscaling is not None
        assert derived.spec.autoscaling.min_replicas == 1
