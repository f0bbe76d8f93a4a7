"""Borrowing inside a fleet's pass (`policy.fleet.decide`): the record in its own status, the Events and
lends it counts, `CapacityLimited` naming why training lends no more, and giving back."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from kubeforge.policy.arbitration import Training, ceiling, held_of
from kubeforge.policy.fleet import decide
from kubeforge.policy.fleet_status import PodSummary
from kubeforge.policy.kueue_claims import Claim, claim_name
from test_arbitration_borrow import job, snapshot
from test_fleet_controller import AUTO
from test_fleet_decide import NAME, STUCK, condition, reasons, spec, steady


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


# -- asking Kueue (`policy.kueue_claims`) ------------------------------------------------------------


def _kueue_job() -> Training:
    """A running job Kueue admitted, of lower priority than the fleet: kubeforge lends nothing from it."""
    refuses = "is admitted by Kueue (its preemption is Kueue's)"
    return replace(job(lending="none", refuses=refuses, priority=-1), kueue=True)


def test_a_fleet_with_a_kueue_queue_asks_kueue_for_the_gpus_kueue_admitted_training_holds() -> None:
    o = steady(spec(autoscaling=AUTO["autoscaling"], kueueQueueName="team-a"), replicas=5)  # 1 has no room
    o = replace(o, pods=STUCK, borrowing=snapshot(_kueue_job()), kueue_served=True)
    plan = decide(o)
    assert plan.claims_create == (claim_name(NAME, 0),)
    claim = plan.status.kueue_claim
    assert claim is not None
    assert (claim.queue, claim.replicas, claim.admitted, claim.for_replicas) == ("team-a", 1, 0, 5)
    assert condition(plan.status, "CapacityLimited") == ("True", "WaitingForKueue")
    limited = next(c for c in plan.status.conditions if c.type == "CapacityLimited")
    assert "asked Kueue through LocalQueue team-a for 1 replica(s): 0 admitted" in limited.message
    assert ("Normal", "AskedKueue") in reasons(plan)
    assert plan.lends == (("kueueAsk", 2),)

    # Kueue says why it waits; the next pass asks for nothing more and shows Kueue's word.
    pending = Claim(claim_name(NAME, 0), False, "couldn't assign flavors to pod set replica")
    again = decide(replace(o, status=plan.status, kueue_claims=(pending,), now=o.now + timedelta(seconds=5)))
    assert again.claims_create == ()
    assert again.lends == ()
    assert again.status.kueue_claim is not None
    assert again.status.kueue_claim.message == "couldn't assign flavors to pod set replica"


def test_without_a_kueue_queue_training_kueue_admitted_is_left_alone_and_the_fleet_says_why() -> None:
    o = steady(spec(autoscaling=AUTO["autoscaling"]), replicas=5)
    plan = decide(replace(o, pods=STUCK, borrowing=snapshot(_kueue_job()), kueue_served=True))
    assert plan.claims_create == ()
    assert plan.status.kueue_claim is None
    assert condition(plan.status, "CapacityLimited") == ("True", "NoLendableGpus")
    limited = next(c for c in plan.status.conditions if c.type == "CapacityLimited")
    assert "ns/train is admitted by Kueue" in limited.message


def test_a_calm_fleet_withdraws_its_claims_after_the_hysteresis() -> None:
    o = steady(spec(autoscaling=AUTO["autoscaling"], kueueQueueName="team-a"), replicas=5)
    asked = decide(replace(o, pods=STUCK, borrowing=snapshot(_kueue_job()), kueue_served=True))
    admitted = (Claim(claim_name(NAME, 0), True),)
    calm_pods = PodSummary(total=1, ready=1, scheduled=1)
    status = asked.status.model_copy(update={"desired_replicas": 1})
    calm = replace(
        o,
        status=status,
        pods=calm_pods,
        borrowing=snapshot(unschedulable=0),
        kueue_claims=admitted,
        kueue_served=True,
    )
    first = decide(calm)
    assert first.claims_delete == ()
    assert first.status.kueue_claim is not None
    assert first.status.kueue_claim.calm_since is not None
    back = decide(replace(calm, status=first.status, now=o.now + timedelta(seconds=301)))
    assert back.claims_delete == (claim_name(NAME, 0),)
    assert back.status.kueue_claim is None
    assert ("Normal", "ReleasedKueueClaim") in reasons(back)
    assert back.lends == (("kueueRelease", 2),)


def test_replicas_asked_of_kueue_are_not_borrowed_for_again_while_kueue_evicts_for_them() -> None:
    """Kueue admitted the claim and is stopping the job it evicted; the fleet's replica still waits. A
    job kubeforge admitted that offers workers meanwhile must not be shrunk for the same replica."""
    o = steady(spec(autoscaling=AUTO["autoscaling"], kueueQueueName="team-a"), replicas=5)
    asked = decide(replace(o, pods=STUCK, borrowing=snapshot(_kueue_job()), kueue_served=True))
    assert asked.status.kueue_claim is not None
    assert asked.status.kueue_claim.for_replicas == 5
    while_evicting = replace(
        o,
        status=asked.status,
        pods=STUCK,
        borrowing=snapshot(_kueue_job(), job("ns/elastic")),
        kueue_claims=(Claim(claim_name(NAME, 0), True),),
        kueue_served=True,
        now=o.now + timedelta(seconds=5),
    )
    later = decide(while_evicting)
    assert later.status.borrowed is None
    assert ("Normal", "BorrowedGpus") not in reasons(later)
    assert later.claims_create == ()
    # Wanting one more than the claim stands for borrows that one from the elastic job.
    six = spec(autoscaling={**AUTO["autoscaling"], "minReplicas": 6}, kueueQueueName="team-a")
    more = decide(replace(while_evicting, spec=six))
    assert [b.job for b in more.status.borrowed or []] == ["ns/elastic"]


def test_claims_the_operator_cannot_read_are_kept_as_recorded() -> None:
    """RBAC refuses to list Workloads: the claims may exist unseen, so a calm fleet neither withdraws
    nor forgets them (forgetting would leak their quota), and a short one makes none it cannot see."""
    o = steady(spec(autoscaling=AUTO["autoscaling"], kueueQueueName="team-a"), replicas=5)
    asked = decide(replace(o, pods=STUCK, borrowing=snapshot(_kueue_job()), kueue_served=True))
    calm_pods = PodSummary(total=1, ready=1, scheduled=1)
    status = asked.status.model_copy(update={"desired_replicas": 1})
    blind = replace(o, status=status, pods=calm_pods, borrowing=snapshot(unschedulable=0), kueue_blind=True)
    later = decide(replace(blind, now=o.now + timedelta(seconds=3600)))
    assert later.status.kueue_claim == asked.status.kueue_claim
    assert (later.claims_create, later.claims_delete) == ((), ())
