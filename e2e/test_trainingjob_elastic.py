"""Elastic TrainingJobs against the real kube-scheduler, Job controller and API server: an elastic job on a
partly full pool starts with the workers that fit, grows in place (same attempt, same Job, no restart)
when another job finishes and frees GPUs, and says so in its status and an Event; an operator killed in
the middle of a growth leaves no duplicate and no orphaned worker.

Each test gets a fresh namespace, its own operator, and GPU nodes of a product of its own (the
`spare_nodes` fixture of test_trainingjob.py: three nodes of 4 GPUs), so the pool is exactly what the test
fills. kwok plays the workers: each runs for the seconds its pod annotation says, then exits 0.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from kubeforge_e2e import GpuSpec, Kubectl, LocalCluster, NodeSpec, wait_for
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.workloads import (
    Obj,
    container_env,
    get_trainingjob,
    list_items,
    trainingjob_events,
    trainingjob_jobs,
    trainingjob_manifest,
    trainingjob_status,
    wait_trainingjob_phase,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture
def operator(training_operator: OperatorProcess) -> OperatorProcess:
    """The operator alone on the test's namespace, resyncing every 2 s (conftest's `training_operator`)."""
    return training_operator


SCHEDULE_TIMEOUT = 10
"""`policy.scheduleTimeoutSeconds` of the give-back test (its least)."""

INDEX = "batch.kubernetes.io/job-completion-index"


def _elastic(name: str, product: str, *, run_seconds: float, minimum: int, maximum: int) -> Obj:
    manifest = trainingjob_manifest(
        name,
        run_seconds=run_seconds,
        resources={"gpus": 2, "gpuType": product},
        elastic={"minWorkers": minimum, "maxWorkers": maximum},
    )
    del manifest["spec"]["workers"]  # exclusive with elastic
    return manifest


def _filler(name: str, product: str, run_seconds: float) -> Obj:
    """A rigid gang of 2 x 4 GPUs: two of the three spare nodes, whole."""
    return trainingjob_manifest(
        name, run_seconds=run_seconds, workers=2, resources={"gpus": 4, "gpuType": product}
    )


def _workers(kubectl: Kubectl, namespace: str, name: str) -> list[Obj]:
    """The job's pods that are not going away."""
    return [
        p
        for p in list_items(kubectl, "pods", namespace, f"kubeforge.dev/trainingjob={name}")
        if not p["metadata"].get("deletionTimestamp")
    ]


def _current(kubectl: Kubectl, namespace: str, name: str, workers: int) -> Obj | None:
    status = trainingjob_status(kubectl, namespace, name)
    return status if (status.get("workers") or {}).get("current") == workers else None


def _start_partly_full(kubectl: Kubectl, namespace: str, product: str, name: str) -> Obj:
    """The filler holds 8 of the 12 GPUs; the elastic job (1-4 workers of 2 GPUs) starts with the 2 that
    fit in the 4 left, and is Running with them."""
    kubectl.apply(_filler("filler", product, run_seconds=25), namespace)
    wait_trainingjob_phase(kubectl, namespace, "filler", "Running")
    kubectl.apply(_elastic(name, product, run_seconds=240, minimum=1, maximum=4), namespace)
    status = wait_trainingjob_phase(kubectl, namespace, name, "Running")
    assert status["workers"]["current"] == 2, status
    assert (status["workers"]["min"], status["workers"]["max"]) == (1, 4)
    assert status["workersReady"].endswith("(1-4)")
    assert "lastResize" not in status, "admission at 2 is not a resize"
    return status


def _assert_one_attempt_of(kubectl: Kubectl, namespace: str, name: str, workers: int) -> None:
    """One Job, sized `workers`, and exactly one live pod per index 0..workers-1: nothing duplicated,
    nothing left over."""
    assert trainingjob_jobs(kubectl, namespace, name) == [f"{name}-a0"]
    job = kubectl.json("get", "job", f"{name}-a0", "-n", namespace)
    assert (job["spec"]["parallelism"], job["spec"]["completions"]) == (workers, workers)
    indexes = sorted(int(p["metadata"]["annotations"][INDEX]) for p in _workers(kubectl, namespace, name))
    assert indexes == list(range(workers)), indexes


