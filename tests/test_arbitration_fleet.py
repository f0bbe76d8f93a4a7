"""Borrowing inside a fleet's pass (`policy.fleet.decide`): the record in its own status, the Events and
lends it counts, `CapacityLimited` naming why training lends no more, and giving back."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from kubeforge.policy.arbitration import ceiling, held_of
from kubeforge.policy.fleet import decide
from kubeforge.policy.fleet_status import PodSummary
from test_arbitration_borrow import job, snapshot
from test_fleet_controller import AUTO
from test_fleet_decide import STUCK, condition, reasons, spec, steady


def test_a_limited_autoscaling_fleet_records_what_it_borrows_in_its_own_status() -> None:
    o = steady(spec(autoscaling=AUTO["autoscaling"]), replicas=5)  # STUCK: 4 placed, 1 has no room
    plan = decide(replace(o, pods=STUCK, borrowing=snapshot(job(), unschedulable=0)))
    borrowed = plan.status.borrowed or []
    assert [(b.job, b.workers, b.gpus, b.from_workers) for b in borrowed] == [("ns/train", 1, 2, 4)]
    assert ("Normal", "BorrowedGpus") in reasons(plan)
    assert plan.lends == (("lend", 2),)
    assert ceiling([held_of(b) for b in borrowed]) == 3

    # The next pass (the job has not shrunk yet) keeps the record and takes nothing more.
    again = decide(
        replace(
            o, status=plan.status, pods=STUCK, borrowing=snapshot(job()), now=o.now + timedelta(seconds=5)
        )
    )
    assert again.status.borrowed == plan.status.borrowed
    assert again.lends == ()
    assert ("Normal", "BorrowedGpus") not in reasons(again)


def test_no_lendable_training_leaves_the_fleet_capacity_limited_saying_why() -> None:
    o = steady(spec(autoscaling=AUTO["autoscaling"]), replicas=5)  # STUCK: 4 placed, 1 has no room
    refusing = job(lending="none", refuses="is not preemptible (spec.preemptible: false)")
    plan = decide(replace(o, pods=STUCK, borrowing=snapshot(refusing)))
    assert plan.status.borrowed is None
    assert condition(plan.status, "CapacityLimited") == ("True", "NoLendableGpus")
    limited = next(c for c in plan.status.conditions if c.type == "CapacityLimited")
    assert "ns/train is not preemptible" in limited.message


def test_a_fleet_without_borrowing_writes_no_record() -> None:
    o = steady(spec(autoscaling=AUTO["autoscaling"]), replicas=5)  # STUCK: 4 placed, 1 has no room
    assert decide(o).status.borrowed is None
    assert "borrowed" not in decide(o).status.to_wire()


def test_a_calm_fleet_gives_back_after_the_hysteresis() -> None:
    o = steady(spec(autoscaling=AUTO["autoscaling"]), replicas=5)  # STUCK: 4 placed, 1 has no room
    taken = decide(replace(o, pods=STUCK, borrowing=snapshot(job())))
    calm_pods = PodSummary(total=1, ready=1, scheduled=1)
    status = taken.status.model_copy(update={"desired_replicas": 1})
    first = decide(
        replace(o, status=status, pods=calm_pods, borrowing=snapshot(job(size=3), unschedulable=0))
    )
    assert first.status.borrowed
    assert first.status.borrowed[0].calm_since is not None
    later = replace(
        o,
        status=first.status,
        pods=calm_pods,
        borrowing=snapshot(job(size=3), unschedulable=0),
        now=o.now + timedelta(seconds=301),
    )
    back = decide(later)
    assert back.status.borrowed is None
    assert ("Normal", "ReturnedGpus") in reasons(back)
    assert back.lends == (("return", 2),)


def test_turning_autoscaling_off_gives_everything_back() -> None:
    o = steady(spec(autoscaling=AUTO["autoscaling"]), replicas=5)  # STUCK: 4 placed, 1 has no room
    taken = decide(replace(o, pods=STUCK, borrowing=snapshot(job())))
    off = spec(autoscaling={**AUTO["autoscaling"], "enabled": False})
    plan = decide(replace(o, spec=off, status=taken.status))
    assert plan.status.borrowed is None
    assert plan.lends == (("return", 2),)
