"""GPU capacity accounting for gang admission."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeforge.policy.capacity import (
    GPU_POD_TOLERATIONS,
    Claim,
    Demand,
    Ledger,
    NodeInfo,
    PodInfo,
    Quota,
    Taint,
    admit,
    admit_claims,
    claim_changed,
    claims_of,
    demand_of,
    fitting_pods,
    free_gpus,
    matches,
    node_info,
    placeable,
    pod_info,
    pod_products,
    quota_of,
    quota_verdict,
    surge_room,
    tolerations_of,
    unplaced,
    usable,
)

H100 = "NVIDIA-H100-80GB-HBM3"
L4 = "NVIDIA-L4"


def _node(name: str, product: str | None, gpus: int, schedulable: bool = True) -> NodeInfo:
    return NodeInfo(name=name, product=product, gpus=gpus, schedulable=schedulable)


CLUSTER = [
    _node("h100-0", H100, 8),
    _node("h100-1", H100, 8),
    _node("l4-0", L4, 4),
    _node("l4-1", L4, 4),
    _node("cpu-0", None, 0),
]


def _pod(
    node: str | None, gpus: int, *, job: str | None = None, attempt: int = 0, terminal: bool = False
) -> PodInfo:
    return PodInfo("ns", f"p-{node}-{gpus}", node, gpus, terminal, trainingjob=job, attempt=attempt)


def _raw_node(
    *,
    ready: str = "True",
    gpus: str = "8",
    unschedulable: bool = False,
    taints: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"name": "n", "labels": {"nvidia.com/gpu.product": H100}},
        "spec": {"unschedulable": unschedulable, "taints": taints or []},
        "status": {
            "conditions": [{"type": "Ready", "status": ready}],
            "allocatable": {"nvidia.com/gpu": gpus},
        },
    }


GPU_TAINT = {"key": "nvidia.com/gpu", "effect": "NoSchedule"}


class TestNodeInfo:
    def test_ready_gpu_node(self) -> None:
        assert node_info(_raw_node()) == NodeInfo("n", H100, 8, True)

    @pytest.mark.parametrize(
        "raw",
        [_raw_node(ready="False"), _raw_node(ready="Unknown"), _raw_node(unschedulable=True)],
        ids=["not-ready", "unknown", "cordoned"],
    )
    def test_unschedulable(self, raw: dict[str, Any]) -> None:
        assert node_info(raw).schedulable is False

    @pytest.mark.parametrize(
        ("taints", "usable_for_workers"),
        [
            ([GPU_TAINT], True),
            ([GPU_TAINT, {"key": "spot", "effect": "PreferNoSchedule"}], True),
            ([{"key": "nvidia.com/gpu", "effect": "NoExecute"}], False),
            ([{"key": "nvidia.com/gpu", "value": "present", "effect": "NoExecute"}], False),
            ([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}], False),
            ([{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}], False),
            ([{"key": "dedicated", "value": "x", "effect": "NoSchedule"}], False),
            ([{"key": "nvidia.com/gpu", "effect": "SomethingNew"}], True),
        ],
        ids=[
            "gpu-noschedule",
            "soft",
            "gpu-noexecute",
            "gpu-noexecute-value",
            "not-ready",
            "unreachable",
            "foreign",
            "unknown-effect-is-not-hard",
        ],
    )
    def test_taints_count_against_what_the_builders_tolerate(
        self, taints: list[dict[str, str]], usable_for_workers: bool
    ) -> None:
        """Tolerations are the ones the TrainingJob builder puts on a worker, not a list of its own."""
        from kubeforge.api.trainingjob import TrainingJobSpec
        from kubeforge.builders.trainingjob import Owner, build_pod_template

        spec = TrainingJobSpec.model_validate(
            {"image": "x", "workers": 2, "resources": {"gpus": 4, "gpuType": "H100"}}
        )
        template = build_pod_template(spec, Owner("tj", "ns", "uid"), 0)
        tolerations = tolerations_of(template["spec"]["tolerations"])
        node = node_info(_raw_node(taints=taints))
        assert usable(node, tolerations) is usable_for_workers
        demand = demand_of("ns/tj", 1, 4, "H100")
        verdict = Ledger.of([node], []).admit(demand, gpu_type="H100", tolerations=tolerations)
        assert verdict.fits is usable_for_workers

    def test_no_gpus(self) -> None:
        raw = _raw_node()
        raw["status"]["allocatable"] = {"cpu": "4"}
        assert node_info(raw).gpus == 0


def test_pod_info() -> None:
    pod = {
        "metadata": {
            "namespace": "ns",
            "name": "w-0",
            "labels": {"kubeforge.dev/trainingjob": "tj", "kubeforge.dev/attempt": "2"},
        },
        "spec": {
            "nodeName": "h100-0",
            "containers": [
                {"resources": {"requests": {"nvidia.com/gpu": "4"}}},
                {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
            ],
            "initContainers": [{"resources": {"requests": {"nvidia.com/gpu": "2"}}}],
        },
        "status": {"phase": "Running"},
    }
    assert pod_info(pod) == PodInfo("ns", "w-0", "h100-0", 5, False, trainingjob="ns/tj", attempt=2)


def test_free_gpus_counts_bound_unfinished_pods_except_the_admitted_jobs() -> None:
    pods = [
        _pod("h100-0", 4),
        _pod("h100-0", 2, terminal=True),
        _pod(None, 8),  # pending: not on a node
        _pod("h100-1", 8, job="ns/me"),  # the admitted job's own (e.g. terminating) pod
        _pod("gone", 8),
    ]
    assert free_gpus(CLUSTER, pods, exclude="ns/me") == {"h100-0": 4, "h100-1": 8, "l4-0": 4, "l4-1": 4}


@pytest.mark.parametrize(
    ("gpus", "gpu_type", "expected"),
    [(0, None, None), (1, "L4", 3), (2, "L4", 1), (4, "H100", 3), (1, None, 15)],
)
def test_fitting_pods_counts_a_fleets_surge_room_on_matching_nodes(
    gpus: int, gpu_type: str | None, expected: int | None
) -> None:
    pods = [_pod("h100-0", 4), _pod("l4-0", 3), _pod("l4-1", 2)]
    free = free_gpus(CLUSTER, pods)
    assert fitting_pods(gpus, gpu_type, CLUSTER, free) == expected
    assert fitting_pods(gpus, gpu_type, CLUSTER, Ledger.of(CLUSTER, pods).free()) == expected


@pytest.mark.parametrize(
    ("demand", "pods", "others", "fits", "message"),
    [
        (("H100", 2, 8), [], [], True, "needs 2 workers x 8 GPUs (H100); all fit now"),
        (("H100", 2, 4), [_pod("h100-0", 8)], [], True, "all fit now"),
        (("H100", 2, 8), [_pod("h100-0", 1)], [], False, "needs 2 workers x 8 GPUs (H100); 1 fits now"),
        (("H100", 2, 8), [], [Demand("ns/a", 1, 8, (H100,))], False, "1 fits now"),
        (("H100", 2, 8), [], [Demand("ns/a", 2, 8, (L4,))], True, "all fit now"),
        (
            ("H100", 3, 8),
            [],
            [],
            False,
            "only 2 workers would fit on all Ready H100 GPU nodes even if they were idle",
        ),
        (("L4", 2, 4), [], [], True, "all fit now"),
        (("L4", 1, 8), [], [], False, "only 0 workers would fit"),
        ((None, 4, 4), [], [], True, "needs 4 workers x 4 GPUs; all fit now"),
        (("H100", 2, 0), [_pod("h100-0", 8), _pod("h100-1", 8)], [], True, "needs no GPUs"),
    ],
)
def test_admit(
    demand: tuple[str | None, int, int],
    pods: list[PodInfo],
    others: list[Demand],
    fits: bool,
    message: str,
) -> None:
    gpu_type, workers, gpus = demand
    verdict = admit(demand_of("ns/me", workers, gpus, gpu_type), CLUSTER, pods, others, gpu_type=gpu_type)
    assert verdict.fits is fits
    assert message in verdict.message


def test_unplaced_counts_workers_not_yet_on_a_node() -> None:
    whole = demand_of("ns/a", 3, 8, "H100")
    pods = [
        _pod("h100-0", 8, job="ns/a", attempt=1),
        _pod(None, 8, job="ns/a", attempt=1),  # created, not scheduled
        _pod("h100-1", 8, job="ns/a", attempt=0),  # an older attempt
    ]
    assert unplaced(whole, 1, pods).workers == 2
    assert unplaced(whole, 1, [*pods, _pod(None, 8, job="ns/a", attempt=1, terminal=True)]).workers == 1


def test_two_gangs_are_never_both_admitted_for_the_same_gpus() -> None:
    first = demand_of("ns/a", 2, 8, "H100")
    assert admit(first, CLUSTER, []).fits
    # `a` was admitted; its pods do not exist yet, so all of it is unplaced.
    second = demand_of("ns/b", 2, 8, "H100")
    verdict = admit(second, CLUSTER, [], [unplaced(first, 0, [])])
    assert not verdict.fits
    assert "0 fit now" in verdict.message


products = st.sampled_from([H100, L4, None])
nodes_strategy = st.lists(
    st.builds(
        NodeInfo,
        name=st.just(""),
        product=products,
        gpus=st.integers(0, 8),
        schedulable=st.booleans(),
    ),
    min_size=1,
    max_size=6,
).map(lambda ns: [NodeInfo(f"n{i}", n.product, n.gpus, n.schedulable) for i, n in enumerate(ns)])
demands = st.builds(
    Demand,
    key=st.sampled_from(["ns/a", "ns/b", "ns/c"]),
    workers=st.integers(1, 4),
    gpus=st.integers(1, 8),
    products=st.sampled_from([(H100,), (L4,), None]),
)


@given(nodes_strategy, demands, st.lists(st.tuples(st.integers(0, 5), st.integers(1, 8)), max_size=6))
def test_placeable_is_bounded_and_shrinks_as_pods_land(
    nodes: list[NodeInfo], demand: Demand, bound: list[tuple[int, int]]
) -> None:
    pods = [_pod(f"n{i % len(nodes)}", gpus) for i, gpus in bound]
    free_before = free_gpus(nodes, [])
    free_after = free_gpus(nodes, pods)
    before = placeable(free_before, nodes, demand)
    after = placeable(free_after, nodes, demand)
    assert 0 <= after <= before <= demand.workers
    assert all(0 <= gpus <= free_before[name] for name, gpus in free_after.items())


def _pack(free: dict[str, int], nodes: list[NodeInfo], demand: Demand) -> dict[str, int] | None:
    """Place every worker of `demand`, first fit; None when it cannot."""
    left = dict(free)
    by_name = {n.name: n for n in nodes}
    for _ in range(demand.workers):
        spot = next(
            (
                name
                for name, gpus in sorted(left.items())
                if gpus >= demand.gpus
                and by_name[name].gpus > 0
                and (demand.products is None or by_name[name].product in demand.products)
            ),
            None,
        )
        if spot is None:
            return None
        left[spot] -= demand.gpus
    return left


def test_a_spreading_scheduler_cannot_strand_an_admitted_gang() -> None:
    """The case the best-fit guess got wrong: `a` (4 x 1 GPU) was counted packed on one node, so `b`
    (1 x 8) was admitted into the other; LeastAllocated spreads `a` over both and `b` never fits."""
    nodes = [_node("h100-0", H100, 8), _node("h100-1", H100, 8)]
    first = Demand("ns/a", 4, 1, (H100,))
    assert admit(first, nodes, [], tolerations=GPU_POD_TOLERATIONS).fits
    verdict = admit(Demand("ns/b", 1, 8, (H100,)), nodes, [], [first], tolerations=GPU_POD_TOLERATIONS)
    assert not verdict.fits
    assert "counting 4 unplaced pods wherever they land" in verdict.message


Arrival = Demand | tuple[int, str | None]
"""A gang asking for admission, or a fleet surging pods of (GPUs, gpuType) as far as it is offered."""

_TAINTS = st.sampled_from(
    [(), (Taint("nvidia.com/gpu", "", "NoSchedule"),), (Taint("nvidia.com/gpu", "", "NoExecute"),)]
)


@st.composite
def _rounds(draw: st.DrawFn) -> tuple[list[NodeInfo], list[Arrival], list[int]]:
    nodes = [replace(n, taints=draw(_TAINTS)) for n in draw(nodes_strategy)]
    arrivals: list[Arrival] = []
    for i in range(draw(st.integers(2, 5))):
        if draw(st.booleans()):
            d = draw(demands)
            arrivals.append(Demand(f"ns/g{i}", d.workers, d.gpus, d.products))
        else:
            arrivals.append((draw(st.integers(1, 8)), draw(st.sampled_from(["H100", "L4", None]))))
    choices = draw(st.lists(st.integers(0, 1000), min_size=60, max_size=60))
    return nodes, arrivals, choices


@given(_rounds())
def test_admitted_gangs_always_place_whatever_nodes_the_scheduler_picks(
    world: tuple[list[NodeInfo], list[Arrival], list[int]],
) -> None:
    """Gangs ask for admission and fleets surge as far as they are offered, one after the other; between
    arrivals, and after the last, an adversary (hypothesis) binds any pending pod (a gang's worker or a
    surge pod) to any node that can take it (its GPU type, taints it tolerates, free GPUs), in any order.
    Every worker of every admitted gang always finds a node; surge pods may wait."""
    nodes, arrivals, choices = world
    picks = iter(choices)
    free = free_gpus(nodes, [])
    pending: dict[str, Claim] = {}

    def bind_some(count: int) -> None:
        for _ in range(count):
            waiting = sorted(k for k, c in pending.items() if c.pods > 0)
            if not waiting:
                return
            claim = pending[waiting[next(picks, 0) % len(waiting)]]
            spots = sorted(
                n.name
                for n in nodes
                if usable(n, GPU_POD_TOLERATIONS)
                and matches(n, claim.products)
                and free[n.name] >= claim.gpus
            )
            if not spots:
                assert not claim.protected, f"{claim.key} was admitted but one of its workers fits nowhere"
                del pending[claim.key]  # a surge pod nothing can take: it stays Pending, out of the game
                continue
            spot = spots[next(picks, 0) % len(spots)]
            free[spot] -= claim.gpus
            pending[claim.key] = replace(claim, pods=claim.pods - 1)

    for number, arrival in enumerate(arrivals):
        claims = list(pending.values())
        if isinstance(arrival, Demand):
            if admit_claims(arrival, nodes, free, claims, GPU_POD_TOLERATIONS).fits:
                pending[arrival.key] = Claim(
                    arrival.key, arrival.workers, arrival.gpus, arrival.products, True
                )
        else:
            gpus, gpu_type = arrival
            room = surge_room(gpus, gpu_type, nodes, free, claims, GPU_POD_TOLERATIONS) or 0
            products = demand_of("", 0, gpus, gpu_type).products
            for pod in range(room):
                pending[f"fleet-{number}-{pod}"] = Claim(f"fleet-{number}-{pod}", 1, gpus, products, False)
        bind_some(next(picks, 0) % 5)
    bind_some(1000)


@pytest.mark.parametrize(
    ("ahead_workers", "mine_workers", "fits"),
    [
        ((), 2, True),  # nothing queued ahead: 2 x 8 on two free nodes
        ((2,), 1, False),  # an older gang takes both nodes first
        ((3,), 2, True),  # an older gang that cannot fit anyway does not block a younger one
        ((1,), 1, True),  # the older gang leaves room for this one
        ((1, 1), 1, False),  # two gangs ahead fill both nodes
    ],
)
def test_gangs_queued_ahead_are_served_first_from_the_same_snapshot(
    ahead_workers: tuple[int, ...], mine_workers: int, fits: bool
) -> None:
    nodes = [_node("h100-0", H100, 8), _node("h100-1", H100, 8)]
    ahead = [Demand(f"ns/older-{i}", w, 8, (H100,)) for i, w in enumerate(ahead_workers)]
    verdict = admit(Demand("ns/mine", mine_workers, 8, (H100,)), nodes, [], [], ahead=ahead)
    assert verdict.fits is fits


_ledger_pods = st.builds(
    PodInfo,
    namespace=st.just("ns"),
    name=st.sampled_from([f"p{i}" for i in range(6)]),
    node=st.sampled_from([None, "h100-0", "h100-1", "l4-0", "gone"]),
    gpus=st.integers(0, 8),
    terminal=st.booleans(),
    trainingjob=st.sampled_from([None, "ns/a", "ns/b"]),
    attempt=st.sampled_from([None, 0, 1]),
)


@given(st.lists(st.tuples(st.booleans(), _ledger_pods), max_size=40))
def test_the_ledger_kept_event_by_event_equals_a_fresh_count(events: list[tuple[bool, PodInfo]]) -> None:
    """Whatever order pods come, change and go in, the incremental ledger says what counting every pod
    from scratch says: free GPUs (with and without a job's own pods) and placed workers per attempt."""
    ledger = Ledger.of(CLUSTER, [])
    alive: dict[str, PodInfo] = {}
    for removal, pod in events:
        if removal:
            ledger.remove_pod(pod.namespace, pod.name)
            alive.pop(pod.name, None)
        else:
            ledger.put_pod(pod)
            alive[pod.name] = pod
    pods = list(alive.values())
    for exclude in (None, "ns/a", "ns/b"):
        assert ledger.free(exclude=exclude) == free_gpus(CLUSTER, pods, exclude=exclude)
    for job in ("ns/a", "ns/b"):
        for attempt in (0, 1):
            demand = Demand(job, 4, 2, None)
            assert ledger.unplaced(demand, attempt) == unplaced(demand, attempt, pods)
    waiting = sorted(p.name for p in pods if p.node is None and not p.terminal and p.gpus > 0)
    assert sorted(p.name for p in ledger.unbound) == waiting


# ------------------------------------------------------------------ one capacity for fleets and gangs


def test_a_fleet_surge_is_not_offered_the_gpus_an_admitted_gang_still_has_to_place() -> None:
    nodes = [_node("h100-0", H100, 8), _node("h100-1", H100, 8)]
    free = free_gpus(nodes, [])
    assert surge_room(4, "H100", nodes, free) == 4
    gang = demand_of("ns/tj", 2, 4, "H100")  # admitted, no worker bound yet
    claims = claims_of([gang], [])
    assert surge_room(4, "H100", nodes, free, claims, GPU_POD_TOLERATIONS) == 2
    # Once the gang is bound, it is counted where it is and the rest is offered.
    ledger = Ledger.of(nodes, [_pod("h100-0", 4, job="ns/tj"), _pod("h100-1", 4, job="ns/tj")])
    bound = claims_of([ledger.unplaced(gang, 0)], ledger.unbound)
    assert surge_room(4, "H100", nodes, ledger.free(), bound, GPU_POD_TOLERATIONS) == 2
    # An L4 gang takes nothing from an H100 surge.
    l4 = claims_of([demand_of("ns/l4", 2, 4, "L4")], [])
    assert surge_room(4, "H100", nodes, free, l4, GPU_POD_TOLERATIONS) == 4


def test_unbound_gpu_pods_are_not_ignored_by_admission() -> None:
    """A fleet's Pending pod may land on either node: a gang needing one whole node each must wait."""
    nodes = [_node("h100-0", H100, 8), _node("h100-1", H100, 8)]
    pending = PodInfo("ns", "fleet-x", None, 1, False, owner="ns/fleet", products=(H100,))
    verdict = admit(demand_of("ns/tj", 2, 8, "H100"), nodes, [pending], tolerations=GPU_POD_TOLERATIONS)
    assert not verdict.fits
    assert "counting 1 unplaced pod wherever they land" in verdict.message
    # A Pending pod that only accepts L4 nodes does not stand in the way.
    elsewhere = PodInfo("ns", "fleet-y", None, 1, False, owner="ns/fleet", products=(L4,))
    assert admit(demand_of("ns/tj", 2, 8, "H100"), nodes, [elsewhere], tolerations=GPU_POD_TOLERATIONS).fits
    # A fleet's own Pending pods are its rollout's business, not a claim on its surge.
    ledger = Ledger.of(nodes, [pending])
    assert claims_of([], ledger.unbound, skip="ns/fleet") == []


def test_capacity_it_cannot_see_is_unknown_not_free() -> None:
    ledger = Ledger.of([_node("h100-0", H100, 8)], [])
    ledger.scope = ("team-a",)
    verdict = ledger.admit(demand_of("team-a/tj", 1, 8, "H100"))
    assert (verdict.fits, verdict.reason) == (False, "CapacityUnknown")
    assert "free GPUs are unknown" in verdict.message
    assert "team-a" in verdict.message
    assert ledger.admit(demand_of("team-a/cpu", 1, 0, None)).fits  # no GPUs, nothing to know


def _required(*terms: dict[str, Any]) -> dict[str, Any]:
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
            }
        }
    }


