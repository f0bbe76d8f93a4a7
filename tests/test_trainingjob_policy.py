"""TrainingJob decisions: admission, restarts, failures, suspend, deadline, TTL, status and GPU-hours."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeforge.api.trainingjob import TrainingJobSpec, TrainingJobStatus
from kubeforge.kube import projections
from kubeforge.policy.capacity import Admission
from kubeforge.policy.conditions import format_time, parse_time
from kubeforge.policy.status import status_diff
from kubeforge.policy.training import (
    GPU_HOURS_WRITE_INTERVAL,
    JobView,
    NodeView,
    Observed,
    Plan,
    PodView,
    backoff_seconds,
    decide,
    gpu_seconds,
    job_view,
    node_view,
    parse_status,
    pod_view,
)

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
FITS = Admission(True, 2, "needs 2 workers x 4 GPUs (H100); all fit now")
NO_FIT = Admission(False, 1, "needs 2 workers x 8 GPUs (H100); 1 fits now")
NODES = {name: NodeView(name, True, NOW - timedelta(hours=1)) for name in ("h100-0", "h100-1")}


def _spec(**fields: Any) -> TrainingJobSpec:
    base: dict[str, Any] = {"image": "trainer:1", "workers": 2, "resources": {"gpus": 4, "gpuType": "H100"}}
    return TrainingJobSpec.model_validate({**base, **fields})


def _job(attempt: int = 0, **fields: Any) -> JobView:
    base: dict[str, Any] = {
        "name": f"tj-a{attempt}",
        "uid": f"job-{attempt}",
        "owned": True,
        "start_time": NOW - timedelta(seconds=30),
        "created": NOW - timedelta(seconds=30),
    }
    return JobView(**{**base, **fields})


def _pod(index: int, attempt: int = 0, **fields: Any) -> PodView:
    base: dict[str, Any] = {
        "name": f"tj-a{attempt}-{index}-x",
        "index": index,
        "attempt": attempt,
        "job_uid": f"job-{attempt}",
        "phase": "Running",
        "node": f"h100-{index % 2}",
        "ready": True,
        "deleting": False,
        "exit_code": None,
        "reason": None,
        "start": NOW - timedelta(seconds=20),
        "end": None,
        "gpus": 4,
    }
    return PodView(**{**base, **fields})


def _status(**fields: Any) -> TrainingJobStatus:
    return TrainingJobStatus.model_validate(fields)


def _obs(
    spec: TrainingJobSpec | None = None,
    status: TrainingJobStatus | None = None,
    jobs: tuple[JobView, ...] = (),
    pods: tuple[PodView, ...] = (),
    **fields: Any,
) -> Observed:
    return Observed(
        name="tj",
        namespace="ns",
        generation=fields.pop("generation", 1),
        spec=spec or _spec(),
        status=status or TrainingJobStatus(),
        jobs=jobs,
        pods=pods,
        now=fields.pop("now", NOW),
        nodes=fields.pop("nodes", NODES),
        admission=fields.pop("admission", None),
    )


def _cond(plan: Plan, type_: str) -> tuple[str, str]:
    [found] = [c for c in plan.status.conditions if c.type == type_]
    return found.status, found.reason


def _running(attempt: int = 0, restarts: int = 0) -> TrainingJobStatus:
    return _status(phase="Running", restarts=restarts, startTime=format_time(NOW - timedelta(minutes=5)))


# ------------------------------------------------------------------------------------------ admission


def test_a_new_gang_asks_for_admission_first() -> None:
    plan = decide(_obs())
    assert plan.needs_admission
    assert plan.create_attempt is None


def test_admitted_gang_creates_attempt_zero() -> None:
    plan = decide(_obs(admission=FITS))
    assert plan.create_attempt == 0
    assert plan.status.phase == "Pending"
    assert plan.status.job_name == "tj-a0"
    assert plan.status.start_time == format_time(NOW)
    assert _cond(plan, "Admitted") == ("True", "GangAdmitted")
    assert _cond(plan, "Reconciling") == ("True", "WorkersStarting")
    [event] = plan.events
    assert (event.reason, event.message) == ("GangAdmitted", f"created Job tj-a0 (admitted: {FITS.message})")
    # The next pass, with the Job there and no pods yet, has nothing new to say.
    again = decide(_obs(status=plan.status, jobs=(_job(start_time=None, created=NOW),)))
    assert status_diff(plan.status, again.status) is None
    assert again.events == ()


def test_gang_that_does_not_fit_is_queued_with_the_reason() -> None:
    plan = decide(_obs(admission=NO_FIT))
    assert plan.create_attempt is None
    assert plan.status.phase == "Queued"
    assert plan.status.message is not None
    assert "needs 2 workers x 8 GPUs (H100); 1 fits now" in plan.status.message
    assert _cond(plan, "Admitted") == ("False", "InsufficientCapacity")
    assert _cond(plan, "Ready")[0] == "False"
    assert plan.events[0].reason == "InsufficientCapacity"
    # Queued again on the next pass: no new event, no status change.
    again = decide(_obs(status=plan.status, admission=NO_FIT))
    assert again.events == ()
    assert status_diff(plan.status, again.status) is None


@pytest.mark.parametrize(
    ("fields", "reason"),
    [({"workers": 1}, "Created"), ({"workers": 3, "policy": {"gang": False}}, "Created")],
    ids=["single-worker", "gang-off"],
)
def test_without_gang_the_job_is_created_directly(fields: dict[str, Any], reason: str) -> None:
    plan = decide(_obs(_spec(**fields)))
    assert not plan.needs_admission
    assert plan.create_attempt == 0
    assert _cond(plan, "Admitted") == ("True", reason)


def test_kueue_queue_skips_our_admission_and_waits_for_kueue() -> None:
    spec = _spec(queueName="team-a")
    plan = decide(_obs(spec))
    assert plan.create_attempt == 0
    assert plan.status.phase == "Queued"
    assert plan.status.start_time is None
    waiting = decide(_obs(spec, plan.status, jobs=(_job(suspended=True, start_time=None),)))
    assert waiting.status.phase == "Queued"
    assert _cond(waiting, "Admitted") == ("False", "WaitingForKueue")
    assert waiting.create_attempt is None
    assert waiting.delete_jobs == ()
    admitted = decide(_obs(spec, waiting.status, jobs=(_job(),), pods=(_pod(0), _pod(1))))
    assert admitted.status.phase == "Running"
    assert _cond(admitted, "Admitted") == ("True", "KueueAdmitted")
    assert admitted.status.start_time == format_time(NOW - timedelta(seconds=30))


# ------------------------------------------------------------------------------------------ running


def test_all_workers_running_is_running_and_ready() -> None:
    plan = decide(_obs(status=_status(phase="Pending"), jobs=(_job(),), pods=(_pod(0), _pod(1))))
    assert plan.status.phase == "Running"
    assert plan.status.workers is not None
    assert plan.status.workers.ready == 2
    assert plan.status.workers_ready == "2/2"
    assert _cond(plan, "Ready") == ("True", "AllWorkersReady")
    assert _cond(plan, "Reconciling") == ("True", "Running")  # kstatus: InProgress until it finishes
    assert _cond(plan, "Stalled")[0] == "False"
    assert [e.reason for e in plan.events] == ["Running"]


def test_some_workers_pending_is_pending() -> None:
    plan = decide(
        _obs(
            status=_status(phase="Pending"),
            jobs=(_job(),),
            pods=(_pod(0), _pod(1, phase="Pending", node=None)),
        )
    )
    assert plan.status.phase == "Pending"
    assert plan.status.message == "1 of 2 workers running; waiting for the rest to be scheduled and start"
    assert plan.requeue_after is not None  # the schedule timeout is checked on time


def test_pending_says_why_a_worker_is_not_scheduled() -> None:
    why = "0/5 nodes are available: 5 Insufficient nvidia.com/gpu."
    pods = (_pod(0), _pod(1, phase="Pending", node=None, unschedulable=why))
    plan = decide(
        _obs(_spec(workers=2, policy={"gang": False}), _status(phase="Pending"), jobs=(_job(),), pods=pods)
    )
    assert plan.status.message is not None
    assert plan.status.message.endswith(f"; worker 1 is unschedulable: {why}")


def test_completed_job_succeeds() -> None:
    done = _job(complete=True, completion_time=NOW - timedelta(seconds=2))
    pods = (_pod(0, phase="Succeeded", end=NOW - timedelta(seconds=3)), _pod(1, phase="Succeeded", end=NOW))
    plan = decide(_obs(status=_running(), jobs=(done,), pods=pods))
    assert plan.status.phase == "Succeeded"
    assert plan.status.completion_time == format_time(NOW - timedelta(seconds=2))
    assert _cond(plan, "Ready") == ("True", "Succeeded")
    assert _cond(plan, "Succeeded") == ("True", "Succeeded")
    assert plan.delete_jobs == ()  # the last attempt is kept for its logs
    assert plan.events[0].type == "Normal"


def test_finished_stays_finished() -> None:
    plan = decide(
        _obs(
            status=_status(phase="Succeeded", message="all 2 workers completed"), jobs=(_job(complete=True),)
        )
    )
    assert plan.status.phase == "Succeeded"
    assert plan.create_attempt is None
    assert plan.events == ()


def test_stale_attempts_are_deleted() -> None:
    plan = decide(
        _obs(
            status=_running(restarts=1),
            jobs=(_job(0), _job(1)),
            pods=(_pod(0, 1, job_uid="job-1"), _pod(1, 1, job_uid="job-1")),
        )
    )
    assert plan.delete_jobs == ("tj-a0",)
    assert plan.status.phase == "Running"


def test_jobs_not_owned_are_left_alone() -> None:
    plan = decide(_obs(jobs=(_job(owned=False),), admission=FITS))
    assert plan.create_attempt is None
    assert plan.delete_jobs == ()
    assert plan.requeue_after is not None


# ------------------------------------------------------------------------------------------ failures


def _failed_worker(code: int, index: int = 1) -> PodView:
    return _pod(index, phase="Failed", exit_code=code, reason="Error", end=NOW - timedelta(seconds=1))


def test_worker_failure_restarts_the_whole_gang_status_first() -> None:
    # Worker 1 failed; the Job controller failed the Job and is stopping worker 0.
    pods = (_pod(0, deleting=True), _failed_worker(1))
    plan = decide(_obs(status=_running(), jobs=(_job(failed=True),), pods=pods))
    assert plan.status.phase == "Restarting"
    assert plan.status.restarts == 1
    assert plan.status.attempt == 1
    assert plan.status_first
    assert plan.delete_jobs == ("tj-a0",)
    assert plan.create_attempt is None
    assert plan.restarted
    assert plan.status.next_attempt_time == format_time(NOW + timedelta(seconds=10))
    assert plan.requeue_after == 10
    [event] = plan.events
    assert event.type == "Warning"
    assert "worker 1 (tj-a0-1-x) exited with code 1" in event.message
    assert "restart 1 of 3" in event.message


def test_restart_waits_for_the_backoff_then_admits_the_next_attempt() -> None:
    restarting = decide(_obs(status=_running(), jobs=(_job(failed=True),), pods=(_failed_worker(1),))).status
    # The old Job is gone; the backoff has not passed.
    waiting = decide(_obs(status=restarting, now=NOW + timedelta(seconds=4)))
    assert waiting.status.phase == "Restarting"
    assert waiting.requeue_after == pytest.approx(6)
    assert not waiting.needs_admission
    still = decide(_obs(status=waiting.status, now=NOW + timedelta(seconds=5)))
    assert status_diff(waiting.status, still.status) is None
    # After it: admission, then attempt 1 (same deadline clock).
    later = NOW + timedelta(seconds=10)
    assert decide(_obs(status=restarting, now=later)).needs_admission
    plan = decide(_obs(status=restarting, now=later, admission=FITS))
    assert plan.create_attempt == 1
    assert plan.status.job_name == "tj-a1"
    assert plan.status.start_time == restarting.start_time
    assert plan.status.next_attempt_time is None


def test_the_old_attempt_is_deleted_even_after_a_crash_between_status_and_delete() -> None:
    restarting = decide(_obs(status=_running(), jobs=(_job(failed=True),), pods=(_failed_worker(1),))).status
    plan = decide(
        _obs(
            status=restarting,
            jobs=(_job(failed=True),),
            pods=(_failed_worker(1),),
            now=NOW + timedelta(seconds=1),
        )
    )
    assert plan.delete_jobs == ("tj-a0",)
    assert plan.status.restarts == 1  # not counted twice
    assert not plan.restarted


def test_no_restarts_left_fails() -> None:
    spec = _spec(policy={"maxRestarts": 2})
    plan = decide(
        _obs(
            spec,
            _running(restarts=2),
            jobs=(_job(2, failed=True),),
            pods=(_pod(0, 2, phase="Failed", exit_code=137, job_uid="job-2"),),
        )
    )
    assert plan.status.phase == "Failed"
    assert plan.status.restarts == 2
    assert _cond(plan, "Failed") == ("True", "BackoffLimitExceeded")
    assert _cond(plan, "Stalled") == ("True", "BackoffLimitExceeded")
    assert plan.status.message is not None
    assert "no restarts left (spec.policy.maxRestarts: 2)" in plan.status.message
    assert plan.delete_jobs == ()  # a failed Job holds no pods; kept for its logs
    assert plan.events[0].type == "Warning"


@pytest.mark.parametrize("job_failed", [True, False], ids=["job-failed", "pod-failed-first"])
def test_permanent_exit_code_fails_at_once(job_failed: bool) -> None:
    spec = _spec(policy={"permanentExitCodes": [3, 42]})
    # Worker 0 was killed by the Job controller after worker 1 exited 42.
    pods = (_pod(0, phase="Failed", exit_code=143), _failed_worker(42))
    plan = decide(_obs(spec, _running(), jobs=(_job(failed=job_failed),), pods=pods))
    # The Job stops its other workers itself and is kept for its logs, now and on the next pass.
    assert plan.delete_jobs == ()
    again = decide(_obs(spec, plan.status, jobs=(_job(failed=job_failed),), pods=pods))
    assert again.delete_jobs == ()
    assert plan.status.phase == "Failed"
    assert plan.status.restarts == 0
    assert _cond(plan, "Failed") == ("True", "PermanentExitCode")
    assert plan.status.message == (
        "worker 1 (tj-a0-1-x) exited with code 42, listed in spec.policy.permanentExitCodes: not retried"
    )


def test_a_failed_job_without_pods_is_a_retryable_failure() -> None:
    plan = decide(_obs(status=_running(), jobs=(_job(failed=True, failure_message="BackoffLimitExceeded"),)))
    assert plan.status.phase == "Restarting"
    assert "the attempt's Job tj-a0 failed: BackoffLimitExceeded" in (plan.status.message or "")


@pytest.mark.parametrize(
    ("nodes", "restart"),
    [
        ({"h100-0": NodeView("h100-0", True)}, True),  # h100-1 was deleted
        ({**NODES, "h100-1": NodeView("h100-1", False, NOW - timedelta(seconds=61))}, True),
        ({**NODES, "h100-1": NodeView("h100-1", False, NOW - timedelta(seconds=30))}, False),
        (NODES, False),
    ],
    ids=["deleted", "not-ready-past-timeout", "not-ready-within-timeout", "healthy"],
)
def test_node_loss_restarts_the_gang(nodes: dict[str, NodeView], restart: bool) -> None:
    plan = decide(_obs(status=_running(), jobs=(_job(),), pods=(_pod(0), _pod(1)), nodes=nodes))
    assert (plan.status.phase == "Restarting") is restart
    if restart:
        assert _cond(plan, "Reconciling") == ("True", "NodeLost")
        assert "lost its node h100-1" in (plan.status.message or "")
        assert plan.delete_jobs == ("tj-a0",)  # the surviving workers go too


def test_schedule_timeout_releases_the_placement() -> None:
    job = _job(start_time=NOW - timedelta(seconds=301))
    plan = decide(
        _obs(
            status=_status(phase="Pending"), jobs=(job,), pods=(_pod(0), _pod(1, phase="Pending", node=None))
        )
    )
    assert plan.status.phase == "Queued"
    assert plan.status_first
    assert plan.delete_jobs == ("tj-a0",)
    # A gang that cannot place is not left to try forever: the timeout spends a restart.
    assert plan.status.restarts == 1
    assert plan.restarted
    assert _cond(plan, "Admitted") == ("False", "ScheduleTimeout")
    assert plan.events[0].type == "Warning"
    # It queues from now, behind the gangs that waited meanwhile, and keeps that place while it waits.
    assert plan.status.requeued_at == format_time(NOW)
    again = decide(_obs(status=plan.status, now=NOW + timedelta(seconds=5), admission=NO_FIT))
    assert again.status.phase == "Queued"
    assert again.status.requeued_at == format_time(NOW)
    # Admitted again it is an ordinary gang: a later restart for another cause keeps its creation time.
    admitted = decide(_obs(status=again.status, now=NOW + timedelta(seconds=9), admission=FITS))
    assert admitted.status.phase == "Pending"
    assert admitted.status.requeued_at is None


def test_schedule_timeout_fails_the_job_when_no_restart_is_left() -> None:
    job = _job(3, start_time=NOW - timedelta(seconds=301))
    pods = (_pod(0, 3), _pod(1, 3, phase="Pending", node=None))
    plan = decide(_obs(status=_status(phase="Pending", restarts=3, attempt=3), jobs=(job,), pods=pods))
    assert plan.status.phase == "Failed"
    assert "no restarts left" in (plan.status.message or "")
    assert any(e.reason == "ScheduleTimeout" for e in plan.events)


@pytest.mark.parametrize(("cap", "released"), [(None, False), (120, True), (600, False)])
def test_the_operator_owner_bounds_the_schedule_timeout(cap: int | None, released: bool) -> None:
    """spec.policy.scheduleTimeoutSeconds is 300 here; the operator's maximum wins when lower."""
    job = _job(start_time=NOW - timedelta(seconds=150))
    pods = (_pod(0), _pod(1, phase="Pending", node=None))
    observed = replace(
        _obs(status=_status(phase="Pending"), jobs=(job,), pods=pods), max_schedule_timeout_seconds=cap
    )
    plan = decide(observed)
    assert (plan.status.phase == "Queued") is released
    if not released:
        assert plan.requeue_after is not None
        assert plan.requeue_after <= (cap or 300) - 150


