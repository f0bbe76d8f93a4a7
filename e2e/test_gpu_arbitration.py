"""GPU arbitration end to end: a cluster full with an elastic TrainingJob at its maximum and an autoscaling
InferenceFleet on the same GPU product. A latency breach makes the fleet want replicas the cluster has no
room for; the fleet borrows the elastic job's workers above its minimum (recorded in the fleet's
`status.borrowed`), the job shrinks to the ceiling that record implies, the fleet's new replicas are
placed by the real scheduler and become Ready; when the load drops and the fleet stays calm for
`--gpu-return-after-seconds`, it gives the GPUs back and the job grows back to its maximum. A job that says
`preemptible: false` is never touched: the fleet stays `CapacityLimited` and says why.

The pool is the `spare_nodes` fixture (three nodes of 4 GPUs of a product of their own): the fleet's
first replica (2 GPUs) and the job's 5 workers (2 GPUs each) fill it exactly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubeforge_e2e import Kubectl, LocalCluster, wait_for
from kubeforge_e2e.loadsim import LoadSimulator
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.prometheus import PrometheusProcess
from kubeforge_e2e.workloads import LENDING_AUTOSCALING as AUTOSCALING
from kubeforge_e2e.workloads import LENDING_MODEL as MODEL
from kubeforge_e2e.workloads import (
    Obj,
    condition,
    container_env,
    fleet,
    get_fleet,
    list_items,
    start_operator,
    trainingjob_events,
    trainingjob_manifest,
    trainingjob_status,
    wait_ready,
    wait_trainingjob_phase,
)

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus, pytest.mark.timeout(420)]

RETURN_AFTER = 10
"""`--gpu-return-after-seconds` of these tests (the default is 300)."""


@pytest.fixture
def operator(
    cluster: LocalCluster,
    crds: None,
    namespace: str,
    prometheus: PrometheusProcess,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    """The operator on the test's namespace, reading `prometheus`, giving borrowed GPUs back after 10 s."""
    args = ["--prometheus-url", prometheus.url, "--gpu-return-after-seconds", str(RETURN_AFTER)]
    proc = start_operator(cluster, namespace, tmp_path, args)
    try:
        yield proc
    finally:
        proc.stop()
        print(f"--- operator log ({proc.log_path}) ---\n{proc.tail(150)}")


def _full(
    kubectl: Kubectl,
    namespace: str,
    product: str,
    loadsim: LoadSimulator,
    *,
    max_workers: int = 5,
    before: Obj | None = None,
    **job: Any,
) -> None:
    """The fleet at 1 replica (2 GPUs), the `before` TrainingJob Running if any, then the elastic job
    admitted at its `max_workers` (by default 5: the other 10 GPUs): the pool is full."""
    loadsim.set_load(namespace, "chat", 5, **MODEL)
    resources = {"gpus": 2, "gpuType": product}
    kubectl.apply(fleet("chat", resources=resources, autoscaling=AUTOSCALING), namespace)
    wait_ready(kubectl, namespace, "chat")
    if before is not None:
        kubectl.apply(before, namespace)
        wait_trainingjob_phase(kubectl, namespace, before["metadata"]["name"], "Running")
    manifest = trainingjob_manifest(
        "train",
        run_seconds=3600,
        resources=resources,
        elastic={"minWorkers": 2, "maxWorkers": max_workers},
        **job,
    )
    del manifest["spec"]["workers"]  # exclusive with elastic
    kubectl.apply(manifest, namespace)
    status = wait_trainingjob_phase(kubectl, namespace, "train", "Running")
    assert status["workers"]["current"] == max_workers, status


def _current(kubectl: Kubectl, namespace: str) -> int:
    return int((trainingjob_status(kubectl, namespace, "train").get("workers") or {}).get("current") or 0)


def _fleet_status(kubectl: Kubectl, namespace: str) -> Obj:
    return dict(get_fleet(kubectl, namespace, "chat").get("status") or {})


