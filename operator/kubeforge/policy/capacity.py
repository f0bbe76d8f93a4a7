"""GPU capacity accounting for gang admission, in pure functions.

Without a gang scheduler, two multi-worker jobs that are both let loose on the scheduler can each get
half their pods placed and then wait for each other forever. kubeforge therefore admits an attempt (creates
its Job) only when *all* of its workers fit now: per node, the allocatable `nvidia.com/gpu` minus what
bound pods hold, minus what other admitted gangs still have to place. Workers of one job are identical, so
the number that fit is simply the sum over matching nodes of `free // gpus_per_worker`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubeforge.api.common import gpu_products
from kubeforge.api.trainingjob import ATTEMPT_LABEL, GPU_PRODUCT_LABEL, GPU_RESOURCE, TRAININGJOB_LABEL

# Taints kubeforge's workers tolerate (GPU nodes are commonly tainted to keep CPU pods off them).
_TOLERATED_TAINTS = frozenset({GPU_RESOURCE})


@dataclass(frozen=True)
class NodeInfo:
    name: str
    product: str | None
    gpus: int
    """Allocatable `nvidia.com/gpu`."""
    schedulable: bool
    """Ready, not cordoned, and no taint the workers do not tolerate."""


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
    blocking = [
        t
        for t in spec.get("taints") or []
        if t.get("effect") in ("NoSchedule", "NoExecute") and t.get("key") not in _TOLERATED_TAINTS
    ]
    return NodeInfo(
        name=str(meta.get("name", "")),
        product=(meta.get("labels") or {}).get(GPU_PRODUCT_LABEL),
        gpus=_int((status.get("allocatable") or {}).get(GPU_RESOURCE, 0)),
        schedulable=ready and not spec.get("unschedulable", False) and not blocking,
    )


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


def pod_info(pod: Mapping[str, Any]) -> PodInfo:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    namespace = str(meta.get("namespace", ""))
    owner = labels.get(TRAININGJOB_LABEL)
    attempt = labels.get(ATTEMPT_LABEL)
    return PodInfo(
        namespace=namespace,
        name=str(meta.get("name", "")),
        node=(pod.get("spec") or {}).get("nodeName") or None,
        gpus=pod_gpus(pod),
        terminal=(pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"),
        trainingjob=f"{namespace}/{owner}" if owner else None,
        attempt=int(attempt) if attempt is not None and str(attempt).isdigit() else None,
    )


def matches(node: NodeInfo, products: tuple[str, ...] | None) -> bool:
    if node.gpus <= 0:
        return False
    return products is None or node.product in products


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


def fitting_pods(
    gpus: int, gpu_type: str | None, nodes: Iterable[NodeInfo], free: Mapping[str, int]
) -> int | None:
    """Pods asking `gpus` GPUs of `gpu_type` each that fit in `free` (GPUs per schedulable node, as
    `free_gpus` or `Ledger.free` count them): a fleet's surge room. None when they ask for no GPU
    (nothing bounds them)."""
    if gpus <= 0:
        return None
    products = gpu_products(gpu_type) if gpu_type else None
    return sum(free.get(n.name, 0) // gpus for n in nodes if matches(n, products))


def reserve(free: Mapping[str, int], nodes: Sequence[NodeInfo], demands: Iterable[Demand]) -> dict[str, int]:
    """Take the unplaced workers of other admitted gangs out of `free`, best fit (the fullest node that
    still fits), as the scheduler would pack them. Workers that fit nowhere take nothing."""
    left = dict(free)
    by_name = {node.name: node for node in nodes}
    for demand in sorted(demands, key=lambda d: d.key):
        if demand.gpus <= 0:
            continue
        for _ in range(demand.workers):
            candidates = [
                name
                for name, gpus in left.items()
                if gpus >= demand.gpus and name in by_name and matches(by_name[name], demand.products)
            ]
            if not candidates:
                break
            best = min(candidates, key=lambda name: (left[name], name))
            left[best] -= demand.gpus
    return left


def placeable(free: Mapping[str, int], nodes: Sequence[NodeInfo], demand: Demand) -> int:
    """How many of the demand's workers fit in `free` (identical items: greedy per node is optimal)."""
    if demand.gpus <= 0:
        return demand.workers
    by_name = {node.name: node for node in nodes}
    fit = sum(
        gpus // demand.gpus
        for name, gpus in free.items()
        if name in by_name and matches(by_name[name], demand.products)
    )
    return min(fit, demand.workers)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def describe(demand: Demand, gpu_type: str | None) -> str:
    kind = f" ({gpu_type})" if gpu_type else ""
    return f"{_plural(demand.workers, 'worker')} x {_plural(demand.gpus, 'GPU')}{kind}"