def test_deleted_job_with_the_same_name_is_waited_for() -> None:
    queued = _status(phase="Queued", conditions=[])
    plan = decide(_obs(status=queued, jobs=(_job(deleting=True),), admission=FITS))
    assert plan.create_attempt is None
    assert plan.requeue_after == 1.0


# ----------------------------------------------------------------------------- suspend, deadline, TTL


def test_suspend_removes_the_workers_and_keeps_the_restarts() -> None:
    spec = _spec(suspend=True)
    plan = decide(_obs(spec, _running(restarts=1), jobs=(_job(1),), pods=(_pod(0, 1, job_uid="job-1"),)))
    assert plan.status.phase == "Suspended"
    assert plan.status.restarts == 1
    assert plan.status_first
    assert plan.delete_jobs == ("tj-a1",)
    assert plan.status.start_time is None
    assert _cond(plan, "Admitted") == ("False", "Suspended")
    # Resume: the same attempt number, a fresh deadline clock, not a restart.
    resumed = decide(_obs(_spec(), plan.status, admission=FITS, now=NOW + timedelta(minutes=1)))
    assert resumed.create_attempt == 1
    assert resumed.status.restarts == 1
    assert resumed.status.start_time == format_time(NOW + timedelta(minutes=1))
    assert not resumed.restarted


