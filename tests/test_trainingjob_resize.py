"""Elastic TrainingJobs without a cluster: the API (bounds, exclusivity, CEL rules), the torchrun elastic
environment, the pure size decision, the ledger's growth room, admission at `minWorkers`, in-place
resizes and the status and Events they produce."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from kubeforge.api.crdgen import build_crd
from kubeforge.api.trainingjob import INFO, TrainingJobSpec, TrainingJobStatus
from kubeforge.builders.trainingjob import Owner, build_job, resize_patch, worker_env
from kubeforge.kube import projections
from kubeforge.policy import elastic, gangs
from kubeforge.policy.capacity import (
    GPU_POD_TOLERATIONS,
    Claim,
    Demand,
    Ledger,
    NodeInfo,
    PodInfo,
    admit_claims,
    claims_of,
    demand_of,
    most_that_fit,
    slots,
    surge_room,
)
from kubeforge.policy.conditions import format_time
from kubeforge.policy.status import apply_merge_patch
from kubeforge.policy.training import JobView, NodeView, Observed, PodView, decide, job_view
from test_trainingjob_controller import H100, TJ, FakeKube, Obj, _controller, _settle, _trainingjob

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
OWNER = Owner("tj", "ns", "uid-1")
NODES = {f"n{i}": NodeView(f"n{i}", True, NOW - timedelta(hours=1)) for i in range(4)}
SPEC_ROOT = build_crd(INFO)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def _spec(**fields: Any) -> TrainingJobSpec:
    base: dict[str, Any] = {
        "image": "trainer:1",
        "elastic": {"minWorkers": 1, "maxWorkers": 4},
        "resources": {"gpus": 2},
    }
    return TrainingJobSpec.model_validate({**base, **fields})


# ------------------------------------------------------------------------------------------------ API


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"elastic": {"minWorkers": 3, "maxWorkers": 2}}, "minWorkers must not exceed"),
        ({"elastic": {"minWorkers": 0, "maxWorkers": 2}}, "greater than or equal to 1"),
        ({"workers": 2}, "exclusive"),
        ({"queueName": "q"}, "spec.queueName"),
        ({"distributed": {"framework": "none"}}, "torchrun"),
        ({"policy": {"gang": False}}, "gang"),
    ],
)
def test_invalid_elastic_specs_are_refused(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        _spec(**fields)


def test_elastic_bounds_and_gang() -> None:
    spec = _spec()
    assert (spec.min_workers, spec.max_workers, spec.gang) == (1, 4, True)
    rigid = TrainingJobSpec.model_validate({"image": "x", "workers": 3})
    assert (rigid.min_workers, rigid.max_workers, rigid.elastic) == (3, 3, None)


def _rule(field_path: str, contains: str) -> dict[str, str]:
    [rule] = [
        r
        for r in SPEC_ROOT["x-kubernetes-validations"]
        if r.get("fieldPath") == field_path and contains in r["rule"]
    ]
    return rule  # type: ignore[no-any-return]


def test_the_api_server_refuses_what_the_models_refuse() -> None:
    assert "default" not in SPEC_ROOT["properties"]["workers"], "a default would make workers always set"
    assert "exclusive" in _rule(".workers", "!has(self.elastic) || !has(self.workers)")["message"]
    assert "immutable" in _rule(".elastic", "oldSelf.elastic")["message"]
    assert "queueName" in _rule(".elastic", "self.queueName")["message"]
    assert "torchrun" in _rule(".distributed.framework", "torchrun")["message"]
    # An absent workers reads as 1 on both sides, so adding `workers: 1` to a stored job is no change.
    assert "has(oldSelf.workers) ? oldSelf.workers : 1" in _rule(".workers", "oldSelf.workers")["rule"]
    elastic_rules = SPEC_ROOT["properties"]["elastic"]["x-kubernetes-validations"]
    assert elastic_rules[0]["rule"] == "self.minWorkers <= self.maxWorkers"


# ------------------------------------------------------------------------------------------- builders


def test_elastic_workers_run_torchruns_elastic_rendezvous_on_rank_0() -> None:
    env = {v["name"]: v.get("value", v.get("valueFrom")) for v in worker_env(_spec(), OWNER, 2)}
    rank0 = "tj-a2-0.tj.ns.svc"
    assert env["PET_NNODES"] == "1:4"
    assert env["NNODES"] == "1:4"
    assert env["PET_RDZV_BACKEND"] == "c10d"
    assert env["PET_RDZV_ENDPOINT"] == f"{rank0}:29500"
    assert env["PET_RDZV_ID"] == "tj-a2"
    assert env["MASTER_ADDR"] == rank0
    assert (env["KUBEFORGE_MIN_WORKERS"], env["KUBEFORGE_MAX_WORKERS"]) == ("1", "4")
    # The rendezvous assigns ranks and the world size changes: neither is fixed in the pod.
    assert "WORLD_SIZE" not in env
    assert "PET_NODE_RANK" not in env
    assert int(str(env["PET_MAX_RESTARTS"])) > 0


def test_a_user_cannot_override_the_rendezvous() -> None:
    spec = _spec(env=[{"name": "PET_NNODES", "value": "4"}, {"name": "MINE", "value": "1"}])
    names = [v["name"] for v in worker_env(spec, OWNER, 0)]
    assert names.count("PET_NNODES") == 1
    assert "MINE" in names


def test_an_elastic_attempt_is_an_indexed_job_sized_as_admitted_and_resized_in_place() -> None:
    job = build_job(_spec(), OWNER, 0, 3)
    assert (job["spec"]["parallelism"], job["spec"]["completions"]) == (3, 3)
    assert job["spec"]["completionMode"] == "Indexed"
    assert build_job(_spec(), OWNER, 0)["spec"]["parallelism"] == 1  # minWorkers by default
    patch = resize_patch(4, "CapacityFreed")
    assert patch["spec"] == {"parallelism": 4, "completions": 4}
    # The cache keeps what the policy reads back: the size and why it last changed.
    applied = {
        **job,
        "metadata": {**job["metadata"], "uid": "j", "annotations": patch["metadata"]["annotations"]},
    }
    applied["spec"] = {**job["spec"], **patch["spec"]}
    view = job_view(projections.child(applied) or {}, "uid-1")
    assert (view.parallelism, view.resize_reason) == (4, "CapacityFreed")


# ----------------------------------------------------------------------------------- size decision

BOUNDS = elastic.Bounds(2, 6)


@pytest.mark.parametrize(
    ("current", "room", "stranded", "ceiling", "expected"),
    [
        (2, None, 0, None, None),  # room not asked: nothing to do
        (2, 0, 0, None, None),
        (2, 3, 0, None, (5, "CapacityFreed")),
        (4, 9, 0, None, (6, "CapacityFreed")),  # never above max
        (6, 5, 0, None, None),
        (5, 0, 2, None, (3, "CapacityReclaimed")),  # added workers never placed: given back
        (3, 0, 2, None, (2, "CapacityReclaimed")),  # ... never below min
        (2, 0, 1, None, None),  # at min: a stranded worker is the schedule timeout's business
        (6, 0, 0, 4, (4, "LentToFleet")),  # a lender's ceiling
        (4, 3, 0, 1, (2, "LentToFleet")),  # a ceiling below min stops at min
        (3, 3, 0, 4, (4, "CapacityFreed")),  # growth stops at the ceiling
    ],
)
def test_decide_size(
    current: int, room: int | None, stranded: int, ceiling: int | None, expected: tuple[int, str] | None
) -> None:
    decided = elastic.decide_size(current, BOUNDS, room=room, stranded=stranded, ceiling=ceiling)
    assert (None if decided is None else (decided.to, decided.reason)) == expected


@given(
    bounds=st.tuples(st.integers(1, 20), st.integers(0, 20)).map(lambda t: elastic.Bounds(t[0], t[0] + t[1])),
    offset=st.integers(0, 20),
    room=st.none() | st.integers(0, 30),
    stranded=st.integers(0, 20),
    ceiling=st.none() | st.integers(0, 30),
)
def test_size_properties(
    bounds: elastic.Bounds, offset: int, room: int | None, stranded: int, ceiling: int | None
) -> None:
    current = min(bounds.minimum + offset, bounds.maximum)  # a running attempt is within its bounds
    decided = elastic.decide_size(current, bounds, room=room, stranded=stranded, ceiling=ceiling)
    if decided is None:
        return
    assert bounds.minimum <= decided.to <= bounds.maximum, "never above max, never below min"
    assert decided.to != current
    if decided.to > current:
        assert decided.reason == "CapacityFreed"
        assert room is not None
        assert decided.to - current <= room, "never more than the ledger's room"
        assert ceiling is None or decided.to <= max(bounds.minimum, ceiling)
    elif decided.reason == "LentToFleet":
        assert ceiling is not None
        assert ceiling < current
    else:
        assert decided.reason == "CapacityReclaimed"
        assert stranded > 0, "never a shrink without a reason"


# ----------------------------------------------------------------------------------- growth room


def _node(name: str, gpus: int) -> NodeInfo:
    return NodeInfo(name=name, product=None, gpus=gpus, schedulable=True)


def test_room_counts_the_jobs_own_workers_where_they_are() -> None:
    nodes = [_node("a", 8), _node("b", 8)]
    mine = [PodInfo("ns", f"w{i}", "a", 2, False, trainingjob="ns/tj", attempt=0) for i in range(2)]
    ledger = Ledger.of(nodes, mine)
    # 4 free on a, 8 on b: 6 more workers of 2 GPUs fit, not 8 (its own 4 GPUs stay held).
    assert ledger.room(demand_of("ns/tj", 10, 2, None)) == 6
    assert ledger.room(demand_of("ns/tj", 3, 2, None)) == 3
    # An admitted gang's unplaced 8-GPU worker keeps its room: only b can hold it, and any added worker
    # might land on b, so none is added (the placement-agnostic bound of policy.capacity).
    gang = Demand("ns/rigid", 1, 8, None)
    assert ledger.room(demand_of("ns/tj", 10, 2, None), [gang]) == 0
    # A gang queued ahead that fits now is served first, the same way.
    assert ledger.room(demand_of("ns/tj", 10, 2, None), ahead=[Demand("ns/next", 1, 8, None)]) == 0
    # A 4-GPU gang has 3 slots (1 on a, 2 on b) and needs 1; each added worker may take one of them
    # wherever it lands, so 2 are added, not the 4 a packing scheduler could fit.
    assert ledger.room(demand_of("ns/tj", 10, 2, None), [Demand("ns/small", 1, 4, None)]) == 2


def test_room_is_zero_when_capacity_is_unknown() -> None:
    ledger = Ledger.of([_node("a", 8)], [])
    ledger.scope = ("ns",)
    assert ledger.room(demand_of("ns/tj", 4, 2, None)) == 0


@given(
    free=st.lists(st.integers(0, 8), min_size=1, max_size=5),
    want=st.integers(0, 12),
    gpus=st.integers(1, 4),
    others=st.lists(st.tuples(st.integers(1, 3), st.integers(1, 8)), max_size=3),
)
def test_room_never_exceeds_what_fits_beside_every_claim(
    free: list[int], want: int, gpus: int, others: list[tuple[int, int]]
) -> None:
    nodes = [_node(f"n{i}", 8) for i in range(len(free))]
    free_map = {n.name: f for n, f in zip(nodes, free, strict=True)}
    claims = [Claim(f"ns/g{i}", pods, g, None, True) for i, (pods, g) in enumerate(others)]
    demand = Demand("ns/tj", want, gpus, None)
    room = most_that_fit(demand, nodes, free_map, claims, ())
    assert 0 <= room <= want
    assert room <= slots(free_map, nodes, gpus, None, ())
    if room:
        assert admit_claims(Demand("ns/tj", room, gpus, None), nodes, free_map, claims, ()).fits
    if room < want:
        assert not admit_claims(Demand("ns/tj", room + 1, gpus, None), nodes, free_map, claims, ()).fits


def test_a_running_elastic_job_is_counted_by_admissions_and_surges() -> None:
    def obj(phase: str, current: int) -> dict[str, Any]:
        return {
            "metadata": {"namespace": "ns", "name": "tj", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"image": "x", "elastic": {"minWorkers": 1, "maxWorkers": 4}, "resources": {"gpus": 2}},
            "status": {
                "phase": phase,
                "attempt": 0,
                "workers": {"current": current},
                "conditions": [
                    {
                        "type": "Admitted",
                        "status": "True",
                        "reason": "GangAdmitted",
                        "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ],
            },
        }

    found = gangs.gangs_of([obj("Running", 3)], lambda _: 0)
    assert found.admitted["ns/tj"][0].workers == 3
    queued = obj("Queued", 0)
    queued["status"]["conditions"][0] |= {"status": "False", "reason": "InsufficientCapacity"}
    [(_, waiting)] = gangs.gangs_of([queued], lambda _: 0).queued
    assert waiting.workers == 1, "a queued elastic job waits for its minWorkers only"


# ------------------------------------------------------------------------------------------ decide


def _job(parallelism: int, reason: str = "") -> JobView:
    return JobView(
        name="tj-a0",
        uid="job-0",
        owned=True,
        start_time=NOW - timedelta(minutes=5),
        created=NOW - timedelta(minutes=5),
        parallelism=parallelism,
        resize_reason=reason,
    )


def _pod(index: int, *, node: str | None = "n0", phase: str = "Running", deleting: bool = False) -> PodView:
    return PodView(
        name=f"tj-a0-{index}-x",
        index=index,
        attempt=0,
        job_uid="job-0",
        phase=phase,
        node=node,
        ready=phase == "Running",
        deleting=deleting,
        exit_code=None,
        reason=None,
        start=NOW - timedelta(minutes=4) if node else None,
        end=None,
        gpus=2,
    )


def _running(current: int, **fields: Any) -> TrainingJobStatus:
    return TrainingJobStatus.model_validate(
        {
            "phase": "Running",
            "jobName": "tj-a0",
            "startTime": format_time(NOW - timedelta(minutes=5)),
            "workers": {"desired": current, "current": current, "min": 1, "max": 4},
            **fields,
        }
    )


def _obs(status: TrainingJobStatus, job: JobView | None, pods: list[PodView], **fields: Any) -> Observed:
    return Observed(
        name="tj",
        namespace="ns",
        generation=1,
        spec=fields.pop("spec", _spec()),
        status=status,
        jobs=[job] if job else [],
        pods=pods,
        now=NOW,
        nodes=NODES,
        **fields,
    )


def test_admitted_with_what_fits_between_min_and_max() -> None:
    from kubeforge.policy.capacity import Admission

    plan = decide(_obs(TrainingJobStatus(), None, [], admission=Admission(True, 3, "fits")))
    assert (plan.create_attempt, plan.create_workers) == (0, 3)
    assert plan.status.workers is not None
    assert (plan.status.workers.current, plan.status.workers.min, plan.status.workers.max) == (3, 1, 4)
    assert plan.status.workers_ready == "0/3 (1-4)"
    assert plan.status.last_resize is None


def test_a_settled_attempt_below_max_asks_for_room_then_grows_in_place() -> None:
    pods = [_pod(0), _pod(1)]
    first = decide(_obs(_running(2), _job(2), pods))
    assert first.wants_room
    assert first.resize is None
    grown = decide(_obs(_running(2), _job(2), pods, room=1))
    assert grown.resize == ("tj-a0", 3, "CapacityFreed")
    assert grown.create_attempt is None
    assert grown.delete_jobs == ()
    assert not grown.restarted
    assert grown.status.phase == "Running"
    assert grown.status.workers is not None
    assert grown.status.workers.current == 3
    resize = grown.status.last_resize
    assert resize is not None
    assert (resize.from_, resize.to, resize.reason) == (2, 3, "CapacityFreed")
    assert [(e.reason, e.type) for e in grown.events] == [("CapacityFreed", "Normal")]
    # Recorded as `from` on the wire.
    assert grown.status.to_wire()["lastResize"]["from"] == 2


def test_no_room_no_resize_and_at_max_no_question() -> None:
    pods = [_pod(0), _pod(1)]
    assert decide(_obs(_running(2), _job(2), pods, room=0)).resize is None
    full = [_pod(i) for i in range(4)]
    assert not decide(_obs(_running(4), _job(4), full)).wants_room


def test_growth_waits_until_every_worker_is_placed() -> None:
    pods = [_pod(0), _pod(1), _pod(2, node=None, phase="Pending")]
    grew = {"time": format_time(NOW - timedelta(seconds=5)), "from": 2, "to": 3, "reason": "CapacityFreed"}
    plan = decide(_obs(_running(3, lastResize=grew), _job(3), pods, room=5))
    assert not plan.wants_room
    assert plan.resize is None
    assert plan.status.phase == "Running", "running with 2 of 3 is running: the third is an addition"


def test_added_workers_not_placed_in_time_are_given_back_not_restarted() -> None:
    grew_at = NOW - timedelta(seconds=400)  # beyond the default 300 s schedule timeout
    status = _running(
        4,
        lastResize={"time": format_time(grew_at), "from": 2, "to": 4, "reason": "CapacityFreed"},
    )
    pods = [_pod(0), _pod(1), _pod(2, node=None, phase="Pending"), _pod(3, node=None, phase="Pending")]
    plan = decide(_obs(status, _job(4), pods))
    assert plan.resize == ("tj-a0", 2, "CapacityReclaimed")
    assert not plan.restarted
    assert plan.delete_jobs == ()
    assert plan.status.restarts == 0
    assert plan.status.last_resize is not None
    assert plan.status.last_resize.reason == "CapacityReclaimed"


def test_added_workers_still_within_their_timeout_wait() -> None:
    grew_at = NOW - timedelta(seconds=30)
    status = _running(
        4, lastResize={"time": format_time(grew_at), "from": 2, "to": 4, "reason": "CapacityFreed"}
    )
    pods = [_pod(0), _pod(1), _pod(2, node=None, phase="Pending"), _pod(3, node=None, phase="Pending")]
    plan = decide(_obs(status, _job(4), pods))
    assert plan.resize is None
    assert plan.requeue_after is not None
    assert plan.requeue_after == pytest.approx(270)


def test_workers_shed_by_a_shrink_are_not_failures() -> None:
    # The Job is at 2; the Job controller is removing index 2 and 3 (one already failed as it was killed).
    pods = [
        _pod(0),
        _pod(1),
        _pod(2, deleting=True),
        PodView(**{**_pod(3).__dict__, "phase": "Failed", "exit_code": 137, "deleting": True}),
    ]
    plan = decide(_obs(_running(2), _job(2, "CapacityReclaimed"), pods, room=0))
    assert plan.status.phase == "Running"
    assert plan.status.restarts == 0
    assert plan.status.workers is not None
    assert (plan.status.workers.desired, plan.status.workers.failed) == (2, 0)


def test_a_resize_the_status_missed_is_recorded_from_the_job() -> None:
    """The operator patched the Job to 4 and was killed before it wrote the status: the next pass records
    the resize, with the reason the Job's annotation kept, once."""
    pods = [_pod(i) for i in range(4)]
    plan = decide(_obs(_running(2), _job(4, "CapacityFreed"), pods))
    assert plan.resize is None, "the Job already has that size"
    resize = plan.status.last_resize
    assert resize is not None
    assert (resize.from_, resize.to, resize.reason) == (2, 4, "CapacityFreed")
    assert [e.reason for e in plan.events] == ["CapacityFreed"]
    again = decide(_obs(plan.status, _job(4, "CapacityFreed"), pods))
    assert again.status.last_resize == resize
    assert again.events == ()