def admit(
    demand: Demand,
    nodes: Sequence[NodeInfo],
    pods: Iterable[PodInfo],
    others: Iterable[Demand] = (),
    *,
    gpu_type: str | None = None,
    ahead: Sequence[Demand] = (),
) -> Admission:
    """Whether every worker of `demand` fits now, after what is bound, what other admitted gangs still
    place, and the gangs queued `ahead` of it (in order) that fit: one snapshot admits queued gangs in
    order, and a gang behind others only takes GPUs none of them could use (best-effort FIFO, Kueue's
    default queueing strategy)."""
    return _admit(demand, nodes, free_gpus(nodes, pods, exclude=demand.key), others, gpu_type, ahead)


def _admit(
    demand: Demand,
    nodes: Sequence[NodeInfo],
    free_now: Mapping[str, int],
    others: Iterable[Demand],
    gpu_type: str | None,
    ahead: Sequence[Demand],
) -> Admission:
    if demand.gpus <= 0:
        return Admission(True, demand.workers, "needs no GPUs")
    free = reserve(free_now, nodes, [o for o in others if o.key != demand.key])
    for earlier in ahead:
        if earlier.key != demand.key and placeable(free, nodes, earlier) >= earlier.workers:
            free = reserve(free, nodes, [earlier])
    fit = placeable(free, nodes, demand)
    needs = f"needs {describe(demand, gpu_type)}"
    if fit >= demand.workers:
        return Admission(True, fit, f"{needs}; all fit now")
    total = sum(
        node.gpus // demand.gpus for node in nodes if node.schedulable and matches(node, demand.products)
    )
    if total < demand.workers:
        where = f"{gpu_type} " if gpu_type else ""
        why = (
            f"only {_plural(total, 'worker')} would fit on all Ready {where}GPU nodes even if they were idle"
        )
        return Admission(False, fit, f"{needs}; {why}")
    verb = "fits" if fit == 1 else "fit"
    return Admission(False, fit, f"{needs}; {fit} {verb} now")


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


class Ledger:
    """GPU capacity kept up to date one watch event at a time, so a decision reads it in O(nodes)
    instead of walking every pod of the cluster: per node its allocatable GPUs and schedulability, the
    GPUs bound unfinished pods hold on it (in all, and per TrainingJob), and per gang attempt how many
    of its workers are placed."""

    def __init__(self) -> None:
        self._nodes: dict[str, NodeInfo] = {}
        self._pods: dict[tuple[str, str], PodInfo] = {}
        self._used: dict[str, int] = {}
        self._used_by_job: dict[str, dict[str, int]] = {}
        self._placed: dict[tuple[str, int], int] = {}

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

    def free(self, *, exclude: str | None = None) -> dict[str, int]:
        """Free GPUs per schedulable GPU node, as `free_gpus` computes them from every pod."""
        mine = self._used_by_job.get(exclude, {}) if exclude is not None else {}
        return {
            name: max(0, node.gpus - self._used.get(name, 0) + mine.get(name, 0))
            for name, node in self._nodes.items()
            if node.schedulable and node.gpus > 0
        }

    def unplaced(self, demand: Demand, attempt: int) -> Demand:
        """`unplaced()` from the counts kept per attempt."""
        placed = self._placed.get((demand.key, attempt), 0)
        return Demand(demand.key, max(0, demand.workers - placed), demand.gpus, demand.products)

    def admit(
        self,
        demand: Demand,
        others: Iterable[Demand] = (),
        *,
        gpu_type: str | None = None,
        ahead: Sequence[Demand] = (),
    ) -> Admission:
        """`admit()` over the ledger's state."""
        return _admit(demand, self.nodes, self.free(exclude=demand.key), others, gpu_type, ahead)