def _borrowing(kubectl: Kubectl, namespace: str, interval: float) -> None:
    wait_for(
        lambda: _fleet_status(kubectl, namespace).get("borrowed"),
        timeout=90,
        interval=interval,
        description="the fleet borrowing GPUs",
    )


def _at_three_ready(kubectl: Kubectl, namespace: str) -> Obj:
    status: Obj = wait_for(
        lambda: s if (s := _fleet_status(kubectl, namespace)).get("readyReplicas") == 3 else None,
        timeout=150,
        interval=0.5,
        description="the fleet at 3 ready replicas",
    )
    return status


def _given_back(
    kubectl: Kubectl, namespace: str, loadsim: LoadSimulator, rps: float, max_workers: int = 5
) -> None:
    """The load drops to `rps`: the fleet scales down, stays calm for RETURN_AFTER seconds and gives the
    GPUs back; the job grows back to its maximum by its own growth."""
    loadsim.set_load(namespace, "chat", rps, **MODEL)
    wait_for(
        lambda: not _fleet_status(kubectl, namespace).get("borrowed"),
        timeout=300,
        interval=0.5,
        description="the fleet giving the GPUs back",
    )
    wait_for(
        lambda: _current(kubectl, namespace) == max_workers,
        timeout=120,
        description=f"the job back at {max_workers} workers",
    )


def test_a_breaching_fleet_borrows_elastic_workers_and_gives_them_back_after_the_hysteresis(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    loadsim: LoadSimulator,
    spare_nodes: tuple[str, list[str]],
) -> None:
    product, _ = spare_nodes
    _full(kubectl, namespace, product, loadsim)

    # 50 requests per second against one replica that serves 20: the fleet wants 3, has room for 1.
    loadsim.set_load(namespace, "chat", 50, **MODEL)
    start = time.monotonic()
    wait_for(
        lambda: int(_fleet_status(kubectl, namespace).get("desiredReplicas") or 0) > 1,
        timeout=60,
        interval=0.2,
        description="the autoscaler asking for more replicas",
    )
    breach = time.monotonic()
    _borrowing(kubectl, namespace, interval=0.2)
    lent = time.monotonic()
    wait_for(
        lambda: int(_fleet_status(kubectl, namespace).get("readyReplicas") or 0) >= 2,
        timeout=90,
        interval=0.2,
        description="a borrowed replica Ready",
    )
    ready = time.monotonic()
    print(
        f"breach->lent {lent - breach:.1f}s, lent->Ready {ready - lent:.1f}s "
        f"(load step->breach {breach - start:.1f}s)"
    )
    [entry] = _at_three_ready(kubectl, namespace)["borrowed"]
    assert entry["job"] == f"{namespace}/train"
    # Two workers make room for the two missing replicas; a third can go when a pass counts free GPUs
    # before an admitted gang's unplaced workers (docs/arbitration.md, "Limits": one step too many).
    assert entry["workers"] in (2, 3), entry
    assert (entry["gpus"], entry["fromWorkers"]) == (2 * entry["workers"], 5), entry
    assert _current(kubectl, namespace) == 5 - entry["workers"], (
        "the job shrank to the ceiling, above its minimum"
    )
    job = trainingjob_status(kubectl, namespace, "train")
    assert job["lastResize"]["reason"] == "LentToFleet"
    assert (job["restarts"], job["attempt"], job["phase"]) == (0, 0, "Running"), "a shrink is no restart"
    fleet_events = kubectl.json(
        "get", "events", "-n", namespace, "--field-selector", "reason=BorrowedGpus", "-o", "json"
    )["items"]
    assert fleet_events, "no BorrowedGpus Event on the fleet"
    assert any(r == "LentToFleet" for _, r, _ in trainingjob_events(kubectl, namespace, "train"))

    # Down to 1 request/s, not to the 5 it started at: on a loaded machine the simulated server is
    # slower too, and the fleet may rightly keep 2 replicas at 5/s, which leaves no room for the job's
    # fifth worker.
    _given_back(kubectl, namespace, loadsim, rps=1)
    returned = kubectl.json(
        "get", "events", "-n", namespace, "--field-selector", "reason=ReturnedGpus", "-o", "json"
    )["items"]
    assert returned, "no ReturnedGpus Event on the fleet"
    metrics = operator.metrics()
    for direction in ("lend", "return"):
        line = f'kubeforge_gpu_lends_total{{direction="{direction}",namespace="{namespace}"}}'
        counted = [x for x in metrics.splitlines() if x.startswith(line)]
        assert counted, f"{direction} not counted"
        assert float(counted[0].rsplit(" ", 1)[1]) == entry["gpus"], f"{direction}: {counted[0]}"


