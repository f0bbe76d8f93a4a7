"""Gang admission against the real kube-scheduler and API server: two gangs are never admitted for the same
GPUs whatever nodes the scheduler picks, a namespace's ResourceQuota on GPUs is respected before admission,
and a gang that cannot place its workers gives its GPUs back within the operator owner's bound and spends
a restart doing so.

Each test gets a fresh namespace and its own operator process (watching that namespace); kwok plays the
workers as in `test_trainingjob.py`, whose helpers these tests reuse.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubeforge_e2e import Helm, Kubectl, LocalCluster, wait_for
from kubeforge_e2e.operator import OperatorProcess, running_operator
from kubeforge_e2e.workloads import (
    Obj,
    status_condition,
    trainingjob_events,
    trainingjob_manifest,
    trainingjob_status,
    wait_trainingjob_phase,
)
from test_fleet_restricted import restricted_operator

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SCHEDULE_TIMEOUT_BOUND = 10
"""The operator owner's bound (`--max-schedule-timeout-seconds`), far below what the specs ask."""


@pytest.fixture
def operator(cluster: LocalCluster, crds: None, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    extra = [
        "--namespace",
        namespace,
        "--resync-seconds",
        "2",
        f"--max-schedule-timeout-seconds={SCHEDULE_TIMEOUT_BOUND}",
    ]
    with running_operator(cluster.kubeconfig, tmp_path / "operator.log", extra) as proc:
        yield proc


def _refused(kubectl: Kubectl, namespace: str, name: str, reason: str, says: str) -> None:
    """The gang waits in Queued, not admitted for `reason`, says `says` in its Admitted condition and in
    an Event, and no Job (no worker) was created."""
    status = wait_trainingjob_phase(kubectl, namespace, name, "Queued", timeout=60)
    admitted = status_condition(status, "Admitted")
    assert (admitted["status"], admitted["reason"]) == ("False", reason)
    assert says in admitted["message"]
    assert not kubectl.json("get", "jobs", "-n", namespace)["items"], "no Job may be created"
    wait_for(
        lambda: any(r == reason and says in m for _, r, m in trainingjob_events(kubectl, namespace, name)),
        timeout=30,
        description=f"a {reason} Event",
    )


def _admitted(status: Obj) -> bool:
    condition = status_condition(status, "Admitted")
    return condition.get("status") == "True" and condition.get("reason") == "GangAdmitted"


def _gpus_requested(pod: Obj) -> int:
    limits = (c.get("resources", {}).get("limits", {}) for c in pod["spec"]["containers"])
    return sum(int(limit.get("nvidia.com/gpu", 0)) for limit in limits)


def test_gangs_each_over_half_the_h100s_are_never_admitted_together(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    """Mixed shapes on the two 8-GPU H100 nodes: 3 x 3 GPUs (9) and 2 x 5 GPUs (10), created together,
    round after round. The scheduler spreads the first gang's workers as it likes; whichever gang is
    admitted first, the other waits (Queued, InsufficientCapacity) and then runs: the unfinished workers
    never ask for more than the 16 GPUs there are (so never both gangs whole at once), never a deadlock
    or a schedule timeout.

    The second gang may start while the first still has workers: the first's workers end one by one, and
    with 3 x 3 spread 2 + 1 over the two nodes, the first to end leaves 5 free on each, room for 2 x 5.
    Admitting it then is right (it fits, whole), so the invariant is on GPUs, not on gang count."""
    shapes = {"small": (3, 3), "large": (2, 5)}
    h100_gpus = 16
    for round_ in range(4):
        names = {f"{kind}-{round_}": shape for kind, shape in shapes.items()}
        kubectl.apply(
            [
                trainingjob_manifest(n, run_seconds=3, workers=w, resources={"gpus": g, "gpuType": "H100"})
                for n, (w, g) in names.items()
            ],
            namespace,
        )
        seen_queued = False
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            # What the scheduler placed, not what the statuses say (they trail the pods by a pass).
            unfinished = [
                p
                for p in kubectl.json("get", "pods", "-n", namespace)["items"]
                if p["status"].get("phase") in ("Pending", "Running")
                and not p["metadata"].get("deletionTimestamp")
            ]
            held = sum(_gpus_requested(p) for p in unfinished)
            owners = sorted({p["metadata"]["labels"]["kubeforge.dev/trainingjob"] for p in unfinished})
            assert held <= h100_gpus, f"round {round_}: {owners} ask for {held} GPUs at once"
            statuses = {n: trainingjob_status(kubectl, namespace, n) for n in names}
            for status in statuses.values():
                if status.get("phase") == "Queued":
                    assert status_condition(status, "Admitted")["reason"] == "InsufficientCapacity"
                    seen_queued = True
            if all(s.get("phase") == "Succeeded" for s in statuses.values()):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"round {round_}: not both Succeeded in time: {statuses}")
        assert seen_queued, f"round {round_}: the second gang never waited"
        assert all(s.get("restarts") == 0 for s in statuses.values())
        kubectl("delete", "trainingjob", "--all", "-n", namespace, "--wait=true")


def test_a_gang_its_gpu_quota_cannot_hold_is_not_admitted(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    def quota(gpus: int) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "gpus"},
            "spec": {"hard": {"requests.nvidia.com/gpu": str(gpus)}},
        }

    kubectl.apply(quota(4), namespace)
    name = "big"
    kubectl.apply(trainingjob_manifest(name, run_seconds=3), namespace)  # 2 workers x 4 GPUs = 8 > 4
    _refused(kubectl, namespace, name, "QuotaExceeded", "ResourceQuota gpus allows 4 requests.nvidia.com/gpu")
    # The quota is raised: the gang is admitted and runs.
    kubectl.apply(quota(8), namespace)
    status = wait_trainingjob_phase(kubectl, namespace, name, "Running", timeout=60)
    assert _admitted(status)