def test_a_lend_the_status_missed_is_recorded_as_a_lend_and_growth_does_not_cool_down() -> None:
    """The operator shrank the Job to a lender's ceiling and was killed before it wrote the status: the
    restarted one records a lend, not workers given back for want of room, so once the GPUs come back
    the job grows at once instead of waiting out a schedule timeout (found by the e2e test that kills the
    operator mid-lend)."""
    pods = [_pod(i) for i in range(2)]
    plan = decide(_obs(_running(4), _job(2, "LentToFleet"), pods, ceiling=2))
    resize = plan.status.last_resize
    assert resize is not None
    assert (resize.from_, resize.to, resize.reason) == (4, 2, "LentToFleet")
    returned = decide(_obs(plan.status, _job(2, "LentToFleet"), pods))
    assert returned.wants_room, "the ceiling is gone: the job asks for room at once"
    assert returned.requeue_after is None or returned.requeue_after < 1


def test_a_rigid_job_has_no_elastic_status() -> None:
    spec = TrainingJobSpec.model_validate({"image": "x", "workers": 2, "resources": {"gpus": 2}})
    plan = decide(_obs(_running(2), _job(2), [_pod(0), _pod(1)], spec=spec))
    wire = plan.status.to_wire()
    assert "lastResize" not in wire
    assert set(wire["workers"]) == {"desired", "active", "ready", "succeeded", "failed"}
    assert wire["workersReady"] == "2/2"
    assert not plan.wants_room


