"""Two operator replicas with leader election, as the chart runs them: the leader is SIGKILLed in the
middle of a canary rollout and in the middle of gang admission, and the standby (whose caches are warm)
finishes the work with no duplicate children and no two gangs on the same GPUs. A restarted operator
facing converged objects writes nothing.

Each test's operators watch only its namespace and campaign for a Lease in it, so tests never share one.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubeforge_e2e import Kubectl, LocalCluster, promtext, wait_for
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.workloads import fleet, get_fleet, is_true, list_items, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

Obj = dict[str, Any]
LEASE = "kubeforge-e2e"
TRAINER = "registry.invalid/kubeforge/trainer:1"


class Pair:
    """Two operator processes campaigning for one Lease."""

    def __init__(self, cluster: LocalCluster, namespace: str, log_dir: Path) -> None:
        self.namespace = namespace
        self.processes = {
            identity: OperatorProcess(
                cluster.kubeconfig,
                log_dir / f"operator-{identity}.log",
                extra_args=[
                    "--namespace",
                    namespace,
                    "--leader-elect",
                    "--leader-election-namespace",
                    namespace,
                    "--leader-election-id",
                    LEASE,
                    "--leader-election-identity",
                    identity,
                ],
                env=cluster.env(),
            )
            for identity in ("replica-a", "replica-b")
        }

    def start(self) -> None:
        for process in self.processes.values():
            process.start()  # returns once /readyz passes: caches synced, leader or not

    def holder(self, kubectl: Kubectl) -> str | None:
        lease = kubectl.get("lease", LEASE, self.namespace)
        holder = ((lease or {}).get("spec") or {}).get("holderIdentity")
        return str(holder) if holder else None

    def leader(self, kubectl: Kubectl) -> tuple[str, OperatorProcess]:
        identity = wait_for(lambda: self.holder(kubectl), timeout=30, description="a Lease holder")
        return identity, self.processes[identity]

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {i} ---\n{p.tail(80)}" for i, p in self.processes.items())


@pytest.fixture
def pair(cluster: LocalCluster, crds: None, namespace: str, tmp_path: Path) -> Iterator[Pair]:
    replicas = Pair(cluster, namespace, tmp_path)
    replicas.start()
    try:
        yield replicas
    finally:
        replicas.stop()
        print(replicas.logs())


def metric(process: OperatorProcess, series: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include `labels`."""
    samples = promtext.parse(process.metrics(), [series])
    return sum(s.value for s in samples if all(dict(s.labels).get(k) == v for k, v in labels.items()))


WRITE_VERBS = ("create", "update", "apply", "patch", "delete")


def writes(process: OperatorProcess) -> float:
    return sum(metric(process, "kubeforge_api_requests_total", verb=verb) for verb in WRITE_VERBS)


def test_only_the_leader_writes_and_the_standby_is_ready(pair: Pair, kubectl: Kubectl) -> None:
    identity, leader = pair.leader(kubectl)
    standby = next(p for i, p in pair.processes.items() if i != identity)
    assert metric(leader, "leader_election_master_status", name=LEASE) == 1
    assert metric(standby, "leader_election_master_status", name=LEASE) == 0
    kubectl.apply(fleet("ha-chat", replicas=1, resources={"gpus": 1, "gpuType": "H100"}), pair.namespace)
    wait_ready(kubectl, pair.namespace, "ha-chat")
    assert writes(leader) > 0
    lease_writes = metric(standby, "kubeforge_api_requests_total", verb="create", resource="leases")
    assert writes(standby) == lease_writes, "a standby writes nothing but its campaign"
    assert metric(standby, "kubeforge_cache_objects", resource="inferencefleets") == 1

    # SIGTERM: the leader stops its workers, then releases the Lease; the standby takes it at its next
    # retry (2 s), not a lease duration (15 s) later.
    leader.send(signal.SIGTERM)
    terminated = time.monotonic()
    successor = next(i for i in pair.processes if i != identity)
    wait_for(lambda: pair.holder(kubectl) == successor, timeout=10, description="the standby leading")
    assert time.monotonic() - terminated < 5
    leader.reap()