def test_an_unplaceable_gang_releases_its_gpus_within_the_operator_bound_and_spends_restarts(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    """Admission counts GPUs; 500 CPUs per worker fit no node, so the admitted workers stay Pending. The
    spec asks for a 10-minute schedule timeout, the operator's bound is 10 s: the placement is released
    after about 10 s, counted as a restart, and with no restarts left the job fails."""
    name = "stuck"
    manifest = trainingjob_manifest(
        name,
        resources={"gpus": 4, "gpuType": "H100", "cpu": "500"},
        policy={"scheduleTimeoutSeconds": 600, "maxRestarts": 1, "backoffSeconds": 0},
    )
    kubectl.apply(manifest, namespace)
    status = wait_trainingjob_phase(kubectl, namespace, name, "Pending", timeout=60)
    assert _admitted(status)
    admitted_at = time.monotonic()

    def timed_out() -> Obj | None:
        current = trainingjob_status(kubectl, namespace, name)
        return current if current.get("restarts", 0) >= 1 else None

    first = wait_for(timed_out, timeout=SCHEDULE_TIMEOUT_BOUND + 30, description="the first schedule timeout")
    assert time.monotonic() - admitted_at < SCHEDULE_TIMEOUT_BOUND + 15
    assert any(r == "ScheduleTimeout" for _, r, _ in trainingjob_events(kubectl, namespace, name)), first
    failed = wait_trainingjob_phase(kubectl, namespace, name, "Failed", timeout=SCHEDULE_TIMEOUT_BOUND + 40)
    assert failed["restarts"] == 1
    assert "no restarts left" in failed["message"]
    # Released: no worker of the job is left holding (or waiting for) GPUs.
    wait_for(
        lambda: (
            not [
                p
                for p in kubectl.json("get", "pods", "-n", namespace)["items"]
                if not p["metadata"].get("deletionTimestamp")
            ]
        ),
        timeout=30,
        description="the workers gone",
    )


@pytest.fixture
def patient_operator(
    cluster: LocalCluster, crds: None, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The default schedule-timeout bound (300 s): an admitted gang keeps its GPUs unless it gives them up."""
    extra = ["--namespace", namespace, "--resync-seconds", "600"]
    with running_operator(cluster.kubeconfig, tmp_path / "operator.log", extra) as proc:
        yield proc


@pytest.mark.parametrize("give_up", ["delete", "suspend", "delete-before-pods"])
def test_a_gang_that_gives_up_gpus_its_workers_never_got_lets_the_next_in_at_once(
    kubectl: Kubectl, namespace: str, patient_operator: OperatorProcess, give_up: str
) -> None:
    """`stuck` is admitted for all 16 H100 GPUs but its workers ask for CPUs no node has, so the
    scheduler never places them; `next` waits for those GPUs. When `stuck` is deleted or suspended, no
    GPU a pod held is freed (its pods were never bound), and `next` used to wait for its once-a-minute
    recheck. It is admitted within seconds now: its unbound pods going wake the queue. With
    "delete-before-pods" a ResourceQuota of 0 pods keeps its workers from ever being created, so no pod
    event at all follows its deletion: the TrainingJob's own change wakes the queue."""
    if give_up == "delete-before-pods":
        no_pods = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"}}
        kubectl.apply({**no_pods, "spec": {"hard": {"pods": "0"}}}, namespace)
    stuck = trainingjob_manifest(
        "stuck",
        workers=4,
        resources={"gpus": 4, "gpuType": "H100", "cpu": "500"},
        policy={"scheduleTimeoutSeconds": 600, "backoffSeconds": 0},
    )
    kubectl.apply(stuck, namespace)
    assert _admitted(wait_trainingjob_phase(kubectl, namespace, "stuck", "Pending", timeout=60))
    kubectl.apply(trainingjob_manifest("next", resources={"gpus": 8, "gpuType": "H100"}), namespace)
    queued = wait_trainingjob_phase(kubectl, namespace, "next", "Queued", timeout=60)
    assert status_condition(queued, "Admitted")["reason"] == "InsufficientCapacity"
    time.sleep(3)  # past the passes its creation caused: from here only a wake-up admits it
    assert trainingjob_status(kubectl, namespace, "next").get("phase") == "Queued"

    gave_up = time.monotonic()
    if give_up == "delete-before-pods":
        assert not kubectl.json("get", "pods", "-n", namespace)["items"]
    if give_up.startswith("delete"):
        kubectl("delete", "trainingjob", "stuck", "-n", namespace, "--wait=false")
    else:
        suspend = '{"spec":{"suspend":true}}'
        kubectl("patch", "trainingjob", "stuck", "-n", namespace, "--type=merge", "-p", suspend)
    status = wait_for(
        lambda: s if _admitted(s := trainingjob_status(kubectl, namespace, "next")) else None,
        timeout=50,
        description="next admitted",
    )
    took = time.monotonic() - gave_up
    assert took < 20, f"admitted {took:.1f}s after stuck gave its GPUs up: {status}"


def test_a_gpu_taint_the_workers_do_not_tolerate_offers_no_gpus(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    spare_nodes: tuple[str, list[str]],
) -> None:
    """Three 4-GPU nodes of a product of their own; one is tainted `nvidia.com/gpu=present:NoExecute`
    (the workers tolerate only `NoSchedule` of that key). A gang of 3 x 4 GPUs is not admitted into a
    node its pods could never run on; once the taint goes, it is admitted and runs."""
    product, names = spare_nodes
    kubectl("taint", "nodes", names[0], "nvidia.com/gpu=present:NoExecute")
    name = "tainted"
    kubectl.apply(
        trainingjob_manifest(name, run_seconds=3, workers=3, resources={"gpus": 4, "gpuType": product}),
        namespace,
    )
    status = wait_trainingjob_phase(kubectl, namespace, name, "Queued", timeout=60)
    assert status_condition(status, "Admitted")["reason"] == "InsufficientCapacity"
    assert "only 2 workers would fit" in status["message"]
    assert not kubectl.json("get", "jobs", "-n", namespace)["items"], "no Job may be created"
    kubectl("taint", "nodes", names[0], "nvidia.com/gpu=present:NoExecute-")
    status = wait_trainingjob_phase(kubectl, namespace, name, "Running", timeout=60)
    assert _admitted(status)


def test_an_admitted_gang_is_never_stranded_by_where_the_scheduler_spreads_another(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    spare_nodes: tuple[str, list[str]],
) -> None:
    """Three 4-GPU nodes: `spread` (4 x 1 GPU) and `whole` (2 x 4 GPUs) fit together only if the first is
    packed on one node, and the scheduler's default scoring spreads it. Admission must not count on the
    packing: no worker of an admitted gang is ever left Unschedulable, both finish, no schedule timeout."""
    product, _ = spare_nodes
    shapes = {"spread": (4, 1), "whole": (2, 4)}
    for round_ in range(3):
        names = [f"{kind}-{round_}" for kind in shapes]
        kubectl.apply(
            [
                trainingjob_manifest(n, run_seconds=4, workers=w, resources={"gpus": g, "gpuType": product})
                for n, (w, g) in zip(names, shapes.values(), strict=True)
            ],
            namespace,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for pod in kubectl.json("get", "pods", "-n", namespace)["items"]:
                stuck = [
                    c
                    for c in pod["status"].get("conditions") or []
                    if c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
                ]
                assert not stuck, f"round {round_}: {pod['metadata']['name']} admitted but unschedulable"
            statuses = [trainingjob_status(kubectl, namespace, n) for n in names]
            if all(s.get("phase") == "Succeeded" for s in statuses):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"round {round_}: not both Succeeded in time: {statuses}")
        assert all(s.get("restarts") == 0 for s in statuses)
        kubectl("delete", "trainingjob", "--all", "-n", namespace, "--wait=true")


def test_an_operator_that_cannot_see_every_namespace_says_capacity_is_unknown(
    cluster: LocalCluster, kubectl: Kubectl, helm: Helm, namespace: str, crds: None, tmp_path: Path
) -> None:
    """The chart installed with `watchNamespaces` gives the operator a Role in that namespace only: it
    cannot list pods elsewhere, so it does not admit a gang into GPUs it cannot see are free; it says
    so in the status and an Event. Run with the chart's own ServiceAccount."""
    with restricted_operator(cluster, kubectl, helm, namespace, tmp_path):
        name = "blind"
        kubectl.apply(trainingjob_manifest(name, run_seconds=2), namespace)
        _refused(kubectl, namespace, name, "CapacityUnknown", "free GPUs are unknown")
