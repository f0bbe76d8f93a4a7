"""GPU arbitration: which training gives GPUs to an InferenceFleet in a latency breach, and when they go back.

A fleet whose autoscaler wants replicas the cluster has no room for would otherwise only report
`CapacityLimited` while training keeps every GPU. This module decides, from a snapshot, which training
workers to take so the fleet's missing replicas fit, following the order users asked for:

1. Only what a job offers. An elastic job offers its workers above `minWorkers` unless it says
   `preemptible: false`; a job that says `preemptible: true` also offers itself whole (all its workers,
   after its checkpoint); anything else offers nothing, and the fleet stays `CapacityLimited`.
2. Never a job whose checkpoint is in progress (taking workers now would waste the checkpoint and the
   work it protects), and never a job of higher priority than the fleet.
3. Lowest priority first; within a priority, shrinking an elastic job before preempting a whole one;
   then the least work lost (GPU-seconds since the job's last checkpoint, what a preemption throws
   away); then the name, so two passes over the same snapshot choose alike.
4. Only what helps, and no more than needed: a worker whose GPUs cannot host a replica (another GPU
   type, or too few GPUs on its node even together with what else is taken there) is left alone, and
   once the missing replicas fit, later offers are not touched. Elastic workers leave in the order the
   job gives (its highest ranks first), because that is what its rendezvous tolerates.

Placement is judged per node, like the scheduler: a replica of `gpus` GPUs needs that many free on one
node of an accepted product. The snapshot's free GPUs are what the capacity ledger leaves after every
claim (admitted gangs' unplaced workers, unbound pods), so a lend never takes room that was promised.

Giving back is hysteresis, not a mirror of the take: GPUs a fleet frees go back to training only once
the fleet has wanted no more than it has for `return_after` seconds (`may_return`), so a noisy metric
cannot make a job shrink and grow every evaluation.

Pure: no Kubernetes, no clock. The controllers gather the snapshot and carry out the plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Lending = Literal["none", "aboveMin", "whole"]
"""What a job offers: nothing, its elastic workers above `minWorkers`, or itself whole."""


@dataclass(frozen=True)
class Worker:
    """One running worker of a job: the pod, the node it is bound to and the GPUs it holds there."""

    pod: str
    node: str
    gpus: int


@dataclass(frozen=True)
class Training:
    """A running TrainingJob as arbitration sees it."""

    key: str
    """`<namespace>/<name>`."""
    priority: int
    workers: tuple[Worker, ...]
    """Running workers in the order they would leave (elastic: highest rank first)."""
    min_workers: int
    """The fewest workers it runs with (a rigid job: all of them)."""
    lending: Lending
    products: tuple[str, ...] | None
    """`nvidia.com/gpu.product` values its workers run on (None: any GPU)."""
    checkpointing: bool = False
    """A checkpoint was asked for or is being written and has not completed."""
    seconds_since_checkpoint: float | None = None
    """Since the last completed checkpoint (None: never checkpointed: everything since start)."""
    seconds_running: float = 0.0


@dataclass(frozen=True)
class Need:
    """Replicas a fleet wants and the cluster has no room for."""

    fleet: str
    replicas: int
    gpus: int
    """GPUs per replica."""
    products: tuple[str, ...] | None
    priority: int = 0


@dataclass(frozen=True)
class Take:
    """Workers to take from one job: `preempt` stops the whole job after its checkpoint; otherwise the
    job shrinks by exactly these workers."""

    job: str
    workers: tuple[Worker, ...]
    preempt: bool
    lost_gpu_seconds: float
    """Work a preemption now would throw away (0 for an elastic shrink, which keeps the job running)."""

    @property
    def gpus(self) -> int:
        return sum(w.gpus for w in self.workers)


@dataclass(frozen=True)
class LendPlan:
    takes: tuple[Take, ...] = ()
    replicas: int = 0
    """Replicas of the need that fit once the takes are done."""
    short: int = 0
    """Replicas that still do not fit: the fleet stays `CapacityLimited` for these."""
    skipped: Mapping[str, str] = field(default_factory=dict)
    """Jobs that offered something but were left alone, and why (for the fleet's message)."""


@dataclass(frozen=True)
class _Offer:
    job: Training
    whole: bool
    workers: tuple[Worker, ...]
    """In leaving order; a whole offer holds every worker of the job."""

    @property
    def lost(self) -> float:
        if not self.whole:
            return 0.0
        job = self.job
        since = job.seconds_since_checkpoint
        return (since if since is not None else job.seconds_running) * sum(w.gpus for w in job.workers)


def offers(job: Training) -> list[_Offer]:
    """What a job offers: its workers above `minWorkers` (unless it lends nothing), and itself whole
    when it is preemptible."""
    out: list[_Offer] = []
    spare = max(0, len(job.workers) - job.min_workers)
    if job.lending != "none" and spare:
        out.append(_Offer(job, False, job.workers[:spare]))
    if job.lending == "whole" and job.workers:
        out.append(_Offer(job, True, job.workers))
    return out


def _accepts(products: tuple[str, ...] | None, node_product: str | None) -> bool:
    return products is None or node_product in products


def fitting(free: Mapping[str, int], need: Need, node_products: Mapping[str, str | None]) -> int:
    """Replicas of `need` that fit in `free` (per node, on accepted products), at most `need.replicas`."""
    if need.gpus <= 0:
        return need.replicas
    fits = sum(
        gpus // need.gpus
        for node, gpus in free.items()
        if gpus > 0 and _accepts(need.products, node_products.get(node))
    )
    return min(need.replicas, fits)


def _order(offer: _Offer) -> tuple[int, bool, float, str]:
    return (offer.job.priority, offer.whole, offer.lost, offer.job.key)


def plan_lend(
    need: Need,
    jobs: Sequence[Training],
    free: Mapping[str, int],
    node_products: Mapping[str, str | None],
) -> LendPlan:
    """The workers to take so that `need` fits, or as much of it as the offers allow."""
    room = dict(free)
    have = fitting(room, need, node_products)
    taken: dict[str, Take] = {}
    skipped: dict[str, str] = {}
    for offer in sorted((o for job in jobs for o in offers(job)), key=_order):
        if have >= need.replicas:
            break
        job = offer.job
        if job.priority > need.priority:
            skipped[job.key] = "has a higher priority than the fleet"
            continue
        if job.checkpointing:
            skipped[job.key] = "is writing a checkpoint"
            continue
        if not any(_accepts(need.products, node_products.get(w.node)) for w in offer.workers):
            continue
        already = {w.pod for w in taken[job.key].workers} if job.key in taken else set()
        if offer.whole:
            trial = dict(room)
            for w in offer.workers:
                if w.pod not in already:
                    trial[w.node] = trial.get(w.node, 0) + w.gpus
            gained = fitting(trial, need, node_products)
            if gained > have:
                room, have = trial, gained
                taken[job.key] = Take(job.key, offer.workers, preempt=True, lost_gpu_seconds=offer.lost)
            continue
        # A shrink follows the job's leaving order: the shortest prefix that frees the most replicas.
        trial, best, best_room, best_have = dict(room), 0, room, have
        for count, w in enumerate(offer.workers, start=1):
            trial[w.node] = trial.get(w.node, 0) + w.gpus
            fits = fitting(trial, need, node_products)
            if fits > best_have:
                best, best_room, best_have = count, dict(trial), fits
            if fits >= need.replicas:
                break
        if best:
            room, have = best_room, best_have
            taken[job.key] = Take(job.key, offer.workers[:best], preempt=False, lost_gpu_seconds=0.0)
    return LendPlan(tuple(taken.values()), replicas=have, short=max(0, need.replicas - have), skipped=skipped)


def may_return(
    *, wanted: int, holding: int, calm_since: float | None, now: float, return_after: float
) -> bool:
    """Whether GPUs a fleet holds beyond what it wants may go back to training: the fleet has wanted no
    more than it now holds (`calm_since`: since when, in seconds on any clock; None: it wants more
    now) for at least `return_after` seconds."""
    if wanted > holding or calm_since is None:
        return False
    return now - calm_since >= return_after
