"""TrainingJob end to end, on the local cluster with real kubectl: gang placement on GPU nodes, whole-gang
restarts, permanent failures, capacity queueing, suspend/resume, deadline, TTL, validation, GitOps-style
server-side apply, an operator killed with SIGKILL, and a lost node.

Each test gets a fresh namespace and its own operator process watching only that namespace (so tests
running in parallel, and other engineers' operators, never reconcile each other's objects). kwok plays
the workers: pods of a Job exit 0 after `e2e.kubeforge.dev/run-seconds`, or fail with
`e2e.kubeforge.dev/fail-exit-code` after `e2e.kubeforge.dev/fail-after-seconds`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from kubeforge_e2e import Kubectl, LocalCluster, wait_for
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.workloads import (
    ANNOTATION,
    TRAINER_IMAGE,
    Obj,
    container_env,
    get_trainingjob,
    list_items,
    status_condition,
    trainingjob_events,
    trainingjob_jobs,
    trainingjob_manifest,
    trainingjob_status,
    wait_trainingjob_phase,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

H100_PRODUCTS = {"NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe", "NVIDIA-H100-NVL", "NVIDIA-H100-SXM5-80GB"}


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def operator(training_operator: OperatorProcess) -> OperatorProcess:
    """This module's operator: the operator alone, resyncing every 2 s (conftest's `training_operator`)."""
    return training_operator


# --------------------------------------------------------------------------------------------- tests


def test_two_torchrun_workers_on_h100_succeed(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    name = "llama"
    kubectl.apply(trainingjob_manifest(name, run_seconds=4, distributed={"framework": "torchrun"}), namespace)
    status = wait_trainingjob_phase(kubectl, namespace, name, "Running")
    assert status["workersReady"] == "2/2"
    assert status_condition(status, "Ready")["status"] == "True"
    assert status_condition(status, "Admitted")["reason"] == "GangAdmitted"

    pods = list_items(kubectl, "pods", namespace, f"kubeforge.dev/trainingjob={name}")
    assert len(pods) == 2
    ranks = set()
    for pod in pods:
        index = pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        ranks.add(index)
        assert pod["spec"]["hostname"] == f"{name}-a0-{index}"
        assert pod["spec"]["subdomain"] == name
        env = container_env(pod)
        assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == f"{name}-a0-0.{name}.{namespace}.svc"
        assert env["MASTER_PORT"] == env["PET_MASTER_PORT"] == "29500"
        assert env["WORLD_SIZE"] == "8"
        assert env["NNODES"] == env["PET_NNODES"] == "2"
        assert env["NPROC_PER_NODE"] == env["PET_NPROC_PER_NODE"] == "4"
        rank_ref = {
            "fieldRef": {
                "apiVersion": "v1",
                "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']",
            }
        }
        assert env["NODE_RANK"] == env["PET_NODE_RANK"] == rank_ref
        assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
        node = kubectl.get("node", pod["spec"]["nodeName"])
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"] in H100_PRODUCTS
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert ranks == {"0", "1"}

    service = kubectl.get("service", name, namespace)
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True

    # The headless Service publishes the rank-0 hostname that MASTER_ADDR names.
    def rank0_published() -> bool:
        slices = list_items(kubectl, "endpointslices", namespace, f"kubernetes.io/service-name={name}")
        return any(ep.get("hostname") == f"{name}-a0-0" for s in slices for ep in s.get("endpoints") or [])

    wait_for(rank0_published, timeout=30, description="rank 0 in the Service's EndpointSlice")

    status = wait_trainingjob_phase(kubectl, namespace, name, "Succeeded")
    assert status["workers"]["succeeded"] == 2
    assert status["restarts"] == 0
    assert status["gpuHours"] > 0
    assert status["completionTime"] >= status["startTime"]
    ready = status_condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Succeeded")
    # In this order (a Queued while other tests hold the H100 nodes may come first).
    reasons = [reason for _, reason, _ in trainingjob_events(kubectl, namespace, name)]
    assert reasons[-3:] == ["GangAdmitted", "Running", "Succeeded"]
    header, row = kubectl("get", "tj", name, "-n", namespace).stdout.splitlines()[:2]
    assert header.split()[:6] == ["NAME", "PHASE", "WORKERS", "GPUS", "RESTARTS", "GPU-HOURS"]
    assert row.split()[:5] == [name, "Succeeded", "0/2", "4", "0"]


def test_worker_failure_restarts_the_gang_then_fails(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    name = "flaky"
    kubectl.apply(
        trainingjob_manifest(
            name,
            annotations={f"{ANNOTATION}fail-exit-code": "1", f"{ANNOTATION}fail-after-seconds": "1"},
            policy={"maxRestarts": 2, "backoffSeconds": 1},
        ),
        namespace,
    )
    status = wait_trainingjob_phase(kubectl, namespace, name, "Failed", timeout=120)
    assert status["restarts"] == 2
    assert status_condition(status, "Failed")["reason"] == "BackoffLimitExceeded"
    assert status_condition(status, "Stalled")["status"] == "True"
    assert "exited with code 1" in status["message"]
    assert trainingjob_jobs(kubectl, namespace, name) == [f"{name}-a2"]  # earlier attempts were removed
    events = trainingjob_events(kubectl, namespace, name)
    restarts = [e for e in events if e[0] == "Warning" and e[2].startswith("Restarting:")]
    assert len(restarts) == 2
    assert "restart 1 of 2" in restarts[0][2]
    assert events[-1][:2] == ("Warning", "BackoffLimitExceeded")
    metrics = operator.metrics()
    assert f'kubeforge_trainingjob_restarts_total{{namespace="{namespace}"}} 2.0' in metrics


def test_permanent_exit_code_fails_without_restart(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    name = "badconfig"
    kubectl.apply(
        trainingjob_manifest(
            name,
            annotations={f"{ANNOTATION}fail-exit-code": "42", f"{ANNOTATION}fail-after-seconds": "1"},
            policy={"maxRestarts": 3, "backoffSeconds": 1, "permanentExitCodes": [42]},
        ),
        namespace,
    )
    status = wait_trainingjob_phase(kubectl, namespace, name, "Failed")
    assert status["restarts"] == 0
    assert status_condition(status, "Failed")["reason"] == "PermanentExitCode"
    assert "exited with code 42, listed in spec.policy.permanentExitCodes" in status["message"]
    assert status["message"].startswith("worker ")
    assert trainingjob_jobs(kubectl, namespace, name) == [f"{name}-a0"]
    assert [r for t, r, _ in trainingjob_events(kubectl, namespace, name) if t == "Warning"] == [
        "PermanentExitCode"
    ]


def test_two_gangs_that_cannot_both_fit_run_one_after_the_other(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    # Each needs both 8-GPU H100 nodes of the cluster.
    names = ("gang-a", "gang-b")
    kubectl.apply(
        [trainingjob_manifest(n, run_seconds=4, resources={"gpus": 8, "gpuType": "H100"}) for n in names],
        namespace,
    )

    def one_queued() -> Obj | None:
        for n in names:
            status = trainingjob_status(kubectl, namespace, n)
            if status.get("phase") == "Queued":
                return status
        return None

    queued = wait_for(one_queued, timeout=60, description="one gang Queued")
    admitted = status_condition(queued, "Admitted")
    assert admitted["status"] == "False"
    assert admitted["reason"] == "InsufficientCapacity"
    assert "needs 2 workers x 8 GPUs (H100)" in queued["message"]
    # Never both holding part of the GPUs: until both have succeeded, the unfinished workers of only one
    # gang exist at a time. (The second may start a moment before the first's completionTime: its GPUs
    # are free once its workers have ended, before the Job controller marks the Job complete.)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        owners = {
            p["metadata"]["labels"]["kubeforge.dev/trainingjob"]
            for p in list_items(kubectl, "pods", namespace)
            if p["status"].get("phase") in ("Pending", "Running")
            and not p["metadata"].get("deletionTimestamp")
        }
        assert len(owners) <= 1, f"workers of {sorted(owners)} at once"
        if all(trainingjob_status(kubectl, namespace, n).get("phase") == "Succeeded" for n in names):
            break
        time.sleep(0.5)
    first, second = (wait_trainingjob_phase(kubectl, namespace, n, "Succeeded", timeout=5) for n in names)
    assert first["restarts"] == second["restarts"] == 0


def test_suspend_and_resume(kubectl: Kubectl, namespace: str, operator: OperatorProcess) -> None:
    name = "pausable"
    kubectl.apply(trainingjob_manifest(name, run_seconds=6), namespace)
    wait_trainingjob_phase(kubectl, namespace, name, "Running")
    kubectl("patch", "tj", name, "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    status = wait_trainingjob_phase(kubectl, namespace, name, "Suspended")
    assert status_condition(status, "Admitted")["reason"] == "Suspended"

    def workers_gone() -> bool:
        return not trainingjob_jobs(kubectl, namespace, name) and not list_items(
            kubectl, "pods", namespace, f"kubeforge.dev/trainingjob={name}"
        )

    wait_for(workers_gone, timeout=30, description="workers removed")
    assert get_trainingjob(kubectl, namespace, name)["spec"]["suspend"] is True

    kubectl("patch", "tj", name, "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    status = wait_trainingjob_phase(kubectl, namespace, name, "Running")
    assert status["restarts"] == 0
    assert trainingjob_jobs(kubectl, namespace, name) == [f"{name}-a0"]
    wait_trainingjob_phase(kubectl, namespace, name, "Succeeded")
    reasons = [r for _, r, _ in trainingjob_events(kubectl, namespace, name)]
    assert "Suspended" in reasons
    assert reasons.count("GangAdmitted") == 2


def test_deadline_fails_the_job_and_removes_its_workers(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    name = "slow"
    kubectl.apply(trainingjob_manifest(name, run_seconds=60, activeDeadlineSeconds=3), namespace)
    status = wait_trainingjob_phase(kubectl, namespace, name, "Failed", timeout=60)
    assert status_condition(status, "Failed")["reason"] == "DeadlineExceeded"
    wait_for(lambda: not trainingjob_jobs(kubectl, namespace, name), timeout=30, description="Job deleted")


def test_ttl_deletes_the_finished_trainingjob(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    name = "shortlived"
    kubectl.apply(trainingjob_manifest(name, run_seconds=1, workers=1, ttlSecondsAfterFinished=2), namespace)
    wait_for(
        lambda: kubectl.get("trainingjob", name, namespace) is None,
        timeout=60,
        description="TrainingJob deleted",
    )


INVALID: list[tuple[str, Obj, str]] = [
    ("zero-workers", {"workers": 0}, "spec.workers"),
    ("negative-gpus", {"resources": {"gpus": -1}}, "spec.resources.gpus"),
    ("unknown-framework", {"distributed": {"framework": "mpi"}}, "spec.distributed.framework"),
    ("empty-image", {"image": ""}, "spec.image"),
    (
        "procs-above-gpus",
        {"resources": {"gpus": 2}, "distributed": {"procsPerWorker": 4}},
        "spec.distributed.procsPerWorker",
    ),
    ("exit-code-zero", {"policy": {"permanentExitCodes": [0]}}, "spec.policy.permanentExitCodes"),
    ("gpu-type-without-gpus", {"resources": {"gpuType": "H100"}}, "spec.resources.gpuType"),
    ("port-out-of-range", {"distributed": {"port": 80}}, "spec.distributed.port"),
    (
        "relative-mount-path",
        {"checkpoint": {"claimName": "ckpt", "mountPath": "ckpt"}},
        "spec.checkpoint.mountPath",
    ),
    ("run-as-root", {"securityContext": {"runAsUser": 0}}, "spec.securityContext.runAsUser"),
    ("too-many-restarts", {"policy": {"maxRestarts": 1000}}, "spec.policy.maxRestarts"),
    ("negative-deadline", {"activeDeadlineSeconds": -1}, "spec.activeDeadlineSeconds"),
]


@pytest.mark.parametrize(("fields", "field"), [(f, p) for _, f, p in INVALID], ids=[i for i, _, _ in INVALID])
def test_invalid_trainingjobs_are_refused(
    kubectl: Kubectl, namespace: str, crds: None, fields: Obj, field: str
) -> None:
    manifest = {
        "apiVersion": "kubeforge.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "invalid"},
        "spec": {"image": TRAINER_IMAGE, **fields},
    }
    result = kubectl.run("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert result.returncode != 0
    assert field in result.stderr, result.stderr
    assert kubectl.get("trainingjob", "invalid", namespace) is None


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("9lives", "metadata.name must be a DNS label"),
        ("n" * 53, "metadata.name must be at most 52 characters"),
    ],
    ids=["starts-with-digit", "too-long"],
)
def test_names_that_would_break_children_are_refused(
    kubectl: Kubectl, namespace: str, crds: None, name: str, message: str
) -> None:
    manifest = trainingjob_manifest(name)
    result = kubectl.run("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_immutable_fields_are_refused_on_update(kubectl: Kubectl, namespace: str, crds: None) -> None:
    kubectl.apply(trainingjob_manifest("fixed", suspend=True), namespace)
    changed = trainingjob_manifest("fixed", suspend=True, workers=4)
    result = kubectl.run("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(changed), check=False)
    assert result.returncode != 0
    assert "spec.workers is immutable" in result.stderr
    # Fields that only shape the next attempt may change.
    kubectl.apply(trainingjob_manifest("fixed", suspend=True, image=f"{TRAINER_IMAGE}-v2"), namespace)


def test_server_side_apply_twice_changes_nothing_and_the_operator_never_writes_spec(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    name = "gitops"
    text = yaml.safe_dump(trainingjob_manifest(name, run_seconds=1))

    def apply() -> None:
        kubectl.run(
            "apply", "--server-side", "--field-manager=argocd", "-n", namespace, "-f", "-", input=text
        )

    apply()
    wait_trainingjob_phase(kubectl, namespace, name, "Succeeded")
    before = get_trainingjob(kubectl, namespace, name)
    apply()  # what a GitOps tool does on every sync: no conflict (check=True), no change
    after = kubectl.json("get", "trainingjob", name, "-n", namespace, "--show-managed-fields")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"] == 1
    managers = {(m["manager"], m.get("subresource", "")): m for m in after["metadata"]["managedFields"]}
    assert ("argocd", "") in managers
    kubeforge = [m for (manager, _), m in managers.items() if manager == "kubeforge"]
    assert kubeforge, managers.keys()
    for entry in kubeforge:
        assert entry.get("subresource") == "status"
        assert set(entry["fieldsV1"]) == {"f:status"}
    # Nobody but the user's manager touches the object itself (no finalizers, no annotations).
    assert {manager for manager, sub in managers if sub == ""} == {"argocd"}
    assert not after["metadata"].get("finalizers")


def test_operator_killed_mid_reconcile_creates_no_duplicates(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    name = "survivor"
    # Long enough to still be Running after the kills below, each followed by a restart that waits for
    # the caches to sync (seconds on a loaded machine).
    kubectl.apply(trainingjob_manifest(name, run_seconds=20), namespace)
    # SIGKILL a few times while it creates the Service and the Job and writes status.
    for delay in (0.1, 0.4, 0.8):
        time.sleep(delay)
        operator.kill()
        operator.start()
    wait_trainingjob_phase(kubectl, namespace, name, "Running")
    operator.kill()
    time.sleep(1)
    operator.start()
    status = wait_trainingjob_phase(kubectl, namespace, name, "Succeeded")
    assert status["restarts"] == 0
    assert trainingjob_jobs(kubectl, namespace, name) == [f"{name}-a0"]
    assert [s["metadata"]["name"] for s in list_items(kubectl, "services", namespace)] == [name]
    pods = list_items(kubectl, "pods", namespace, f"kubeforge.dev/trainingjob={name}")
    assert sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods) == [
        "0",
        "1",
    ]
    reasons = [r for _, r, _ in trainingjob_events(kubectl, namespace, name)]
    assert reasons.count("Succeeded") == 1


def test_node_loss_restarts_the_gang(
    cluster: LocalCluster,
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    spare_nodes: tuple[str, list[str]],
) -> None:
    product, _ = spare_nodes
    name = "resilient"
    kubectl.apply(
        trainingjob_manifest(
            name,
            run_seconds=8,
            resources={"gpus": 4, "gpuType": product},
            policy={"backoffSeconds": 1, "nodeLossTimeoutSeconds": 5},
        ),
        namespace,
    )
    wait_trainingjob_phase(kubectl, namespace, name, "Running")
    [victim] = [
        p["spec"]["nodeName"]
        for p in list_items(kubectl, "pods", namespace, f"kubeforge.dev/trainingjob={name}")
        if p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "1"
    ]
    cluster.delete_node(victim)

    def restarted() -> Obj | None:
        status = trainingjob_status(kubectl, namespace, name)
        return status if status.get("restarts") == 1 else None

    wait_for(restarted, timeout=60, description="gang restart after node loss")
    status = wait_trainingjob_phase(kubectl, namespace, name, "Running", timeout=60)
    pods = list_items(kubectl, "pods", namespace, f"kubeforge.dev/trainingjob={name},kubeforge.dev/attempt=1")
    assert len(pods) == 2
    assert victim not in {p["spec"]["nodeName"] for p in pods}
    warnings = [(r, m) for t, r, m in trainingjob_events(kubectl, namespace, name) if t == "Warning"]
    assert warnings
    assert warnings[0][0] in ("NodeLost", "WorkerFailed")
    status = wait_trainingjob_phase(kubectl, namespace, name, "Succeeded", timeout=60)
    assert status["restarts"] == 1


def test_samples_are_valid(kubectl: Kubectl, namespace: str, crds: None) -> None:
    root = Path(__file__).resolve().parents[1] / "samples"
    for path in sorted(root.glob("trainingjob-*.yaml")):
        result = kubectl.run("apply", "--dry-run=server", "-n", namespace, "-f", str(path))
        assert "created (server dry run)" in result.stdout, json.dumps(result.stdout)
