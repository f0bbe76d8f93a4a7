"""Checkpoint-aware preemption of a TrainingJob: the decisions `policy.training.decide()` makes from the
protocol in `policy.checkpoint`, the worker side the builders give the pods, and what the caches keep."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeforge.api.trainingjob import TrainingJobSpec, TrainingJobStatus
from kubeforge.builders.trainingjob import ANNOTATIONS_ENV, Owner, build_job
from kubeforge.controllers import trainingjob as trainingjob_controller
from kubeforge.kube import projections
from kubeforge.kube.client import Obj
from kubeforge.metrics import exposition
from kubeforge.policy import checkpoint
from kubeforge.policy.capacity import Admission
from kubeforge.policy.conditions import format_time
from kubeforge.policy.status import apply_merge_patch, status_diff
from kubeforge.policy.training import (
    JobView,
    NodeView,
    Observed,
    Plan,
    PodView,
    PreemptionRequest,
    decide,
    pod_view,
    stored_checkpoint,
)
from test_trainingjob_controller import TJ, FakeKube, _controller, _settle, _trainingjob
from test_trainingjob_policy import _job as policy_job
from test_trainingjob_policy import _pod as policy_pod

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
GRACE = 120
HOUR_AGO = NOW - timedelta(hours=1)
OWNER = Owner("tj", "ns", "uid-1")


def _spec(**fields: Any) -> TrainingJobSpec:
    base: dict[str, Any] = {
        "image": "trainer:1",
        "workers": 2,
        "resources": {"gpus": 4, "gpuType": "H100"},
        "checkpoint": {"gracePeriodSeconds": GRACE},
    }
    return TrainingJobSpec.model_validate({**base, **fields})


def _job(attempt: int = 0, **fields: Any) -> JobView:
    return policy_job(attempt, **{"start_time": HOUR_AGO, "created": HOUR_AGO, **fields})


def _pod(index: int, attempt: int = 0, **fields: Any) -> PodView:
    """A worker that has run for an hour."""
    return policy_pod(index, attempt, **{"start": HOUR_AGO, "started": HOUR_AGO, **fields})


def _running() -> TrainingJobStatus:
    return TrainingJobStatus.model_validate(
        {
            "phase": "Running",
            "startTime": format_time(NOW - timedelta(hours=1)),
            "jobName": "tj-a0",
            "conditions": [
                {
                    "type": "Admitted",
                    "status": "True",
                    "reason": "GangAdmitted",
                    "message": "fit",
                    "lastTransitionTime": format_time(NOW - timedelta(hours=1)),
                },
            ],
        }
    )


def _report(step: int, at: datetime | None = None) -> str:
    body: dict[str, Any] = {"step": step, "path": f"s3://b/run/{step}"}
    if at is not None:
        body["time"] = format_time(at)
    return json.dumps(body)


@dataclass
class World:
    """A job with one running attempt, driven pass by pass the way the controller carries out plans:
    statuses are stored, requested pods get the annotation, deleted Jobs go away."""

    spec: TrainingJobSpec = field(default_factory=_spec)
    status: TrainingJobStatus = field(default_factory=_running)
    jobs: list[JobView] = field(default_factory=lambda: [_job()])
    pods: list[PodView] = field(default_factory=lambda: [_pod(0), _pod(1)])
    now: datetime = NOW
    plans: list[Plan] = field(default_factory=list)
    ceiling: int | None = None
    """What fleets' borrowed records leave the job (0: a fleet holds it whole)."""

    def observe(self, preempt: PreemptionRequest | None = None) -> Observed:
        return Observed(
            name="tj",
            namespace="ns",
            generation=1,
            spec=self.spec,
            status=self.status,
            jobs=tuple(self.jobs),
            pods=tuple(self.pods),
            now=self.now,
            nodes={n: NodeView(n, True, NOW - timedelta(hours=2)) for n in ("h100-0", "h100-1")},
            preempt=preempt,
            ceiling=self.ceiling,
            lent_to=("ns/chat",) if self.ceiling is not None else (),
        )

    def step(self, preempt: PreemptionRequest | None = None, *, execute: bool = True) -> Plan:
        plan = decide(self.observe(preempt))
        if plan.needs_admission:
            # As the controller does: decide again with the gang admission's verdict (the GPUs are free).
            plan = decide(replace(self.observe(preempt), admission=Admission(True, 2, "all fit now")))
        self.plans.append(plan)
        self.status = plan.status
        if not execute:
            return plan
        if plan.checkpoint_request is not None:
            self.pods = [
                replace(p, checkpoint_request=plan.checkpoint_request) if p.name in plan.request_pods else p
                for p in self.pods
            ]
        if plan.delete_jobs:
            gone = {j.uid for j in self.jobs if j.name in plan.delete_jobs}
            self.jobs = [j for j in self.jobs if j.name not in plan.delete_jobs]
            self.pods = [p for p in self.pods if p.job_uid not in gone]
        return plan

    def report(self, step: int, at: datetime | None = None, index: int = 0) -> None:
        self.pods = [replace(p, report=_report(step, at)) if p.index == index else p for p in self.pods]

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_a_request_records_the_preemption_and_asks_every_worker() -> None:
    world = World()
    plan = world.step(PreemptionRequest("GpuLending"))
    assert plan.status.phase == "Running"
    assert plan.status.preemption is not None
    assert plan.status.preemption.state == "WaitingForCheckpoint"
    assert plan.status.preemption.requested_at == format_time(NOW)
    assert plan.status.preemption.gpus == 8
    assert plan.checkpoint_request == format_time(NOW)
    assert plan.request_pods == ("tj-a0-0-x", "tj-a0-1-x")
    assert not plan.delete_jobs
    assert plan.requeue_after is not None
    assert 0 < plan.requeue_after <= GRACE
    assert [e.reason for e in plan.events] == ["CheckpointRequested"]
    # The next pass (the request itself is gone: the status carries it) asks nobody twice.
    again = world.step()
    assert again.status.preemption == plan.status.preemption
    assert again.request_pods == ()
    assert status_diff(plan.status, again.status) is None


