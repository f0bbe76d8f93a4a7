"""From `spec.objective` to concrete settings: `derive_fleet` and `derive_training`.

Pure: the spec, the GPU catalog and what the caches say exists (`ClusterFacts`: GPU nodes with their
product, zone, region and whether they are spot capacity) go in; what comes out is

- a `PodPolicy` the builders put into the pod template (GPU product affinity, spot preference or
  exclusion, region affinity, packing by pod affinity);
- for a fleet, the spec with derived values filled in where the user left the default (placement,
  autoscaler windows, minimum replicas), which the rest of the fleet policy reads as usual;
- `status.policy`: each derived setting, its value, its source (`objective`, `explicit`, `catalog`) and
  why, at most `MAX_ENTRIES` of them.

**Explicit wins.** A field the user set to something other than its default is never overridden; the
entry then says `explicit`. A field holding its default counts as unset: the API server stores every
CRD default, so "left out" and "written as the default" cannot be told apart (the same rule the
revision hash follows).

**GPU type, required or preferred.** With `resources.gpuType` unset and GPUs asked for, the products
the catalog knows and the cluster has (on schedulable nodes the objective may use: no spot nodes under
`reliability`, only the data region under `privacy`) are ranked by the objective. The best one that has
*room* for the workload is chosen by required node affinity; room means the product's nodes, by their
allocatable GPUs, can hold one pod (a fleet) or the whole gang (a TrainingJob). Room is judged on
allocatable, not free GPUs: free GPUs change with every pod, and a pod template that followed them would
roll the fleet on every scheduling decision. When no product has room, the best present one is only
*preferred*: requiring a product that can never hold the workload would leave it Pending for good,
while a preference lets the scheduler use whatever fits. Because the choice is written into the pod
template as a required affinity, gang admission and a fleet's surge (`policy.capacity`) count it like
a `gpuType` the user wrote; a preferred product is "any GPU" to them, as it is to the scheduler.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from kubeforge.api.catalog import GpuCatalog, GpuOffering
from kubeforge.api.inferencefleet import Autoscaling, InferenceFleetSpec, Placement
from kubeforge.api.names import GPU_PRODUCT_LABEL, GPU_RESOURCE
from kubeforge.api.objective import REGION_LABEL, Objective, PodPolicy, PolicyEntry, Source, SpotUse
from kubeforge.api.rollout import AnalysisSpec, CanaryStep, RolloutSpec
from kubeforge.api.trainingjob import TrainingJobSpec

ZONE_LABEL = "topology.kubernetes.io/zone"
MAX_ENTRIES = 12
TIGHT_INTERVAL = 5
"""Seconds between `latency`'s canary measurements when `rollout.analysis.intervalSeconds` is left out."""
RELIABLE_STEPS = tuple(CanaryStep(weight=w, pause_seconds=120) for w in (10, 25, 50, 75))
"""The canary steps `reliability` gives a fleet whose `spec.rollout` names none."""

Kind = Literal["fleet", "training"]


# -- what the cluster has --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeFacts:
    """One GPU node as an objective sees it."""

    name: str
    product: str | None
    gpus: int
    """Allocatable `nvidia.com/gpu`."""
    zone: str | None = None
    region: str | None = None
    spot: bool = False
    """Carries every label of the catalog's spot `nodeSelector`."""
    schedulable: bool = True
    """Ready and not cordoned."""


@dataclass(frozen=True)
class ClusterFacts:
    nodes: tuple[NodeFacts, ...] = ()


def node_facts(node: Mapping[str, Any], catalog: GpuCatalog) -> NodeFacts:
    """A node object (as the caches project it) as an objective sees it."""
    meta = node.get("metadata") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    status = node.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    try:
        gpus = int(str((status.get("allocatable") or {}).get(GPU_RESOURCE, 0)))
    except ValueError:
        gpus = 0
    selector = catalog.spot.node_selector
    return NodeFacts(
        name=str(meta.get("name", "")),
        product=labels.get(GPU_PRODUCT_LABEL),
        gpus=gpus,
        zone=labels.get(ZONE_LABEL),
        region=labels.get(REGION_LABEL),
        spot=bool(selector) and all(labels.get(k) == v for k, v in selector.items()),
        schedulable=ready and not (node.get("spec") or {}).get("unschedulable", False),
    )