def test_deadline_fails_and_deletes_the_running_attempt() -> None:
    spec = _spec(activeDeadlineSeconds=120)
    plan = decide(_obs(spec, _running(), jobs=(_job(),), pods=(_pod(0), _pod(1))))
    assert plan.status.phase == "Failed"
    assert _cond(plan, "Failed") == ("True", "DeadlineExceeded")
    assert plan.status_first
    assert plan.delete_jobs == ("tj-a0",)
    # If the operator died before the delete, the next pass still removes it.
    again = decide(_obs(spec, plan.status, jobs=(_job(),), pods=(_pod(0), _pod(1))))
    assert again.delete_jobs == ("tj-a0",)
    assert again.events == ()


def test_deadline_not_reached_schedules_a_check() -> None:
    spec = _spec(activeDeadlineSeconds=600)
    plan = decide(_obs(spec, _running(), jobs=(_job(),), pods=(_pod(0), _pod(1))))
    assert plan.status.phase == "Running"
    assert plan.requeue_after == pytest.approx(300)


@pytest.mark.parametrize(("age", "delete"), [(30, False), (60, True), (3600, True)])
def test_ttl_after_finished_deletes_the_trainingjob(age: int, delete: bool) -> None:
    spec = _spec(ttlSecondsAfterFinished=60)
    done = _status(phase="Succeeded", completionTime=format_time(NOW - timedelta(seconds=age)))
    plan = decide(_obs(spec, done, jobs=(_job(complete=True),)))
    assert plan.delete_self is delete
    if not delete:
        assert plan.requeue_after == pytest.approx(60 - age)


# ----------------------------------------------------------------------------- GPU-hours and status


def test_gpu_hours_accumulate_across_attempts_without_double_counting() -> None:
    old = _pod(0, 0, phase="Failed", start=NOW - timedelta(hours=2), end=NOW - timedelta(hours=1), gpus=4)
    new = _pod(0, 1, start=NOW - timedelta(minutes=30), gpus=4, job_uid="job-1")
    status = _status(phase="Running", restarts=1, startTime=format_time(NOW - timedelta(hours=2)))
    plan = decide(_obs(_spec(workers=1), status, jobs=(_job(1),), pods=(old, new)))
    assert plan.status.gpu_hours == pytest.approx(4 * 1 + 4 * 0.5)
    assert plan.status.gpu_hours_as_of == format_time(NOW)
    # Seen again an hour later: only the new hour is added.
    later = decide(
        _obs(_spec(workers=1), plan.status, jobs=(_job(1),), pods=(old, new), now=NOW + timedelta(hours=1))
    )
    assert later.status.gpu_hours == pytest.approx(6 + 4)