def test_a_non_preemptible_job_is_never_touched_and_the_fleet_says_why(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    loadsim: LoadSimulator,
    spare_nodes: tuple[str, list[str]],
) -> None:
    product, _ = spare_nodes
    _full(kubectl, namespace, product, loadsim, preemptible=False)
    loadsim.set_load(namespace, "chat", 50, **MODEL)

    def limited() -> Obj | None:
        found = condition(get_fleet(kubectl, namespace, "chat"), "CapacityLimited")
        return found if found and found.get("reason") == "NoLendableGpus" else None

    cond: Obj = wait_for(limited, timeout=90, interval=0.5, description="CapacityLimited=NoLendableGpus")
    assert cond["status"] == "True"
    assert f"{namespace}/train is not preemptible" in cond["message"], cond
    time.sleep(6)  # a few more evaluations: still nothing taken
    assert not _fleet_status(kubectl, namespace).get("borrowed")
    assert _current(kubectl, namespace) == 5
    assert "lastResize" not in trainingjob_status(kubectl, namespace, "train")


def test_operator_killed_mid_lend_loses_no_gpu_and_leaves_no_job_half_shrunk(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    loadsim: LoadSimulator,
    spare_nodes: tuple[str, list[str]],
) -> None:
    product, _ = spare_nodes
    _full(kubectl, namespace, product, loadsim)
    loadsim.set_load(namespace, "chat", 50, **MODEL)
    # SIGKILL as soon as the fleet has recorded a lend, before (or just after) the job acted on it.
    _borrowing(kubectl, namespace, interval=0.05)
    operator.kill()
    time.sleep(2)
    operator.start()
    # The restarted operator derives the job's ceiling from the fleet's record: the lend completes.
    status = _at_three_ready(kubectl, namespace)
    taken = sum(int(e["workers"]) for e in status["borrowed"])
    assert _current(kubectl, namespace) == 5 - taken, "the job is at exactly the ceiling the record implies"
    # And the give-back completes too: no GPU stays lent, the job is back at its maximum.
    _given_back(kubectl, namespace, loadsim, rps=1)


