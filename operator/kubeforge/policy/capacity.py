"""GPU capacity for gang admission and fleet surges, in pure functions: one view for both.

Without a gang scheduler, two multi-worker jobs that are both let loose on the scheduler can each get
half their pods placed and then wait for each other forever. kubeforge therefore admits an attempt (creates
its Job) only when *all* of its workers are sure to find a place.

Placement-agnostic admission, and why not steer placement
----------------------------------------------------------
The kube-scheduler, not kubeforge, picks the node of every worker; its default scoring (LeastAllocated on
cpu and memory) spreads pods, other scheduler profiles pack them, and pods that are not ours race for the
same nodes. Two ways make admission safe under that:

1. steer placement: pin each admitted worker to the node it was counted on (a scheduling gate per pod,
   lifted with a `nodeSelector` for that node), so the operator's guess becomes the truth;
2. count so that *any* placement is safe: an admitted gang's workers that are not on a node yet may land
   on any node that matches them, and admission only admits what fits whichever nodes they pick.

kubeforge does (2). Pinning needs a write per worker pod (a gated pod per index, since one Indexed Job
template cannot name a node per index), RBAC to patch pods, and it makes a worker wait for one exact node
even when another one is free, so a node taken meanwhile by a pod kubeforge does not control strands the
gang until its schedule timeout. Counting for any placement costs nothing at run time and holds whatever
the scheduler's profile is. Its price is conservatism, and only for seconds: a worker that is not yet
bound is charged where it hurts most, and as soon as it is bound it is charged exactly where it is.

The bound: a gang whose workers ask `g` GPUs each has `slots = sum over the nodes it may use of
free // g`. Placing one of its own workers takes exactly one slot; placing any other pod of `h` GPUs
takes at most `ceil(h / g)` of them (`floor(f / g) - floor((f - h) / g) <= ceil(h / g)`). So the
unplaced workers of a gang all find a place, in any order and on any nodes, when
`slots - sum(ceil(h / g) for every other unplaced pod that may use the same nodes) >= its unplaced
workers`. A gang is admitted only when that holds for it and still holds, with the newcomer's workers
added, for every admitted gang for which it held before. Unbound GPU pods that are not ours (a fleet's
Pending pods) count as such other pods, and a fleet's surge is only offered what leaves every admitted
gang's bound true: fleets and gangs read one capacity.

Nodes: a node counts only when it is Ready, not cordoned, and every `NoSchedule`/`NoExecute` taint on it
is tolerated by the tolerations the builders put on the pods (a `NoExecute` toleration with
`tolerationSeconds` does not count: the pod would be evicted).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubeforge.api.common import gpu_products
from kubeforge.api.names import INFERENCEFLEET_LABEL
from kubeforge.api.trainingjob import ATTEMPT_LABEL, GPU_PRODUCT_LABEL, GPU_RESOURCE, TRAININGJOB_LABEL

QUOTA_RESOURCE = f"requests.{GPU_RESOURCE}"
"""The ResourceQuota key that caps a namespace's GPU requests."""

_HARD_EFFECTS = ("NoSchedule", "NoExecute")


@dataclass(frozen=True)
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"