def test_gpu_hours_alone_are_written_at_most_once_a_minute() -> None:
    first = decide(_obs(status=_running(), jobs=(_job(),), pods=(_pod(0), _pod(1))))
    soon = decide(
        _obs(status=first.status, jobs=(_job(),), pods=(_pod(0), _pod(1)), now=NOW + timedelta(seconds=20))
    )
    assert status_diff(first.status, soon.status) is None
    later = NOW + GPU_HOURS_WRITE_INTERVAL
    patch = status_diff(
        first.status,
        decide(_obs(status=first.status, jobs=(_job(),), pods=(_pod(0), _pod(1)), now=later)).status,
    )
    assert patch is not None
    assert set(patch) == {"gpuHours", "gpuHoursAsOf"}


def test_observed_generation_and_conditions_carry_it() -> None:
    plan = decide(_obs(generation=7, admission=FITS))
    assert plan.status.observed_generation == 7
    assert all(c.observed_generation == 7 for c in plan.status.conditions)
    types = {c.type for c in plan.status.conditions}
    assert types == {"Ready", "Reconciling", "Stalled", "Admitted", "Running", "Succeeded", "Failed"}


def test_status_diff_nulls_removed_fields() -> None:
    old = parse_status({"phase": "Restarting", "nextAttemptTime": "2026-01-01T12:00:00Z", "restarts": 1})
    new = _status(phase="Pending", restarts=1)
    patch = status_diff(old, new)
    assert patch is not None
    assert patch["nextAttemptTime"] is None
    assert patch["phase"] == "Pending"
    assert status_diff(new, new) is None


@pytest.mark.parametrize(
    ("base", "restart", "expected"),
    [(10, 1, 10), (10, 2, 20), (10, 3, 40), (10, 10, 600), (0, 3, 0), (600, 1, 600), (5, 0, 0)],
)
def test_backoff(base: int, restart: int, expected: float) -> None:
    assert backoff_seconds(_spec(policy={"backoffSeconds": base}), restart) == expected


# ------------------------------------------------------------------------------------------ parsing


def test_pod_view_reads_exit_code_rank_and_times() -> None:
    pod = {
        "metadata": {
            "name": "tj-a1-1-abc",
            "labels": {"kubeforge.dev/attempt": "1"},
            "annotations": {"batch.kubernetes.io/job-completion-index": "1"},
            "ownerReferences": [{"kind": "Job", "uid": "job-1"}],
        },
        "spec": {
            "nodeName": "h100-1",
            "containers": [{"name": "worker", "resources": {"limits": {"nvidia.com/gpu": "4"}}}],
        },
        "status": {
            "phase": "Failed",
            "startTime": "2026-01-01T11:00:00Z",
            "containerStatuses": [
                {
                    "name": "worker",
                    "state": {
                        "terminated": {"exitCode": 3, "reason": "Error", "finishedAt": "2026-01-01T11:30:00Z"}
                    },
                }
            ],
        },
    }
    view = pod_view(pod)
    assert (view.index, view.attempt, view.job_uid, view.exit_code, view.gpus) == (1, 1, "job-1", 3, 4)
    assert view.unschedulable is None
    pod["status"] = {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "message": "no"}],
    }
    assert pod_view(pod).unschedulable == "no"
    assert view.end == datetime(2026, 1, 1, 11, 30, tzinfo=UTC)
    assert view.terminal


