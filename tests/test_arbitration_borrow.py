"""A fleet's borrowed record (`policy.arbitration.borrow`): what it takes, that a pass between the take
and the shrink takes nothing more, when it gives back, and the ceiling a job derives from every record."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kubeforge.policy.arbitration import (
    Borrowed,
    Borrowing,
    Held,
    Training,
    Worker,
    borrow,
    ceiling,
    held_of,
    stored,
)

H100 = "NVIDIA-H100-80GB-HBM3"
NODES = {f"n-{i}": H100 for i in range(4)}
FULL = dict.fromkeys(NODES, 0)


def job(
    key: str = "ns/train",
    size: int = 4,
    *,
    min_workers: int = 1,
    priority: int = 0,
    lending: str = "aboveMin",
    refuses: str = "",
) -> Training:
    """A job with one 2-GPU worker per node, highest rank first (the order it gives them up)."""
    workers = tuple(Worker(f"{key}-{i}", f"n-{i % 4}", 2, rank=i) for i in reversed(range(size)))
    return Training(key, priority, workers, min_workers, lending, (H100,), refuses=refuses)  # type: ignore[arg-type]


def snapshot(*jobs: Training, unschedulable: int = 1, wanted: int = 3, **kw: object) -> Borrowing:
    """A fleet that wants `wanted` replicas, of which `unschedulable` have no room (the rest placed)."""
    kw.setdefault("scheduled", max(0, wanted - unschedulable))
    base = Borrowing(
        fleet="ns/chat",
        priority=0,
        gpus=2,
        products=(H100,),
        wanted=wanted,
        unschedulable=unschedulable,
        jobs=jobs,
        present=frozenset(j.key for j in jobs),
        free=FULL,
        node_products=NODES,
        now=1000.0,
        return_after=300.0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_a_fleet_with_no_room_borrows_the_elastic_workers_above_min_it_needs() -> None:
    out = borrow(snapshot(job(), unschedulable=2, wanted=4), [])
    assert [(h.job, h.workers, h.gpus, h.from_workers, h.replicas, h.for_replicas) for h in out.held] == [
        ("ns/train", 2, 4, 4, 2, 4)
    ]
    assert out.lent == out.held
    assert out.short == 0
    assert ceiling(out.held) == 2


def test_a_pass_before_the_job_shrank_takes_nothing_more() -> None:
    """The taken workers still run: they count as the fleet's room, not as something to take again."""
    first = borrow(snapshot(job(), unschedulable=2, wanted=4), [])
    again = borrow(snapshot(job(), unschedulable=2, wanted=4, now=1010.0), first.held)
    assert again.lent == ()
    assert again.short == 0
    assert again.held == first.held


def test_after_the_shrink_the_record_stays_and_the_ceiling_does_not_move() -> None:
    first = borrow(snapshot(job(), unschedulable=2, wanted=4), [])
    shrunk = borrow(snapshot(job(size=2), unschedulable=0, wanted=4, now=1100.0), first.held)
    assert shrunk.held == first.held
    assert shrunk.lent == ()
    assert ceiling(shrunk.held) == 2


def test_a_further_breach_adds_to_the_same_entry() -> None:
    first = borrow(snapshot(job(), unschedulable=1, wanted=3), [])
    more = borrow(snapshot(job(size=3), unschedulable=1, wanted=4, now=1100.0), first.held)
    assert [(h.workers, h.from_workers, h.replicas, h.for_replicas) for h in more.held] == [(2, 4, 2, 4)]
    assert ceiling(more.held) == 2


def test_never_below_min_workers() -> None:
    out = borrow(snapshot(job(min_workers=3), unschedulable=3, wanted=5), [])
    assert sum(h.workers for h in out.held) == 1
    assert out.short == 2
    assert "minWorkers" in out.why_short


def test_a_non_preemptible_job_is_never_touched_and_the_fleet_says_why() -> None:
    refusing = job(lending="none", refuses="is not preemptible (spec.preemptible: false)")
    out = borrow(snapshot(refusing, unschedulable=2), [])
    assert out.held == ()
    assert out.short == 2
    assert "ns/train is not preemptible" in out.why_short


