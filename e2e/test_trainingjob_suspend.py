"""A TrainingJob whose Job Kueue suspends after it ran, end to end on the local cluster.

Kueue is not installed in the local cluster yet, so the test plays its part by hand, the way Kueue's
batch/Job integration does it: admit by setting the Job's `spec.suspend` to false; preempt by setting
it back to true with the `kueue.x-k8s.io/stopping` annotation, clearing the Job's `status.startTime` and
removing the annotation again. Everything else is real: the Job controller deletes the workers of the
suspended Job and records its `Suspended` condition. kwok keeps the deleted pods for
`e2e.kubeforge.dev/terminate-seconds`, and the test plays the kubelet meanwhile: the workers end as
SIGTERM (143) and SIGKILL (137) leave them, the two exit codes the job lists as permanent.
"""

from __future__ import annotations

import json
import time

import pytest

from kubeforge_e2e import Kubectl, wait_for
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.workloads import (
    Obj,
    kubelet_kills,
    list_items,
    status_condition,
    trainingjob_events,
    trainingjob_jobs,
    trainingjob_manifest,
    trainingjob_status,
    wait_trainingjob_phase,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture
def operator(training_operator: OperatorProcess) -> OperatorProcess:
    """This module's operator: the operator alone, resyncing every 2 s (conftest's `training_operator`)."""
    return training_operator


QUEUE = "team-a"
STOPPING = "kueue.x-k8s.io/stopping"


def _patch_job(
    kubectl: Kubectl, namespace: str, job: str, patch: dict[str, object], status: bool = False
) -> None:
    args = ["patch", "job", job, "-n", namespace, "--type=merge", "-p", json.dumps(patch)]
    if status:
        args.append("--subresource=status")
    kubectl(*args)


def _kueue_admits(kubectl: Kubectl, namespace: str, job: str) -> None:
    _patch_job(kubectl, namespace, job, {"spec": {"suspend": False}})


def _kueue_preempts(kubectl: Kubectl, namespace: str, job: str) -> None:
    """What Kueue's Job integration does to stop an admitted Job (its `Stop`)."""
    _patch_job(
        kubectl, namespace, job, {"metadata": {"annotations": {STOPPING: "true"}}, "spec": {"suspend": True}}
    )
    _patch_job(kubectl, namespace, job, {"status": {"startTime": None}}, status=True)
    _patch_job(kubectl, namespace, job, {"metadata": {"annotations": {STOPPING: None}}})


def test_kueue_preemption_queues_the_job_and_readmission_resumes_it(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    name = "preemptible"
    deadline = 30
    manifest = trainingjob_manifest(
        name,
        run_seconds=600,
        annotations={"e2e.kubeforge.dev/terminate-seconds": "8"},
        queueName=QUEUE,
        activeDeadlineSeconds=deadline,
        policy={"permanentExitCodes": [137, 143], "backoffSeconds": 1},
    )
    kubectl.apply(manifest, namespace)
    job = f"{name}-a0"
    status = wait_trainingjob_phase(kubectl, namespace, name, "Queued")
    assert status_condition(status, "Admitted")["reason"] == "WaitingForKueue"
    job_obj = kubectl.get("job", job, namespace)
    assert job_obj["spec"]["suspend"] is True
    assert job_obj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == QUEUE

    # Kueue admits the workload; it runs for a while.
    _kueue_admits(kubectl, namespace, job)
    status = wait_trainingjob_phase(kubectl, namespace, name, "Running")
    assert status_condition(status, "Admitted")["reason"] == "KueueAdmitted"
    assert status.get("activeSince")
    time.sleep(6)

    # Kueue preempts it. The Job controller deletes the workers; the kubelet reports them killed.
    _kueue_preempts(kubectl, namespace, job)
    selector = f"kubeforge.dev/trainingjob={name}"

    def deleting() -> list[Obj] | None:
        pods = list_items(kubectl, "pods", namespace, selector)
        going = [p for p in pods if p["metadata"].get("deletionTimestamp")]
        return going if len(going) == 2 else None

    for pod, code in zip(
        wait_for(deleting, timeout=30, description="workers deleted"), (143, 137), strict=True
    ):
        kubelet_kills(kubectl, namespace, pod, code)

    status = wait_trainingjob_phase(kubectl, namespace, name, "Queued")
    assert status["restarts"] == 0
    assert status_condition(status, "Admitted")["reason"] == "SuspendedByKueue"
    assert status_condition(status, "Failed")["status"] == "False"
    assert status["workers"]["failed"] == 0  # stopped by the suspension, not failed
    assert "activeSince" not in status
    ran = status["activeSeconds"]
    assert 5 <= ran < deadline
    assert trainingjob_jobs(kubectl, namespace, name) == [job]  # the same attempt waits, nothing was deleted
    job_conditions = {
        c["type"]: c for c in kubectl.get("job", job, namespace)["status"].get("conditions") or []
    }
    assert "Failed" not in job_conditions  # the Job controller does not count the stopped workers either

    # Queued for longer than the deadline has left, with an operator restart in between: still Queued.
    operator.kill()
    operator.start()
    time.sleep(deadline - ran + 5)
    status = trainingjob_status(kubectl, namespace, name)
    assert (status["phase"], status["restarts"], status["activeSeconds"]) == ("Queued", 0, ran)
    reasons = [r for _, r, _ in trainingjob_events(kubectl, namespace, name)]
    assert "SuspendedByKueue" in reasons
    assert not {"WorkerFailed", "WorkerDisrupted", "PermanentExitCode", "DeadlineExceeded"} & set(reasons)

    # Kueue admits it again: the same attempt resumes, and the deadline counts on from what it used.
    _kueue_admits(kubectl, namespace, job)
    status = wait_trainingjob_phase(kubectl, namespace, name, "Running")
    assert (status["restarts"], status["jobName"]) == (0, job)
    assert status_condition(status, "Admitted")["reason"] == "KueueAdmitted"
    resumed = time.monotonic()
    status = wait_trainingjob_phase(kubectl, namespace, name, "Failed", timeout=deadline + 30)
    assert status_condition(status, "Failed")["reason"] == "DeadlineExceeded"
    assert deadline - ran - 3 <= time.monotonic() - resumed <= deadline - ran + 10
    assert status["restarts"] == 0