def test_a_report_after_the_request_stops_the_attempt_and_records_it_once_the_workers_are_gone() -> None:
    world = World()
    world.step(PreemptionRequest("GpuLending"))
    world.tick(30)
    world.report(1200)
    plan = world.step(execute=False)
    assert plan.status.phase == "Queued"
    assert plan.status_first
    assert plan.delete_jobs == ("tj-a0",)
    assert plan.foreground  # the Job stays until its workers are gone, with what they leave
    assert plan.status.preemption is not None
    assert (plan.status.preemption.state, plan.status.preemption.outcome) == ("Stopping", "checkpointed")
    assert plan.status.preemption.stopped_at == format_time(NOW + timedelta(seconds=30))
    assert not plan.status.preemptions
    assert plan.status.checkpoint is not None
    assert plan.status.checkpoint.step == 1200
    assert plan.status.restarts == 0  # not a failure
    assert [e.reason for e in plan.events] == ["Preempting"]
    # The workers are stopping (the Job is deleting): nothing is recorded yet.
    world.jobs = [replace(world.jobs[0], deleting=True)]
    world.pods = [replace(p, deleting=True) for p in world.pods]
    world.tick(5)
    assert world.step().preempted is None
    world.jobs, world.pods = [], []
    world.tick(5)
    plan = world.step()
    [record] = plan.status.preemptions
    assert (record.outcome, record.reason, record.checkpoint_step) == ("checkpointed", "GpuLending", 1200)
    assert record.checkpoint_path == "s3://b/run/1200"
    assert record.waited_seconds == 30
    assert record.lost_gpu_hours == 0.0
    assert plan.preempted == record
    assert plan.status.preemption is None
    assert "Preempted" in [e.reason for e in plan.events]