def test_elastic_job_starts_with_what_fits_and_grows_when_gpus_free_up(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess, spare_nodes: tuple[str, list[str]]
) -> None:
    product, _ = spare_nodes
    name = "stretchy"
    _start_partly_full(kubectl, namespace, product, name)
    # Every worker runs torchrun's elastic launch against rank 0's c10d rendezvous.
    [rank0] = [p for p in _workers(kubectl, namespace, name) if p["metadata"]["annotations"][INDEX] == "0"]
    env = container_env(rank0)
    assert env["PET_NNODES"] == "1:4"
    assert env["PET_RDZV_BACKEND"] == "c10d"
    assert env["PET_RDZV_ENDPOINT"] == f"{name}-a0-0.{name}.{namespace}.svc:29500"
    assert "WORLD_SIZE" not in env

    wait_trainingjob_phase(kubectl, namespace, "filler", "Succeeded")
    status: Obj = wait_for(
        lambda: _current(kubectl, namespace, name, 4), timeout=90, description="the elastic job grown to 4"
    )
    resize: dict[str, Any] = status["lastResize"]
    assert (resize["from"], resize["to"], resize["reason"]) == (2, 4, "CapacityFreed")
    # Grown in place: the same attempt, no restart, Running throughout.
    assert (status["restarts"], status["attempt"], status["phase"]) == (0, 0, "Running")
    wait_for(
        lambda: (
            len([p for p in _workers(kubectl, namespace, name) if p["status"].get("phase") == "Running"]) == 4
        ),
        timeout=60,
        description="4 workers running",
    )
    _assert_one_attempt_of(kubectl, namespace, name, 4)
    events = [(r, m) for _, r, m in trainingjob_events(kubectl, namespace, name)]
    assert any(r == "CapacityFreed" and m.startswith("grew from 2 workers to 4") for r, m in events), events
    assert not any(r in ("Restarting", "WorkerFailed", "WorkerDisrupted") for r, _ in events), events
    grew = [
        line
        for line in operator.metrics().splitlines()
        if line.startswith("kubeforge_trainingjob_resizes_total{")
        and 'direction="up"' in line
        and 'reason="CapacityFreed"' in line
    ]
    assert grew, "no resize counted"
    assert float(grew[0].rsplit(" ", 1)[1]) >= 1