_H100_TERM = {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": [H100]}]}


@pytest.mark.parametrize(
    ("spec", "products"),
    [
        ({}, None),
        ({"nodeSelector": {"nvidia.com/gpu.product": L4}}, (L4,)),
        (_required(_H100_TERM), (H100,)),
        (
            _required(_H100_TERM, {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}),
            None,
        ),
    ],
    ids=["none", "node-selector", "affinity", "or-term-without-product"],
)
def test_where_an_unbound_pod_may_land(spec: dict[str, Any], products: tuple[str, ...] | None) -> None:
    assert pod_products(spec) == products


@pytest.mark.parametrize(
    ("quotas", "needs", "held", "promised", "verdict"),
    [
        ([], 16, 0, 0, None),
        ([Quota("gpus", 16, 0)], 16, 0, 0, None),
        ([Quota("gpus", 16, 8)], 16, 0, 0, "has 8 of 16 requests.nvidia.com/gpu left (8 used)"),
        ([Quota("gpus", 16, 8)], 16, 8, 0, None),  # the used 8 are this gang's own leaving workers
        ([Quota("gpus", 16, 0)], 16, 0, 8, "8 promised to admitted gangs"),
        ([Quota("gpus", 8, 0)], 16, 0, 0, "more than the quota will ever hold"),
        ([Quota("a", 32, 0), Quota("b", 8, 0)], 16, 0, 0, "ResourceQuota b allows 8"),
    ],
)
def test_quota_verdict(
    quotas: list[Quota], needs: int, held: int, promised: int, verdict: str | None
) -> None:
    found = quota_verdict(quotas, needs, held, promised)
    if verdict is None:
        assert found is None
    else:
        assert found is not None
        assert verdict in found


def test_quota_of_reads_only_unscoped_gpu_quotas() -> None:
    hard = {"hard": {"requests.nvidia.com/gpu": "8"}}
    used = {"used": {"requests.nvidia.com/gpu": "2"}}
    assert quota_of({"metadata": {"name": "q"}, "spec": hard, "status": used}) == Quota("q", 8, 2)
    assert quota_of({"metadata": {"name": "q"}, "spec": {"hard": {"cpu": "8"}}}) is None
    assert quota_of({"metadata": {"name": "q"}, "spec": {**hard, "scopes": ["BestEffort"]}}) is None


def _plain_pod(gpus: str | None, node: str | None, *, unschedulable: bool = False) -> dict[str, Any]:
    """A pod as the API server serves it; `unschedulable`: the scheduler found no node for it."""
    resources = {"requests": {"nvidia.com/gpu": gpus}} if gpus else {}
    spec: dict[str, Any] = {"containers": [{"resources": resources}]}
    if node:
        spec["nodeName"] = node
    status: dict[str, Any] = {"phase": "Pending"}
    if unschedulable:
        status["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "Insufficient cpu",
            }
        ]
    return {"metadata": {"namespace": "tenant", "name": "p"}, "spec": spec, "status": status}