def test_higher_priority_training_and_other_tenants_of_equal_priority_keep_their_gpus() -> None:
    high = job("ns/high", priority=10)
    other = job("team-b/train")
    out = borrow(snapshot(high, other, unschedulable=1), [])
    assert out.held == ()
    assert "ns/high has a higher priority than the fleet" in out.why_short
    assert "team-b/train is in another namespace" in out.why_short
    lower = borrow(snapshot(job("team-b/train", priority=-5), unschedulable=1), [])
    assert [h.job for h in lower.held] == ["team-b/train"]


def test_a_preemptible_rigid_job_is_taken_whole_and_a_later_pass_takes_nothing_more() -> None:
    rigid = job("ns/rigid", size=2, min_workers=2, lending="whole")
    out = borrow(snapshot(rigid, unschedulable=1), [])
    [entry] = out.held
    assert (entry.job, entry.workers, entry.gpus, entry.from_workers) == ("ns/rigid", 2, 4, 2)
    assert entry.whole
    assert out.lent == out.held
    assert out.short == 0
    assert ceiling(out.held) == 0, "held whole: the job is stopped until given back"
    # Still checkpointing (its workers run): they are this fleet's room already.
    again = borrow(snapshot(replace(rigid, checkpointing=True), unschedulable=1, now=1010.0), out.held)
    assert again.lent == ()
    assert again.held == out.held
    # Stopped and queued (no longer running): the record stays until the fleet is calm.
    stopped = borrow(snapshot(unschedulable=0, now=1100.0, present=frozenset({"ns/rigid"})), out.held)
    assert stopped.held == out.held


def test_an_elastic_shrink_is_preferred_and_a_whole_take_comes_only_when_it_is_not_enough() -> None:
    """One replica short: the elastic job's spare worker is enough and the rigid job runs on. Two short:
    the spare worker is not enough, the rigid job is taken whole, and that alone makes room for both,
    so the elastic job keeps its worker (a shrink for nothing would only cost it throughput)."""
    elastic = job("ns/elastic", size=3, min_workers=2)
    rigid = job("ns/rigid", size=2, min_workers=2, lending="whole")
    one = borrow(snapshot(elastic, rigid, unschedulable=1), [])
    assert [(h.job, h.whole) for h in one.held] == [("ns/elastic", False)]
    two = borrow(snapshot(elastic, rigid, unschedulable=2), [])
    assert [(h.job, h.whole) for h in two.held] == [("ns/rigid", True)]
    three = borrow(snapshot(elastic, rigid, unschedulable=3), [])
    assert sorted((h.job, h.whole) for h in three.held) == [("ns/elastic", False), ("ns/rigid", True)]


def test_a_whole_take_waits_for_a_checkpoint_in_progress() -> None:
    busy = job("ns/rigid", size=2, min_workers=2, lending="whole")
    out = borrow(snapshot(replace(busy, checkpointing=True), unschedulable=1), [])
    assert out.held == ()
    assert "ns/rigid is writing a checkpoint" in out.why_short


def test_gives_back_only_after_the_fleet_was_calm_for_return_after() -> None:
    taken = borrow(snapshot(job(), unschedulable=2, wanted=4), []).held
    shrunk = job(size=2)
    calm = borrow(snapshot(shrunk, unschedulable=0, wanted=2, now=2000.0), taken)
    assert calm.returned == ()
    assert calm.held[0].calm_since == 2000.0
    noisy = borrow(snapshot(shrunk, unschedulable=0, wanted=3, now=2100.0), calm.held)
    assert noisy.held[0].calm_since is None, "a breach in between starts the wait again"
    calm = borrow(snapshot(shrunk, unschedulable=0, wanted=2, now=2200.0), noisy.held)
    assert borrow(snapshot(shrunk, unschedulable=0, wanted=2, now=2499.0), calm.held).returned == ()
    back = borrow(snapshot(shrunk, unschedulable=0, wanted=2, now=2500.0), calm.held)
    assert back.held == ()
    assert [h.job for h, _ in back.returned] == ["ns/train"]


def test_an_entry_of_a_gone_job_or_of_a_fleet_that_stopped_autoscaling_is_released() -> None:
    taken = borrow(snapshot(job(), unschedulable=2, wanted=4), []).held
    gone = borrow(snapshot(unschedulable=0, wanted=4), taken)
    assert gone.held == ()
    assert "gone" in gone.returned[0][1]
    off = borrow(snapshot(job(size=2), active=False), taken)
    assert off.held == ()
    assert len(off.returned) == 1