def test_a_checkpoint_from_before_the_request_does_not_answer_it_and_the_grace_period_ends_it() -> None:
    world = World()
    world.report(1000, at=NOW - timedelta(minutes=10))
    world.step(PreemptionRequest("Budget"))
    world.tick(GRACE - 1)
    assert world.step().status.phase == "Running"
    world.tick(1)
    stop = world.step()
    assert stop.status.preemption is not None
    assert stop.status.preemption.outcome == "timedOut"
    world.tick(20)  # the workers took their grace period to stop, and left nothing newer
    plan = world.step()
    [record] = plan.status.preemptions
    assert (record.outcome, record.checkpoint_step, record.waited_seconds) == ("timedOut", 1000, GRACE)
    # 8 GPUs since the checkpoint ten minutes before the request, plus the wait.
    assert record.lost_gpu_hours == pytest.approx(8 * (600 + GRACE) / 3600, abs=1e-6)
    assert plan.status.lost_gpu_hours == record.lost_gpu_hours
    assert [e.type for e in plan.events if e.reason == "Preempted"] == ["Warning"]


def test_a_checkpoint_left_as_the_termination_message_is_what_the_job_resumes_from() -> None:
    """A trainer without API access answers by checkpointing on SIGTERM: nothing is lost."""
    world = World()
    world.step(PreemptionRequest("Budget"))
    world.tick(GRACE)
    world.step(execute=False)
    world.jobs = [replace(world.jobs[0], deleting=True)]
    left = _report(1500)
    world.pods = [
        replace(world.pods[0], phase="Failed", exit_code=143, end=world.now, final_report=left),
        replace(world.pods[1], deleting=True),
    ]
    world.tick(10)
    assert world.step().preempted is None  # worker 1 is still stopping
    world.pods = [world.pods[0]]
    plan = world.step()
    [record] = plan.status.preemptions
    assert (record.outcome, record.checkpoint_step, record.lost_gpu_hours) == ("checkpointed", 1500, 0.0)
    assert checkpoint.resume_env(stored_checkpoint(plan.status))[checkpoint.STEP_ENV] == "1500"


def test_without_any_checkpoint_the_work_since_the_workers_started_is_lost() -> None:
    world = World(spec=_spec(checkpoint=None))
    plan = world.step(PreemptionRequest("Budget"))
    assert plan.delete_jobs == ("tj-a0",)
    [record] = world.step().status.preemptions
    assert record.outcome == "timedOut"
    assert record.checkpoint_step is None
    assert record.lost_gpu_hours == pytest.approx(8.0)  # 8 GPUs for the hour the attempt ran


def test_an_operator_killed_after_the_stop_was_recorded_deletes_the_attempt_without_a_second_record() -> None:
    world = World()
    world.step(PreemptionRequest("GpuLending"))
    world.report(1200)
    world.tick(5)
    world.step(execute=False)  # status written, then killed before the delete
    plan = world.step(PreemptionRequest("GpuLending"), execute=False)  # asked again meanwhile
    assert plan.delete_jobs == ("tj-a0",)
    assert plan.foreground
    assert plan.preempted is None
    world.step()
    assert len(world.step().status.preemptions) == 1
    assert len(world.step().status.preemptions) == 1


def test_once_the_attempt_is_gone_the_job_is_admitted_again_and_resumes_from_the_checkpoint() -> None:
    world = World()
    world.step(PreemptionRequest("GpuLending"))
    world.report(1200)
    world.tick(5)
    world.step()
    plan = world.step()
    assert plan.create_attempt == 0  # the same attempt number, through gang admission
    assert plan.status.preemptions[0].checkpoint_step == 1200
    assert world.status.restarts == 0
    resume = checkpoint.resume_env(stored_checkpoint(world.status))
    assert resume == {checkpoint.PATH_ENV: "s3://b/run/1200", checkpoint.STEP_ENV: "1200"}
    env = {
        e["name"]: e.get("value")
        for e in _container(build_job(world.spec, OWNER, 0, None, resume=resume))["env"]
    }
    assert env[checkpoint.PATH_ENV] == "s3://b/run/1200"
    assert env[checkpoint.STEP_ENV] == "1200"


