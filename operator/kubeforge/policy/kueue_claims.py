"""Asking Kueue for GPUs that Kueue-admitted training holds, instead of taking them behind its back.

kubeforge shrinks or preempts only training it admitted itself (`policy.arbitration`). A TrainingJob
that Kueue admitted is Kueue's: its quota, its place in the queue and its preemption are decided by the
ClusterQueue. So when a fleet is still short of room after borrowing what kubeforge may take, and some
running training that Kueue admitted holds GPUs the fleet could use at a lower priority than the fleet,
the fleet asks Kueue, through the LocalQueue its spec names (`spec.kueueQueueName`): one Kueue Workload
per missing replica, requesting that replica's GPUs at the fleet's priority. Kueue then does what its
ClusterQueue says (`preemption.withinClusterQueue: LowerPriority`, cohort reclaim, or nothing): it
admits a claim into free quota, or evicts lower-priority workloads for it, or leaves it pending with its
reason. An evicted TrainingJob's Job is suspended by Kueue, its workers stop (with their termination
grace period, in which a trainer checkpoints), the fleet's pending replicas take the freed GPUs, and the
job goes back to `Queued` until Kueue admits it again.

The claims are kubeforge's only write to Kueue; they hold no pods. They stay while the fleet wants
the replicas they stand for, and go (all at once, which gives the quota back and lets Kueue re-admit
the training) once the fleet has wanted no more than it could run without them for `return_after`
seconds: the same hysteresis as GPUs borrowed from training. A claim that Kueue has not admitted yet
still stands for its replica: Kueue may be evicting a workload for it at that very moment, and a claim
withdrawn then would let Kueue re-admit the victim into GPUs the fleet has just taken.

Kueue chooses the victims, not kubeforge: `spec.preemptible: false` is kubeforge's rule and Kueue does
not read it. A job that must never stop for a fleet needs a Kueue priority at or above the fleet's.

Pure: no Kubernetes, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from kubeforge.policy.arbitration import Training, may_return

MAX_CLAIMS = 16
"""At most this many claim Workloads per fleet (replicas asked for at once)."""


@dataclass(frozen=True)
class Claim:
    """One of the fleet's claim Workloads, as the cache shows it."""

    name: str
    admitted: bool
    message: str = ""
    """Kueue's latest word on it while it is not admitted (its QuotaReserved or Evicted message)."""
    deleting: bool = False
    current: bool = True
    """It asks for what the fleet would ask for now (same queue, priority and pod set)."""


@dataclass(frozen=True)
class Record:
    """`status.kueueClaim` as the policy reads and writes it (times in seconds)."""

    queue: str
    replicas: int
    for_replicas: int
    since: float
    calm_since: float | None = None


@dataclass(frozen=True)
class Asking:
    """What one fleet pass knows for asking Kueue."""

    queue: str | None
    """`spec.kueueQueueName`; None: the fleet never asks Kueue."""
    wanted: int
    """Replicas the autoscaler asks for now."""
    short: int
    """Replicas with no room after this pass's borrowing from training kubeforge may shrink."""
    holders: Sequence[str]
    """Running TrainingJobs admitted by Kueue, of lower priority than the fleet, holding GPUs of a type
    the fleet can use and not `preemptible: false`: what a claim may make Kueue evict."""
    claims: Sequence[Claim]
    now: float
    return_after: float
    active: bool = True
    """The fleet autoscales: one that does not gives its claims back."""
    served: bool = True
    """Kueue's Workload API is served (False: Kueue is not installed; nothing can be asked)."""


@dataclass(frozen=True)
class Asked:
    """The claims after this pass, and what changed."""

    record: Record | None
    create: int = 0
    """New claim Workloads to make."""
    delete: tuple[str, ...] = ()
    """Claim Workloads to delete."""
    asked: int = 0
    """Replicas asked for this pass (for the event)."""
    released: str = ""
    """Why every claim was given back this pass (empty: none was)."""
    message: str = ""
    """For `CapacityLimited` while the fleet is short: what was asked and Kueue's answer so far."""


def holders(
    jobs: Sequence[Training],
    priority: int,
    products: tuple[str, ...] | None,
    node_products: Mapping[str, str | None],
) -> tuple[str, ...]:
    """The running jobs Kueue admitted that a claim at `priority` may make Kueue evict for the fleet:
    of lower priority (Kueue preempts only those), not `preemptible: false`, holding GPUs on nodes of
    a product the fleet accepts."""
    return tuple(
        sorted(
            job.key
            for job in jobs
            if job.kueue
            and job.priority < priority
            and any(products is None or node_products.get(w.node) in products for w in job.workers)
        )
    )