def test_job_and_node_views() -> None:
    job = {
        "metadata": {"name": "tj-a0", "uid": "j", "ownerReferences": [{"uid": "tj-uid", "controller": True}]},
        "spec": {"suspend": False},
        "status": {"conditions": [{"type": "FailureTarget", "status": "True", "message": "boom"}]},
    }
    view = job_view(job, "tj-uid")
    assert (view.owned, view.failed, view.failure_message) == (True, True, "boom")
    assert not job_view(job, "other").owned
    node = node_view(
        {"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}
    )
    assert node == NodeView("n", False, None)


def test_unreadable_status_is_recomputed() -> None:
    assert parse_status({"phase": "Exploded"}) == TrainingJobStatus()


# ------------------------------------------------------------------------------------------ properties

intervals = st.tuples(st.integers(0, 7200), st.one_of(st.none(), st.integers(0, 7200)), st.integers(0, 8))


@given(st.lists(intervals, max_size=6), st.integers(0, 7200), st.integers(0, 7200))
def test_gpu_seconds_are_additive_over_time(
    raw: list[tuple[int, int | None, int]], cut: int, end: int
) -> None:
    t0 = NOW - timedelta(hours=3)
    pods = [
        _pod(
            i,
            start=t0 + timedelta(seconds=s),
            end=None if e is None else t0 + timedelta(seconds=max(s, e)),
            gpus=g,
        )
        for i, (s, e, g) in enumerate(raw)
    ]
    cut_time, now = t0 + timedelta(seconds=min(cut, end)), t0 + timedelta(seconds=max(cut, end))
    whole = gpu_seconds(pods, None, now)
    assert whole == pytest.approx(gpu_seconds(pods, None, cut_time) + gpu_seconds(pods, cut_time, now))
    assert whole >= 0


pod_states = st.sampled_from(
    ["Pending", "Running", "Succeeded", "Failed-1", "Failed-3", "Failed-none", "gone"]
)
job_states = st.sampled_from(["none", "running", "complete", "failed", "suspended", "deleting"])


def _world(
    spec: TrainingJobSpec, restarts: int, job_state: str, pod_states_: list[str], stale: bool
) -> tuple[list[JobView], list[PodView]]:
    jobs: list[JobView] = []
    pods: list[PodView] = []
    if stale and restarts > 0:
        jobs.append(_job(restarts - 1, failed=True))
    if job_state != "none":
        jobs.append(
            _job(
                restarts,
                complete=job_state == "complete",
                failed=job_state == "failed",
                suspended=job_state == "suspended",
                deleting=job_state == "deleting",
            )
        )
        for index, state in enumerate(pod_states_[: spec.workers]):
            if state == "gone" or job_state in ("suspended", "deleting"):
                continue
            if job_state == "complete":
                state = "Succeeded"
            phase, _, code = state.partition("-")
            pods.append(
                _pod(
                    index,
                    restarts,
                    phase=phase,
                    node=None if phase == "Pending" else f"h100-{index % 2}",
                    exit_code=int(code) if code.isdigit() else None,
                    end=NOW - timedelta(seconds=1) if phase in ("Succeeded", "Failed") else None,
                )
            )
    return jobs, pods


def _apply(plan: Plan, jobs: list[JobView], pods: list[PodView]) -> tuple[list[JobView], list[PodView]]:
    """What the cluster looks like after the controller carried out the plan (instantly)."""
    gone = {j.uid for j in jobs if j.name in plan.delete_jobs or j.deleting}
    jobs = [j for j in jobs if j.uid not in gone]
    pods = [p for p in pods if p.job_uid not in gone]
    if plan.create_attempt is not None:
        jobs.append(_job(plan.create_attempt, uid=f"new-{plan.create_attempt}", start_time=NOW, created=NOW))
    return jobs, pods


@settings(max_examples=300, deadline=None)
@given(
    workers=st.integers(1, 3),
    gang=st.none() | st.booleans(),
    queue=st.booleans(),
    suspend=st.booleans(),
    max_restarts=st.integers(0, 3),
    restarts=st.integers(0, 3),
    phase=st.sampled_from(
        [None, "Pending", "Queued", "Running", "Restarting", "Suspended", "Succeeded", "Failed"]
    ),
    job_state=job_states,
    pod_states_=st.lists(pod_states, min_size=3, max_size=3),
    stale=st.booleans(),
    fits=st.booleans(),
    permanent=st.booleans(),
)
def test_any_world_converges_and_keeps_the_invariants(
    workers: int,
    gang: bool | None,
    queue: bool,
    suspend: bool,
    max_restarts: int,
    restarts: int,
    phase: str | None,
    job_state: str,
    pod_states_: list[str],
    stale: bool,
    fits: bool,
    permanent: bool,
) -> None:
    restarts = min(restarts, max_restarts)
    spec = _spec(
        workers=workers,
        suspend=suspend,
        queueName="q" if queue else None,
        policy={"gang": gang, "maxRestarts": max_restarts, "permanentExitCodes": [3] if permanent else []},
    )
    status = _status(phase=phase, restarts=restarts, attempt=restarts)
    jobs, pods = _world(spec, restarts, job_state, pod_states_, stale)
    admission = FITS if fits else NO_FIT
    for _ in range(6):
        obs = _obs(spec, status, tuple(jobs), tuple(pods), nodes=None)
        plan = decide(obs)
        if plan.needs_admission:
            assert spec.gang
            assert not spec.queue_name
            plan = decide(replace(obs, admission=admission))
            assert not plan.needs_admission
        new = plan.status
        # Invariants of every single pass.
        assert new.restarts >= status.restarts
        assert new.restarts <= max(max_restarts, restarts)
        if status.phase in ("Succeeded", "Failed"):
            assert new.phase == status.phase
            assert plan.create_attempt is None
        if plan.create_attempt is not None:
            assert plan.create_attempt == new.restarts
            assert not any(j.name == f"tj-a{new.restarts}" for j in jobs)
            assert f"tj-a{new.restarts}" not in plan.delete_jobs
            assert not suspend
            assert new.phase in ("Pending", "Queued")
        if (
            suspend
            and status.phase not in ("Succeeded", "Failed")
            and new.phase not in ("Succeeded", "Failed")
        ):
            assert new.phase == "Suspended"
            assert plan.create_attempt is None
        if new.phase == "Restarting" and new.restarts > status.restarts:
            assert plan.status_first
        assert new.workers is not None
        assert new.workers.active + new.workers.succeeded + new.workers.failed <= spec.workers
        # Carry the plan out; the world only changes by what the plan did.
        settled = (
            status_diff(status, new) is None
            and not plan.delete_jobs
            and plan.create_attempt is None
            and not plan.delete_self
        )
        status = new
        if settled:
            break
        jobs, pods = _apply(plan, jobs, pods)
    else:
        pytest.fail(f"no fixed point: last plan {plan}")


# ------------------------------------------------------------- first failure decides (issue 9, item 6)
#
# Snapshots as the API server serves them: a worker's container status, its deletion timestamp and
# conditions, read through `pod_view`, so the fields the decision needs are the ones a real pod carries.

T0 = NOW - timedelta(seconds=30)


def _raw_pod(
    index: int,
    *,
    attempt: int = 0,
    exit_code: int | None = None,
    finished: datetime | None = None,
    started: datetime | None = T0,
    reason: str = "Error",
    deleted: datetime | None = None,
    disruption: str | None = None,
    node: str | None = None,
) -> dict[str, Any]:
    """One worker pod: Running until it has an exit code, then Failed with its container terminated."""
    container: dict[str, Any] = {"name": "worker", "ready": exit_code is None, "restartCount": 0}
    if exit_code is None:
        container["state"] = {"running": {"startedAt": format_time(started)}} if started else {}
    else:
        terminated: dict[str, Any] = {"exitCode": exit_code, "reason": reason}
        if started is not None:
            terminated["startedAt"] = format_time(started)
        if finished is not None:
            terminated["finishedAt"] = format_time(finished)
        container["state"] = {"terminated": terminated}
    conditions = [{"type": "Ready", "status": "True" if exit_code is None else "False"}]
    if disruption is not None:
        conditions.append({"type": "DisruptionTarget", "status": "True", "reason": disruption})
    meta: dict[str, Any] = {
        "name": f"tj-a{attempt}-{index}-x",
        "labels": {
            "app.kubernetes.io/managed-by": "kubeforge",
            "kubeforge.dev/trainingjob": "tj",
            "kubeforge.dev/attempt": str(attempt),
        },
        "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        "ownerReferences": [{"kind": "Job", "uid": f"job-{attempt}", "controller": True}],
    }
    if deleted is not None:
        meta["deletionTimestamp"] = format_time(deleted + timedelta(seconds=30))  # + grace period
    return {
        "metadata": meta,
        "spec": {
            "nodeName": node or f"h100-{index % 2}",
            "containers": [{"name": "worker", "resources": {"limits": {"nvidia.com/gpu": "4"}}}],
        },
        "status": {
            "phase": "Running" if exit_code is None else "Failed",
            "startTime": format_time(T0),
            "conditions": conditions,
            "containerStatuses": [container],
        },
    }


def _raw_job(
    attempt: int = 0,
    *,
    failed: bool = False,
    failed_at: datetime | None = None,
    suspend: bool = False,
    suspended_at: datetime | None = None,
    reason: str = "JobSuspended",
    message: str = "Job suspended",
) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = []
    if failed:
        conditions.append(
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "limit",
                "lastTransitionTime": format_time(failed_at or T0),
            }
        )
    if suspended_at is not None:
        conditions.append(
            {
                "type": "Suspended",
                "status": "True",
                "reason": reason,
                "message": message,
                "lastTransitionTime": format_time(suspended_at),
            }
        )
    status: dict[str, Any] = {"conditions": conditions}
    if not suspend:
        status["startTime"] = format_time(T0)
    return {
        "metadata": {
            "name": f"tj-a{attempt}",
            "uid": f"job-{attempt}",
            "creationTimestamp": format_time(T0),
            "labels": {"kueue.x-k8s.io/queue-name": "team-a"},
            "ownerReferences": [{"uid": "tj-uid", "controller": True}],
        },
        "spec": {"suspend": suspend},
        "status": status,
    }


def _seen(*pods: dict[str, Any]) -> tuple[PodView, ...]:
    return tuple(pod_view(p) for p in pods)


def _failure_of(plan: Plan) -> tuple[str | None, str, str]:
    kind = "Failed" if plan.status.phase == "Failed" else "Reconciling"
    return plan.status.phase, _cond(plan, kind)[1], plan.status.message or ""


def _ended(index: int, code: int, at: int | None, **fields: Any) -> dict[str, Any]:
    """Worker `index` exited `code`, `at` seconds after T0 (None: no finishedAt)."""
    finished = None if at is None else T0 + timedelta(seconds=at)
    return _raw_pod(index, exit_code=code, finished=finished, **fields)


KILLED = {"deleted": T0 + timedelta(seconds=9)}  # deleted by the Job controller, ends by a signal


