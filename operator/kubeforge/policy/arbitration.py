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
   once the missing replicas fit, later offers are not touched; a shrink that a later take made needless
   (a preemption that alone makes room) is dropped or cut to what is still needed. Elastic workers leave
   in the order the job gives (its highest ranks first), because that is what its rendezvous tolerates.

Placement is judged per node, like the scheduler: a replica of `gpus` GPUs needs that many free on one
node of an accepted product. The snapshot's free GPUs are what the capacity ledger leaves after every
claim (admitted gangs' unplaced workers, unbound pods), so a lend never takes room that was promised.

Giving back is hysteresis, not a mirror of the take: GPUs a fleet frees go back to training only once
the fleet has wanted no more than it has for `return_after` seconds (`may_return`), so a noisy metric
cannot make a job shrink and grow every evaluation.

Who writes what: a fleet records what it borrowed in its own `status.borrowed` (`borrow`), and the
TrainingJob controller reads every fleet's record and keeps the job at `ceiling(...)` of it, so each object
has one writer and an operator killed mid-lend finds the whole lend in the caches after a restart. A job
taken whole has ceiling 0: its controller asks it for a checkpoint, stops it once the checkpoint is in (or
its grace period ends), and keeps it `Queued` until the fleet gives it back; it then resumes from that
checkpoint like any preempted job.

Pure: no Kubernetes, no clock. The controllers gather the snapshot and carry out the plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

from kubeforge.api import inferencefleet as api
from kubeforge.policy.conditions import format_time, parse_time

Lending = Literal["none", "aboveMin", "whole"]
"""What a job offers: nothing, its elastic workers above `minWorkers`, or itself whole."""


@dataclass(frozen=True)
class Worker:
    """One running worker of a job: the pod, the node it is bound to and the GPUs it holds there."""

    pod: str
    node: str
    gpus: int
    rank: int | None = None
    """Its rank (the Indexed Job's completion index): which fleet's take it is leaves by it."""


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
    refuses: str = ""
    """Why a job that lends nothing does (`preemptible: false`, admitted by Kueue, rigid), for the fleet's
    message."""
    departing: tuple[Worker, ...] = ()
    """Workers being deleted that still hold their GPUs (a shrink or a preemption under way)."""
    kueue: bool = False
    """Admitted by Kueue and not `preemptible: false`: it lends nothing to kubeforge, but a fleet may ask
    Kueue for its GPUs (`policy.kueue_claims`)."""


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
                # Replaces a shrink of the same job, and goes last: the takes are in the order they were
                # decided, so the last one is the one that made the replicas fit.
                taken.pop(job.key, None)
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
    takes = _without_needless(list(taken.values()), need, free, node_products, have)
    return LendPlan(tuple(takes), replicas=have, short=max(0, need.replicas - have), skipped=skipped)


def _without_needless(
    takes: list[Take],
    need: Need,
    free: Mapping[str, int],
    node_products: Mapping[str, str | None],
    have: int,
) -> list[Take]:
    """`takes` less what the later ones made needless: a job preempted because shrinks were not enough
    (or a later take that frees a better node) can leave an earlier take nothing to do, and a job shrunk
    or preempted for nothing loses throughput or work for nothing. The last take stays (it made the
    replicas fit); the others are dropped (a shrink may instead be cut to a shorter prefix of its leaving
    order, never a preemption), latest decided first, so the lowest-priority training still gives first."""

    def fits(candidate: Sequence[Take]) -> int:
        room = dict(free)
        for take in candidate:
            for w in take.workers:
                room[w.node] = room.get(w.node, 0) + w.gpus
        return fitting(room, need, node_products)

    kept = list(takes)
    for i in reversed(range(len(kept) - 1)):
        take = kept[i]
        # A job taken whole goes whole or not at all (a preemption is all its workers); one that a
        # later take made needless is not preempted, and loses no work.
        counts = [0] if take.preempt else range(len(take.workers))
        for count in counts:
            shorter = replace(take, workers=take.workers[:count])
            trial = [*kept[:i], shorter, *kept[i + 1 :]] if count else [*kept[:i], *kept[i + 1 :]]
            if fits(trial) >= have:
                kept = trial
                break
    return kept


def may_return(
    *, wanted: int, holding: int, calm_since: float | None, now: float, return_after: float
) -> bool:
    """Whether GPUs a fleet holds beyond what it wants may go back to training: the fleet has wanted no
    more than it now holds (`calm_since`: since when, in seconds on any clock; None: it wants more
    now) for at least `return_after` seconds."""
    if wanted > holding or calm_since is None:
        return False
    return now - calm_since >= return_after


# ---------------------------------------------------------------------------------------------------
# The fleet's borrowed record: what it holds, what it takes now, what it gives back.
#
# The fleet is the only writer of what it borrowed (`status.borrowed`, one entry per job); the job's
# controller derives its ceiling from every fleet's entries (`ceiling`), so the record survives an
# operator restart and no object has two writers.


@dataclass(frozen=True)
class Held:
    """One entry of a fleet's `status.borrowed`, as the policy reads and writes it."""

    job: str
    workers: int
    gpus: int
    from_workers: int
    replicas: int
    for_replicas: int
    since: float
    """Seconds on the clock `Borrowing.now` uses."""
    calm_since: float | None = None
    whole: bool = False
    """The job was taken whole: preempted after its checkpoint, held stopped until given back."""
    fleet: str = field(default="", compare=False)
    """`<namespace>/<name>` of the fleet holding it, where known (read from another fleet's status): it
    orders takes made at the same second. Not stored: an entry is in its own fleet's status."""


def _take_order(entry: Held, fleet: str) -> tuple[float, str]:
    """Takes of one job in the order they were made (the fleet's name breaks a tie): the order in which
    the job's leaving workers are shared out among the fleets holding them."""
    return (entry.since, entry.fleet or fleet)


def ceiling(entries: Sequence[Held]) -> int | None:
    """The most workers a job may have while fleets hold `entries` of it (every fleet's, None: none):
    the size before the first of them was taken, less every worker taken; 0 while any fleet holds it
    whole. A ceiling derived this way does not move when the job shrinks to it, so a pass after the
    shrink asks for nothing more."""
    if not entries:
        return None
    if any(e.whole for e in entries):
        return 0
    return max(1, max(e.from_workers for e in entries) - sum(e.workers for e in entries))


@dataclass(frozen=True)
class Borrowing:
    """What one fleet pass knows for arbitration, gathered from the caches."""

    fleet: str
    """`<namespace>/<name>`."""
    priority: int
    gpus: int
    products: tuple[str, ...] | None
    wanted: int
    """Replicas the autoscaler asks for now."""
    unschedulable: int
    """The fleet's pods the scheduler cannot place."""
    jobs: Sequence[Training]
    """TrainingJobs holding GPUs with every running worker (none taken out yet) and departing one."""
    scheduled: int = 0
    """The fleet's pods placed on a node. What it is short of is `wanted - scheduled`, at most the
    unschedulable pods: while the autoscaler caps its ask (one pod waiting at a time), pods of an
    earlier, larger ask can still be unschedulable, and taking GPUs for them would lend for replicas
    the fleet no longer wants."""
    held_by_others: Mapping[str, Sequence[Held]] = field(default_factory=dict)
    """Other fleets' entries, by job."""
    present: frozenset[str] = frozenset()
    """Jobs that exist and have not finished: an entry of any other job is released."""
    free: Mapping[str, int] = field(default_factory=dict)
    node_products: Mapping[str, str | None] = field(default_factory=dict)
    now: float = 0.0
    return_after: float = 300.0
    active: bool = True
    """The fleet autoscales: a fleet that does not gives back what it holds and takes nothing."""
    claimed_for: int = 0
    """Replicas the fleet can run with what it asked Kueue for (`policy.kueue_claims`, `forReplicas`):
    those are on their way while Kueue evicts for them, and are not borrowed for a second time."""


@dataclass(frozen=True)
class Borrowed:
    """The fleet's entries after this pass, and what changed."""

    held: tuple[Held, ...]
    lent: tuple[Held, ...] = ()
    """Entries taken or grown this pass (only the increment)."""
    returned: tuple[tuple[Held, str], ...] = ()
    """Entries given back this pass, and why."""
    short: int = 0
    """Replicas that still have no room after this pass's takes."""
    why_short: str = ""
    """Why training lent no more (for `CapacityLimited`)."""


NOTHING_TO_LEND = "no running training lends GPUs of this type"
"""`why_short` when no training was even in question: the scheduler's own reason says it all."""


def _cross_namespace(
    fleet: str, jobs: Sequence[Training], priority: int
) -> tuple[list[Training], dict[str, str]]:
    """A tenant's fleet only takes from another namespace's training of strictly lower priority."""
    ns = fleet.split("/", 1)[0]
    kept: list[Training] = []
    skipped: dict[str, str] = {}
    for job in jobs:
        if job.key.split("/", 1)[0] != ns and job.priority >= priority and offers(job):
            skipped[job.key] = "is in another namespace and not of lower priority than the fleet"
            continue
        kept.append(job)
    return kept, skipped


def borrow(b: Borrowing, mine: Sequence[Held]) -> Borrowed:
    """This fleet's entries after one pass: released ones dropped (job gone, fleet calm for
    `return_after`, autoscaling off), and new takes recorded when replicas it wants have no room.

    Workers already taken but still running (the job has not shrunk yet) count as room for the fleet
    that took them and are offered to no one, so a pass between a take and the shrink takes no more."""
    kept: list[Held] = []
    returned: list[tuple[Held, str]] = []
    for entry in mine:
        if not b.active:
            returned.append((entry, "the fleet no longer autoscales"))
            continue
        if entry.job not in b.present:
            returned.append((entry, "the job is gone or finished"))
            continue
        holding = max(0, entry.for_replicas - entry.replicas)
        calm = b.wanted <= holding
        calm_since = (entry.calm_since if entry.calm_since is not None else b.now) if calm else None
        if may_return(
            wanted=b.wanted, holding=holding, calm_since=calm_since, now=b.now, return_after=b.return_after
        ):
            returned.append(
                (entry, f"the fleet has wanted at most {holding} replicas for {b.return_after:g}s")
            )
            continue
        kept.append(replace(entry, calm_since=calm_since))
    if not b.active:
        return Borrowed((), returned=tuple(returned))

    by_job: dict[str, list[Held]] = {k: list(v) for k, v in b.held_by_others.items()}
    for entry in kept:
        by_job.setdefault(entry.job, []).append(entry)
    room = dict(b.free)
    jobs: list[Training] = []
    for job in b.jobs:
        entries = by_job.get(job.key, ())
        top = ceiling(entries)
        leaving = max(0, len(job.workers) - top) if top is not None else 0
        mine_of_job = [e for e in kept if e.job == job.key]
        taken = sum(e.workers for e in mine_of_job)
        # Workers taken but not gone yet (those being deleted, then those still running that must
        # leave; highest rank first, the order they go) are room on its way, so a pass before they are
        # gone takes no more. Each fleet holding takes of the job counts its own share of them, in the
        # order the takes were made: by count alone, two fleets would both count the first worker's
        # node and neither the second's.
        if taken:
            for w in _my_share(job, leaving, entries, mine_of_job, b):
                room[w.node] = room.get(w.node, 0) + w.gpus
        jobs.append(replace(job, workers=job.workers[leaving:]))

    missing = min(b.unschedulable, max(0, b.wanted - max(b.scheduled, b.claimed_for)))
    need = Need(b.fleet, missing, b.gpus, b.products, b.priority)
    if missing <= 0 or b.gpus <= 0:
        return Borrowed(tuple(kept), returned=tuple(returned))
    candidates, skipped = _cross_namespace(b.fleet, jobs, b.priority)
    for job in candidates:
        usable = any(_accepts(b.products, b.node_products.get(w.node)) for w in job.workers)
        if job.lending == "none" and job.refuses and usable:
            skipped[job.key] = job.refuses
        elif job.lending == "aboveMin" and usable and not offers(job):
            skipped[job.key] = f"runs at its minWorkers ({job.min_workers})"
    plan = plan_lend(need, candidates, room, b.node_products)
    have = fitting(room, need, b.node_products)
    lent: list[Held] = []
    sizes = {job.key: len(job.workers) for job in jobs}
    mins = {job.key: job.min_workers for job in jobs}
    reasons_after: dict[str, str] = {}
    for take in plan.takes:
        # A whole take frees its GPUs once the job's checkpoint is in (or its grace period ran out);
        # until then they count as room for this fleet alone, like a shrink not yet done.
        for w in take.workers:
            room[w.node] = room.get(w.node, 0) + w.gpus
        now_fits = fitting(room, need, b.node_products)
        made, have = now_fits - have, now_fits
        entry = Held(
            take.job,
            len(take.workers),
            take.gpus,
            from_workers=sizes[take.job],
            replicas=made,
            # What the fleet runs with these GPUs: its placed replicas, the missing ones already
            # fitting (earlier takes, free GPUs), and what this take makes room for. Not `wanted`: a
            # take covering part of the shortfall would set the give-back threshold above what the
            # fleet can run without it (GPUs back too soon), and one for pods of a larger, older ask
            # below what it ever wants again (a job taken whole and never given back).
            for_replicas=b.scheduled + now_fits,
            since=b.now,
            whole=take.preempt,
        )
        lent.append(entry)
        kept = _merge(kept, entry)
        if not take.preempt and sizes[take.job] - len(take.workers) <= mins[take.job]:
            reasons_after[take.job] = f"is down to its minWorkers ({mins[take.job]})"
    short = max(0, need.replicas - have)
    reasons = {**skipped, **plan.skipped, **(reasons_after if short else {})}
    why = "; ".join(f"{job} {reason}" for job, reason in sorted(reasons.items()))
    if short and not why:
        why = NOTHING_TO_LEND
    return Borrowed(tuple(kept), tuple(lent), tuple(returned), short, why)


def _my_share(
    job: Training, leaving: int, entries: Sequence[Held], mine: Sequence[Held], b: Borrowing
) -> list[Worker]:
    """The workers of `job` that this fleet's takes stand for and that have not gone yet.

    The job's taken ranks are its highest ones (`ceiling` and up to its size before the first take),
    and they go to the takes in the order the takes were made, the earliest take getting the highest
    ranks (the first to leave). Every fleet derives the same split from the same records, so no two
    count one worker's GPUs as their room; a worker already gone counts for no one (its GPUs are free).
    Workers without a known rank are shared by position, highest rank first."""
    others = b.held_by_others.get(job.key, ())
    first = min(_take_order(e, b.fleet) for e in mine)
    before = sum(e.workers for e in others if _take_order(e, "") < first)
    taken = sum(e.workers for e in mine)
    out = [*job.departing, *job.workers[:leaving]]
    if any(w.rank is None for w in out):
        return out[before : before + taken]
    top = max(e.from_workers for e in entries)
    ranks = set(range(top - 1 - before, top - 1 - before - taken, -1))
    return [w for w in out if w.rank in ranks]


def _merge(held: Sequence[Held], take: Held) -> list[Held]:
    """One entry per job: a further take from the same job adds to it and moves its target."""
    out: list[Held] = []
    merged = False
    for entry in held:
        if entry.job == take.job:
            out.append(
                Held(
                    entry.job,
                    entry.workers + take.workers,
                    entry.gpus + take.gpus,
                    from_workers=entry.from_workers,
                    replicas=entry.replicas + take.replicas,
                    # What the fleet could run without any of it stays what it was at the first take:
                    # the wanted count of a later take may be lower (a restart, a capacity-capped ask),
                    # and a record whose give-back threshold fell below its minimum never goes back.
                    for_replicas=entry.for_replicas + take.replicas,
                    since=entry.since,
                    whole=entry.whole or take.whole,
                )
            )
            merged = True
        else:
            out.append(entry)
    if not merged:
        out.append(take)
    return out


# -- the stored record -------------------------------------------------------------------------------


def epoch_seconds(value: str | None) -> float | None:
    """A stored RFC 3339 time as seconds since the epoch (what the policies count in)."""
    at = parse_time(value)
    return at.timestamp() if at is not None else None


def stamp(seconds: float) -> str:
    """Seconds since the epoch as a stored RFC 3339 time."""
    return format_time(datetime.fromtimestamp(seconds, UTC))


def held_of(entry: api.Borrowed) -> Held:
    """A stored entry as the policy reads it (times as seconds since the epoch)."""
    return Held(
        entry.job,
        entry.workers,
        entry.gpus,
        from_workers=entry.from_workers,
        replicas=entry.replicas,
        for_replicas=entry.for_replicas,
        since=epoch_seconds(entry.since) or 0.0,
        calm_since=epoch_seconds(entry.calm_since),
        whole=entry.whole,
    )


def stored(held: Held) -> api.Borrowed:
    return api.Borrowed(
        job=held.job,
        workers=held.workers,
        gpus=held.gpus,
        from_workers=held.from_workers,
        replicas=held.replicas,
        for_replicas=held.for_replicas,
        since=stamp(held.since),
        calm_since=stamp(held.calm_since) if held.calm_since is not None else None,
        whole=held.whole,
    )


def held_by_job(statuses: Mapping[str, api.InferenceFleetStatus | None]) -> dict[str, dict[str, list[Held]]]:
    """Every fleet's entries (fleet key -> status), by job and then by fleet."""
    out: dict[str, dict[str, list[Held]]] = {}
    for fleet, status in statuses.items():
        for entry in (status.borrowed if status is not None else None) or ():
            out.setdefault(entry.job, {}).setdefault(fleet, []).append(replace(held_of(entry), fleet=fleet))
    return out