def test_operator_killed_mid_growth_leaves_no_duplicate_or_orphaned_worker(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess, spare_nodes: tuple[str, list[str]]
) -> None:
    product, _ = spare_nodes
    name = "survivor"
    _start_partly_full(kubectl, namespace, product, name)

    def grown() -> bool:
        job = kubectl.json("get", "job", f"{name}-a0", "-n", namespace)
        return int(job["spec"]["parallelism"]) > 2

    # SIGKILL as soon as the operator has resized the Job, before (or just after) it wrote the status.
    wait_for(grown, timeout=90, interval=0.05, description="the Job resized")
    operator.kill()
    time.sleep(2)
    operator.start()
    status: Obj = wait_for(
        lambda: _current(kubectl, namespace, name, 4), timeout=90, description="the elastic job at 4"
    )
    assert (status["restarts"], status["attempt"]) == (0, 0)
    assert status["lastResize"]["to"] == 4
    assert status["lastResize"]["reason"] == "CapacityFreed"
    wait_for(lambda: len(_workers(kubectl, namespace, name)) == 4, timeout=60, description="4 live workers")
    _assert_one_attempt_of(kubectl, namespace, name, 4)
    # A second restart of a converged operator changes nothing.
    before = trainingjob_status(kubectl, namespace, name)
    operator.kill()
    operator.start()
    time.sleep(5)
    after = trainingjob_status(kubectl, namespace, name)
    assert after["lastResize"] == before["lastResize"]
    _assert_one_attempt_of(kubectl, namespace, name, 4)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"elastic": {"minWorkers": 4, "maxWorkers": 2}}, "spec.elastic.minWorkers must not exceed"),
        ({"workers": 2, "elastic": {"minWorkers": 1, "maxWorkers": 2}}, "spec.workers and spec.elastic are"),
        ({"elastic": {"minWorkers": 1, "maxWorkers": 2}, "queueName": "q"}, "cannot be combined with"),
        (
            {"elastic": {"minWorkers": 1, "maxWorkers": 2}, "distributed": {"framework": "none"}},
            "needs spec.distributed.framework torchrun",
        ),
        ({"elastic": {"minWorkers": 0, "maxWorkers": 2}}, "spec.elastic.minWorkers"),
    ],
    ids=["min-above-max", "with-workers", "with-queue", "not-torchrun", "zero"],
)
def test_invalid_elastic_specs_are_refused_by_the_api_server(
    kubectl: Kubectl, namespace: str, crds: None, fields: Obj, message: str
) -> None:
    manifest = trainingjob_manifest("invalid", **fields)
    if "workers" not in fields:
        del manifest["spec"]["workers"]
    result = kubectl.run("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert kubectl.get("trainingjob", "invalid", namespace) is None


def test_elastic_bounds_and_the_switch_to_a_fixed_size_are_immutable(
    kubectl: Kubectl, namespace: str, crds: None
) -> None:
    manifest = trainingjob_manifest("bounded", suspend=True, elastic={"minWorkers": 1, "maxWorkers": 2})
    del manifest["spec"]["workers"]
    kubectl.apply(manifest, namespace)
    stored = get_trainingjob(kubectl, namespace, "bounded")
    assert "workers" not in stored["spec"], "no default may make workers and elastic both set"
    wider = trainingjob_manifest("bounded", suspend=True, elastic={"minWorkers": 1, "maxWorkers": 3})
    del wider["spec"]["workers"]
    fixed = trainingjob_manifest("bounded", suspend=True, workers=2)
    for changed in (wider, fixed):
        result = kubectl.run("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(changed), check=False)
        assert result.returncode != 0
        assert "spec.elastic is immutable" in result.stderr, result.stderr
    # A rigid job written without workers may later say `workers: 1`: the same size.
    rigid = trainingjob_manifest("rigid", suspend=True)
    del rigid["spec"]["workers"]
    kubectl.apply(rigid, namespace)
    kubectl.apply(trainingjob_manifest("rigid", suspend=True, workers=1), namespace)


@pytest.fixture
def cpu_short_nodes(cluster: LocalCluster) -> Iterator[tuple[str, list[str]]]:
    """Two nodes of a GPU product of their own: `roomy` (2 GPUs, 64 CPUs) and `cramped` (4 GPUs, 4 CPUs).
    The capacity ledger counts GPUs only, so workers asking 8 CPUs look like they fit on `cramped`."""
    product = f"KF-E2E-{secrets.token_hex(3).upper()}"
    suffix = product[-6:].lower()
    nodes = [
        NodeSpec(name=f"tj-roomy-{suffix}", zone="zone-c", cpu="64", gpu=GpuSpec(product, 2, 1024)),
        NodeSpec(name=f"tj-cramped-{suffix}", zone="zone-c", cpu="4", gpu=GpuSpec(product, 4, 1024)),
    ]
    for node in nodes:
        cluster.add_node(node)
    try:
        yield product, [n.name for n in nodes]
    finally:
        for node in nodes:
            if cluster.get_node(node.name) is not None:
                cluster.delete_node(node.name)


def test_added_workers_that_cannot_be_placed_are_given_back_without_a_restart(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    cpu_short_nodes: tuple[str, list[str]],
) -> None:
    """The elastic job starts with 1 worker on `roomy` while a filler holds `cramped`'s GPUs. The filler
    ends, the ledger sees 4 free GPUs and the job grows to 3; the scheduler cannot place the 2 added
    workers (8 CPUs each, `cramped` has 4), so after the schedule timeout the job gives them back: a
    shrink to 1 with reason CapacityReclaimed, on the same attempt, and not a failure of its Job."""
    product, (roomy, _) = cpu_short_nodes
    kubectl.apply(
        trainingjob_manifest(
            "filler", run_seconds=15, workers=1, resources={"gpus": 4, "gpuType": product, "cpu": "1"}
        ),
        namespace,
    )
    wait_trainingjob_phase(kubectl, namespace, "filler", "Running")
    manifest = trainingjob_manifest(
        "squeezed",
        run_seconds=240,
        resources={"gpus": 2, "gpuType": product, "cpu": "8"},
        elastic={"minWorkers": 1, "maxWorkers": 3},
        policy={"scheduleTimeoutSeconds": SCHEDULE_TIMEOUT},
    )
    del manifest["spec"]["workers"]
    kubectl.apply(manifest, namespace)
    started = wait_trainingjob_phase(kubectl, namespace, "squeezed", "Running")
    assert started["workers"]["current"] == 1
    [first] = _workers(kubectl, namespace, "squeezed")
    assert first["spec"]["nodeName"] == roomy

    wait_for(lambda: _current(kubectl, namespace, "squeezed", 3), timeout=90, description="grown to 3")
    status: Obj = wait_for(
        lambda: _current(kubectl, namespace, "squeezed", 1), timeout=90, description="given back to 1"
    )
    resize = status["lastResize"]
    assert (resize["from"], resize["to"], resize["reason"]) == (3, 1, "CapacityReclaimed")
    assert (status["restarts"], status["attempt"], status["phase"]) == (0, 0, "Running")
    wait_for(
        lambda: len(_workers(kubectl, namespace, "squeezed")) == 1, timeout=60, description="1 live worker"
    )
    _assert_one_attempt_of(kubectl, namespace, "squeezed", 1)
    job = kubectl.json("get", "job", "squeezed-a0", "-n", namespace)
    assert not any(
        c["type"] in ("Failed", "FailureTarget") and c["status"] == "True"
        for c in job["status"].get("conditions") or []
    ), job["status"]
    reasons = [r for _, r, _ in trainingjob_events(kubectl, namespace, "squeezed")]
    assert "CapacityReclaimed" in reasons
    assert not any(r in ("Restarting", "WorkerFailed", "WorkerDisrupted", "ScheduleTimeout") for r in reasons)
    # It does not try again at once: growth waits a schedule timeout after a give-back.
    time.sleep(SCHEDULE_TIMEOUT / 2)
    assert trainingjob_status(kubectl, namespace, "squeezed")["workers"]["current"] == 1