def test_an_answer_in_the_requests_second_is_recorded_as_checkpointed() -> None:
    """A trainer that answers within the second of the request: the stop is decided on the answer, and
    the record says so, although the stored checkpoint's time (second precision) equals the request's."""
    world = World()
    world.step(PreemptionRequest("LentToFleet"))
    world.tick(0.4)
    world.report(1300)
    stop = world.step()
    assert stop.status.preemption is not None
    assert stop.status.preemption.outcome == "checkpointed"
    world.tick(0.3)
    world.step()
    [record] = world.status.preemptions
    assert (record.outcome, record.checkpoint_step) == ("checkpointed", 1300)


def test_a_job_a_fleet_took_whole_checkpoints_stops_and_waits_until_it_is_given_back() -> None:
    """Ceiling 0 (a fleet's `status.borrowed` says `whole`): the controller asks for the preemption on
    every pass; the job checkpoints, stops, and stays Queued (LentToFleet), not admitted again, until the
    record is gone; then it resumes from the checkpoint it wrote for the fleet."""
    lent = PreemptionRequest("LentToFleet")
    world = World(ceiling=0)
    asked = world.step(lent)
    assert asked.status.preemption is not None
    assert asked.status.preemption.reason == "LentToFleet"
    assert asked.delete_jobs == ()
    world.report(900)
    world.tick(5)
    world.step(lent)  # the answer: the attempt is stopped
    assert world.jobs == []
    for _ in range(3):
        held = world.step(lent)
        assert not held.needs_admission
        assert held.create_attempt is None
        admitted = next(c for c in held.status.conditions if c.type == "Admitted")
        assert (held.status.phase, admitted.status, admitted.reason) == ("Queued", "False", "LentToFleet")
        assert "lent to InferenceFleet ns/chat" in (held.status.message or "")
        world.tick(60)
    [record] = world.status.preemptions
    assert (record.reason, record.outcome, record.checkpoint_step) == ("LentToFleet", "checkpointed", 900)
    assert world.status.restarts == 0

    world.ceiling = None  # the fleet gave it back
    back = world.step()
    assert back.create_attempt == 0
    assert stored_checkpoint(world.status) is not None
    assert checkpoint.resume_env(stored_checkpoint(world.status))[checkpoint.STEP_ENV] == "900"


def test_a_job_with_nothing_running_drops_the_request_and_consumes_the_annotation() -> None:
    world = World(status=TrainingJobStatus.model_validate({"phase": "Queued"}), jobs=[], pods=[])
    observed = replace(world.observe(PreemptionRequest("Manual", trigger="t1")), admission=None)
    plan = decide(observed)
    assert plan.needs_admission  # nothing to preempt: the normal path
    world.status = TrainingJobStatus.model_validate({"phase": "Suspended"})
    plan = decide(replace(world.observe(PreemptionRequest("Manual", trigger="t1")), spec=_spec(suspend=True)))
    assert plan.status.preemption is None
    assert plan.status.preempt_trigger == "t1"


def test_a_failure_during_the_wait_drops_the_preemption() -> None:
    world = World()
    world.step(PreemptionRequest("GpuLending"))
    world.pods = [replace(world.pods[1], phase="Failed", exit_code=1, end=NOW), world.pods[0]]
    world.jobs = [replace(world.jobs[0], failed=True, failed_at=NOW)]
    world.tick(20)
    plan = world.step()
    assert plan.status.phase == "Restarting"
    assert plan.status.preemption is None
    assert not plan.status.preemptions


