"""Asking Kueue for GPUs that Kueue-admitted training holds (`policy.kueue_claims`), without a cluster."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeforge.builders.kueue_claim import FLEET_UID_LABEL, claim
from kubeforge.policy.arbitration import Training, Worker
from kubeforge.policy.kueue_claims import (
    MAX_CLAIMS,
    Asking,
    Claim,
    Record,
    ask,
    claim_name,
    holders,
    names_to_create,
)

H100 = "NVIDIA-H100-80GB-HBM3"
NODES = {"n-0": H100, "n-1": H100, "l-0": "NVIDIA-L4"}


def asking(**kw: object) -> Asking:
    """A fleet that wants 3 replicas and has room for 1 (2 short), with one job Kueue could evict."""
    base = Asking(
        queue="team-a",
        wanted=3,
        short=2,
        holders=("ns/train",),
        claims=(),
        now=1000.0,
        return_after=300.0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def claims(*admitted: bool, fleet: str = "chat") -> tuple[Claim, ...]:
    return tuple(Claim(claim_name(fleet, i), a) for i, a in enumerate(admitted))


def test_a_short_fleet_asks_kueue_for_each_missing_replica() -> None:
    out = ask(asking(), None)
    assert out.create == 2
    assert out.asked == 2
    assert out.record == Record("team-a", 2, 3, 1000.0)
    assert out.delete == ()
    assert "asked Kueue through LocalQueue team-a for 2 replica(s): 0 admitted" in out.message


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"holders": ()}, "no training Kueue admitted holds GPUs the fleet could have"),
        ({"short": 0}, "the fleet has room"),
        ({"queue": None}, "the fleet names no queue"),
        ({"served": False}, "Kueue is not installed"),
        ({"active": False}, "the fleet does not autoscale"),
    ],
)
def test_nothing_is_asked(change: dict[str, object], why: str) -> None:
    out = ask(asking(**change), None)
    assert (out.record, out.create, out.asked) == (None, 0, 0), why


def test_a_pass_before_kueue_answers_asks_nothing_more() -> None:
    """The claims stand for the replicas they were made for while Kueue evicts (or waits): the next
    pass, still short of the same replicas, asks for nothing more and makes no second claim."""
    first = ask(asking(), None)
    again = ask(asking(claims=claims(False, False), now=1010.0), first.record)
    assert (again.create, again.asked, again.delete) == (0, 0, ())
    assert again.record == first.record


def test_a_larger_breach_asks_only_for_the_replicas_beyond_the_claims() -> None:
    first = ask(asking(), None)
    more = ask(asking(claims=claims(True, True), wanted=5, short=2, now=1100.0), first.record)
    assert (more.create, more.asked) == (2, 2)
    assert more.record == Record("team-a", 4, 5, 1000.0)


def test_claims_go_back_only_after_the_fleet_was_calm_for_return_after() -> None:
    record = Record("team-a", 2, 3, 1000.0)
    held = claims(True, True)
    calm = ask(asking(claims=held, wanted=1, short=0, now=2000.0), record)
    assert calm.record is not None
    assert calm.record.calm_since == 2000.0
    assert calm.delete == ()
    noisy = ask(asking(claims=held, wanted=2, short=0, now=2100.0), calm.record)
    assert noisy.record is not None
    assert noisy.record.calm_since is None, "it wanted more than it could run without the claims"
    calm_again = ask(asking(claims=held, wanted=1, short=0, now=2200.0), noisy.record)
    back = ask(asking(claims=held, wanted=1, short=0, now=2500.0), calm_again.record)
    assert back.record is None
    assert sorted(back.delete) == [claim_name("chat", 0), claim_name("chat", 1)]
    assert back.released == "the fleet has wanted at most 1 replicas for 300s"


@pytest.mark.parametrize(
    ("change", "released"),
    [
        ({"queue": None}, "spec.kueueQueueName was removed"),
        ({"queue": "team-b"}, "spec.kueueQueueName changed to team-b"),
        ({"active": False}, "the fleet no longer autoscales"),
        ({"served": False}, "Kueue's Workload API is not served"),
    ],
)
def test_every_claim_goes_when_the_fleet_stops_asking(change: dict[str, object], released: str) -> None:
    out = ask(asking(claims=claims(True, False), **change), Record("team-a", 2, 3, 900.0))
    assert out.record is None
    assert len(out.delete) == 2
    assert out.released == released


def test_claims_without_a_record_are_a_withdrawal_in_flight_and_are_deleted() -> None:
    """The status forgets claims before they are deleted (and records them before they are made): a
    pass that still sees claims after the record is gone finishes the withdrawal, even while the fleet
    is short again, and asks anew only on a later pass. Adopting them made a withdrawn claim come back
    and Kueue evict the training it had just re-admitted."""
    out = ask(asking(claims=claims(True, False)), None)
    assert out.record is None
    assert sorted(out.delete) == [claim_name("chat", 0), claim_name("chat", 1)]
    assert (out.create, out.asked) == (0, 0)
    later = ask(asking(), None)
    assert (later.create, later.asked) == (2, 2)


def test_a_claim_deleted_by_someone_else_is_made_again() -> None:
    record = Record("team-a", 2, 3, 900.0)
    out = ask(asking(claims=claims(True)), record)
    assert out.create == 1
    assert out.record == record
    assert names_to_create("chat", out.create, claims(True)) == (claim_name("chat", 1),)


def test_names_skip_those_in_use_even_while_deleting() -> None:
    going = (Claim(claim_name("chat", 0), False, deleting=True), Claim(claim_name("chat", 2), True))
    assert names_to_create("chat", 2, going) == (claim_name("chat", 1), claim_name("chat", 3))


def test_kueues_word_on_a_waiting_claim_is_in_the_message() -> None:
    waiting = (
        Claim(claim_name("chat", 0), True),
        Claim(claim_name("chat", 1), False, "couldn't assign flavors: insufficient unused quota"),
    )
    out = ask(asking(claims=waiting, short=1), Record("team-a", 2, 3, 900.0))
    assert out.message.endswith("1 admitted; Kueue: couldn't assign flavors: insufficient unused quota")


def test_never_more_than_max_claims() -> None:
    out = ask(asking(wanted=100, short=90), None)
    assert out.create == MAX_CLAIMS


def _job(key: str, priority: int, node: str, *, kueue: bool = True) -> Training:
    return Training(key, priority, (Worker(f"{key}-0", node, 2),), 1, "none", None, kueue=kueue)


def test_holders_are_lower_priority_kueue_jobs_on_gpus_the_fleet_can_use() -> None:
    jobs = [
        _job("ns/low", 0, "n-0"),
        _job("ns/same", 10, "n-1"),  # Kueue preempts only lower priorities
        _job("ns/mine", 0, "n-1", kueue=False),  # kubeforge's own: borrowed, not asked for
        _job("ns/l4", 0, "l-0"),  # another GPU type
    ]
    assert holders(jobs, 10, (H100,), NODES) == ("ns/low",)
    assert holders(jobs, 10, None, NODES) == ("ns/l4", "ns/low")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 12), st.integers(0, 12), st.booleans(), st.floats(0, 1000)),
        min_size=1,
        max_size=12,
    )
)
def test_claims_never_exceed_what_the_fleet_wants_beyond_what_it_could_run_without(
    passes: list[tuple[int, int, bool, float]],
) -> None:
    """Over any run of passes (wanted, short, Kueue admitting or not, time going on), the claims the
    record stands for never exceed the replicas the fleet wanted beyond those it could run without them
    when it asked, and the claims that exist are what the record says once the plan is carried out."""
    record: Record | None = None
    live: tuple[Claim, ...] = ()
    now = 1000.0
    for wanted, short, admit, step in passes:
        now += step
        short = min(short, wanted)
        out = ask(asking(wanted=wanted, short=short, claims=live, now=now), record)
        kept = tuple(c for c in live if c.name not in out.delete)
        made = names_to_create("chat", out.create, kept)
        live = tuple(replace(c, admitted=c.admitted or admit) for c in kept) + tuple(
            Claim(n, admit) for n in made
        )
        record = out.record
        if record is None:
            assert live == ()
            continue
        assert len(live) == record.replicas <= MAX_CLAIMS
        assert record.replicas <= record.for_replicas


def test_a_claim_requests_one_replicas_gpus_where_the_replica_would_run() -> None:
    pod = {
        "spec": {
            "containers": [
                {
                    "name": "server",
                    "image": "vllm:1",
                    "args": ["--model", "x"],
                    "resources": {
                        "requests": {"nvidia.com/gpu": "2", "cpu": "4"},
                        "limits": {"nvidia.com/gpu": "2"},
                    },
                }
            ],
            "nodeSelector": {"nvidia.com/gpu.product": H100},
            "affinity": {
                "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []},
            },
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        }
    }
    body = claim(
        claim_name("chat", 0), fleet="chat", namespace="ns", uid="u-1", queue="team-a", priority=1000, pod=pod
    )
    assert body["metadata"]["name"] == "chat-kueue-0"
    assert body["metadata"]["labels"][FLEET_UID_LABEL] == "u-1"
    assert "ownerReferences" not in body["metadata"], "Kueue would keep its finalizer on an owned Workload"
    spec = body["spec"]
    assert (spec["queueName"], spec["priority"]) == ("team-a", 1000)
    [pod_set] = spec["podSets"]
    assert pod_set["count"] == 1
    template = pod_set["template"]["spec"]
    assert template["containers"] == [
        {"name": "server", "image": "vllm:1", "resources": {"requests": {"nvidia.com/gpu": "2", "cpu": "4"}}}
    ]
    assert template["nodeSelector"] == {"nvidia.com/gpu.product": H100}
    assert template["affinity"] == {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}
    }
    assert template["tolerations"] == pod["spec"]["tolerations"]


def test_claims_asking_for_what_the_fleet_no_longer_is_are_withdrawn() -> None:
    """The fleet's resources or priority changed: Kueue holds quota, at a priority, for replicas the
    fleet no longer runs. Withdrawn at once, not after the hysteresis; asked anew on a later pass."""
    stale = (Claim(claim_name("chat", 0), True, current=False), Claim(claim_name("chat", 1), True))
    out = ask(asking(claims=stale), Record("team-a", 2, 3, 900.0))
    assert out.record is None
    assert sorted(out.delete) == [claim_name("chat", 0), claim_name("chat", 1)]
    assert out.released == "the fleet's resources or priority changed"