@pytest.mark.parametrize(
    ("permanent", "pods", "expected"),
    [
        # Worker 1 exits 3; the Job controller kills worker 0 a second later (SIGTERM), 143 is "permanent".
        ([143], [_ended(0, 143, 11, **KILLED), _ended(1, 3, 10)], ("Restarting", "WorkerFailed", "1", 3)),
        # Worker 2 exits 42 (permanent); torchrun on a peer exits 1 when the rendezvous breaks.
        (
            [42],
            [_ended(0, 1, 12), _ended(1, 137, 13, **KILLED), _ended(2, 42, 10)],
            ("Failed", "PermanentExitCode", "2", 42),
        ),
        # Worker 1 exits 1 (retryable); its peer's torchrun exits 2 afterwards, and 2 is permanent.
        ([2], [_ended(0, 2, 11), _ended(1, 1, 10)], ("Restarting", "WorkerFailed", "1", 1)),
        # The same second (timestamps have second precision): the worker that ended on its own is first.
        ([143], [_ended(0, 143, 10, **KILLED), _ended(1, 5, 10)], ("Restarting", "WorkerFailed", "1", 5)),
        # Two own failures in the same second: the one that started first, then the lower rank.
        (
            [7],
            [_ended(0, 1, 10, started=T0 + timedelta(seconds=1)), _ended(1, 7, 10)],
            ("Failed", "PermanentExitCode", "1", 7),
        ),
        ([7], [_ended(0, 1, 10), _ended(1, 7, 10)], ("Restarting", "WorkerFailed", "0", 1)),
        # A worker without finishedAt (its container never ran) comes after one that has it.
        ([1], [_ended(0, 1, None, started=None), _ended(1, 9, 10)], ("Restarting", "WorkerFailed", "1", 9)),
        # No finishedAt anywhere: startedAt, then rank.
        (
            [4],
            [_ended(0, 1, None, started=T0 + timedelta(seconds=2)), _ended(1, 4, None)],
            ("Failed", "PermanentExitCode", "1", 4),
        ),
        # A worker evicted first (DisruptionTarget) is a retryable failure whatever it exited with, and
        # the peer that failed because of it does not make it permanent.
        (
            [1, 143],
            [_ended(0, 143, 10, disruption="EvictionByEvictionAPI", **KILLED), _ended(1, 1, 12)],
            ("Restarting", "WorkerDisrupted", "0", None),
        ),
    ],
    ids=[
        "killed-peer-143",
        "torchrun-peers-exit-1",
        "peer-exit-permanent-after",
        "tie-own-before-killed",
        "tie-started-first",
        "tie-rank",
        "missing-finished",
        "missing-all-timestamps",
        "evicted-first",
    ],
)
def test_the_first_worker_to_fail_decides(
    permanent: list[int], pods: list[dict[str, Any]], expected: tuple[str, str, str, int | None]
) -> None:
    spec = _spec(workers=len(pods), policy={"permanentExitCodes": permanent})
    job = job_view(_raw_job(failed=True), "tj-uid")
    plan = decide(_obs(spec, _running(), jobs=(job,), pods=_seen(*pods)))
    phase, reason, message = _failure_of(plan)
    assert (phase, reason) == expected[:2]
    worker, code = expected[2:]
    how = "was stopped from outside" if code is None else f"exited with code {code}"
    assert f"worker {worker} (tj-a0-{worker}-x) {how}" in message
    assert plan.status.restarts == (1 if phase == "Restarting" else 0)
    # Seen again (the Job not deleted yet): the same decision, no second restart.
    again = decide(_obs(spec, plan.status, jobs=(job,), pods=_seen(*pods), now=NOW + timedelta(seconds=1)))
    assert again.status.restarts == plan.status.restarts
    assert not again.restarted


def test_a_failure_waits_for_the_reports_of_peers_still_running() -> None:
    """Kubelets report on their own schedule: worker 1's failure arrives first although worker 0 failed
    a second earlier with a permanent code. The decision waits for worker 0's report."""
    spec = _spec(policy={"permanentExitCodes": [42]})
    job = job_view(_raw_job(failed=True), "tj-uid")
    first_report = _seen(_raw_pod(0), _raw_pod(1, exit_code=1, finished=NOW - timedelta(seconds=2)))
    waiting = decide(_obs(spec, _running(), jobs=(job,), pods=first_report))
    assert waiting.status.phase == "Running"
    assert waiting.status.restarts == 0
    assert waiting.delete_jobs == ()
    assert waiting.events == ()
    assert waiting.requeue_after == pytest.approx(8)
    both = _seen(
        _raw_pod(0, exit_code=42, finished=NOW - timedelta(seconds=3)),
        _raw_pod(1, exit_code=1, finished=NOW - timedelta(seconds=2)),
    )
    plan = decide(_obs(spec, waiting.status, jobs=(job,), pods=both, now=NOW + timedelta(seconds=1)))
    assert _failure_of(plan)[:2] == ("Failed", "PermanentExitCode")
    assert "worker 0" in (plan.status.message or "")
    # A peer that never reports does not hold the decision longer than the settle window.
    late = decide(_obs(spec, waiting.status, jobs=(job,), pods=first_report, now=NOW + timedelta(seconds=8)))
    assert _failure_of(late)[:2] == ("Restarting", "WorkerFailed")
    assert late.status.restarts == 1


# One worker fails first; its peers are killed by the Job controller (deleted, 143/137) or exit 1 when
# torchrun's rendezvous breaks, each at least as late; every report reaches the operator after a delay
# of its own, and the Job's Failed condition at any point.
peer_fates = st.sampled_from(["killed-143", "killed-137", "torchrun-1", "torchrun-2"])


@settings(max_examples=150, deadline=None)
@given(
    first=st.integers(0, 3),
    code=st.sampled_from([1, 2, 3, 42]),
    fates=st.lists(peer_fates, min_size=3, max_size=3),
    after=st.lists(st.integers(0, 4), min_size=3, max_size=3),
    delays=st.lists(st.integers(0, 6), min_size=4, max_size=4),
    job_failed_at=st.integers(0, 12),
    permanent=st.sets(st.sampled_from([1, 2, 42, 137, 143]), max_size=3),
)
def test_any_report_order_is_judged_on_the_first_failure(
    first: int,
    code: int,
    fates: list[str],
    after: list[int],
    delays: list[int],
    job_failed_at: int,
    permanent: set[int],
) -> None:
    workers = 4
    spec = _spec(workers=workers, policy={"permanentExitCodes": sorted(permanent), "maxRestarts": 3})
    t_fail = T0 + timedelta(seconds=10)
    ended: dict[int, dict[str, Any]] = {first: _raw_pod(first, exit_code=code, finished=t_fail)}
    peers = [i for i in range(workers) if i != first]
    for peer, fate, gap in zip(peers, fates, after, strict=True):
        kind, _, exit_code = fate.partition("-")
        if kind == "killed":  # the Job controller deletes it after seeing the failure: same second or later
            ended[peer] = _raw_pod(
                peer, exit_code=int(exit_code), finished=t_fail + timedelta(seconds=gap), deleted=t_fail
            )
        else:  # torchrun notices the broken rendezvous at least a second later
            ended[peer] = _raw_pod(
                peer, exit_code=int(exit_code), finished=t_fail + timedelta(seconds=1 + gap)
            )
    arrival: dict[int, datetime] = {}
    for i in range(workers):
        finished = parse_time(ended[i]["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"])
        assert finished is not None
        arrival[i] = finished + timedelta(seconds=delays[i])
    status = _running()
    decision: Plan | None = None
    for tick in range(0, 25):
        now = t_fail + timedelta(seconds=tick)
        pods = _seen(*(ended[i] if arrival[i] <= now else _raw_pod(i) for i in range(workers)))
        failed_at = t_fail + timedelta(seconds=job_failed_at)
        job = job_view(_raw_job(failed=tick >= job_failed_at, failed_at=failed_at), "tj-uid")
        plan = decide(_obs(spec, status, jobs=(job,), pods=pods, now=now, nodes=None))
        if plan.status.phase in ("Restarting", "Failed"):
            decision = plan
            break
        assert plan.status.restarts == 0
        status = plan.status
    assert decision is not None, "never decided"
    phase, reason, message = _failure_of(decision)
    assert f"worker {first} (tj-a0-{first}-x) exited with code {code}" in message
    if code in permanent:
        assert (phase, reason, decision.status.restarts) == ("Failed", "PermanentExitCode", 0)
    else:
        assert (phase, reason, decision.status.restarts) == ("Restarting", "WorkerFailed", 1)


# ------------------------------------------------------------- Kueue suspension (issue 9, item 5)