def test_two_fleets_share_one_job() -> None:
    a = borrow(snapshot(job(), unschedulable=1, wanted=3), []).held
    b = borrow(
        snapshot(job(size=3), fleet="ns/other", unschedulable=1, wanted=2, held_by_others={"ns/train": a}), []
    ).held
    assert ceiling([*a, *b]) == 2
    assert ceiling(a) == 3, "when the second fleet gives back, the first one's ceiling remains"


def test_the_stored_record_round_trips() -> None:
    taken = borrow(snapshot(job(), unschedulable=2, wanted=4), []).held[0]
    calm = replace(taken, calm_since=1300.0)
    assert held_of(stored(calm)) == calm
    assert held_of(stored(replace(calm, whole=True))).whole


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=4),
    unschedulable=st.integers(0, 8),
    free=st.lists(st.integers(0, 2), min_size=4, max_size=4),
    passes=st.integers(1, 3),
)
def test_borrowed_never_exceeds_offers_nor_goes_below_min(
    sizes: list[tuple[int, int]], unschedulable: int, free: list[int], passes: int
) -> None:
    jobs = [job(f"ns/j{i}", max(a, b), min_workers=min(a, b)) for i, (a, b) in enumerate(sizes)]
    held: tuple[Held, ...] = ()
    for n in range(passes):  # the same breach seen again before any job shrank
        out = borrow(
            snapshot(
                *jobs, unschedulable=unschedulable, wanted=9, free=dict(zip(NODES, free, strict=True)), now=n
            ),
            held,
        )
        held = out.held
    for j in jobs:
        mine = [h for h in held if h.job == j.key]
        taken = sum(h.workers for h in mine)
        assert taken <= len(j.workers) - j.min_workers
        top = ceiling(mine)
        assert top is None or top >= j.min_workers
    # Never more than the breach asks for: each replica needs 2 GPUs, one worker frees 2.
    assert sum(h.workers for h in held) <= unschedulable


def test_workers_being_deleted_are_room_on_its_way_and_nothing_more_is_taken() -> None:
    """After a restart mid-shrink: the job runs at its ceiling while the taken workers are still being
    deleted (their GPUs not free yet). They are this fleet's room: a second take would lend one worker
    too many, and a record larger than its replicas never goes back."""
    first = borrow(snapshot(job(), unschedulable=2, wanted=4), [])
    assert first.held[0].workers == 2
    shrinking = replace(job(size=2), departing=job().workers[:2])
    again = borrow(snapshot(shrinking, unschedulable=2, wanted=4, now=1010.0), first.held)
    assert again.lent == ()
    assert again.short == 0
    assert again.held == first.held


def test_a_later_take_keeps_the_give_back_threshold_of_the_first() -> None:
    """Wanted 4 with room for 2: two workers for two replicas (gives back at 2). A later take made while
    the fleet asked for fewer (3, capped while pods were unschedulable) must not lower that threshold
    below what the fleet can run without the loan."""
    first = borrow(snapshot(job(), unschedulable=2, wanted=4), [])
    later = borrow(snapshot(job(size=2, min_workers=1), unschedulable=1, wanted=3, now=1100.0), first.held)
    [entry] = later.held
    assert (entry.workers, entry.replicas) == (3, 3)
    assert entry.for_replicas - entry.replicas == 2, "gives back once it wants no more than it had"
    calm = borrow(snapshot(job(size=1), unschedulable=0, wanted=2, now=1200.0), later.held)
    back = borrow(snapshot(job(size=1), unschedulable=0, wanted=2, now=1500.0), calm.held)
    assert back.held == ()


def test_a_take_that_covers_part_of_the_shortfall_gives_back_only_at_what_the_fleet_ran_before() -> None:
    """One replica placed, two missing, one worker on offer: the loan makes room for one replica. The
    fleet could run 1 replica without it, so it gives back at 1, not at 2 (wanted 3 less 1 made)."""
    out = borrow(snapshot(job(size=2, min_workers=1), unschedulable=2, wanted=3), [])
    [entry] = out.held
    assert (entry.workers, entry.replicas, out.short) == (1, 1, 1)
    assert entry.for_replicas - entry.replicas == 1
    at_two = borrow(snapshot(job(size=1), unschedulable=0, wanted=2, now=2000.0), out.held)
    later = borrow(snapshot(job(size=1), unschedulable=0, wanted=2, now=2400.0), at_two.held)
    assert [h.job for h in later.held] == [entry.job], "still held while it wants 2"
    assert later.returned == ()