def test_a_report_without_a_time_is_not_rewritten_on_every_pass() -> None:
    world = World()
    world.report(7)
    first = world.step()
    assert first.status.checkpoint is not None
    assert first.status.checkpoint.time == format_time(NOW)
    world.tick(90)
    second = world.step()
    assert second.status.checkpoint == first.status.checkpoint


def test_a_later_attempt_keeps_the_latest_checkpoint_of_all_attempts() -> None:
    world = World()
    world.report(50, at=NOW - timedelta(minutes=1))
    world.step()
    world.pods = [_pod(0), _pod(1)]  # a new attempt's workers have not reported yet
    assert world.step().status.checkpoint is not None
    assert world.status.checkpoint is not None
    assert world.status.checkpoint.step == 50


def _kueue_world() -> World:
    spec = _spec(queueName="team-a")
    status = _running().model_copy(
        update={
            "conditions": [c.model_copy(update={"reason": "KueueAdmitted"}) for c in _running().conditions]
        }
    )
    return World(spec=spec, status=status)


def test_a_kueue_suspension_is_recorded_with_the_checkpoints_the_stopped_workers_leave() -> None:
    world = _kueue_world()
    world.jobs = [replace(world.jobs[0], suspended=True, suspended_at=NOW)]
    world.pods = [replace(p, deleting=True) for p in world.pods]
    plan = world.step()
    assert plan.status.phase == "Queued"
    assert plan.status.restarts == 0
    assert plan.status.preemption is not None
    assert plan.status.preemption.state == "Settling"
    assert not plan.status.preemptions
    world.tick(10)
    stopped = [
        replace(p, phase="Failed", exit_code=143, end=NOW + timedelta(seconds=8), final_report=_report(900))
        for p in world.pods
    ]
    world.pods = stopped
    plan = world.step()
    [record] = plan.status.preemptions
    assert (record.reason, record.outcome, record.checkpoint_step) == ("Kueue", "stopped", 900)
    assert record.lost_gpu_hours == 0.0  # the workers checkpointed as they stopped
    assert plan.status.preemption is None
    assert plan.preempted == record
    assert world.step().preempted is None


def test_a_kueue_suspension_without_checkpoints_loses_the_attempt() -> None:
    world = _kueue_world()
    world.jobs = [replace(world.jobs[0], suspended=True, suspended_at=NOW)]
    world.pods = []
    plan = world.step()
    [record] = plan.status.preemptions
    assert record.outcome == "stopped"
    assert record.lost_gpu_hours == 0.0
    world = _kueue_world()
    world.jobs = [replace(world.jobs[0], suspended=True, suspended_at=NOW)]
    world.pods = [replace(p, phase="Failed", exit_code=143, end=NOW) for p in world.pods]
    [record] = world.step().status.preemptions
    assert record.lost_gpu_hours == pytest.approx(8.0)


# -- orderings ------------------------------------------------------------------------------------