@dataclass(frozen=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""
    seconds: int | None = None
    """`tolerationSeconds`: the pod is evicted that long after a `NoExecute` taint appears."""

    def tolerates(self, taint: Taint) -> bool:
        """Kubernetes' matching rule (an empty key with `Exists` matches every taint)."""
        if self.effect and self.effect != taint.effect:
            return False
        if taint.effect == "NoExecute" and self.seconds is not None:
            return False  # tolerated for a while, then evicted: no place to run a worker
        if not self.key:
            return self.operator == "Exists"
        if self.key != taint.key:
            return False
        return self.operator == "Exists" or self.value == taint.value


def tolerations_of(raw: Iterable[Mapping[str, Any]]) -> tuple[Toleration, ...]:
    """The tolerations of a pod spec, as the builders emit them."""
    return tuple(
        Toleration(
            key=str(t.get("key") or ""),
            operator=str(t.get("operator") or "Equal"),
            value=str(t.get("value") or ""),
            effect=str(t.get("effect") or ""),
            seconds=int(t["tolerationSeconds"]) if t.get("tolerationSeconds") is not None else None,
        )
        for t in raw
    )


@dataclass(frozen=True)
class NodeInfo:
    name: str
    product: str | None
    gpus: int
    """Allocatable `nvidia.com/gpu`."""
    schedulable: bool
    """Ready and not cordoned (taints are judged per pod, against its tolerations)."""
    taints: tuple[Taint, ...] = ()
    """The node's `NoSchedule` and `NoExecute` taints."""


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    node: str | None
    gpus: int
    terminal: bool
    trainingjob: str | None = None
    """`<namespace>/<name>` of the kubeforge TrainingJob that owns the pod, if any."""
    attempt: int | None = None
    products: tuple[str, ...] | None = None
    """GPU products the pod's required node affinity allows (None: any); read only while unbound."""
    owner: str | None = None
    """`<namespace>/<name>` of the kubeforge InferenceFleet that owns the pod, if any."""
    unschedulable: bool = False
    """The scheduler found no node for it (`PodScheduled=False`, reason `Unschedulable`)."""


@dataclass(frozen=True)
class Demand:
    """Workers of one gang that still need a place."""

    key: str
    workers: int
    gpus: int
    products: tuple[str, ...] | None
    """`nvidia.com/gpu.product` values the workers accept; None: any GPU node."""


@dataclass(frozen=True)
class Admission:
    fits: bool
    placeable: int
    """Workers that fit now (capped at the demand)."""
    message: str
    reason: str = "InsufficientCapacity"
    """Why it does not fit: `InsufficientCapacity`, `CapacityUnknown`, `QuotaExceeded` or
    `NamespaceReservationLimit` (unused when it fits)."""


@dataclass(frozen=True)
class Quota:
    """A ResourceQuota of the namespace that caps `requests.nvidia.com/gpu`."""

    name: str
    hard: int
    used: int


def _int(value: Any) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


def node_info(node: Mapping[str, Any]) -> NodeInfo:
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    taints = tuple(
        Taint(str(t.get("key") or ""), str(t.get("value") or ""), str(t.get("effect")))
        for t in spec.get("taints") or []
        if t.get("effect") in _HARD_EFFECTS
    )
    return NodeInfo(
        name=str(meta.get("name", "")),
        product=(meta.get("labels") or {}).get(GPU_PRODUCT_LABEL),
        gpus=_int((status.get("allocatable") or {}).get(GPU_RESOURCE, 0)),
        schedulable=ready and not spec.get("unschedulable", False),
        taints=taints,
    )


def usable(node: NodeInfo, tolerations: Sequence[Toleration]) -> bool:
    """Pods with these tolerations can run on the node: schedulable, every hard taint tolerated."""
    return node.schedulable and all(any(t.tolerates(taint) for t in tolerations) for taint in node.taints)


def pod_gpus(pod: Mapping[str, Any]) -> int:
    """GPUs a pod holds: the sum over its containers (init containers run before, not beside, them)."""
    spec = pod.get("spec") or {}
    regular = sum(
        _int(
            (
                (c.get("resources") or {}).get("requests") or (c.get("resources") or {}).get("limits") or {}
            ).get(GPU_RESOURCE, 0)
        )
        for c in spec.get("containers") or []
    )
    init = max(
        (
            _int(((c.get("resources") or {}).get("requests") or {}).get(GPU_RESOURCE, 0))
            for c in spec.get("initContainers") or []
        ),
        default=0,
    )
    return max(regular, init)


def pod_products(spec: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The GPU products a pod may land on, from its `nodeSelector` or required node affinity; None when
    neither names the product label (any GPU node)."""
    selected = (spec.get("nodeSelector") or {}).get(GPU_PRODUCT_LABEL)
    if selected:
        return (str(selected),)
    required = (
        ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        or {}
    ).get("nodeSelectorTerms") or []
    allowed: set[str] = set()
    for term in required:
        values = [
            e.get("values") or []
            for e in term.get("matchExpressions") or []
            if e.get("key") == GPU_PRODUCT_LABEL and e.get("operator") == "In"
        ]
        if not values:
            return None  # a term (they are ORed) that does not restrict the product
        allowed.update(str(v) for v in values[0])
    return tuple(sorted(allowed)) if allowed else None


def pod_info(pod: Mapping[str, Any]) -> PodInfo:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    namespace = str(meta.get("namespace", ""))
    owner = labels.get(TRAININGJOB_LABEL)
    fleet = labels.get(INFERENCEFLEET_LABEL)
    attempt = labels.get(ATTEMPT_LABEL)
    spec = pod.get("spec") or {}
    node = spec.get("nodeName") or None
    return PodInfo(
        namespace=namespace,
        name=str(meta.get("name", "")),
        node=node,
        gpus=pod_gpus(pod),
        terminal=(pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"),
        trainingjob=f"{namespace}/{owner}" if owner else None,
        attempt=int(attempt) if attempt is not None and str(attempt).isdigit() else None,
        products=pod_products(spec) if node is None else None,
        owner=f"{namespace}/{fleet}" if fleet else None,
        unschedulable=node is None and _unschedulable(pod),
    )


def _unschedulable(pod: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def claim_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """A GPU pod was just bound to a node (from now on counted where it is, not wherever it might land) or
    just found unschedulable (it may stop counting, see `Ledger.claiming`): either can give room to a
    waiting gang or surge."""
    if old is None or new is None:
        return False
    before, after = pod_info(old), pod_info(new)
    if after.gpus <= 0:
        return False
    return (before.node is None and after.node is not None) or (
        after.unschedulable and not before.unschedulable
    )


def matches(node: NodeInfo, products: tuple[str, ...] | None) -> bool:
    if node.gpus <= 0:
        return False
    return products is None or node.product in products


def _overlap(a: tuple[str, ...] | None, b: tuple[str, ...] | None) -> bool:
    """Pods accepting `a` and `b` may land on a common node."""
    return a is None or b is None or bool(set(a) & set(b))


def free_gpus(
    nodes: Iterable[NodeInfo], pods: Iterable[PodInfo], *, exclude: str | None = None
) -> dict[str, int]:
    """Free GPUs per schedulable node. Pods of `exclude` (the job being admitted: e.g. the terminating
    workers of its previous attempt) are not counted; everything else bound and not finished is."""
    free = {node.name: node.gpus for node in nodes if node.schedulable and node.gpus > 0}
    for pod in pods:
        if pod.terminal or pod.node is None or pod.node not in free or pod.gpus <= 0:
            continue
        if exclude is not None and pod.trainingjob == exclude:
            continue
        free[pod.node] -= pod.gpus
    return {name: max(0, gpus) for name, gpus in free.items()}


def slots(
    free: Mapping[str, int],
    nodes: Iterable[NodeInfo],
    gpus: int,
    products: tuple[str, ...] | None,
    tolerations: Sequence[Toleration],
) -> int:
    """How many pods of `gpus` GPUs each fit in `free` on the nodes they may use (identical items:
    greedy per node is optimal)."""
    return sum(free.get(n.name, 0) // gpus for n in nodes if matches(n, products) and usable(n, tolerations))


@dataclass(frozen=True)
class Claim:
    """Pods that are promised or asking for GPUs but not on a node: an admitted gang's unplaced workers
    (`protected`: admission keeps their room) or an unbound pod that is not ours to admit."""

    key: str
    pods: int
    gpus: int
    products: tuple[str, ...] | None
    protected: bool


def claims_of(gangs: Iterable[Demand], unbound: Iterable[PodInfo], *, skip: str | None = None) -> list[Claim]:
    """The claims on free GPUs: the unplaced workers of admitted `gangs`, and unbound GPU pods other than
    those gangs' own (already counted as their unplaced workers) and other than `skip`'s."""
    out = [Claim(g.key, g.workers, g.gpus, g.products, True) for g in gangs if g.workers > 0 and g.gpus > 0]
    keys = {g.key for g in gangs}
    for pod in unbound:
        if pod.gpus <= 0 or pod.terminal or pod.node is not None:
            continue
        key = pod.trainingjob or pod.owner or f"{pod.namespace}/{pod.name}"
        if key in keys or key == skip:
            continue
        out.append(Claim(key, 1, pod.gpus, pod.products, False))
    return out


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _damage(victim: Claim | Demand, claims: Iterable[Claim]) -> int:
    """Slots of `victim` that the other claims' pods could take, wherever they land."""
    key = victim.key
    return sum(
        c.pods * _ceil_div(c.gpus, victim.gpus)
        for c in claims
        if c.key != key and _overlap(c.products, victim.products)
    )


def margin(
    victim: Claim,
    claims: Sequence[Claim],
    free: Mapping[str, int],
    nodes: Sequence[NodeInfo],
    tolerations: Sequence[Toleration],
) -> int:
    """Spare slots of `victim` under any placement of the other claims (negative: it may not fit)."""
    room = slots(free, nodes, victim.gpus, victim.products, tolerations)
    return room - _damage(victim, claims) - victim.pods


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def describe(demand: Demand, gpu_type: str | None) -> str:
    kind = f" ({gpu_type})" if gpu_type else ""
    return f"{_plural(demand.workers, 'worker')} x {_plural(demand.gpus, 'GPU')}{kind}"


def _claim(demand: Demand) -> Claim:
    return Claim(demand.key, demand.workers, demand.gpus, demand.products, True)


def admit_claims(
    demand: Demand,
    nodes: Sequence[NodeInfo],
    free: Mapping[str, int],
    claims: Sequence[Claim],
    tolerations: Sequence[Toleration],
    *,
    gpu_type: str | None = None,
    ahead: Sequence[Demand] = (),
) -> Admission:
    """Whether every worker of `demand` is sure to fit, whatever nodes the scheduler picks for it and for
    every other claim, without taking the room of an admitted gang. The gangs queued `ahead` of it (in
    order) that would be admitted are counted first: one snapshot admits queued gangs in order, and a gang
    behind others only takes GPUs none of them could use (best-effort FIFO, Kueue's default).

    Every gang's workers carry the same tolerations (the builders derive them from the GPU request), so
    `tolerations`, those of the gang being admitted, judge the nodes for all of them."""
    if demand.gpus <= 0:
        return Admission(True, demand.workers, "needs no GPUs")
    others = [c for c in claims if c.key != demand.key]
    # Gangs whose room is already gone (a node left, a foreign pod took it) wait for their schedule
    # timeout; they do not block everyone else.
    kept = [c for c in others if c.protected and margin(c, others, free, nodes, tolerations) >= 0]
    for earlier in ahead:
        if earlier.key == demand.key or earlier.gpus <= 0:
            continue
        if _fits_beside(_claim(earlier), others, kept, free, nodes, tolerations):
            others.append(_claim(earlier))
            kept.append(_claim(earlier))
    mine = _claim(demand)
    needs = f"needs {describe(demand, gpu_type)}"
    fit = max(
        0,
        min(
            demand.workers,
            slots(free, nodes, demand.gpus, demand.products, tolerations) - _damage(mine, others),
        ),
    )
    if _fits_beside(mine, others, kept, free, nodes, tolerations):
        return Admission(True, fit, f"{needs}; all fit now")
    total = sum(
        node.gpus // demand.gpus
        for node in nodes
        if usable(node, tolerations) and matches(node, demand.products)
    )
    if total < demand.workers:
        where = f"{gpu_type} " if gpu_type else ""
        why = (
            f"only {_plural(total, 'worker')} would fit on all Ready {where}GPU nodes even if they were idle"
        )
        return Admission(False, fit, f"{needs}; {why}")
    if fit >= demand.workers:
        blocked = next(
            (c.key for c in kept if margin(c, [*others, mine], free, nodes, tolerations) < 0), "another"
        )
        return Admission(
            False, fit, f"{needs}; it would take the room of admitted gang {blocked}'s unplaced workers"
        )
    verb = "fits" if fit == 1 else "fit"
    pending = sum(c.pods for c in others if _overlap(c.products, demand.products))
    note = f", counting {_plural(pending, 'unplaced pod')} wherever they land" if pending else ""
    return Admission(False, fit, f"{needs}; {fit} {verb} now{note}")


def _fits_beside(
    claim: Claim,
    others: Sequence[Claim],
    kept: Sequence[Claim],
    free: Mapping[str, int],
    nodes: Sequence[NodeInfo],
    tolerations: Sequence[Toleration],
) -> bool:
    together = [*others, claim]
    if margin(claim, together, free, nodes, tolerations) < 0:
        return False
    return all(margin(c, together, free, nodes, tolerations) >= 0 for c in kept if c.key != claim.key)


def admit(
    demand: Demand,
    nodes: Sequence[NodeInfo],
    pods: Iterable[PodInfo],
    others: Iterable[Demand] = (),
    *,
    gpu_type: str | None = None,
    ahead: Sequence[Demand] = (),
    tolerations: Sequence[Toleration] = (),
) -> Admission:
    """`admit_claims()` from every pod: bound pods hold their GPUs, unbound ones and the unplaced
    workers of the admitted gangs `others` may land anywhere they match."""
    pods = list(pods)
    free = free_gpus(nodes, pods, exclude=demand.key)
    claims = claims_of(list(others), pods, skip=demand.key)
    return admit_claims(demand, nodes, free, claims, tolerations, gpu_type=gpu_type, ahead=ahead)


def most_that_fit(
    demand: Demand,
    nodes: Sequence[NodeInfo],
    free: Mapping[str, int],
    claims: Sequence[Claim],
    tolerations: Sequence[Toleration],
    *,
    ahead: Sequence[Demand] = (),
) -> int:
    """The most of `demand`'s workers (0 to `demand.workers`) that `admit_claims()` admits together: an
    elastic job's room. Fitting is monotone in the count (fewer workers take fewer slots and do less
    damage to every other claim), so a binary search finds it."""
    if demand.gpus <= 0:
        return demand.workers
    low, high = 0, demand.workers
    while low < high:
        mid = (low + high + 1) // 2
        trial = Demand(demand.key, mid, demand.gpus, demand.products)
        if admit_claims(trial, nodes, free, claims, tolerations, ahead=ahead).fits:
            low = mid
        else:
            high = mid - 1
    return low


def surge_room(
    gpus: int,
    gpu_type: str | None,
    nodes: Sequence[NodeInfo],
    free: Mapping[str, int],
    claims: Sequence[Claim] = (),
    tolerations: Sequence[Toleration] = (),
    *,
    products: tuple[str, ...] | None = None,
) -> int | None:
    """Pods of `gpus` GPUs of `gpu_type` each that a fleet may add now (its surge room): they fit in
    `free` beside every claim, and adding them leaves every admitted gang's unplaced workers sure of a
    place. None when they ask for no GPU (nothing bounds them). Pass `claims` without the fleet's own
    unbound pods (the rollout counts those as stuck itself). `products`: what the pods require when
    `gpu_type` is unset (the objective's choice of GPU; None: any)."""
    if gpus <= 0:
        return None
    if gpu_type:
        products = gpu_products(gpu_type)
    probe = Claim("surge", 0, gpus, products, False)
    room = slots(free, nodes, gpus, products, tolerations) - _damage(probe, claims)
    for gang in claims:
        if not gang.protected or not _overlap(gang.products, products):
            continue
        spare = margin(gang, claims, free, nodes, tolerations)
        if spare < 0:
            continue  # already short: its schedule timeout gives it up
        room = min(room, spare // _ceil_div(gpus, gang.gpus))
    return max(0, room)


def fitting_pods(
    gpus: int, gpu_type: str | None, nodes: Iterable[NodeInfo], free: Mapping[str, int]
) -> int | None:
    """Pods asking `gpus` GPUs of `gpu_type` each that fit in `free`, on nodes whose taints a GPU pod of
    kubeforge tolerates: `surge_room()` with no claims. None when they ask for no GPU."""
    return surge_room(gpus, gpu_type, list(nodes), free, (), GPU_POD_TOLERATIONS)


GPU_POD_TOLERATIONS = (Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule"),)
"""What `builders.common.gpu_tolerations` gives every GPU pod; the controllers pass what the builders
emit, this is the fallback of the convenience functions."""


def placeable(free: Mapping[str, int], nodes: Sequence[NodeInfo], demand: Demand) -> int:
    """How many of the demand's workers fit in `free`, ignoring taints and claims."""
    if demand.gpus <= 0:
        return demand.workers
    return min(slots(free, nodes, demand.gpus, demand.products, ()), demand.workers) if nodes else 0


def demand_of(key: str, workers: int, gpus: int, gpu_type: str | None) -> Demand:
    return Demand(key=key, workers=workers, gpus=gpus, products=gpu_products(gpu_type) if gpu_type else None)


def unplaced(demand: Demand, attempt: int, pods: Iterable[PodInfo]) -> Demand:
    """The part of an admitted gang that is not on a node yet: its workers minus the pods of its current
    attempt that are bound or finished (pods the Job controller has not even created count as unplaced)."""
    placed = sum(
        1
        for pod in pods
        if pod.trainingjob == demand.key and pod.attempt == attempt and (pod.node is not None or pod.terminal)
    )
    return Demand(demand.key, max(0, demand.workers - placed), demand.gpus, demand.products)


def quota_verdict(quotas: Sequence[Quota], needs: int, held: int, promised: int) -> str | None:
    """Why the namespace's ResourceQuotas on `requests.nvidia.com/gpu` cannot hold a gang of `needs`
    GPUs, or None when they can. `held`: GPUs the gang's own pods still hold (they are going); `promised`:
    GPUs of gangs admitted in the namespace whose pods do not exist yet (not in `used` yet)."""
    for quota in sorted(quotas, key=lambda q: q.name):
        room = quota.hard - max(0, quota.used - held) - promised
        if needs > quota.hard:
            return (
                f"ResourceQuota {quota.name} allows {quota.hard} {QUOTA_RESOURCE} in this namespace; "
                f"the gang needs {needs}, more than the quota will ever hold"
            )
        if needs > room:
            return (
                f"ResourceQuota {quota.name} has {max(0, room)} of {quota.hard} {QUOTA_RESOURCE} left "
                f"({quota.used} used{f', {promised} promised to admitted gangs' if promised else ''}); "
                f"the gang needs {needs}"
            )
    return None


def quota_of(obj: Mapping[str, Any]) -> Quota | None:
    """A ResourceQuota that caps GPU requests for every pod of its namespace; None otherwise (no GPU
    limit, or scoped to some pods only: scopes kubeforge does not evaluate are left to the API server)."""
    spec = obj.get("spec") or {}
    if spec.get("scopes") or spec.get("scopeSelector"):
        return None
    hard = (spec.get("hard") or {}).get(QUOTA_RESOURCE)
    if hard is None:
        return None
    used = ((obj.get("status") or {}).get("used") or {}).get(QUOTA_RESOURCE, 0)
    return Quota(str((obj.get("metadata") or {}).get("name", "")), _int(hard), _int(used))


@dataclass
class Ledger:
    """GPU capacity kept up to date one watch event at a time, so a decision reads it in O(nodes)
    instead of walking every pod of the cluster: per node its allocatable GPUs and schedulability, the
    GPUs bound unfinished pods hold on it (in all, and per TrainingJob), per gang attempt how many of its
    workers are placed, and the GPU pods not bound to a node yet."""

    scope: tuple[str, ...] = ()
    """Namespaces whose pods the operator can read; empty: all. When not all, GPUs held by pods elsewhere
    are invisible and free capacity is unknown."""
    _nodes: dict[str, NodeInfo] = field(default_factory=dict)
    _pods: dict[tuple[str, str], PodInfo] = field(default_factory=dict)
    _used: dict[str, int] = field(default_factory=dict)
    _used_by_job: dict[str, dict[str, int]] = field(default_factory=dict)
    _placed: dict[tuple[str, int], int] = field(default_factory=dict)
    _unbound: dict[tuple[str, str], PodInfo] = field(default_factory=dict)

    @classmethod
    def of(cls, nodes: Iterable[NodeInfo], pods: Iterable[PodInfo]) -> Ledger:
        ledger = cls()
        for node in nodes:
            ledger.put_node(node)
        for pod in pods:
            ledger.put_pod(pod)
        return ledger

    # -- updates ---------------------------------------------------------------------------------------

    def put_node(self, node: NodeInfo) -> None:
        self._nodes[node.name] = node

    def remove_node(self, name: str) -> None:
        self._nodes.pop(name, None)

    def put_pod(self, pod: PodInfo) -> None:
        key = (pod.namespace, pod.name)
        self.remove_pod(*key)
        self._pods[key] = pod
        self._count(pod, +1)

    def remove_pod(self, namespace: str, name: str) -> None:
        old = self._pods.pop((namespace, name), None)
        if old is not None:
            self._count(old, -1)

    def _count(self, pod: PodInfo, sign: int) -> None:
        key = (pod.namespace, pod.name)
        if sign > 0 and pod.node is None and not pod.terminal and pod.gpus > 0:
            self._unbound[key] = pod
        elif sign < 0:
            self._unbound.pop(key, None)
        if pod.trainingjob is not None and pod.attempt is not None and (pod.node is not None or pod.terminal):
            slot = (pod.trainingjob, pod.attempt)
            self._placed[slot] = self._placed.get(slot, 0) + sign
            if not self._placed[slot]:
                del self._placed[slot]
        if pod.terminal or pod.node is None or pod.gpus <= 0:
            return
        self._used[pod.node] = self._used.get(pod.node, 0) + sign * pod.gpus
        if pod.trainingjob is not None:
            by_node = self._used_by_job.setdefault(pod.trainingjob, {})
            by_node[pod.node] = by_node.get(pod.node, 0) + sign * pod.gpus
            if not by_node[pod.node]:
                del by_node[pod.node]
            if not by_node:
                del self._used_by_job[pod.trainingjob]

    # -- reads -----------------------------------------------------------------------------------------

    @property
    def nodes(self) -> list[NodeInfo]:
        return list(self._nodes.values())

    @property
    def unbound(self) -> list[PodInfo]:
        """Unfinished GPU pods that no node holds yet."""
        return list(self._unbound.values())

    @property
    def claiming(self) -> list[PodInfo]:
        """The unbound pods that claim free GPUs: all but foreign pods the scheduler found no node for
        while a node they may use has the GPUs they ask for free. Something other than GPUs keeps those
        off (CPU, memory, a taint, an affinity), so counting them wherever they may land would let any
        tenant keep every gang out with a pod that can never run. A foreign pod waiting for GPUs (none
        free for it) still counts, and kubeforge's own pods always do: their room is promised."""
        free = self.free()
        nodes = list(self._nodes.values())

        def blocked_elsewhere(pod: PodInfo) -> bool:
            return any(
                free.get(n.name, 0) >= pod.gpus for n in nodes if n.schedulable and matches(n, pod.products)
            )

        return [
            p
            for p in self._unbound.values()
            if not (p.unschedulable and p.trainingjob is None and p.owner is None and blocked_elsewhere(p))
        ]

    def free(self, *, exclude: str | None = None) -> dict[str, int]:
        """Free GPUs per schedulable GPU node, as `free_gpus` computes them from every pod."""
        mine = self._used_by_job.get(exclude, {}) if exclude is not None else {}
        return {
            name: max(0, node.gpus - self._used.get(name, 0) + mine.get(name, 0))
            for name, node in self._nodes.items()
            if node.schedulable and node.gpus > 0
        }

    def held(self, namespace: str, trainingjob: str | None = None) -> int:
        """GPUs requested by the namespace's unfinished pods (bound or not), or by one TrainingJob's."""
        return sum(
            p.gpus
            for p in self._pods.values()
            if p.namespace == namespace
            and not p.terminal
            and (trainingjob is None or p.trainingjob == trainingjob)
        )

    def created(self, key: str, attempt: int) -> int:
        """Pods of a gang attempt that exist (bound, unbound or finished)."""
        placed = self._placed.get((key, attempt), 0)
        waiting = sum(1 for p in self._unbound.values() if p.trainingjob == key and p.attempt == attempt)
        return placed + waiting

    def unplaced(self, demand: Demand, attempt: int) -> Demand:
        """`unplaced()` from the counts kept per attempt."""
        placed = self._placed.get((demand.key, attempt), 0)
        return Demand(demand.key, max(0, demand.workers - placed), demand.gpus, demand.products)

    def room(
        self,
        demand: Demand,
        others: Iterable[Demand] = (),
        *,
        ahead: Sequence[Demand] = (),
        tolerations: Sequence[Toleration] = GPU_POD_TOLERATIONS,
    ) -> int:
        """How many more workers (at most `demand.workers`) a running elastic job may add now: its own
        placed workers keep their GPUs (nothing is excluded), and the added ones must fit beside every
        claim and leave every admitted gang's unplaced workers, and the gangs queued `ahead`, sure of a
        place, exactly as an admission would. 0 while free capacity is unknown."""
        if self.scope and demand.gpus > 0:
            return 0
        claims = claims_of(list(others), self.claiming, skip=demand.key)
        return most_that_fit(demand, self.nodes, self.free(), claims, tolerations, ahead=ahead)

    def admit(
        self,
        demand: Demand,
        others: Iterable[Demand] = (),
        *,
        gpu_type: str | None = None,
        ahead: Sequence[Demand] = (),
        tolerations: Sequence[Toleration] = GPU_POD_TOLERATIONS,
    ) -> Admission:
        """`admit_claims()` over the ledger's state; capacity is unknown when pods of some namespaces
        cannot be read."""
        if self.scope and demand.gpus > 0:
            return Admission(
                False,
                0,
                "free GPUs are unknown: the operator may read pods only in "
                f"{', '.join(self.scope)}, so GPUs used elsewhere are invisible to it; grant it list and "
                "watch on pods in all namespaces, or queue the job with Kueue (spec.queueName)",
                "CapacityUnknown",
            )
        claims = claims_of(list(others), self.claiming, skip=demand.key)
        free = self.free(exclude=demand.key)
        return admit_claims(demand, self.nodes, free, claims, tolerations, gpu_type=gpu_type, ahead=ahead)