def test_pods_of_an_older_larger_ask_are_not_borrowed_for() -> None:
    """Panic asked for 8 (6 pods unschedulable); the next evaluation caps the ask at the 2 placed + 1.
    The fleet is short of 1 replica, not 6: a whole take made now must give back once it wants 2 again,
    or the job it stopped never runs again."""
    rigid = job("ns/rigid", size=2, min_workers=2, lending="whole")
    out = borrow(snapshot(rigid, unschedulable=6, wanted=3, scheduled=2), [])
    [entry] = out.held
    assert entry.whole
    assert entry.replicas == 1, "for the one replica the fleet still wants, not the six old pods"
    assert entry.for_replicas - entry.replicas == 2
    calm = borrow(snapshot(unschedulable=0, wanted=2, now=2000.0, present=frozenset({"ns/rigid"})), out.held)
    back = borrow(snapshot(unschedulable=0, wanted=2, now=2300.0, present=frozenset({"ns/rigid"})), calm.held)
    assert back.held == ()
    assert [h.job for h, _ in back.returned] == ["ns/rigid"]


# Two fleets holding one worker each of a 4-worker job: the first took at 900 s, this one ("ns/chat")
# at 950 s. Each wants one 4-GPU replica the cluster has no room for.
FIRST = Held("ns/train", 1, 2, from_workers=4, replicas=1, for_replicas=1, since=900.0, fleet="ns/first")
MINE = Held("ns/train", 1, 2, from_workers=4, replicas=1, for_replicas=1, since=950.0)


def both_fleets(shrinking: Training, free: dict[str, int]) -> tuple[Borrowed, Borrowed]:
    """This fleet's pass and the first fleet's, over the same job and the same records."""
    common: dict[str, Any] = {
        "gpus": 4,
        "wanted": 1,
        "unschedulable": 1,
        "free": {**FULL, **free},
        "now": 1000.0,
    }
    mine = borrow(snapshot(shrinking, held_by_others={"ns/train": [FIRST]}, **common), [MINE])
    others = {"ns/train": [replace(MINE, fleet="ns/chat")]}
    theirs = borrow(snapshot(shrinking, fleet="ns/first", held_by_others=others, **common), [FIRST])
    return mine, theirs


def test_two_fleets_holding_takes_of_one_job_each_count_their_own_leaving_worker() -> None:
    """The job is at its ceiling and both taken workers are still being deleted, the first fleet's (the
    highest rank, on n-3) and this fleet's (on n-2). Each fleet's replica fits on its own worker's node
    once that worker is gone (n-2 and n-3 have 2 GPUs free besides), so neither takes more. Counted by
    position, both fleets would credit themselves the first departing worker and this one would take
    again."""
    full = job(size=4, min_workers=1)
    shrinking = replace(job(size=2, min_workers=1), departing=full.workers[:2])
    mine, theirs = both_fleets(shrinking, {"n-2": 2, "n-3": 2})
    assert (mine.lent, mine.short, mine.held) == ((), 0, (MINE,))
    assert (theirs.lent, theirs.short) == ((), 0)


def test_a_fleets_share_of_leaving_workers_holds_after_another_fleets_worker_is_gone() -> None:
    """As above, once the first fleet's worker (rank 3) is gone, its GPUs free on n-3, and only this
    fleet's (rank 2, on n-2) is still being deleted: this fleet still counts it. Shared by position, this
    fleet would find nothing left for it (the first fleet's earlier take comes first) and take again."""
    full = job(size=4, min_workers=1)
    rank_two_leaving = replace(job(size=2, min_workers=1), departing=full.workers[1:2])
    mine, theirs = both_fleets(rank_two_leaving, {"n-2": 2, "n-3": 4})
    assert (mine.lent, mine.short) == ((), 0)
    assert (theirs.lent, theirs.short) == ((), 0)
