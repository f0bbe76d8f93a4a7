"""TrainingJob decisions: admission, restarts, failures, suspend, deadline, TTL, status and GPU-hours."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeforge.api.trainingjob import TrainingJobSpec, TrainingJobStatus
from kubeforge.policy.capacity import Admission
from kubeforge.policy.conditions import format_time
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
    assert _cond(plan, "Reconciling")[0] == "False"
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
    plan = decide(_obs(status=_running(), jobs=(_job(failed=True),), pods=(_pod(0), _failed_worker(1))))
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