KUEUE_RUNNING = _status(
    phase="Running",
    startTime=format_time(T0),
    activeSince=format_time(T0),
    conditions=[
        {
            "type": "Admitted",
            "status": "True",
            "reason": "KueueAdmitted",
            "message": "admitted by Kueue queue 'team-a'",
            "lastTransitionTime": format_time(T0),
        }
    ],
)


def _kueue_spec(**fields: Any) -> TrainingJobSpec:
    return _spec(queueName="team-a", policy={"permanentExitCodes": [137, 143]}, **fields)


def test_kueue_suspending_a_running_job_queues_it_without_a_restart() -> None:
    suspended_at = NOW - timedelta(seconds=5)
    job = job_view(_raw_job(suspend=True, suspended_at=suspended_at), "tj-uid")
    # What the Job controller's stop leaves: one worker killed by SIGTERM, one SIGKILLed after the grace
    # period, one still terminating, one evicted (DisruptionTarget) that the kubelet reports as 143.
    pods = _seen(
        _raw_pod(0, exit_code=143, finished=suspended_at + timedelta(seconds=1), deleted=suspended_at),
        _raw_pod(1, exit_code=137, finished=suspended_at + timedelta(seconds=3), deleted=suspended_at),
        _raw_pod(2, deleted=suspended_at),
        _raw_pod(3, exit_code=143, finished=suspended_at, disruption="PreemptionByScheduler"),
    )
    spec = _kueue_spec(workers=4)
    plan = decide(_obs(spec, KUEUE_RUNNING, jobs=(job,), pods=pods))
    assert plan.status.phase == "Queued"
    assert plan.status.restarts == 0
    assert plan.delete_jobs == ()
    assert plan.create_attempt is None
    assert not plan.restarted
    assert _cond(plan, "Admitted") == ("False", "SuspendedByKueue")
    assert _cond(plan, "Reconciling") == ("True", "SuspendedByKueue")
    assert _cond(plan, "Failed")[0] == "False"
    assert plan.status.workers is not None
    assert plan.status.workers.failed == 0  # stopped, not failed
    assert "Kueue suspended the Job tj-a0" in (plan.status.message or "")
    [event] = plan.events
    assert (event.type, event.reason) == ("Normal", "SuspendedByKueue")
    # The active stretch ended at the suspension, not when the operator noticed it.
    assert plan.status.active_since is None
    assert plan.status.active_seconds == int((suspended_at - T0).total_seconds())
    # The next passes, while the pods go, change nothing.
    again = decide(_obs(spec, plan.status, jobs=(job,), pods=pods, now=NOW + timedelta(seconds=1)))
    assert status_diff(plan.status, again.status) is None
    # Once they are gone, the suspension is recorded as a preemption (with what the workers left), once.
    gone = decide(_obs(spec, plan.status, jobs=(job,), now=NOW + timedelta(seconds=30)))
    assert set(status_diff(plan.status, gone.status) or {}) == {"preemption", "preemptions", "lostGpuHours"}
    assert [p.reason for p in gone.status.preemptions] == ["Kueue"]
    assert gone.events == ()
    later = decide(_obs(spec, gone.status, jobs=(job,), now=NOW + timedelta(seconds=60)))
    assert status_diff(gone.status, later.status) is None


def test_kueue_reason_on_the_job_is_passed_on() -> None:
    raw = _raw_job(
        suspend=True, suspended_at=NOW, reason="Preempted", message="Preempted to accommodate a workload"
    )
    plan = decide(_obs(_kueue_spec(), KUEUE_RUNNING, jobs=(job_view(raw, "tj-uid"),)))
    assert plan.status.phase == "Queued"
    assert _cond(plan, "Admitted") == ("False", "Preempted")
    assert "(Preempted: Preempted to accommodate a workload)" in (plan.status.message or "")


def test_workers_stopped_before_the_suspension_is_seen_are_not_a_failure() -> None:
    """The pod cache is ahead of the Job cache: the workers are already being killed, the Job still reads
    unsuspended. Nothing is decided until the Job says why."""
    stopping = _seen(
        _raw_pod(0, exit_code=143, finished=NOW - timedelta(seconds=1), deleted=NOW - timedelta(seconds=2)),
        _raw_pod(1, deleted=NOW - timedelta(seconds=2)),
    )
    spec = _kueue_spec()
    plan = decide(_obs(spec, KUEUE_RUNNING, jobs=(job_view(_raw_job(), "tj-uid"),), pods=stopping))
    assert plan.status.phase == "Running"
    assert plan.status.restarts == 0
    assert plan.delete_jobs == ()
    assert plan.requeue_after is not None
    seen = job_view(_raw_job(suspend=True), "tj-uid")  # suspended, its condition not written yet
    plan = decide(_obs(spec, plan.status, jobs=(seen,), pods=stopping))
    assert (plan.status.phase, plan.status.restarts) == ("Queued", 0)


@pytest.mark.parametrize(
    ("finished", "restart"), [(-5, True), (0, False), (2, False)], ids=["before", "same-second", "after"]
)
def test_a_worker_that_failed_on_its_own_before_the_suspension_still_counts(
    finished: int, restart: bool
) -> None:
    suspended_at = NOW - timedelta(seconds=10)
    job = job_view(_raw_job(suspend=True, suspended_at=suspended_at), "tj-uid")
    pods = _seen(
        _raw_pod(0, exit_code=1, finished=suspended_at + timedelta(seconds=finished)),
        _raw_pod(1, exit_code=143, finished=suspended_at + timedelta(seconds=1), deleted=suspended_at),
    )
    plan = decide(_obs(_kueue_spec(), KUEUE_RUNNING, jobs=(job,), pods=pods))
    assert (plan.status.phase == "Restarting") is restart
    assert plan.status.restarts == (1 if restart else 0)
    if not restart:
        assert plan.status.phase == "Queued"


def test_kueue_readmits_the_same_attempt_and_the_deadline_skips_the_queued_time() -> None:
    spec = _kueue_spec(activeDeadlineSeconds=600)
    t = T0
    # Ran 500 s, then Kueue suspended it.
    running = decide(
        _obs(spec, KUEUE_RUNNING, jobs=(_job(),), pods=(_pod(0), _pod(1)), now=t + timedelta(seconds=500))
    )
    assert running.status.phase == "Running"
    assert running.requeue_after == pytest.approx(100)
    suspended_at = t + timedelta(seconds=500)
    job = job_view(_raw_job(suspend=True, suspended_at=suspended_at), "tj-uid")
    queued = decide(_obs(spec, running.status, jobs=(job,), now=suspended_at + timedelta(seconds=2)))
    assert queued.status.phase == "Queued"
    assert queued.status.active_seconds == 500
    # An hour in the queue, with an operator restart in between (the status is all it keeps).
    stored = parse_status(queued.status.model_dump(by_alias=True, exclude_none=True))
    later = suspended_at + timedelta(hours=1)
    still = decide(_obs(spec, stored, jobs=(job,), now=later))
    assert still.status.phase == "Queued"
    assert status_diff(stored, still.status) is None
    # Kueue admits it again: the same Job, unsuspended; no restart, the clock resumes.
    readmitted = _job(start_time=later)
    resumed = decide(_obs(spec, still.status, jobs=(readmitted,), pods=(_pod(0), _pod(1)), now=later))
    assert (resumed.status.phase, resumed.status.restarts, resumed.status.job_name) == ("Running", 0, "tj-a0")
    assert resumed.create_attempt is None
    assert _cond(resumed, "Admitted") == ("True", "KueueAdmitted")
    assert resumed.requeue_after == pytest.approx(100)

    def after(seconds: int) -> Plan:
        now = later + timedelta(seconds=seconds)
        return decide(_obs(spec, resumed.status, jobs=(readmitted,), pods=(_pod(0), _pod(1)), now=now))

    assert after(90).status.phase == "Running"
    assert _cond(after(100), "Failed") == ("True", "DeadlineExceeded")