def cluster_facts(nodes: Iterable[Mapping[str, Any]], catalog: GpuCatalog) -> ClusterFacts:
    facts = (node_facts(n, catalog) for n in nodes)
    return ClusterFacts(tuple(sorted((f for f in facts if f.gpus > 0), key=lambda f: f.name)))


# -- GPU choice -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuChoice:
    offering: GpuOffering
    required: bool
    reason: str


def _usable_nodes(facts: ClusterFacts, objective: Objective, region: str | None) -> list[NodeFacts]:
    return [
        n
        for n in facts.nodes
        if n.schedulable
        and n.product is not None
        and not (objective == "reliability" and n.spot)
        and (region is None or n.region == region)
    ]


def _score(
    kind: Kind, objective: Objective, offering: GpuOffering, nodes: list[NodeFacts], catalog: GpuCatalog
) -> tuple[float, ...]:
    """Higher is better; the last terms break ties by speed, then by name for a stable choice."""
    speed = offering.throughput.training if kind == "training" else offering.throughput.inference
    price = offering.price_per_hour.on_demand
    watts = offering.power.tdp_watts
    if objective == "privacy":
        objective = "throughput" if kind == "training" else "latency"
    if objective == "throughput":
        return (speed / price if price > 0 else float("inf"), speed)
    if objective == "cost":
        spot = any(n.spot for n in nodes)
        return (-catalog.hourly_price(offering, spot=spot), speed)
    if objective == "energy":
        return (speed / watts, speed)
    if objective == "reliability":
        return (float(len({n.zone for n in nodes})), speed)
    return (speed,)


def _why(kind: Kind, objective: Objective) -> str:
    work = "training" if kind == "training" else "inference"
    return {
        "throughput": f"best {work} throughput per price",
        "latency": f"fastest for {work}",
        "cost": "cheapest per GPU-hour (spot price where spot nodes of it exist)",
        "energy": f"most {work} work per watt (TDP)",
        "reliability": f"in the most zones outside the spot pool, then fastest for {work}",
        "privacy": f"fastest in the data region for {work}",
    }[objective]