Action = tuple[str, int]
ACTIONS = st.lists(
    st.tuples(st.sampled_from(["tick", "report", "old_report", "restart", "ask"]), st.integers(1, 90)),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(before=ACTIONS, after=ACTIONS)
def test_any_ordering_preempts_at_most_once_and_only_after_an_answer_or_the_grace_period(
    before: list[Action], after: list[Action]
) -> None:
    world = World()
    step = 0

    def act(action: Action, asking: bool) -> None:
        nonlocal step
        kind, n = action
        if kind == "tick":
            world.tick(n)
        elif kind == "report":
            step += n
            world.report(step)
        elif kind == "old_report":
            step += n
            world.report(step, at=world.now - timedelta(seconds=GRACE * 2))
        elif kind == "restart":
            # A restarted operator sees only what the objects say: nothing to do but decide again.
            world.step()
        elif kind == "ask" and asking:
            world.step(PreemptionRequest("GpuLending"))
        world.step()

    for action in before:
        act(action, asking=False)
    assert not world.status.preemptions
    assert world.status.preemption is None
    world.step(PreemptionRequest("GpuLending"))
    requested = world.now
    answered_at: datetime | None = None
    for action in [*after, ("tick", GRACE), ("tick", 1)]:
        before_step = step
        act(action, asking=True)
        answer = step != before_step and action[0] == "report" and world.now > requested
        if answered_at is None and answer:
            answered_at = world.now
    world.step()
    [record] = world.status.preemptions  # exactly one, however often it was asked
    stop = datetime.fromisoformat(record.time)
    if answered_at is not None and (answered_at - requested).total_seconds() < GRACE:
        assert record.outcome == "checkpointed"
        assert stop == answered_at
    else:
        assert record.outcome == "timedOut"
        assert (stop - requested).total_seconds() >= GRACE
    assert record.lost_gpu_hours >= 0
    assert not world.jobs  # the attempt was stopped
    assert world.status.preemption is None


# -- the worker side --------------------------------------------------------------------------------


def _container(job: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = job["spec"]["template"]["spec"]["containers"][0]
    return container


def test_workers_get_the_grace_period_and_their_annotations_through_the_downward_api() -> None:
    job = build_job(_spec(checkpoint={"gracePeriodSeconds": 300}), OWNER, 0)
    pod = job["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 300
    [podinfo] = [v for v in pod["volumes"] if "downwardAPI" in v]
    assert podinfo["downwardAPI"]["items"] == [
        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}
    ]
    container = _container(job)
    [mount] = [m for m in container["volumeMounts"] if m["name"] == podinfo["name"]]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[ANNOTATIONS_ENV] == f"{mount['mountPath']}/annotations"
    assert mount["readOnly"] is True
    assert "lifecycle" not in container  # SIGTERM is the default stop signal
    assert "KUBEFORGE_CHECKPOINT_DIR" not in env  # no claim: checkpoints go elsewhere


def test_a_job_without_spec_checkpoint_keeps_todays_pods() -> None:
    pod = build_job(_spec(checkpoint=None), OWNER, 0)["spec"]["template"]["spec"]
    assert "terminationGracePeriodSeconds" not in pod
    assert not [v for v in pod["volumes"] if "downwardAPI" in v]


def test_another_stop_signal_is_the_containers_stop_signal() -> None:
    job = build_job(_spec(checkpoint={"signal": "SIGUSR1"}), OWNER, 0)
    assert _container(job)["lifecycle"] == {"stopSignal": "SIGUSR1"}
    assert job["spec"]["template"]["spec"]["os"] == {"name": "linux"}


@pytest.mark.parametrize(
    ("checkpoint_spec", "problem"),
    [
        ({"gracePeriodSeconds": -1}, "greater than or equal to 0"),
        ({"gracePeriodSeconds": 3601}, "less than or equal to 3600"),
        ({"signal": "SIGKILL"}, "SIGTERM"),
    ],
)
def test_checkpoint_settings_are_bounded(checkpoint_spec: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        _spec(checkpoint=checkpoint_spec)


def test_the_cache_keeps_reports_and_requests_of_our_pods_capped() -> None:
    long = "x" * 100_000
    raw = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "tj-a0-0",
            "namespace": "ns",
            "labels": {"app.kubernetes.io/managed-by": "kubeforge"},
            "annotations": {
                checkpoint.REPORT_ANNOTATION: _report(5),
                checkpoint.REQUEST_ANNOTATION: format_time(NOW),
                "other": long,
            },
        },
        "spec": {"containers": [{"name": "worker"}]},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {"name": "worker", "state": {"terminated": {"exitCode": 143, "message": long}}}
            ],
        },
    }
    kept = projections.pod(raw)
    assert kept is not None
    annotations = kept["metadata"]["annotations"]
    assert set(annotations) >= {checkpoint.REPORT_ANNOTATION, checkpoint.REQUEST_ANNOTATION}
    assert "other" not in annotations
    message = kept["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
    assert len(message) == checkpoint.MAX_REPORT_BYTES + 1
    view = pod_view(kept)
    assert view.report == _report(5)
    assert view.checkpoint_request == format_time(NOW)
    assert checkpoint.parse_report(view.final_report, seen=NOW) is None  # too long: refused


# -- the controller carries it out ------------------------------------------------------------------


class _PodPatchingKube(FakeKube):
    """FakeKube that merges status patches as the API server does (RFC 7386, nested objects too) and
    takes the one patch the TrainingJob controller sends to pods."""

    async def patch_status(self, api_version: str, kind: str, name: str, namespace: str, status: Obj) -> Obj:
        self._write("patch_status", kind, name)
        obj = self.objects[(api_version, kind, namespace, name)]
        obj["status"] = apply_merge_patch(obj.get("status") or {}, status)
        return copy.deepcopy(obj)

    async def patch(self, api_version: str, kind: str, name: str, namespace: str | None, body: Obj) -> Obj:
        assert kind == "Pod"
        assert set(body) == {"metadata"}
        assert set(body["metadata"]) == {"annotations"}
        self._write("patch", kind, name)
        obj = self.objects[(api_version, kind, namespace, name)]
        obj["metadata"].setdefault("annotations", {}).update(body["metadata"]["annotations"])
        return obj


def _preemptions_total(outcome: str) -> float:
    value = exposition.REGISTRY.get_sample_value(
        "kubeforge_trainingjob_preemptions_total",
        {"namespace": "ns", "reason": "GpuLending", "outcome": outcome},
    )
    return value or 0.0


async def test_the_controller_asks_the_workers_waits_and_resumes_the_job_from_the_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = _PodPatchingKube()
    kube.nodes(2)
    kube.add(_trainingjob(checkpoint={"gracePeriodSeconds": 60}))
    controller = _controller(kube)
    await _settle(kube, controller)
    [job] = kube.jobs()
    kube.run_pods(job)
    await _settle(kube, controller)
    before = _preemptions_total("checkpointed")

    controller.preempt("ns", "tj", "GpuLending")
    await _settle(kube, controller)
    tj = await kube.get(*TJ, "tj", "ns")
    assert tj is not None
    assert tj["status"]["preemption"]["state"] == "WaitingForCheckpoint"
    pods = [o for (_, k, _, _), o in kube.objects.items() if k == "Pod"]
    requested = tj["status"]["preemption"]["requestedAt"]
    assert [p["metadata"]["annotations"][checkpoint.REQUEST_ANNOTATION] for p in pods] == [requested] * 2
    patches = [c for c in kube.calls if c[0] == "patch"]
    await _settle(kube, controller)
    assert [c for c in kube.calls if c[0] == "patch"] == patches  # asked once

    # The answer (a second after the request, as a real trainer's would be).
    answer = {"step": 42, "path": "s3://b/42", "time": format_time(datetime.now(UTC) + timedelta(seconds=1))}
    pods[0]["metadata"]["annotations"][checkpoint.REPORT_ANNOTATION] = json.dumps(answer)
    later = datetime.now(UTC) + timedelta(seconds=2)
    monkeypatch.setattr(trainingjob_controller, "_now", lambda: later)
    await _settle(kube, controller)
    await _settle(kube, controller)
    tj = await kube.get(*TJ, "tj", "ns")
    assert tj is not None
    [record] = tj["status"]["preemptions"]
    assert (record["outcome"], record["checkpointStep"]) == ("checkpointed", 42)
    assert _preemptions_total("checkpointed") == before + 1
    [job] = kube.jobs()  # the same attempt again, resuming from the answer
    env = {e["name"]: e.get("value") for e in _container(job)["env"]}
    assert (env[checkpoint.STEP_ENV], env[checkpoint.PATH_ENV]) == ("42", "s3://b/42")
    assert [r for _, r, _ in kube.events].count("Preempted") == 1
