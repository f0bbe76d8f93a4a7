"""Which training lends GPUs to a fleet in a breach, in what order, and when they may go back."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeforge.policy.arbitration import (
    LendPlan,
    Need,
    Training,
    Worker,
    fitting,
    may_return,
    offers,
    plan_lend,
)

H100, L4 = "NVIDIA-H100-80GB-HBM3", "NVIDIA-L4"
NODES = {"h-0": H100, "h-1": H100, "l-0": L4, "l-1": L4}
FULL = dict.fromkeys(NODES, 0)


def workers(job: str, *placed: tuple[str, int]) -> tuple[Worker, ...]:
    return tuple(Worker(f"{job}-{i}", node, gpus) for i, (node, gpus) in enumerate(placed))


def elastic(
    key: str, *placed: tuple[str, int], min_workers: int = 1, priority: int = 0, **kw: object
) -> Training:
    return Training(
        key,
        priority,
        workers(key, *placed),
        min_workers,
        "aboveMin",
        (H100,),
        **kw,  # type: ignore[arg-type]
    )


def rigid(
    key: str, *placed: tuple[str, int], preemptible: bool = True, priority: int = 0, **kw: object
) -> Training:
    ws = workers(key, *placed)
    lending = "whole" if preemptible else "none"
    return Training(key, priority, ws, len(ws), lending, (H100,), **kw)  # type: ignore[arg-type]


def fleet(replicas: int, gpus: int = 1, product: str = H100, priority: int = 0) -> Need:
    return Need("ns/chat", replicas, gpus, (product,), priority)


def taken(plan: LendPlan) -> dict[str, tuple[str, ...]]:
    return {t.job: tuple(w.pod for w in t.workers) + (("(whole)",) if t.preempt else ()) for t in plan.takes}


def test_an_elastic_job_shrinks_before_a_rigid_one_is_preempted() -> None:
    jobs = [rigid("ns/rigid", ("h-0", 4)), elastic("ns/elastic", ("h-1", 2), ("h-1", 2), ("h-1", 2))]
    plan = plan_lend(fleet(2, gpus=2), jobs, FULL, NODES)
    assert taken(plan) == {"ns/elastic": ("ns/elastic-0", "ns/elastic-1")}
    assert plan.short == 0


def test_elastic_workers_leave_in_the_jobs_order_and_no_more_than_needed() -> None:
    job = elastic("ns/e", ("h-0", 1), ("h-0", 1), ("h-1", 1), ("h-1", 1), min_workers=1)
    plan = plan_lend(fleet(1, gpus=2), [job], FULL, NODES)
    assert taken(plan) == {"ns/e": ("ns/e-0", "ns/e-1")}
    assert (plan.replicas, plan.short) == (1, 0)


def test_a_job_never_goes_below_its_minimum_by_shrinking() -> None:
    job = elastic("ns/e", ("h-0", 1), ("h-0", 1), ("h-0", 1), min_workers=2)
    plan = plan_lend(fleet(3), [job], FULL, NODES)
    assert taken(plan) == {"ns/e": ("ns/e-0",)}
    assert plan.short == 2


def test_lower_priority_gives_first_whatever_the_kind() -> None:
    jobs = [
        elastic("ns/important", ("h-0", 1), ("h-0", 1), priority=10),
        rigid("ns/batch", ("h-1", 1), priority=-5),
    ]
    plan = plan_lend(fleet(1, priority=10), jobs, FULL, NODES)
    assert taken(plan) == {"ns/batch": ("ns/batch-0", "(whole)")}


def test_the_preemption_that_loses_least_work_goes_first() -> None:
    jobs = [
        rigid("ns/a", ("h-0", 2), seconds_since_checkpoint=3600.0),
        rigid("ns/b", ("h-1", 2), seconds_since_checkpoint=60.0),
    ]
    plan = plan_lend(fleet(1, gpus=2), jobs, FULL, NODES)
    assert taken(plan) == {"ns/b": ("ns/b-0", "(whole)")}
    assert plan.takes[0].lost_gpu_seconds == 120.0


def test_a_job_that_never_checkpointed_loses_everything_since_it_started() -> None:
    never = rigid("ns/never", ("h-0", 2), seconds_running=100.0)
    saved = rigid("ns/saved", ("h-1", 2), seconds_since_checkpoint=150.0, seconds_running=9000.0)
    assert taken(plan_lend(fleet(1, gpus=2), [saved, never], FULL, NODES)) == {
        "ns/never": ("ns/never-0", "(whole)")
    }


@pytest.mark.parametrize(
    ("job", "why"),
    [
        (rigid("ns/r", ("h-0", 4), checkpointing=True), "is writing a checkpoint"),
        (rigid("ns/r", ("h-0", 4), priority=100), "has a higher priority than the fleet"),
    ],
)
def test_a_job_checkpointing_or_above_the_fleets_priority_is_left_alone(job: Training, why: str) -> None:
    plan = plan_lend(fleet(1), [job], FULL, NODES)
    assert plan.takes == ()
    assert plan.short == 1
    assert plan.skipped == {"ns/r": why}


def test_non_preemptible_training_is_never_touched_and_the_fleet_stays_short() -> None:
    jobs = [
        rigid("ns/r", ("h-0", 8), preemptible=False),
        Training(
            "ns/e", 0, workers("ns/e", ("h-1", 4), ("h-1", 4)), 1, "none", (H100,)
        ),  # preemptible: false
    ]
    plan = plan_lend(fleet(1), jobs, FULL, NODES)
    assert plan.takes == ()
    assert plan.short == 1


def test_gpus_of_another_type_do_not_help() -> None:
    plan = plan_lend(fleet(1, product=L4), [rigid("ns/r", ("h-0", 8))], FULL, NODES)
    assert plan.takes == ()
    assert plan.short == 1


def test_free_room_is_used_before_anything_is_taken() -> None:
    plan = plan_lend(fleet(2), [rigid("ns/r", ("h-0", 8))], {**FULL, "h-1": 1}, NODES)
    assert taken(plan) == {"ns/r": ("ns/r-0", "(whole)")}
    assert plan_lend(fleet(1), [rigid("ns/r", ("h-0", 8))], {**FULL, "h-1": 1}, NODES).takes == ()


def test_a_shrink_that_is_not_enough_is_followed_by_a_preemption_of_the_same_job() -> None:
    job = Training("ns/j", 0, workers("ns/j", ("h-0", 2), ("h-0", 2), ("h-1", 2)), 2, "whole", (H100,))
    plan = plan_lend(fleet(2, gpus=4), [job], FULL, NODES)
    assert taken(plan) == {"ns/j": ("ns/j-0", "ns/j-1", "ns/j-2", "(whole)")}
    assert plan.replicas == 1  # h-0 gets 4 free; h-1 only 2
    assert plan.short == 1


@pytest.mark.parametrize(
    ("wanted", "holding", "calm_since", "now", "ok"),
    [
        (3, 3, 0.0, 299.0, False),
        (3, 3, 0.0, 300.0, True),
        (4, 3, 0.0, 1000.0, False),  # it wants more than it holds
        (2, 3, None, 1000.0, False),
    ],
)
def test_gpus_go_back_only_after_the_fleet_has_been_calm_long_enough(
    wanted: int, holding: int, calm_since: float | None, now: float, ok: bool
) -> None:
    assert (
        may_return(wanted=wanted, holding=holding, calm_since=calm_since, now=now, return_after=300.0) is ok
    )


# -- properties over random clusters -----------------------------------------------------------------

node_names = st.sampled_from(sorted(NODES))


@st.composite
def trainings(draw: st.DrawFn, index: int) -> Training:
    key = f"ns/j{index}"
    placed = draw(st.lists(st.tuples(node_names, st.integers(1, 4)), min_size=1, max_size=5))
    ws = workers(key, *placed)
    return Training(
        key,
        draw(st.integers(-2, 2)),
        ws,
        draw(st.integers(1, len(ws))),
        draw(st.sampled_from(["none", "aboveMin", "whole"])),
        None,
        checkpointing=draw(st.booleans()),
        seconds_since_checkpoint=draw(st.none() | st.floats(0, 1e5)),
        seconds_running=draw(st.floats(0, 1e5)),
    )


@st.composite
def worlds(draw: st.DrawFn) -> tuple[Need, list[Training], dict[str, int]]:
    jobs = [draw(trainings(i)) for i in range(draw(st.integers(0, 5)))]
    free = {n: draw(st.integers(0, 3)) for n in NODES}
    products = draw(st.sampled_from([None, (H100,), (L4,)]))
    need = Need("ns/f", draw(st.integers(1, 6)), draw(st.integers(1, 4)), products, draw(st.integers(-2, 2)))
    return need, jobs, free


def freed(free: dict[str, int], takes: Sequence[Worker]) -> dict[str, int]:
    room = dict(free)
    for w in takes:
        room[w.node] = room.get(w.node, 0) + w.gpus
    return room


@settings(max_examples=400, deadline=None)
@given(worlds())
def test_only_what_is_offered_by_eligible_jobs_is_taken_and_the_count_is_true(
    world: tuple[Need, list[Training], dict[str, int]],
) -> None:
    need, jobs, free = world
    plan = plan_lend(need, jobs, free, NODES)
    by_key = {j.key: j for j in jobs}
    every: list[Worker] = []
    for take in plan.takes:
        job = by_key[take.job]
        assert job.lending != "none"
        assert not job.checkpointing
        assert job.priority <= need.priority
        if take.preempt:
            assert job.lending == "whole"
            assert take.workers == job.workers
        else:
            assert take.workers == job.workers[: len(take.workers)]  # the job's leaving order
            assert len(job.workers) - len(take.workers) >= job.min_workers
        every += take.workers
    assert plan.replicas == fitting(freed(free, every), need, NODES)
    assert plan.replicas + plan.short == need.replicas
    assert fitting(free, need, NODES) <= plan.replicas


def test_a_shrink_a_later_preemption_makes_needless_is_dropped() -> None:
    """Found by the property below: job j0 (preemptible) shrinks by a worker, then j1 by one, and the
    fleet still lacks a replica; j0 is then taken whole, which alone makes room for all three. j1's
    shrink would cost it a worker for nothing: it is dropped, and the take that made the replicas fit
    is the plan."""
    need = Need("ns/f", replicas=3, gpus=2, products=None, priority=0)
    whole = Training("ns/j0", 0, workers("ns/j0", ("h-0", 2), ("h-0", 3)), 1, "whole", None)
    elastic = Training("ns/j1", 0, workers("ns/j1", ("h-0", 1), ("h-0", 1)), 1, "aboveMin", None)
    plan = plan_lend(need, [whole, elastic], {**FULL, "h-0": 1}, NODES)
    assert plan.replicas == 3
    assert [(t.job, t.preempt, len(t.workers)) for t in plan.takes] == [("ns/j0", True, 2)]


def test_a_shrink_is_cut_to_what_is_still_needed_after_a_later_take() -> None:
    """Three 2-GPU replicas missing. j0 (lowest priority) gives both its spare workers (h-0, l-0): two
    replicas, one short. j1 is then taken whole on h-1 (room for two more). Now j0's second worker is
    needless: j0 gives only its first, in its leaving order, and the plan still fits all three."""
    need = Need("ns/f", replicas=3, gpus=2, products=None, priority=0)
    j0 = Training("ns/j0", -1, workers("ns/j0", ("h-0", 2), ("l-0", 2)), 0, "aboveMin", None)
    j1 = Training("ns/j1", 0, workers("ns/j1", ("h-1", 2), ("h-1", 2)), 2, "whole", None)
    plan = plan_lend(need, [j0, j1], FULL, NODES)
    assert plan.replicas == 3
    assert [(t.job, t.preempt, [w.node for w in t.workers]) for t in plan.takes] == [
        ("ns/j0", False, ["h-0"]),
        ("ns/j1", True, ["h-1", "h-1"]),
    ]


@settings(max_examples=400, deadline=None)
@given(worlds())
def test_nothing_is_taken_once_the_fleet_fits(world: tuple[Need, list[Training], dict[str, int]]) -> None:
    need, jobs, free = world
    plan = plan_lend(need, jobs, free, NODES)
    if not plan.takes:
        return
    *before, last = plan.takes
    earlier = [w for t in before for w in t.workers]
    last_but_one = list(last.workers[:-1]) if not last.preempt else []
    if last.preempt and any(t.job == last.job for t in before):
        return  # a preemption that followed a shrink of the same job replaces it
    assert fitting(freed(free, earlier + last_but_one), need, NODES) < plan.replicas


def test_offers_follow_the_jobs_lending() -> None:
    e = elastic("ns/e", ("h-0", 1), ("h-0", 1), ("h-0", 1), min_workers=2)
    assert [(o.whole, len(o.workers)) for o in offers(e)] == [(False, 1)]
    whole = Training("ns/w", 0, e.workers, 2, "whole", None)
    assert [(o.whole, len(o.workers)) for o in offers(whole)] == [(False, 1), (True, 3)]
    assert offers(Training("ns/n", 0, e.workers, 2, "none", None)) == []


@settings(max_examples=400, deadline=None)
@given(worlds())
def test_no_take_in_a_plan_could_be_smaller(world: tuple[Need, list[Training], dict[str, int]]) -> None:
    """Every take of a plan is needed: without the last worker of any shrink (its leaving order keeps a
    prefix), or without any whole preemption, fewer replicas fit. A later take never leaves an earlier
    one idle."""
    need, jobs, free = world
    plan = plan_lend(need, jobs, free, NODES)
    for i, take in enumerate(plan.takes):
        others = [w for j, t in enumerate(plan.takes) if j != i for w in t.workers]
        kept = [] if take.preempt else list(take.workers[:-1])
        assert fitting(freed(free, others + kept), need, NODES) < plan.replicas


def test_a_preemption_a_later_one_made_needless_is_not_made() -> None:
    """Two whole offers at one priority: j2 loses less work and frees room for one replica, j3 for two.
    Two are needed: j2 is taken first, then j3, which alone is enough; j2 keeps running."""
    need = Need("ns/f", replicas=2, gpus=2, products=None, priority=0)
    j2 = Training("ns/j2", 0, workers("ns/j2", ("h-0", 2)), 1, "whole", None, seconds_running=10.0)
    j3 = Training(
        "ns/j3", 0, workers("ns/j3", ("h-1", 2), ("l-0", 2)), 2, "whole", None, seconds_running=99.0
    )
    plan = plan_lend(need, [j2, j3], FULL, NODES)
    assert plan.replicas == 2
    assert [(t.job, t.preempt) for t in plan.takes] == [("ns/j3", True)]