def choose_gpu(
    kind: Kind,
    objective: Objective,
    gpus_per_pod: int,
    pods: int,
    catalog: GpuCatalog,
    facts: ClusterFacts,
    region: str | None = None,
    memory_gib: float | None = None,
) -> GpuChoice | None:
    """The GPU product for the objective among those present (see the module's docstring); None when
    the cluster has no GPU node the catalog knows and the objective may use, or (`memory_gib`: what one
    pod's model needs) none whose `gpus_per_pod` GPUs together hold the model."""
    nodes = _usable_nodes(facts, objective, region)
    by_offering: dict[str, tuple[GpuOffering, list[NodeFacts]]] = {}
    for node in nodes:
        offering = catalog.by_product(node.product or "")
        if offering is not None and holds(offering, gpus_per_pod, memory_gib):
            by_offering.setdefault(offering.name, (offering, []))[1].append(node)
    if not by_offering:
        return None
    ranked = sorted(
        by_offering.values(),
        key=lambda item: (_score(kind, objective, item[0], item[1], catalog), item[0].name),
        reverse=True,
    )
    why = _why(kind, objective)
    for offering, held in ranked:
        room = sum(n.gpus // gpus_per_pod for n in held)
        if room >= pods:
            return GpuChoice(offering, True, f"{why} among the GPUs present")
    best = ranked[0][0]
    unit = "the whole gang" if kind == "training" and pods > 1 else "one pod"
    return GpuChoice(best, False, f"{why}; preferred only: no GPU type present has room for {unit}")


def _largest(
    catalog: GpuCatalog, facts: ClusterFacts, objective: Objective, region: str | None
) -> GpuOffering | None:
    """The product with the most memory among those present that the objective may use."""
    present: dict[str, GpuOffering] = {}
    for node in _usable_nodes(facts, objective, region):
        offering = catalog.by_product(node.product or "")
        if offering is not None:
            present[offering.name] = offering
    return max(present.values(), key=lambda o: (o.memory_gib, o.name), default=None)


def holds(offering: GpuOffering, gpus: int, memory_gib: float | None) -> bool:
    """`gpus` GPUs of this product hold a model needing `memory_gib` (None: no need stated)."""
    return memory_gib is None or offering.memory_gib * gpus >= memory_gib


# -- explicit or default --------------------------------------------------------------------------------


def _explicit(model: BaseModel, name: str) -> bool:
    """The field holds something other than its default (see the module's docstring)."""
    info = type(model).model_fields[name]
    default = info.get_default(call_default_factory=True)
    return bool(getattr(model, name) != default)


class _Entries:
    def __init__(self) -> None:
        self.items: list[PolicyEntry] = []

    def add(self, setting: str, value: object, source: Source, reason: str = "") -> None:
        if len(self.items) < MAX_ENTRIES:
            text = str(value).lower() if isinstance(value, bool) else str(value)
            self.items.append(PolicyEntry(setting=setting, value=text, source=source, reason=reason))


# -- shared pod-level derivation ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pod:
    pod: PodPolicy
    gpu: GpuChoice | None = None


def _pod_policy(
    kind: Kind,
    spec: TrainingJobSpec | InferenceFleetSpec,
    pods: int,
    catalog: GpuCatalog,
    facts: ClusterFacts,
    entries: _Entries,
    model_gib: float | None = None,
) -> _Pod:
    objective, gpu_type, gpus = spec.objective, spec.resources.gpu_type, spec.resources.gpus
    region = spec.privacy.data_region if spec.privacy is not None else None
    chosen: GpuChoice | None = None
    required: tuple[str, ...] = ()
    preferred: tuple[str, ...] = ()
    if gpus > 0 and gpu_type:
        entries.add("gpuType", gpu_type, "explicit", "resources.gpuType")
        offering = catalog.for_gpu_type(gpu_type)
        if model_gib is not None and offering is not None and not holds(offering, gpus, model_gib):
            entries.add(
                "modelMemoryGiB",
                f"{model_gib:g}",
                "explicit",
                f"more than {gpus} {gpu_type} GPU(s) hold ({offering.memory_gib * gpus:g} GiB)",
            )
    elif gpus > 0:
        chosen = choose_gpu(kind, objective, gpus, pods, catalog, facts, region, model_gib)
        largest = _largest(catalog, facts, objective, region) if chosen is None and model_gib else None
        if largest is not None:
            # Nothing holds the model: the most memory there is, by preference, is its best chance.
            preferred = tuple(largest.products)
            entries.add(
                "gpuTypePreferred",
                largest.name,
                "catalog",
                f"no GPU type present holds the model's {model_gib:g} GiB on {gpus} GPU(s) (model.memoryGiB):"
                " the one with the most memory",
            )
        elif chosen is None:
            entries.add("gpuType", "any", "objective", "no GPU node the catalog knows is usable")
        elif chosen.required:
            required = tuple(chosen.offering.products)
            entries.add("gpuType", chosen.offering.name, "catalog", chosen.reason)
        else:
            preferred = tuple(chosen.offering.products)
            entries.add("gpuTypePreferred", chosen.offering.name, "catalog", chosen.reason)
    spot: SpotUse = "any"
    selector = dict(catalog.spot.node_selector)
    label = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    if objective == "cost" and gpus > 0:
        spot = "prefer"
        entries.add("spotPool", "preferred", "objective", f"preferred node affinity to {label}")
    elif objective == "reliability":
        spot = "avoid"
        entries.add("spotPool", "excluded", "objective", f"required node affinity: not {label}")
    elif objective == "energy" and gpus > 0:
        # A reclaimed spot node costs a model reload or a restart from checkpoint: GPU power for no work.
        spot = "shun"
        entries.add("spotPool", "avoided", "objective", f"preferred node affinity: not {label}")
    region_term = (REGION_LABEL, region) if region is not None else None
    if region is not None:
        entries.add("dataRegion", region, "explicit", f"required node affinity to {REGION_LABEL}")
    packing: Literal["none", "gang", "binpack"] = "none"
    if objective in ("throughput", "privacy") and kind == "training" and pods > 1:
        packing = "gang"
    elif objective in ("cost", "energy") or (objective == "throughput" and kind == "fleet"):
        packing = "binpack"
    pod = PodPolicy(
        gpu_required=required,
        gpu_preferred=preferred,
        gpu_name=chosen.offering.name if chosen is not None else None,
        spot=spot,
        spot_selector=selector,
        spot_tolerations=tuple(t.to_wire() for t in catalog.spot.tolerations) if spot == "prefer" else (),
        region=region_term,
        packing=packing,
    )
    return _Pod(pod, chosen)


# -- TrainingJob ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingPolicy:
    pod: PodPolicy
    entries: tuple[PolicyEntry, ...]

    @property
    def products(self) -> tuple[str, ...] | None:
        """The products gang admission counts: the derived required ones (None: see the spec)."""
        return self.pod.gpu_required or None


def derive_training(spec: TrainingJobSpec, catalog: GpuCatalog, facts: ClusterFacts) -> TrainingPolicy:
    entries = _Entries()
    derived = _pod_policy("training", spec, spec.workers, catalog, facts, entries)
    if derived.pod.packing == "gang":
        entries.add("placement", "pack", "objective", "one zone, fewest nodes (preferred pod affinity)")
    elif derived.pod.packing == "binpack":
        entries.add("placement", "binpack", "objective", "workers share nodes (preferred pod affinity)")
    if spec.objective == "throughput":
        # Reported, not changed: a preemption (a fleet's borrowing, the budget, a suspend) asks for a
        # checkpoint whenever the job says how it checkpoints, whatever its objective; throughput is
        # where lost work matters most, so its status says which applies.
        if spec.checkpoint is not None and spec.checkpoint.grace_period_seconds > 0:
            grace = spec.checkpoint.grace_period_seconds
            entries.add(
                "preemption",
                f"checkpoint first (up to {grace}s)",
                "explicit",
                "spec.checkpoint: a preemption asks the workers for a checkpoint and waits for it",
            )
        elif spec.checkpoint is not None:
            entries.add(
                "preemption",
                "immediate",
                "explicit",
                "spec.checkpoint.gracePeriodSeconds is 0: a preemption asks for a checkpoint, waits for none",
            )
        else:
            entries.add(
                "preemption",
                "immediate",
                "objective",
                "no spec.checkpoint: nothing to ask the workers for, so a preemption loses the work since"
                " the last checkpoint they reported",
            )
    return TrainingPolicy(derived.pod, tuple(entries.items))


# -- InferenceFleet -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetPolicy:
    pod: PodPolicy
    spec: InferenceFleetSpec
    """The spec with the derived values filled in where the user left the default."""
    entries: tuple[PolicyEntry, ...] = field(default=())

    @property
    def products(self) -> tuple[str, ...] | None:
        return self.pod.gpu_required or None


def _placement(spec: InferenceFleetSpec, entries: _Entries) -> Placement:
    current = spec.placement
    objective = spec.objective
    updates: dict[str, object] = {}
    packs = objective in ("throughput", "cost", "energy")
    if packs:
        updates = {"spread_zones": False, "spread_nodes": False}
        why = "replicas share nodes so whole nodes stay idle (preferred pod affinity)"
    elif objective == "reliability":
        updates = {"spread_zones": True, "spread_nodes": True, "require_zone_spread": True}
        why = "at least two zones: a zone outage leaves replicas"
    else:
        why = "zones and nodes, so one failure takes few replicas"
    # Every field the user set, not only those the objective would change: a latency fleet with
    # spreading turned off must not be reported as spread by its objective.
    explicit = [k for k in type(current).model_fields if _explicit(current, k)]
    kept = {k: v for k, v in updates.items() if k not in explicit}
    placement = current.model_copy(update=kept) if kept else current
    label = _placement_label(placement, packs)
    # Explicit when the user's fields decide: the objective sets none, or they override one it sets. A
    # field that only refines what the objective turned off (requireZoneSpread under binpack) does not.
    if explicit and (not updates or set(explicit) & set(updates)):
        names = ", ".join(type(current).model_fields[k].alias or k for k in explicit)
        entries.add("placement", label, "explicit", f"placement.{names} set in the spec")
    else:
        entries.add("placement", label, "objective", why)
    return placement


def _placement_label(placement: Placement, packs: bool) -> str:
    """What the pods get, in a word or two: the entry names the placement in effect."""
    if placement.spread_zones and placement.spread_nodes:
        label = "spread"
    elif placement.spread_zones:
        label = "spread across zones"
    elif placement.spread_nodes:
        label = "spread across nodes"
    else:
        return "binpack" if packs else "no spreading"
    if placement.spread_zones and placement.require_zone_spread:
        label += " (zones required)"
    return label


def _autoscaling(spec: InferenceFleetSpec, auto: Autoscaling, entries: _Entries) -> Autoscaling:
    objective = spec.objective
    wanted: dict[str, object] = {}
    why: dict[str, str] = {}
    if objective in ("latency", "privacy"):
        # The built-in defaults are already the latency profile (a 6 s panic window, scale up at once at
        # twice the ready replicas' load): said here, and kept, so the default objective changes nothing.
        wanted["panic_window_seconds"] = 6
        why["panic_window_seconds"] = "panic window on and short: a burst is met within seconds"
    if objective in ("cost", "energy"):
        wanted["scale_down_stabilization_seconds"] = 60
        why["scale_down_stabilization_seconds"] = "scale down sooner: idle GPUs cost money and power"
    if objective == "reliability":
        wanted["min_replicas"] = 2
        why["min_replicas"] = "at least two replicas, one per zone"
    if wanted.get("min_replicas", 0) == 2 and auto.max_replicas < 2:
        wanted["min_replicas"] = auto.max_replicas
        why["min_replicas"] = "one replica: autoscaling.maxReplicas allows no more"
    updates: dict[str, object] = {}
    for name, value in wanted.items():
        camel = "autoscaling." + _camel(name)
        if _explicit(auto, name):
            entries.add(camel, getattr(auto, name), "explicit", "set in the spec")
        else:
            updates[name] = value
            entries.add(camel, value, "objective", why[name])
    if objective == "cost":
        zero = auto.scale_to_zero
        if zero is not None and zero.activation_query is not None:
            if _explicit(zero, "enabled") or zero.enabled:
                entries.add("scaleToZero", zero.enabled, "explicit", "autoscaling.scaleToZero.enabled")
            else:
                updates["scale_to_zero"] = zero.model_copy(update={"enabled": True})
                entries.add("scaleToZero", True, "objective", "no pods while idle")
        else:
            entries.add(
                "scaleToZero",
                False,
                "objective",
                "needs autoscaling.scaleToZero.activationQuery: pods that do not exist cannot report the"
                " traffic that should wake them",
            )
    return auto.model_copy(update=updates) if updates else auto


def _tight_analysis(analysis: AnalysisSpec, entries: _Entries) -> AnalysisSpec:
    """`latency`'s analysis: the canary measured every `TIGHT_INTERVAL` seconds instead of the default
    10, so `failureLimit` failed measurements roll it back in half the time; the inconclusive limit
    grows to keep the same seconds without data before an abort. The query window stays 30 s."""
    if _explicit(analysis, "interval_seconds"):
        entries.add(
            "rollout.analysis.intervalSeconds", analysis.interval_seconds, "explicit", "set in the spec"
        )
        return analysis
    if _explicit(analysis, "inconclusive_limit"):
        # A limit written for the default interval counts measurements 10 s apart: measuring every 5 s
        # would halve the time without data the rollout tolerates. Left as written.
        entries.add(
            "rollout.analysis.intervalSeconds",
            analysis.interval_seconds,
            "explicit",
            "kept: rollout.analysis.inconclusiveLimit is set for it",
        )
        return analysis
    updates: dict[str, object] = {"interval_seconds": TIGHT_INTERVAL}
    seconds = analysis.failure_limit * TIGHT_INTERVAL
    entries.add(
        "rollout.analysis.intervalSeconds",
        TIGHT_INTERVAL,
        "objective",
        f"tight analysis: the canary is measured every {TIGHT_INTERVAL} s, a latency regression is"
        f" rolled back after {seconds} s of failing measurements",
    )
    without_data = analysis.inconclusive_limit * analysis.interval_seconds
    updates["inconclusive_limit"] = max(1, without_data // TIGHT_INTERVAL)
    entries.add(
        "rollout.analysis.inconclusiveLimit",
        updates["inconclusive_limit"],
        "objective",
        f"still {without_data} s without data before the rollout aborts",
    )
    return analysis.model_copy(update=updates)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def derive_fleet(spec: InferenceFleetSpec, catalog: GpuCatalog, facts: ClusterFacts) -> FleetPolicy:
    entries = _Entries()
    derived = _pod_policy("fleet", spec, 1, catalog, facts, entries, spec.model.memory_gib)
    updates: dict[str, object] = {}
    placement = _placement(spec, entries)
    if placement is not spec.placement:
        updates["placement"] = placement
    # A disabled autoscaler decides nothing: `replicas` does, so that is what the objective sets.
    if spec.autoscaling is not None and spec.autoscaler_on:
        auto = _autoscaling(spec, spec.autoscaling, entries)
        if auto is not spec.autoscaling:
            updates["autoscaling"] = auto
    elif spec.objective == "reliability":
        if _explicit(spec, "replicas"):
            entries.add("replicas", spec.replicas, "explicit", "spec.replicas")
        else:
            updates["replicas"] = 2
            entries.add("replicas", 2, "objective", "at least two replicas, one per zone")
    if spec.objective == "reliability" and spec.rollout is not None and spec.rollout.strategy == "Canary":
        if spec.rollout.steps:
            entries.add("rollout.steps", len(spec.rollout.steps), "explicit", "spec.rollout.steps")
        else:
            # Smaller first steps held longer: a bad revision reaches fewer replicas, and analysis sees
            # more of each step before the next.
            updates["rollout"] = spec.rollout.model_copy(update={"steps": list(RELIABLE_STEPS)})
            entries.add(
                "rollout.steps",
                " ".join(f"{s.weight}%" for s in RELIABLE_STEPS),
                "objective",
                "slower canary: 2 minutes per step instead of 20% and 50% for a minute each",
            )
    if spec.objective == "latency" and spec.rollout is not None and spec.rollout.analysis is not None:
        analysis = _tight_analysis(spec.rollout.analysis, entries)
        if analysis is not spec.rollout.analysis:
            rollout = updates.get("rollout", spec.rollout)
            assert isinstance(rollout, RolloutSpec)
            updates["rollout"] = rollout.model_copy(update={"analysis": analysis})
    if spec.objective == "reliability":
        entries.add(
            "disruption.maxUnavailable",
            spec.disruption.max_unavailable,
            "explicit" if _explicit(spec.disruption, "max_unavailable") else "objective",
            "the PodDisruptionBudget keeps all replicas but this many",
        )
    if spec.privacy is not None:
        entries.add(
            "networkPolicy",
            "ingress from own namespace"
            + "".join(f", {n}" for n in spec.privacy.allowed_namespaces)
            + f"; egress DNS + {len(spec.privacy.egress)} CIDRs",
            "objective",
            "every other connection is denied",
        )
    effective = spec.model_copy(update=updates) if updates else spec
    return FleetPolicy(derived.pod, effective, tuple(entries.items))