def test_standby_finishes_a_canary_rollout_after_the_leader_is_killed(pair: Pair, kubectl: Kubectl) -> None:
    namespace = pair.namespace
    spec: Obj = {
        "replicas": 2,
        "resources": {"gpus": 1, "gpuType": "H100"},
        "rollout": {"strategy": "Canary", "steps": [{"weight": 50, "pauseSeconds": 20}]},
    }
    kubectl.apply(fleet("ha-canary", **spec), namespace)
    wait_ready(kubectl, namespace, "ha-canary")
    kubectl.apply(fleet("ha-canary", **{**spec, "image": "registry.invalid/kubeforge/server:2"}), namespace)

    def in_pause() -> Obj | None:
        rollout: Obj = (get_fleet(kubectl, namespace, "ha-canary").get("status") or {}).get("rollout") or {}
        # The step's pods are ready and its 20 s pause runs.
        if rollout.get("canaryWeight") == 50 and rollout.get("stepReadyAt"):
            return rollout
        return None

    canary = wait_for(in_pause, timeout=60, description="the canary step's pause")["canaryRevision"]
    identity, leader = pair.leader(kubectl)
    leader.kill(signal.SIGKILL)
    killed = time.monotonic()

    def successor() -> str | None:
        holder = pair.holder(kubectl)
        return holder if holder is not None and holder != identity else None

    new = wait_for(
        successor,
        timeout=40,
        description="the standby taking the Lease",
    )
    took_over = time.monotonic() - killed
    assert took_over <= 25, f"standby led {took_over:.1f}s after the kill (lease 15 s)"

    def promoted() -> bool:
        rollout = (get_fleet(kubectl, namespace, "ha-canary").get("status") or {}).get("rollout") or {}
        return rollout.get("phase") == "Promoted" and rollout.get("stableRevision") == canary

    wait_for(promoted, timeout=90, description=f"{new} finishing the rollout")

    def deployments() -> list[str]:
        found = list_items(kubectl, "deployments", namespace, "kubeforge.dev/inferencefleet=ha-canary")
        return sorted(d["metadata"]["name"] for d in found)

    # The drained stable revision goes; nothing was ever made twice (names are per revision).
    wait_for(lambda: deployments() == [f"ha-canary-{canary}"], timeout=30, description="one Deployment left")
    history = get_fleet(kubectl, namespace, "ha-canary")["status"]["rollout"]["history"]
    assert [e["phase"] for e in history] == ["Superseded", "Stable"]
    # The new leader's writes never conflicted with what the old one left (no failed pass at all).
    assert metric(pair.processes[new], "controller_runtime_reconcile_errors_total") == 0


def _gang(name: str) -> Obj:
    return {
        "apiVersion": "kubeforge.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "image": TRAINER,
            "workers": 2,
            # 2 x 5 of the 16 H100 GPUs: two such gangs never fit together.
            "resources": {"gpus": 5, "gpuType": "H100"},
            "podMetadata": {"annotations": {"e2e.kubeforge.dev/run-seconds": "4"}},
        },
    }


def test_standby_takes_over_gang_admission_without_double_admitting(pair: Pair, kubectl: Kubectl) -> None:
    namespace = pair.namespace
    names = [f"gang-{i}" for i in range(3)]
    for name in names:
        kubectl.apply(_gang(name), namespace)
    identity, leader = pair.leader(kubectl)
    wait_for(
        lambda: any(
            ((kubectl.get("trainingjob", n, namespace) or {}).get("status") or {}).get("phase")
            in ("Pending", "Running")
            for n in names
        ),
        timeout=30,
        description="a first gang admitted",
    )
    leader.kill(signal.SIGKILL)

    most_running = 0
    deadline = time.monotonic() + 150
    phases: dict[str, str] = {}
    while time.monotonic() < deadline:
        jobs = list_items(kubectl, "trainingjobs", namespace)
        phases = {j["metadata"]["name"]: (j.get("status") or {}).get("phase", "") for j in jobs}
        pods = list_items(kubectl, "pods", namespace, "kubeforge.dev/trainingjob")
        holding = {
            p["metadata"]["labels"]["kubeforge.dev/trainingjob"]
            for p in pods
            if p["spec"].get("nodeName") and p["status"].get("phase") not in ("Succeeded", "Failed")
        }
        most_running = max(most_running, len(holding))
        assert len(holding) <= 1, f"two gangs hold the same GPUs: {sorted(holding)}"
        if all(phase == "Succeeded" for phase in phases.values()) and len(phases) == len(names):
            break
        time.sleep(0.5)
    assert all(phase == "Succeeded" for phase in phases.values()), phases
    assert most_running == 1
    for name in names:
        status = kubectl.get("trainingjob", name, namespace)["status"]
        assert status["restarts"] == 0, (name, status)
    job_names = [j["metadata"]["name"] for j in list_items(kubectl, "jobs", namespace)]
    assert sorted(job_names) == sorted(f"{n}-a0" for n in names), "one Job per gang, none duplicated"
    successor = next(p for i, p in pair.processes.items() if i != identity)
    assert metric(successor, "controller_runtime_reconcile_errors_total") == 0