def test_user_suspend_pauses_the_deadline_clock() -> None:
    spec = _spec(activeDeadlineSeconds=600)
    status = _status(phase="Running", startTime=format_time(T0), activeSince=format_time(T0))
    suspended = decide(
        _obs(
            _spec(activeDeadlineSeconds=600, suspend=True),
            status,
            jobs=(_job(),),
            now=T0 + timedelta(seconds=400),
        )
    )
    assert suspended.status.phase == "Suspended"
    assert (suspended.status.active_seconds, suspended.status.active_since) == (400, None)
    later = T0 + timedelta(hours=2)
    resumed = decide(_obs(spec, suspended.status, admission=FITS, now=later))
    assert resumed.create_attempt == 0
    assert resumed.status.active_since == format_time(later)
    assert resumed.requeue_after is None or resumed.requeue_after <= 200
    workers = (_pod(0), _pod(1))
    running = decide(
        _obs(spec, resumed.status, jobs=(_job(),), pods=workers, now=later + timedelta(seconds=199))
    )
    assert running.status.phase == "Running"
    assert running.requeue_after == pytest.approx(1)
    over = decide(
        _obs(spec, resumed.status, jobs=(_job(),), pods=workers, now=later + timedelta(seconds=200))
    )
    assert _cond(over, "Failed") == ("True", "DeadlineExceeded")


def test_a_status_from_before_active_seconds_keeps_its_clock() -> None:
    """An operator upgrade: a running job whose status has only `startTime` keeps counting from it."""
    spec = _spec(activeDeadlineSeconds=600)
    old = _status(phase="Running", startTime=format_time(NOW - timedelta(seconds=500)))
    plan = decide(_obs(spec, old, jobs=(_job(),), pods=(_pod(0), _pod(1))))
    assert plan.status.active_since == format_time(NOW - timedelta(seconds=500))
    assert plan.requeue_after == pytest.approx(100)


# The stop Kueue causes, as a set of event streams the operator's two caches see in any interleaving:
# the Job (Kueue sets spec.suspend, then the Job controller writes its Suspended condition) and each
# worker pod (deleted, maybe marked DisruptionTarget, terminated by the kubelet with 143 or 137, removed).
pod_endings = st.sampled_from(["143", "137", "none", "disrupted-143"])


@settings(max_examples=150, deadline=None)
@given(
    workers=st.integers(1, 4),
    endings=st.lists(pod_endings, min_size=4, max_size=4),
    removed=st.lists(st.booleans(), min_size=4, max_size=4),
    data=st.data(),
)
def test_any_order_of_a_kueue_stop_is_queued_never_a_failure(
    workers: int, endings: list[str], removed: list[bool], data: st.DataObject
) -> None:
    spec = _kueue_spec(workers=workers, activeDeadlineSeconds=3600)
    t_s = T0 + timedelta(seconds=20)
    streams: list[list[tuple[str, int]]] = [[("suspend", -1), ("condition", -1)]]
    for i in range(workers):
        events = [("delete", i)]
        if endings[i] != "none":
            events.append(("terminate", i))
        if removed[i]:
            events.append(("remove", i))
        streams.append(events)
    job_state = {"suspend": False, "condition": False}
    pod_state: dict[int, dict[str, Any] | None] = {i: _raw_pod(i) for i in range(workers)}
    status = KUEUE_RUNNING
    tick = 0
    seen_at: int | None = None
    while any(streams):
        live = [s for s in streams if s]
        stream = data.draw(st.sampled_from(live))
        kind, i = stream.pop(0)
        tick += 1
        if kind in job_state:
            job_state[kind] = True
        elif kind == "delete":
            disrupted = endings[i].startswith("disrupted")
            pod_state[i] = _raw_pod(i, deleted=t_s, disruption="PreemptionByScheduler" if disrupted else None)
        elif kind == "terminate":
            code = int(endings[i].rpartition("-")[2])
            disrupted = endings[i].startswith("disrupted")
            pod_state[i] = _raw_pod(
                i,
                exit_code=code,
                finished=t_s + timedelta(seconds=1),
                deleted=t_s,
                disruption="PreemptionByScheduler" if disrupted else None,
            )
        else:
            pod_state[i] = None
        job = job_view(
            _raw_job(
                suspend=job_state["suspend"],
                suspended_at=t_s if job_state["suspend"] and job_state["condition"] else None,
            ),
            "tj-uid",
        )
        pods = _seen(*(p for p in pod_state.values() if p is not None))
        if job.suspended and seen_at is None:
            seen_at = tick
        plan = decide(_obs(spec, status, jobs=(job,), pods=pods, now=t_s + timedelta(seconds=tick)))
        assert plan.status.restarts == 0
        # Pending only when the pods are gone before the Job's suspension reached the cache: it then
        # reads as workers still to be started, until the next Job event.
        assert plan.status.phase in ("Running", "Queued", "Pending"), plan.status.message
        if plan.status.phase == "Pending":
            assert len(pods) < workers
            assert not job.suspended
        assert plan.delete_jobs == ()
        assert plan.create_attempt is None
        status = plan.status
    assert status.phase == "Queued"
    assert [c.reason for c in status.conditions if c.type == "Admitted"] == ["SuspendedByKueue"]
    assert status.active_since is None
    # From T0 to the suspension, or to when the operator saw it if the Job's condition came later.
    assert seen_at is not None
    assert 20 <= status.active_seconds <= 20 + seen_at


def test_a_job_suspended_from_outside_without_a_queue_name_is_queued_too() -> None:
    """Kueue with `manageJobsWithoutQueueName` suspends Jobs that name no queue: the same rules hold."""
    job = job_view(_raw_job(suspend=True, suspended_at=NOW), "tj-uid")
    pods = _seen(_raw_pod(0, exit_code=143, finished=NOW, deleted=NOW), _raw_pod(1, deleted=NOW))
    plan = decide(_obs(_spec(policy={"permanentExitCodes": [143]}), _running(), jobs=(job,), pods=pods))
    assert (plan.status.phase, plan.status.restarts, plan.delete_jobs) == ("Queued", 0, ())
    assert "waits in its queue to be admitted again" in (plan.status.message or "")


@pytest.mark.parametrize(
    "raw",
    [
        _ended(0, 143, 11, disruption="PreemptionByScheduler", **KILLED),
        _ended(1, 1, None, started=None),
        _raw_pod(2, deleted=T0),
        _raw_pod(3),
    ],
    ids=["killed-disrupted", "no-timestamps", "deleting", "running"],
)
def test_the_pod_cache_keeps_what_the_decision_reads(raw: dict[str, Any]) -> None:
    """The informer stores projections, not whole pods: finishedAt, startedAt, the deletion timestamp and
    the DisruptionTarget condition must survive the projection."""
    cached = projections.pod({**raw, "apiVersion": "v1", "kind": "Pod"})
    assert cached is not None
    assert pod_view(cached) == pod_view(raw)


def test_a_finished_worker_being_deleted_holds_nothing() -> None:
    """Only workers still running while they are deleted or evicted make the decision wait."""
    done = _pod(0, phase="Succeeded", deleting=True, exit_code=0, end=NOW - timedelta(seconds=1))
    plan = decide(_obs(status=_running(), jobs=(_job(),), pods=(done, _pod(1))))
    assert plan.status.phase == "Pending"
    evicted = decide(_obs(status=_running(), jobs=(_job(),), pods=(_pod(0, deleting=True), _pod(1))))
    assert evicted.status.phase == "Running"
    assert evicted.requeue_after == 5