def test_a_rigid_preemptible_job_is_taken_whole_after_its_checkpoint_and_resumes_from_it(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    loadsim: LoadSimulator,
    spare_nodes: tuple[str, list[str]],
) -> None:
    """The pool: the fleet's replica (2 GPUs), a rigid `preemptible: true` job of 2 x 2 GPUs and the
    elastic job at its maximum of 3 x 2. The fleet wants 2 more replicas, more than the elastic job's one
    worker above its minimum: the rigid job is taken whole. (Asked one replica at a time, the elastic
    worker goes first and the rigid job for the second; asked both at once, the rigid job alone covers
    them and the shrink would be needless: the autoscaler's step decides which, so both are accepted.)
    The operator asks the rigid job's
    workers for a checkpoint (the test answers as rank 0 would), stops them once it is in, and keeps the
    job Queued while the fleet holds it; after the give-back it runs again from that checkpoint."""
    product, _ = spare_nodes
    rigid = trainingjob_manifest(
        "rigid",
        run_seconds=3600,
        workers=2,
        resources={"gpus": 2, "gpuType": product},
        preemptible=True,
        checkpoint={"gracePeriodSeconds": 120},
    )
    _full(kubectl, namespace, product, loadsim, max_workers=3, before=rigid)

    loadsim.set_load(namespace, "chat", 50, **MODEL)

    def asked() -> list[Obj] | None:
        pods = [
            p
            for p in list_items(kubectl, "pods", namespace, "kubeforge.dev/trainingjob=rigid")
            if not p["metadata"].get("deletionTimestamp")
        ]
        requested = [
            p for p in pods if "kubeforge.dev/checkpoint-request" in p["metadata"].get("annotations", {})
        ]
        return requested if len(requested) == 2 else None

    workers = wait_for(asked, timeout=120, interval=0.5, description="the rigid job asked for a checkpoint")
    borrowed = {e["job"]: e for e in _fleet_status(kubectl, namespace)["borrowed"]}
    assert borrowed[f"{namespace}/rigid"]["whole"] is True
    assert (borrowed[f"{namespace}/rigid"]["workers"], borrowed[f"{namespace}/rigid"]["gpus"]) == (2, 4)
    if f"{namespace}/train" in borrowed:
        elastic_entry = borrowed[f"{namespace}/train"]
        assert (elastic_entry["workers"], elastic_entry.get("whole", False)) == (1, False), "a shrink"
    waiting = trainingjob_status(kubectl, namespace, "rigid")
    assert waiting["phase"] == "Running", "nothing is stopped before the checkpoint"
    assert waiting["preemption"]["reason"] == "LentToFleet"

    rank0 = next(
        p
        for p in workers
        if p["metadata"]["annotations"].get("batch.kubernetes.io/job-completion-index") == "0"
    )
    report = json.dumps({"step": 700, "path": "s3://ckpt/700"})
    kubectl(
        "annotate",
        "pod",
        rank0["metadata"]["name"],
        "-n",
        namespace,
        "--overwrite",
        f"kubeforge.dev/checkpoint={report}",
    )

    def held() -> Obj | None:
        status = trainingjob_status(kubectl, namespace, "rigid")
        admitted = condition({"status": status}, "Admitted") or {}
        return status if status.get("phase") == "Queued" and admitted.get("reason") == "LentToFleet" else None

    queued: Obj = wait_for(held, timeout=90, interval=0.5, description="the rigid job Queued (LentToFleet)")
    [record] = queued["preemptions"]
    assert (record["reason"], record["outcome"], record["checkpointStep"]) == (
        "LentToFleet",
        "checkpointed",
        700,
    )
    assert queued["restarts"] == 0
    status = _at_three_ready(kubectl, namespace)
    shrunk = sum(int(e["workers"]) for e in status["borrowed"] if e["job"] == f"{namespace}/train")
    assert _current(kubectl, namespace) == 3 - shrunk, "the elastic job at the ceiling the record implies"
    time.sleep(4)  # a few passes while the fleet holds it: not admitted again
    assert trainingjob_status(kubectl, namespace, "rigid")["phase"] == "Queued"
    assert any(r == "Preempted" for _, r, _ in trainingjob_events(kubectl, namespace, "rigid"))

    _given_back(kubectl, namespace, loadsim, rps=1, max_workers=3)
    wait_trainingjob_phase(kubectl, namespace, "rigid", "Running", timeout=120)

    def resumed() -> list[Obj] | None:
        pods = [
            p
            for p in list_items(kubectl, "pods", namespace, "kubeforge.dev/trainingjob=rigid")
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        ]
        ok = len(pods) == 2 and all(container_env(p).get("KUBEFORGE_CHECKPOINT_STEP") == "700" for p in pods)
        return pods if ok else None

    wait_for(resumed, timeout=60, description="the rigid job's workers resuming from step 700")