def test_a_pod_binding_or_found_unschedulable_is_news_for_waiting_gangs_and_surges() -> None:
    pod = _plain_pod
    assert claim_changed(pod("1", None), pod("1", "h100-0"))
    assert not claim_changed(pod("1", "h100-0"), pod("1", "h100-0"))
    assert not claim_changed(None, pod("1", "h100-0"))
    assert not claim_changed(pod(None, None), pod(None, "h100-0"))
    assert claim_changed(pod("1", None), pod("1", None, unschedulable=True))
    assert not claim_changed(pod("1", None, unschedulable=True), pod("1", None, unschedulable=True))
    assert not claim_changed(pod(None, None), pod(None, None, unschedulable=True))


@pytest.mark.parametrize(
    ("free_gpus", "gpus", "unschedulable", "ours", "claims"),
    [
        # Something other than GPUs keeps it off (GPUs it asks for are free): it claims nothing.
        (8, 8, True, False, False),
        (8, 2, True, False, False),
        # Waiting for GPUs (none free for it): it will take the next ones, so it still claims them.
        (4, 8, True, False, True),
        (0, 1, True, False, True),
        # Not yet judged by the scheduler: counted wherever it may land.
        (8, 8, False, False, True),
        # kubeforge's own pods always claim: their room was promised at admission.
        (8, 8, True, True, True),
    ],
)
def test_only_pods_waiting_for_gpus_claim_them(
    free_gpus: int, gpus: int, unschedulable: bool, ours: bool, claims: bool
) -> None:
    node = NodeInfo("h100-0", "H100", 8, True)
    holder = PodInfo("other", "holder", "h100-0", 8 - free_gpus, False)
    pod = _plain_pod(str(gpus), None, unschedulable=unschedulable)
    if ours:
        pod["metadata"]["labels"] = {"kubeforge.dev/trainingjob": "tj", "kubeforge.dev/attempt": "0"}
    ledger = Ledger.of([node], [holder, pod_info(pod)] if free_gpus < 8 else [pod_info(pod)])
    assert [p.name for p in ledger.claiming] == (["p"] if claims else [])