def ask(a: Asking, record: Record | None) -> Asked:
    """This fleet's claims after one pass."""
    live = sorted((c for c in a.claims if not c.deleting), key=lambda c: c.name)
    names = tuple(c.name for c in live)
    if a.queue is None or not a.active or not a.served:
        why = (
            "the fleet no longer autoscales"
            if not a.active
            else "spec.kueueQueueName was removed"
            if a.queue is None
            else "Kueue's Workload API is not served"
        )
        return Asked(None, delete=names, released=why if (live or record) else "")
    if record is not None and record.queue != a.queue:
        # Claims wait in the queue they were made in: a new queue starts over (next pass).
        return Asked(None, delete=names, released=f"spec.kueueQueueName changed to {a.queue}")
    if any(not c.current for c in live):
        # A change of the fleet's resources or priority: what Kueue holds for it is no longer what it
        # needs. Withdrawn at once; a fleet still short asks anew on a later pass.
        return Asked(None, delete=names, released="the fleet's resources or priority changed")
    if record is None and live:
        # The status records claims before they are made, and forgets them before they are deleted:
        # claims without a record are a withdrawal whose deletes the caches have not shown yet (or that
        # an operator stopped in the middle of). Adopting them would undo the withdrawal.
        return Asked(None, delete=names)

    if record is not None:
        holding = max(0, record.for_replicas - record.replicas)
        calm = a.wanted <= holding
        calm_since = (record.calm_since if record.calm_since is not None else a.now) if calm else None
        if may_return(
            wanted=a.wanted, holding=holding, calm_since=calm_since, now=a.now, return_after=a.return_after
        ):
            why = f"the fleet has wanted at most {holding} replicas for {a.return_after:g}s"
            return Asked(None, delete=names, released=why)
        record = replace(record, calm_since=calm_since)

    asked = 0
    if a.short > 0 and a.holders:
        # Replicas the claims already stand for are on their way (Kueue may still be evicting for
        # them): only what the fleet wants beyond those is asked for.
        covered = record.for_replicas if record is not None else 0
        room = MAX_CLAIMS - (record.replicas if record is not None else 0)
        asked = max(0, min(a.short, a.wanted - covered, room)) if record is not None else min(a.short, room)
        if asked:
            record = (
                Record(a.queue, asked, a.wanted - a.short + asked, a.now)
                if record is None
                else replace(
                    record, replicas=record.replicas + asked, for_replicas=record.for_replicas + asked
                )
            )
    if record is None:
        return Asked(None)
    create = max(0, record.replicas - len(live))
    # More claims than recorded (not by our hand): the ones Kueue has not admitted go first.
    surplus = sorted(live, key=lambda c: (c.admitted, c.name))[: max(0, len(live) - record.replicas)]
    extra = tuple(c.name for c in surplus)
    return Asked(record, create=create, delete=extra, asked=asked, message=describe(record, live, a.short))


def describe(record: Record, claims: Sequence[Claim], short: int) -> str:
    """What the fleet asked Kueue for and what Kueue made of it, for the fleet's status."""
    admitted = sum(1 for c in claims if c.admitted)
    text = (
        f"asked Kueue through LocalQueue {record.queue} for {record.replicas} replica(s): {admitted} admitted"
    )
    waiting = next((c.message for c in claims if not c.admitted and c.message), "")
    if waiting:
        text += f"; Kueue: {waiting}"
    elif short and admitted == len(claims) and claims:
        text += "; waiting for the workloads Kueue evicted to stop"
    return text


def claim_name(fleet: str, index: int) -> str:
    """The name of a fleet's `index`th claim Workload."""
    return f"{fleet}-kueue-{index}"


def names_to_create(
    fleet: str, count: int, claims: Sequence[Claim], in_use: Iterable[str] = ()
) -> tuple[str, ...]:
    """Names for `count` new claims: the lowest indices no claim uses (one being deleted included), nor
    any other Workload known to hold the name (`in_use`: a claim an older fleet of that name left)."""
    taken = {c.name for c in claims} | set(in_use)
    out: list[str] = []
    index = 0
    while len(out) < count:
        name = claim_name(fleet, index)
        if name not in taken:
            out.append(name)
        index += 1
    return tuple(out)