def test_after_giving_back_unplaceable_workers_growth_waits_one_schedule_timeout() -> None:
    """Workers kept off by something the ledger does not count (CPU, memory) would be added and given back
    in a loop: after a give-back, growth is tried again once per schedule timeout."""
    gave_back = {
        "time": format_time(NOW - timedelta(seconds=100)),
        "from": 3,
        "to": 1,
        "reason": "CapacityReclaimed",
    }
    pods = [_pod(0)]
    plan = decide(_obs(_running(1, lastResize=gave_back), _job(1), pods, room=3))
    assert not plan.wants_room
    assert plan.resize is None
    assert plan.requeue_after == pytest.approx(200)
    later = {**gave_back, "time": format_time(NOW - timedelta(seconds=301))}
    assert decide(_obs(_running(1, lastResize=later), _job(1), pods)).wants_room


@given(
    bounds=st.tuples(st.integers(1, 6), st.integers(0, 6)),
    offset=st.integers(0, 12),
    placed=st.lists(st.booleans(), min_size=12, max_size=12),
    room=st.none() | st.integers(0, 12),
    grew_ago=st.none() | st.integers(0, 600),
)
def test_decide_keeps_a_running_elastic_attempt_within_its_bounds_and_the_ledgers_room(
    bounds: tuple[int, int], offset: int, placed: list[bool], room: int | None, grew_ago: int | None
) -> None:
    low, high = bounds[0], bounds[0] + bounds[1]
    size = min(low + offset, high)
    spec = _spec(elastic={"minWorkers": low, "maxWorkers": high})
    pods = [
        _pod(i, node=f"n{i % 4}" if placed[i] else None, phase="Running" if placed[i] else "Pending")
        for i in range(size)
    ]
    extra: dict[str, Any] = {}
    if grew_ago is not None and size > low:
        when = format_time(NOW - timedelta(seconds=grew_ago))
        extra["lastResize"] = {"time": when, "from": low, "to": size, "reason": "CapacityFreed"}
    plan = decide(_obs(_running(size, **extra), _job(size), pods, spec=spec, room=room))
    prefix = next((i for i in range(size) if not placed[i]), size)
    if prefix >= low:
        # Fewer than minWorkers placed is a gang that did not place (a restart, as for a fixed job).
        assert plan.status.restarts == 0, "a resize is never a restart"
    assert plan.create_attempt is None
    if plan.resize is None:
        return
    _, to, reason = plan.resize
    assert low <= to <= high
    assert plan.status.workers is not None
    assert plan.status.workers.current == to
    if to > size:
        assert reason == "CapacityFreed"
        assert room is not None
        assert to - size <= room
        assert all(placed[:size]), "growth only once every worker is placed"
    else:
        assert reason == "CapacityReclaimed"
        assert not all(placed[:size]), "a shrink needs workers that could not be placed"


