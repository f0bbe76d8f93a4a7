"""Checkpoint-aware preemption of a TrainingJob, end to end on the local cluster.

The test plays the trainer: it reports checkpoints the way a worker does (the `kubeforge.dev/checkpoint`
annotation on its own pod) after it sees the operator's `kubeforge.dev/checkpoint-request` on the pod.
The preemption is asked for with the job's `kubeforge.dev/preempt` annotation (what `kubectl annotate`
or an ops tool writes); the Job controller, the scheduler and the operator's gang admission are real.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from kubeforge_e2e import Kubectl, wait_for
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.workloads import (
    Obj,
    container_env,
    kubelet_kills,
    list_items,
    trainingjob_events,
    trainingjob_manifest,
    trainingjob_status,
    wait_trainingjob_phase,
    wait_workers_deleting,
)
from test_trainingjob_suspend import _kueue_admits, _kueue_preempts

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPORT = "kubeforge.dev/checkpoint"
REQUEST = "kubeforge.dev/checkpoint-request"
PREEMPT = "kubeforge.dev/preempt"


@pytest.fixture
def operator(training_operator: OperatorProcess) -> OperatorProcess:
    """This module's operator: the operator alone, resyncing every 2 s (conftest's `training_operator`)."""
    return training_operator


def _workers(kubectl: Kubectl, namespace: str, name: str) -> list[Obj]:
    pods = list_items(kubectl, "pods", namespace, f"kubeforge.dev/trainingjob={name}")
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def _running_workers(kubectl: Kubectl, namespace: str, name: str, attempt_env: dict[str, Any]) -> list[Obj]:
    def ready() -> list[Obj] | None:
        pods = [p for p in _workers(kubectl, namespace, name) if p["status"].get("phase") == "Running"]
        if len(pods) != 2:
            return None
        envs = [container_env(p) for p in pods]
        if all(all(env.get(k) == v for k, v in attempt_env.items()) for env in envs):
            return pods
        return None

    found: list[Obj] = wait_for(ready, timeout=90, description=f"2 workers running with {attempt_env}")
    return found


def _report(kubectl: Kubectl, namespace: str, pod: Obj, step: int) -> None:
    """What rank 0 does after writing a checkpoint."""
    body = json.dumps({"step": step, "path": f"s3://ckpt/{step}"})
    kubectl("annotate", "pod", pod["metadata"]["name"], "-n", namespace, "--overwrite", f"{REPORT}={body}")


def _preempt(kubectl: Kubectl, namespace: str, name: str, token: str) -> None:
    kubectl("annotate", "trainingjob", name, "-n", namespace, "--overwrite", f"{PREEMPT}={token}")


def _status_with(kubectl: Kubectl, namespace: str, name: str, check: Any, what: str) -> Obj:
    def reached() -> Obj | None:
        status = trainingjob_status(kubectl, namespace, name)
        return status if check(status) else None

    found: Obj = wait_for(reached, timeout=90, description=what)
    return found


def test_preemption_waits_for_the_checkpoint_survives_an_operator_kill_and_resumes_from_it(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    name = "ckpt"
    kubectl.apply(
        trainingjob_manifest(name, run_seconds=600, checkpoint={"gracePeriodSeconds": 120}), namespace
    )
    wait_trainingjob_phase(kubectl, namespace, name, "Running")
    workers = _running_workers(kubectl, namespace, name, {"KUBEFORGE_ATTEMPT": "0"})
    for pod in workers:
        spec = pod["spec"]
        assert spec["terminationGracePeriodSeconds"] == 120
        assert any("downwardAPI" in v for v in spec["volumes"])
        assert "KUBEFORGE_CHECKPOINT_STEP" not in container_env(pod)
    rank0 = next(
        p
        for p in workers
        if p["metadata"]["annotations"].get("batch.kubernetes.io/job-completion-index") == "0"
    )

    # An early checkpoint: recorded, but it is no answer to a request made later.
    _report(kubectl, namespace, rank0, 100)
    _status_with(
        kubectl, namespace, name, lambda s: (s.get("checkpoint") or {}).get("step") == 100, "step 100"
    )
    time.sleep(1.5)  # the request must come in a later second than the report

    _preempt(kubectl, namespace, name, "t1")

    def asked() -> list[Obj] | None:
        pods = _workers(kubectl, namespace, name)
        return (
            pods
            if len(pods) == 2 and all(REQUEST in p["metadata"].get("annotations", {}) for p in pods)
            else None
        )

    wait_for(asked, timeout=60, description="workers asked for a checkpoint")
    status = trainingjob_status(kubectl, namespace, name)
    waiting = status["preemption"]
    assert (waiting["state"], waiting["reason"]) == ("WaitingForCheckpoint", "Manual")
    assert status["phase"] == "Running"

    # The operator dies in the middle of the wait; its successor resumes the same wait.
    operator.kill()
    time.sleep(3)
    assert len(_workers(kubectl, namespace, name)) == 2  # nobody stopped the workers meanwhile
    operator.start()
    time.sleep(4)
    status = trainingjob_status(kubectl, namespace, name)
    assert status["preemption"] == waiting
    assert status["phase"] == "Running"
    assert not status.get("preemptions")

    # The trainer sees the request and checkpoints: the preemption goes ahead.
    _report(kubectl, namespace, rank0, 200)
    status = _status_with(kubectl, namespace, name, lambda s: s.get("preemptions"), "a preemption recorded")
    [record] = status["preemptions"]
    assert (record["outcome"], record["reason"], record["checkpointStep"]) == ("checkpointed", "Manual", 200)
    assert record["checkpointPath"] == "s3://ckpt/200"
    assert record["waitedSeconds"] < 60
    assert status["restarts"] == 0

    # GPUs free again: re-admitted, and the new workers start from the checkpoint.
    resumed = _running_workers(
        kubectl,
        namespace,
        name,
        {"KUBEFORGE_CHECKPOINT_STEP": "200", "KUBEFORGE_CHECKPOINT_PATH": "s3://ckpt/200"},
    )
    assert {p["metadata"]["uid"] for p in resumed}.isdisjoint({p["metadata"]["uid"] for p in workers})
    status = wait_trainingjob_phase(kubectl, namespace, name, "Running")
    assert len(status["preemptions"]) == 1  # no double preemption
    assert "preemption" not in status
    assert status["restarts"] == 0
    reasons = [r for _, r, _ in trainingjob_events(kubectl, namespace, name)]
    assert reasons.count("Preempted") == 1
    assert reasons.count("CheckpointRequested") == 1
    labels = f'namespace="{namespace}",outcome="checkpointed",reason="Manual"'
    assert f"kubeforge_trainingjob_preemptions_total{{{labels}}} 1.0" in operator.metrics()


def test_a_trainer_that_does_not_answer_is_preempted_when_the_grace_period_ends(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    name = "silent"
    grace = 8
    kubectl.apply(
        trainingjob_manifest(name, run_seconds=600, checkpoint={"gracePeriodSeconds": grace}), namespace
    )
    wait_trainingjob_phase(kubectl, namespace, name, "Running")
    _running_workers(kubectl, namespace, name, {"KUBEFORGE_ATTEMPT": "0"})
    time.sleep(3)
    _preempt(kubectl, namespace, name, "t1")
    status = _status_with(kubectl, namespace, name, lambda s: s.get("preemptions"), "a preemption recorded")
    [record] = status["preemptions"]
    assert record["outcome"] == "timedOut"
    assert grace <= record["waitedSeconds"] <= grace + 10
    assert "checkpointStep" not in record
    # 8 GPUs from the workers' start to the stop, at least the grace period and the few seconds before
    # (the status keeps 6 decimals: exactly 11 s reads 0.024444, below the unrounded 0.0244444...).
    assert record["lostGpuHours"] >= round(8 * (grace + 3) / 3600, 6) - 1e-6
    assert status["lostGpuHours"] == record["lostGpuHours"]
    resumed = _running_workers(kubectl, namespace, name, {"KUBEFORGE_ATTEMPT": "0"})
    assert all("KUBEFORGE_CHECKPOINT_STEP" not in container_env(p) for p in resumed)
    [warning] = [(t, m) for t, r, m in trainingjob_events(kubectl, namespace, name) if r == "Preempted"]
    assert warning[0] == "Warning"
    assert "no checkpoint within 8s" in warning[1]


def test_a_trainer_without_api_access_answers_with_its_termination_message(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    """The worker checkpoints on SIGTERM and leaves the report as its termination message: the record
    waits for it, nothing is lost, and the next attempt resumes from it."""
    name = "sigterm"
    grace = 4
    kubectl.apply(
        trainingjob_manifest(
            name,
            run_seconds=600,
            annotations={"e2e.kubeforge.dev/terminate-seconds": "20"},
            checkpoint={"gracePeriodSeconds": grace},
        ),
        namespace,
    )
    wait_trainingjob_phase(kubectl, namespace, name, "Running")
    _running_workers(kubectl, namespace, name, {"KUBEFORGE_ATTEMPT": "0"})
    _preempt(kubectl, namespace, name, "t1")
    going = wait_workers_deleting(kubectl, namespace, name, 2, timeout=60)
    status = trainingjob_status(kubectl, namespace, name)
    assert status["preemption"]["state"] == "Stopping"
    assert not status.get("preemptions")  # the record waits for what the workers leave
    left = json.dumps({"step": 700, "path": "s3://ckpt/700"})
    for pod in going:
        kubelet_kills(kubectl, namespace, pod, 143, message=left)
    status = _status_with(kubectl, namespace, name, lambda s: s.get("preemptions"), "a preemption recorded")
    [record] = status["preemptions"]
    assert (record["outcome"], record["checkpointStep"], record["lostGpuHours"]) == ("checkpointed", 700, 0)
    resumed = _running_workers(kubectl, namespace, name, {"KUBEFORGE_CHECKPOINT_STEP": "700"})
    assert {p["metadata"]["uid"] for p in resumed}.isdisjoint({p["metadata"]["uid"] for p in going})


def test_a_kueue_preemption_records_the_checkpoints_the_stopped_workers_leave(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    """Kueue stops a Job without asking: the record waits for the stopped workers and takes the
    checkpoint they left (Kueue's part is played as in test_trainingjob_suspend.py)."""
    name = "kueued"
    kubectl.apply(
        trainingjob_manifest(
            name,
            run_seconds=600,
            annotations={"e2e.kubeforge.dev/terminate-seconds": "20"},
            queueName="team-a",
            checkpoint={"gracePeriodSeconds": 30},
        ),
        namespace,
    )
    job = f"{name}-a0"
    wait_trainingjob_phase(kubectl, namespace, name, "Queued")
    _kueue_admits(kubectl, namespace, job)
    wait_trainingjob_phase(kubectl, namespace, name, "Running")
    _running_workers(kubectl, namespace, name, {"KUBEFORGE_ATTEMPT": "0"})
    time.sleep(2)
    _kueue_preempts(kubectl, namespace, job)
    going = wait_workers_deleting(kubectl, namespace, name, 2, timeout=30)
    status = _status_with(
        kubectl, namespace, name, lambda s: (s.get("preemption") or {}).get("state") == "Settling", "settling"
    )
    assert not status.get("preemptions")
    left = json.dumps({"step": 300, "path": "s3://ckpt/300"})
    for pod in going:
        kubelet_kills(kubectl, namespace, pod, 143, message=left)
    status = _status_with(kubectl, namespace, name, lambda s: s.get("preemptions"), "a preemption recorded")
    [record] = status["preemptions"]
    assert (record["reason"], record["outcome"], record["checkpointStep"]) == ("Kueue", "stopped", 300)
    assert record["lostGpuHours"] == 0  # the workers checkpointed as they stopped
    assert status["checkpoint"]["step"] == 300
    assert (status["phase"], status["restarts"]) == ("Queued", 0)