def test_a_restarted_operator_writes_nothing_for_converged_objects(
    cluster: LocalCluster, crds: None, namespace: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    first = OperatorProcess(
        cluster.kubeconfig, tmp_path / "first.log", extra_args=["--namespace", namespace], env=cluster.env()
    )
    first.start()
    try:
        for i in range(3):
            kubectl.apply(fleet(f"idle-{i}", replicas=1, resources={"gpus": 1, "gpuType": "L4"}), namespace)
        for i in range(3):
            wait_ready(kubectl, namespace, f"idle-{i}")
        time.sleep(3)  # the last status writes land
    finally:
        first.stop()
    second = OperatorProcess(
        cluster.kubeconfig, tmp_path / "second.log", extra_args=["--namespace", namespace], env=cluster.env()
    )
    second.start()
    try:
        time.sleep(8)
        assert writes(second) == 0, second.tail(40)
        assert metric(second, "controller_runtime_reconcile_total", controller="inferencefleet") >= 3
        samples = promtext.parse(second.metrics(), ["kubeforge_api_requests_total"])
        read_samples = [s for s in samples if s.label("verb") in ("get", "list")]
        reads = promtext.sum_by(read_samples, "verb", "resource")
        # One list per cache, plus the probes of whether pods are readable cluster-wide and whether
        # Kueue's Workload API is served (one discovery read); no per-object reads.
        allowed: dict[tuple[str, ...], float] = {("list", key[1]): 1.0 for key in reads}
        allowed[("list", "pods")] = 2.0
        allowed[("get", "kueue.x-k8s.io")] = 1.0
        assert all(count <= allowed.get(key, 0.0) for key, count in reads.items()), reads
    finally:
        second.stop()


def test_a_fleet_and_a_trainingjob_of_one_name_do_not_fight_over_a_service(
    cluster: LocalCluster, crds: None, namespace: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """Both kinds name their Service after themselves. The first keeps it; the second is told why it
    cannot go on (a Warning Event naming the conflict) and never writes the other's Service."""
    operator = OperatorProcess(
        cluster.kubeconfig,
        tmp_path / "operator.log",
        extra_args=["--namespace", namespace],
        env=cluster.env(),
    )
    operator.start()
    try:
        kubectl.apply(fleet("clash", replicas=1, resources={"gpus": 1, "gpuType": "L4"}), namespace)
        wait_ready(kubectl, namespace, "clash")
        service = kubectl.get("service", "clash", namespace)
        kubectl.apply(
            {**_gang("clash"), "spec": {**_gang("clash")["spec"], "resources": {"gpus": 1}}}, namespace
        )

        def warned() -> bool:
            events = list_items(kubectl, "events", namespace)
            return any(
                e.get("reason") == "NameConflict" and e["involvedObject"].get("kind") == "TrainingJob"
                for e in events
            )

        wait_for(warned, timeout=30, description="a NameConflict Warning on the TrainingJob")
        after = kubectl.get("service", "clash", namespace)
        assert after["metadata"]["resourceVersion"] == service["metadata"]["resourceVersion"]
        assert is_true(get_fleet(kubectl, namespace, "clash"), "Ready")
    finally:
        operator.stop()
