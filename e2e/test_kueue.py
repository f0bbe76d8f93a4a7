"""TrainingJobs queued through the real Kueue, end to end on the local cluster.

Kueue's manager (built from the pinned `sigs.k8s.io/kueue` module) runs next to the control plane for
this module only (see kubeforge_e2e/kueue.py); it admits, orders and preempts the TrainingJobs' Jobs on
its own. Nothing here plays Kueue's part: the tests set up quota the way a platform team does (a
ResourceFlavor, a ClusterQueue with a GPU quota, a LocalQueue in the namespace) and read what Kueue
decided from its Workload objects and from the TrainingJobs' status.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kubeforge_e2e import Kubectl, LocalCluster, kueue, wait_for
from kubeforge_e2e.loadsim import LoadSimulator
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.prometheus import PrometheusProcess
from kubeforge_e2e.workloads import (
    LENDING_AUTOSCALING,
    LENDING_MODEL,
    Obj,
    condition,
    fleet,
    get_fleet,
    kubelet_kills,
    list_items,
    start_operator,
    status_condition,
    trainingjob_events,
    trainingjob_jobs,
    trainingjob_manifest,
    trainingjob_status,
    wait_ready,
    wait_trainingjob_phase,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture
def operator(training_operator: OperatorProcess) -> OperatorProcess:
    """This module's operator: the operator alone, resyncing every 2 s (conftest's `training_operator`)."""
    return training_operator


KUEUE_API = "kueue.x-k8s.io/v1beta2"
QUEUE = "team-a"
GPU = "nvidia.com/gpu"
# Each TrainingJob below: 2 workers x 4 H100s = 8 GPUs.
JOB_GPUS = 8


@pytest.fixture(scope="module")
def kueue_manager(cluster: LocalCluster) -> Iterator[None]:
    """Kueue for this module's tests only, stopped after them unless it was running before (another
    session's): a running Kueue manages every Job carrying its queue-name label, so tests that play
    Kueue's part by hand (test_trainingjob_suspend.py) must not share the cluster with it. `make
    cluster-down` stops it with the cluster in any case."""
    started = kueue.start(cluster)
    try:
        yield
    finally:
        if started:
            kueue.stop(cluster)


@pytest.fixture
def queue(kubectl: Kubectl, namespace: str, kueue_manager: None) -> Iterator[Callable[..., str]]:
    """A function that makes a LocalQueue `team-a` in the test's namespace, pointing at a ClusterQueue of
    this test with the given GPU quota and preemption policy (returns the ClusterQueue's name)."""
    kubectl("label", "namespace", namespace, f"{kueue.NAMESPACE_LABEL}=true")
    suffix = secrets.token_hex(3)
    flavor, cq = f"e2e-h100-{suffix}", f"e2e-cq-{suffix}"
    created: list[tuple[str, str]] = []

    def setup(gpus: int, preemption: dict[str, str] | None = None) -> str:
        spec: Obj = {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            # Strict FIFO: the head of the queue waits for quota and nothing overtakes it.
            "queueingStrategy": "StrictFIFO",
            "resourceGroups": [
                {
                    "coveredResources": [GPU],
                    "flavors": [{"name": flavor, "resources": [{"name": GPU, "nominalQuota": gpus}]}],
                }
            ],
        }
        if preemption:
            spec["preemption"] = preemption
        kubectl.apply(
            [
                {"apiVersion": KUEUE_API, "kind": "ResourceFlavor", "metadata": {"name": flavor}},
                {"apiVersion": KUEUE_API, "kind": "ClusterQueue", "metadata": {"name": cq}, "spec": spec},
                {
                    "apiVersion": KUEUE_API,
                    "kind": "LocalQueue",
                    "metadata": {"name": QUEUE, "namespace": namespace},
                    "spec": {"clusterQueue": cq},
                },
            ]
        )
        created.extend([("clusterqueue", cq), ("resourceflavor", flavor)])
        return cq

    try:
        yield setup
    finally:
        kubectl("delete", "localqueue", QUEUE, "-n", namespace, "--ignore-not-found", check=False)
        for kind, name in created:
            kubectl("delete", kind, name, "--ignore-not-found", "--wait=false", check=False)


def _priority_classes(kubectl: Kubectl) -> Iterator[tuple[str, str]]:
    suffix = secrets.token_hex(3)
    low, high = f"e2e-low-{suffix}", f"e2e-high-{suffix}"
    kubectl.apply(
        [
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": name},
                "value": value,
                "description": "kubeforge e2e: Kueue preemption",
            }
            for name, value in ((low, 100), (high, 1000))
        ]
    )
    try:
        yield low, high
    finally:
        kubectl("delete", "priorityclass", low, high, "--ignore-not-found", check=False)


priority_classes = pytest.fixture(_priority_classes)


def _workloads(kubectl: Kubectl, namespace: str) -> dict[str, Obj]:
    """Kueue's Workload objects of the namespace, by the name of the Job each one is for."""
    out = {}
    for workload in list_items(kubectl, "workloads.kueue.x-k8s.io", namespace):
        for ref in workload["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "Job":
                out[ref["name"]] = workload
    return out


def _wl_condition(workload: Obj, type_: str) -> Obj:
    for cond in workload.get("status", {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def _admitted(workload: Obj) -> bool:
    return _wl_condition(workload, "Admitted").get("status") == "True"


def test_gpu_quota_for_one_job_runs_two_jobs_one_after_the_other(
    kubectl: Kubectl, namespace: str, queue: Callable[..., str], operator: OperatorProcess
) -> None:
    queue(gpus=JOB_GPUS + JOB_GPUS // 2)  # 12 GPUs: one job fits, two do not (the cluster has 16 H100s)
    first, second = "first", "second"
    kubectl.apply(trainingjob_manifest(first, run_seconds=15, queueName=QUEUE), namespace)
    wait_trainingjob_phase(kubectl, namespace, first, "Running")
    kubectl.apply(trainingjob_manifest(second, run_seconds=5, queueName=QUEUE), namespace)

    # Kueue holds the second back for quota, and says why on its Workload.
    def pending() -> Obj | None:
        workload = _workloads(kubectl, namespace).get(f"{second}-a0")
        if workload is None:
            return None
        reserved = _wl_condition(workload, "QuotaReserved")
        return workload if reserved.get("status") == "False" and reserved.get("message") else None

    waiting = wait_for(pending, timeout=60, description="the second Workload pending for quota")
    reserved = _wl_condition(waiting, "QuotaReserved")
    assert reserved["reason"] == "Pending"
    assert GPU in reserved["message"], reserved
    assert "quota" in reserved["message"], reserved
    assert _admitted(_workloads(kubectl, namespace)[f"{first}-a0"])
    status = trainingjob_status(kubectl, namespace, second)
    assert status["phase"] == "Queued"
    admitted = status_condition(status, "Admitted")
    assert (admitted["status"], admitted["reason"]) == ("False", "WaitingForKueue")
    assert QUEUE in admitted["message"]
    assert kubectl.get("job", f"{second}-a0", namespace)["spec"]["suspend"] is True
    assert not list_items(kubectl, "pods", namespace, f"kubeforge.dev/trainingjob={second}")

    # Never both running: the second starts only once the first finished and gave its quota back.
    def second_running() -> Obj | None:
        one, two = (
            trainingjob_status(kubectl, namespace, first),
            trainingjob_status(kubectl, namespace, second),
        )
        assert not (one.get("phase") == "Running" and two.get("phase") in ("Pending", "Running")), (one, two)
        return two if two.get("phase") == "Running" else None

    wait_for(second_running, timeout=90, interval=0.5, description="the second job Running")
    assert trainingjob_status(kubectl, namespace, first)["phase"] == "Succeeded"
    workloads = _workloads(kubectl, namespace)
    assert _wl_condition(workloads[f"{first}-a0"], "Finished").get("status") == "True"
    assert _admitted(workloads[f"{second}-a0"])
    assert (
        status_condition(trainingjob_status(kubectl, namespace, second), "Admitted")["reason"]
        == "KueueAdmitted"
    )
    status = wait_trainingjob_phase(kubectl, namespace, second, "Succeeded", timeout=60)
    assert status["restarts"] == 0
    assert trainingjob_status(kubectl, namespace, first)["restarts"] == 0


def test_preempted_job_queues_without_restart_and_resumes_with_its_deadline_intact(
    kubectl: Kubectl,
    namespace: str,
    queue: Callable[..., str],
    priority_classes: tuple[str, str],
    operator: OperatorProcess,
) -> None:
    low, high = priority_classes
    queue(gpus=JOB_GPUS, preemption={"withinClusterQueue": "LowerPriority"})
    deadline = 40
    victim = "low"
    kubectl.apply(
        trainingjob_manifest(
            victim,
            run_seconds=600,
            queueName=QUEUE,
            priorityClassName=low,
            activeDeadlineSeconds=deadline,
            # The exit codes a stopped worker leaves are listed as permanent: they must not count here.
            policy={"permanentExitCodes": [137, 143], "backoffSeconds": 1},
            annotations={"e2e.kubeforge.dev/terminate-seconds": "8"},
        ),
        namespace,
    )
    wait_trainingjob_phase(kubectl, namespace, victim, "Running")
    time.sleep(5)

    # A higher-priority job arrives; the quota holds one. Kueue evicts the low one to admit it: the Job
    # controller deletes its workers, and the test plays the kubelet, reporting them killed by SIGTERM
    # and SIGKILL (kwok keeps deleted pods for `terminate-seconds`).
    urgent_seconds = deadline + 5  # longer than the victim's deadline has left
    kubectl.apply(
        trainingjob_manifest("high", run_seconds=urgent_seconds, queueName=QUEUE, priorityClassName=high),
        namespace,
    )

    def deleting() -> list[Obj] | None:
        pods = list_items(kubectl, "pods", namespace, f"kubeforge.dev/trainingjob={victim}")
        going = [p for p in pods if p["metadata"].get("deletionTimestamp")]
        return going if len(going) == 2 else None

    for pod, code in zip(
        wait_for(deleting, timeout=60, description="the victim's workers deleted"), (143, 137), strict=True
    ):
        kubelet_kills(kubectl, namespace, pod, code)
    status = wait_trainingjob_phase(kubectl, namespace, victim, "Queued", timeout=60)
    assert status["workers"]["failed"] == 0  # stopped by the preemption, not failed
    job = f"{victim}-a0"
    evicted = _wl_condition(_workloads(kubectl, namespace)[job], "Evicted")
    assert (evicted.get("status"), evicted.get("reason")) == ("True", "Preempted"), evicted
    assert status["restarts"] == 0
    # Kueue's Job integration suspends the Job without a reason of its own (the Job controller's default
    # `JobSuspended`), so the operator says `SuspendedByKueue` and points at the Workload.
    admitted = status_condition(status, "Admitted")
    assert (admitted["status"], admitted["reason"]) == ("False", "SuspendedByKueue")
    assert "workloads" in admitted["message"]
    assert status_condition(status, "Failed")["status"] == "False"
    ran = status["activeSeconds"]
    assert 4 <= ran < deadline
    high_status = wait_trainingjob_phase(kubectl, namespace, "high", "Running", timeout=60)
    assert high_status["restarts"] == 0

    # While the high one runs (longer than the deadline has left) the victim waits, charged nothing.
    def victim_back() -> Obj | None:
        st = trainingjob_status(kubectl, namespace, victim)
        assert st["phase"] in ("Queued", "Pending", "Running"), st
        return st if st["phase"] == "Running" else None

    status = wait_for(victim_back, timeout=urgent_seconds + 60, interval=1, description="victim resumed")
    resumed = time.monotonic()
    assert trainingjob_status(kubectl, namespace, "high")["phase"] == "Succeeded"
    assert (status["restarts"], status["jobName"]) == (0, job)
    assert status_condition(status, "Admitted")["reason"] == "KueueAdmitted"
    assert trainingjob_jobs(kubectl, namespace, victim) == [job]  # the same attempt resumed
    reasons = [r for _, r, _ in trainingjob_events(kubectl, namespace, victim)]
    assert not {"WorkerFailed", "WorkerDisrupted", "PermanentExitCode", "DeadlineExceeded"} & set(reasons)

    # The deadline counts on from what the job had used before it was preempted.
    status = wait_trainingjob_phase(kubectl, namespace, victim, "Failed", timeout=deadline + 30)
    assert status_condition(status, "Failed")["reason"] == "DeadlineExceeded"
    assert deadline - ran - 3 <= time.monotonic() - resumed <= deadline - ran + 10
    assert status["restarts"] == 0


def test_fleet_in_a_queued_namespace_bypasses_kueue(
    kubectl: Kubectl, namespace: str, queue: Callable[..., str], operator: OperatorProcess
) -> None:
    """Serving is not queued: a fleet in a namespace whose jobs Kueue manages scales without a Workload
    (docs/trainingjob.md says why), while the GPU quota there is already used up by a job."""
    queue(gpus=JOB_GPUS)
    kubectl.apply(trainingjob_manifest("batch", run_seconds=600, queueName=QUEUE), namespace)
    wait_trainingjob_phase(kubectl, namespace, "batch", "Running")
    kubectl.apply(fleet("chat", replicas=1, resources={"gpus": 1, "gpuType": "L4"}), namespace)
    wait_ready(kubectl, namespace, "chat")
    assert list(_workloads(kubectl, namespace)) == ["batch-a0"]


RETURN_AFTER = 10
"""`--gpu-return-after-seconds` of the fleet test below (the default is 300)."""


@pytest.mark.prometheus
@pytest.mark.timeout(420)
def test_a_breaching_fleet_asks_kueue_and_kueue_preempts_lower_priority_training_for_it(
    cluster: LocalCluster,
    crds: None,
    kubectl: Kubectl,
    namespace: str,
    queue: Callable[..., str],
    priority_classes: tuple[str, str],
    loadsim: LoadSimulator,
    prometheus: PrometheusProcess,
    spare_nodes: tuple[str, list[str]],
    tmp_path: Path,
) -> None:
    """The pool (three 4-GPU nodes) holds the fleet's replica (2 GPUs, outside Kueue) and a Kueue-admitted
    `preemptible` job of 5 x 2 GPUs at a lower priority; the ClusterQueue's quota is the 10 GPUs training
    may use, and it preempts lower priorities. A latency breach makes the fleet want replicas the pool
    has no room for: kubeforge takes nothing from a job Kueue admitted, it asks Kueue (one Workload per
    missing replica, at the fleet's priority), and Kueue evicts the job for it. The fleet's replicas
    take the freed GPUs; once the load is gone and the fleet calm, the claim is withdrawn and Kueue
    admits the job again: the same attempt resumes, with no restart counted."""
    product, _ = spare_nodes
    low, _ = priority_classes
    # Serving outranks training but does not preempt on its own: with the default preemptionPolicy the
    # kube-scheduler would evict the job's workers for the fleet's pods directly, behind Kueue's back
    # and without a checkpoint (docs/arbitration.md).
    serving = f"e2e-serving-{secrets.token_hex(3)}"
    kubectl.apply(
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": serving},
            "value": 1000,
            "preemptionPolicy": "Never",
            "description": "kubeforge e2e: serving that waits for arbitration",
        }
    )
    queue(gpus=10, preemption={"withinClusterQueue": "LowerPriority"})
    args = ["--prometheus-url", prometheus.url, "--gpu-return-after-seconds", str(RETURN_AFTER)]
    operator = start_operator(cluster, namespace, tmp_path, args)
    try:
        resources = {"gpus": 2, "gpuType": product}
        loadsim.set_load(namespace, "chat", 5, **LENDING_MODEL)
        chat = fleet(
            "chat",
            resources=resources,
            autoscaling=LENDING_AUTOSCALING,
            priorityClassName=serving,
            kueueQueueName=QUEUE,
        )
        kubectl.apply(chat, namespace)
        wait_ready(kubectl, namespace, "chat")
        kubectl.apply(
            trainingjob_manifest(
                "train",
                run_seconds=3600,
                workers=5,
                resources=resources,
                queueName=QUEUE,
                priorityClassName=low,
                preemptible=True,
                # The exit code a stopped worker leaves is listed as permanent: it must not count.
                policy={"permanentExitCodes": [143], "backoffSeconds": 1},
                annotations={"e2e.kubeforge.dev/terminate-seconds": "30"},
            ),
            namespace,
        )
        wait_trainingjob_phase(kubectl, namespace, "train", "Running")

        breach = time.monotonic()
        loadsim.set_load(namespace, "chat", 50, **LENDING_MODEL)

        def claimed() -> Obj | None:
            status = get_fleet(kubectl, namespace, "chat").get("status") or {}
            return status if status.get("kueueClaim") else None

        status: Obj = wait_for(claimed, timeout=90, interval=0.5, description="the fleet asking Kueue")
        claim = status["kueueClaim"]
        assert claim["queue"] == QUEUE
        assert not status.get("borrowed"), "nothing is taken from a job Kueue admitted"
        claims = {
            w["metadata"]["name"]: w
            for w in list_items(
                kubectl, "workloads.kueue.x-k8s.io", namespace, "kubeforge.dev/inferencefleet=chat"
            )
        }
        assert sorted(claims) == [f"chat-kueue-{i}" for i in range(claim["replicas"])]
        for w in claims.values():
            assert w["spec"]["priority"] == 1000, "the fleet's priority"
            assert not w["metadata"].get("ownerReferences")

        # Kueue evicts the lower-priority job for the claim; the operator sees it as Kueue's suspension.
        queued = wait_trainingjob_phase(kubectl, namespace, "train", "Queued", timeout=90)
        assert status_condition(queued, "Admitted")["reason"] == "SuspendedByKueue"
        evicted = _wl_condition(_workloads(kubectl, namespace)["train-a0"], "Evicted")
        assert (evicted.get("status"), evicted.get("reason")) == ("True", "Preempted"), evicted

        # The Job controller deletes the workers; the test plays the kubelet: each trainer gets SIGTERM
        # (its cue to checkpoint) and exits 143 (kwok keeps deleted pods for `terminate-seconds`).
        def deleting() -> list[Obj] | None:
            pods = list_items(kubectl, "pods", namespace, "kubeforge.dev/trainingjob=train")
            going = [p for p in pods if p["metadata"].get("deletionTimestamp")]
            return going if len(going) == 5 else None

        for pod in wait_for(deleting, timeout=60, description="the job's workers deleted"):
            kubelet_kills(kubectl, namespace, pod, 143)

        def grown() -> Obj | None:
            s = get_fleet(kubectl, namespace, "chat").get("status") or {}
            return s if int(s.get("readyReplicas") or 0) >= 2 else None

        wait_for(grown, timeout=120, interval=0.5, description="the fleet's new replicas Ready")
        print(f"breach -> Kueue evicted the job -> replicas Ready: {time.monotonic() - breach:.1f}s")
        admitted = [w for w in _claims(kubectl, namespace) if _admitted(w)]
        assert admitted, "Kueue admitted the claim"

        # The load goes; the fleet calms down and withdraws its claims; Kueue admits the job again.
        loadsim.set_load(namespace, "chat", 1, **LENDING_MODEL)
        wait_for(
            lambda: not (get_fleet(kubectl, namespace, "chat").get("status") or {}).get("kueueClaim"),
            timeout=180,
            interval=0.5,
            description="the fleet withdrawing its claims",
        )
        # The status records the withdrawal first; the Workloads go right after it (Kueue lifts its
        # finalizer from a deleted Workload that has no owner).
        wait_for(
            lambda: _claims(kubectl, namespace) == [],
            timeout=30,
            interval=0.5,
            description="the claim Workloads deleted",
        )
        resumed = wait_trainingjob_phase(kubectl, namespace, "train", "Running", timeout=120)
        assert (resumed["restarts"], resumed["jobName"]) == (0, "train-a0"), "the same attempt resumed"
        reasons = [r for _, r, _ in _fleet_events(kubectl, namespace)]
        assert "AskedKueue" in reasons
        assert "ReleasedKueueClaim" in reasons
        limited = condition(get_fleet(kubectl, namespace, "chat"), "CapacityLimited") or {}
        assert limited.get("status") != "True"
    finally:
        operator.stop()
        kubectl("delete", "priorityclass", serving, "--ignore-not-found", check=False)
        print(f"--- operator log ({operator.log_path}) ---\n{operator.tail(120)}")


def _claims(kubectl: Kubectl, namespace: str) -> list[Obj]:
    return list_items(kubectl, "workloads.kueue.x-k8s.io", namespace, "kubeforge.dev/inferencefleet=chat")


def _fleet_events(kubectl: Kubectl, namespace: str) -> list[tuple[str, str, str]]:
    events = kubectl.json(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.kind=InferenceFleet",
        "-o",
        "json",
    )["items"]
    return [(e["type"], e["reason"], e["message"]) for e in events]