# -------------------------------------------------------------------------------------- controller


class ResizingKube(FakeKube):
    """The fake API server, plus merge patches of a Job; with `lag`, a patch reaches the objects (and so
    the caches) only on `flush()`, as a watch event that has not arrived yet."""

    def __init__(self, *, lag: bool = False) -> None:
        super().__init__()
        self.lag = lag
        self.pending: list[tuple[tuple[str, str, str | None, str], Obj]] = []

    async def patch(self, api_version: str, kind: str, name: str, namespace: str | None, body: Obj) -> Obj:
        self._write("patch", kind, name)
        key = (api_version, kind, namespace, name)
        self.pending.append((key, body))
        if not self.lag:
            self.flush()
        return copy.deepcopy(self.objects[key])

    async def patch_status(self, api_version: str, kind: str, name: str, namespace: str, status: Obj) -> Obj:
        # A real merge patch (the base fake replaces nested objects whole, losing e.g. workers.current).
        self._write("patch_status", kind, name)
        obj = self.objects[(api_version, kind, namespace, name)]
        obj["status"] = apply_merge_patch(obj.get("status") or {}, status)
        return copy.deepcopy(obj)

    def flush(self) -> None:
        for key, body in self.pending:
            obj = self.objects[key]
            obj["spec"].update(body["spec"])
            obj["metadata"].setdefault("annotations", {}).update(body["metadata"]["annotations"])
        self.pending.clear()


def _elastic_tj() -> Obj:
    tj = _trainingjob(elastic={"minWorkers": 1, "maxWorkers": 4})
    del tj["spec"]["workers"]
    return tj


async def test_the_controller_grows_a_running_attempt_once_even_before_its_cache_shows_it() -> None:
    kube = ResizingKube(lag=True)
    kube.nodes(2)
    kube.add(_elastic_tj())
    controller = _controller(kube)
    await _settle(kube, controller)
    [job] = kube.jobs()
    assert job["spec"]["parallelism"] == 2, "admitted with what fits: 2 of 8 GPUs on 2 nodes"
    kube.run_pods(job)
    await _settle(kube, controller)
    assert not [c for c in kube.calls if c[0] == "patch"], "no room: no resize"

    kube.add(  # a third node joins
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "h100-2", "labels": {"nvidia.com/gpu.product": H100}},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "allocatable": {"nvidia.com/gpu": "8"},
            },
        }
    )
    obj = await kube.get(*TJ, "tj", "ns")
    assert obj is not None
    await controller.reconcile(obj)
    assert [c for c in kube.calls if c[0] == "patch"] == [("patch", "Job", "tj-a0")]
    assert kube.pending[0][1]["spec"] == {"parallelism": 3, "completions": 3}
    tj = await kube.get(*TJ, "tj", "ns")
    assert tj is not None
    assert tj["status"]["workers"]["current"] == 3
    assert tj["status"]["lastResize"]["reason"] == "CapacityFreed"
    assert [e[1] for e in kube.events].count("CapacityFreed") == 1
    # A pass before the Job's watch event arrives sees the size it wrote, not the old one: no second
    # resize, no second Event, no status change.
    kube.calls.clear()
    await controller.reconcile(tj)
    assert [c for c in kube.calls if c[0] in ("patch", "patch_status")] == []
    kube.flush()
    after = await kube.get(*TJ, "tj", "ns")
    assert after is not None
    await controller.reconcile(after)
    assert [c for c in kube.calls if c[0] in ("patch", "patch_status")] == []
    assert [e[1] for e in kube.events].count("CapacityFreed") == 1


def test_a_fleets_surge_is_not_offered_the_room_of_an_elastic_jobs_added_workers() -> None:
    """One capacity: an elastic job grown from 2 to 3 whose third worker is not bound yet keeps that
    worker's room against a fleet's surge, exactly as an admitted gang's unplaced worker."""
    nodes = [_node("a", 4), _node("b", 4)]
    placed = [PodInfo("ns", f"w{i}", "a", 2, False, trainingjob="ns/tj", attempt=0) for i in range(2)]
    ledger = Ledger.of(nodes, placed)
    assert surge_room(2, None, nodes, ledger.free()) == 2
    grown = ledger.unplaced(demand_of("ns/tj", 3, 2, None), 0)
    assert grown.workers == 1
    claims = claims_of([grown], ledger.claiming)
    assert surge_room(2, None, nodes, ledger.free(), claims, GPU_POD_TOLERATIONS) == 1
