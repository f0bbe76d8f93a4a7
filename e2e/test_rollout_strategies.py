"""InferenceFleet rollout strategies end to end, beyond the canary walk of test_rollout.py: Rolling (also
the default of a fleet without `spec.rollout`), Recreate, a canary whose analysis never gets data, and the
autoscaler changing the fleet's total in the middle of a canary step.

Every test samples the cluster through the API (deployments and pods, ~10 samples a second) while the
rollout happens and asserts the invariants on every sample, not only on the end state. Pods take a
second to become ready (kwok's `e2e.kubeforge.dev/start-seconds`), so every move of the rollout is seen.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kubeforge.api.inferencefleet import InferenceFleetSpec
from kubeforge.builders.inferencefleet import revision as template_revision
from kubeforge_e2e import Kubectl, LocalCluster
from kubeforge_e2e.api import Api
from kubeforge_e2e.loadsim import LoadSimulator
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.workloads import IMAGE, condition, fleet, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[1]
FLEET_LABEL = "kubeforge.dev/inferencefleet"
REVISION_LABEL = "kubeforge.dev/revision"
# 4 slots of 0.2 s: 20 requests/s per replica.
MODEL = {"service_seconds": 0.2, "slots": 4}
START = {"e2e.kubeforge.dev/start-seconds": "1"}
"""kwok: a pod becomes Running and Ready one second after it is bound."""


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> Iterator[Api]:
    """The harness's admin client: faster than kubectl for sampling a rollout several times a second."""
    client = cluster.api()
    try:
        yield client
    finally:
        client.close()


# -- sampling ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Revision:
    spec_replicas: int = 0
    """The revision Deployment's spec.replicas (0 when it has no Deployment)."""
    alive: int = 0
    """Pods not being deleted."""
    terminating: int = 0
    """Pods with a deletionTimestamp that still exist."""
    ready: int = 0
    """Pods not being deleted whose Ready condition is True: what the Service sends traffic to."""

    @property
    def pods(self) -> int:
        return self.alive + self.terminating


@dataclass(frozen=True)
class Sample:
    at: float
    fleet: dict[str, Any]
    revisions: dict[str, Revision] = field(default_factory=dict)
    deployments: frozenset[str] = frozenset()
    """Revisions that have a Deployment."""

    def of(self, revision: str) -> Revision:
        return self.revisions.get(revision, Revision())

    @property
    def rollout(self) -> dict[str, Any]:
        return dict((self.fleet.get("status") or {}).get("rollout") or {})

    @property
    def ready(self) -> int:
        return sum(s.ready for s in self.revisions.values())

    @property
    def spec_replicas(self) -> int:
        return sum(s.spec_replicas for s in self.revisions.values())


def sample(api: Api, namespace: str, name: str) -> Sample:
    """One look at a fleet: its revision Deployments, its pods, and the fleet, read in that order (the
    operator writes the fleet's status after the Deployments, so the status read is never older than
    the pass that set the Deployments' replicas)."""
    selector = {"labelSelector": f"{FLEET_LABEL}={name}"}
    deployments = api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments", params=selector)["items"]
    pods = api.get(f"/api/v1/namespaces/{namespace}/pods", params=selector)["items"]
    obj = api.get(f"/apis/kubeforge.dev/v1alpha1/namespaces/{namespace}/inferencefleets/{name}")
    counts: dict[str, dict[str, int]] = {}
    for dep in deployments:
        rev = dep["metadata"]["labels"][REVISION_LABEL]
        counts.setdefault(rev, {})["spec_replicas"] = int(dep["spec"].get("replicas") or 0)
    for pod in pods:
        rev = pod["metadata"]["labels"].get(REVISION_LABEL, "")
        row = counts.setdefault(rev, {})
        if pod["metadata"].get("deletionTimestamp"):
            row["terminating"] = row.get("terminating", 0) + 1
            continue
        row["alive"] = row.get("alive", 0) + 1
        conditions = (pod.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            row["ready"] = row.get("ready", 0) + 1
    return Sample(
        at=time.monotonic(),
        fleet=dict(obj),
        revisions={r: Revision(**row) for r, row in counts.items()},
        deployments=frozenset(d["metadata"]["labels"][REVISION_LABEL] for d in deployments),
    )


def watch(
    api: Api,
    namespace: str,
    name: str,
    until: Callable[[Sample], bool],
    *,
    timeout: float,
    description: str,
    check: Callable[[Sample], None] | None = None,
) -> list[Sample]:
    """Sample the fleet about ten times a second until `until(sample)`; `check` runs on every sample.
    Returns every sample taken."""
    samples: list[Sample] = []
    deadline = time.monotonic() + timeout
    while True:
        now = sample(api, namespace, name)
        samples.append(now)
        if check is not None:
            check(now)
        if until(now):
            return samples
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {timeout:.0f}s waiting for {description}; last rollout status "
                f"{now.rollout}, revisions {now.revisions}"
            )
        time.sleep(0.1)


# -- helpers -----------------------------------------------------------------------------------------


def revision_of(body: dict[str, Any]) -> str:
    return template_revision(InferenceFleetSpec.model_validate(body["spec"]))


def events(kubectl: Kubectl, namespace: str, name: str) -> list[tuple[str, str, str]]:
    items = kubectl.json(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    )["items"]
    return [(e.get("type", ""), e.get("reason", ""), e.get("message", "")) for e in items]


def promoted_alone(revision: str, replicas: int) -> Callable[[Sample], bool]:
    """The rollout promoted `revision`, which alone has a Deployment, with all its replicas ready."""

    def done(s: Sample) -> bool:
        ro = s.rollout
        return (
            ro.get("phase") == "Promoted"
            and ro.get("stableRevision") == revision
            and s.deployments == {revision}
            and all(r == revision for r, st in s.revisions.items() if st.pods)
            and s.of(revision).ready == replicas
        )

    return done


def steady(api: Api, kubectl: Kubectl, namespace: str, body: dict[str, Any], replicas: int) -> str:
    """Apply a fleet and wait until one revision serves all its replicas; that revision."""
    name = body["metadata"]["name"]
    kubectl.apply(body, namespace)
    rev = revision_of(body)
    watch(
        api, namespace, name, promoted_alone(rev, replicas), timeout=90, description=f"{name} steady at {rev}"
    )
    wait_ready(kubectl, namespace, name)
    return rev


def cli(cluster: LocalCluster, namespace: str, *args: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubeforge.cli",
            *args,
            "-n",
            namespace,
            "--kubeconfig",
            str(cluster.kubeconfig),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=cluster.env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubeforge {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def base_spec(replicas: int, **extra: Any) -> dict[str, Any]:
    return {
        "replicas": replicas,
        "resources": {"cpu": "100m"},
        "placement": {"spreadZones": False, "spreadNodes": False},
        "podMetadata": {"annotations": dict(START)},
        **extra,
    }


# -- Rolling -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "rollout", "max_surge", "max_unavailable"),
    [
        pytest.param(4, None, 1, 1, id="default-without-spec-rollout"),
        pytest.param(5, {"strategy": "Rolling", "maxSurge": 2}, 2, 1, id="rolling-maxSurge-2"),
    ],
)
def test_rolling_replaces_pods_a_few_at_a_time_within_surge_and_disruption_budget(
    api: Api,
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    replicas: int,
    rollout: dict[str, Any] | None,
    max_surge: int,
    max_unavailable: int,
) -> None:
    name = "rolling"
    extra: dict[str, Any] = {"disruption": {"maxUnavailable": max_unavailable}}
    if rollout is not None:
        extra["rollout"] = rollout
    body = fleet(name, **base_spec(replicas, **extra))
    old = steady(api, kubectl, namespace, body, replicas)

    new_body = fleet(name, **{**body["spec"], "image": IMAGE + "-v2"})
    new = revision_of(new_body)
    assert new != old
    floor = replicas - max_unavailable
    ceiling = replicas + max_surge

    def invariants(s: Sample) -> None:
        # Ready pods never fall below the disruption budget; pods asked for never exceed the surge.
        assert s.ready >= floor, f"ready fell to {s.ready} < {floor}: {s.revisions}"
        assert s.spec_replicas <= ceiling, f"{s.spec_replicas} replicas asked > {ceiling}: {s.revisions}"
        assert set(s.revisions) <= {old, new}, f"a third revision appeared: {s.revisions}"

    started = time.monotonic()
    kubectl.apply(new_body, namespace)
    samples = watch(
        api,
        namespace,
        name,
        promoted_alone(new, replicas),
        timeout=120,
        description=f"{new} rolled out",
        check=invariants,
    )
    took = time.monotonic() - started

    # Pod by pod: never more than maxSurge + maxUnavailable new pods asked for at once, and the two
    # revisions overlapped in several intermediate states (a rolling replacement, not a swap).
    steps = [(s.of(old).spec_replicas, s.of(new).spec_replicas) for s in samples]
    shares = list(dict.fromkeys(steps))
    increments = [b[1] - a[1] for a, b in itertools.pairwise(steps)]
    assert max(increments) <= max_surge + max_unavailable, f"new pods jumped: {shares}"
    both = [(o, n) for o, n in shares if o > 0 and n > 0]
    assert len(both) >= 2, f"not a rolling replacement: {shares}"
    assert min(n for _, n in both) < replicas, f"the new revision started whole: {shares}"
    lowest = min(s.ready for s in samples)
    most = max(s.spec_replicas for s in samples)

    end = samples[-1]
    ro = end.rollout
    history = {e["revision"]: e for e in ro["history"]}
    assert history[old]["phase"] == "Superseded"
    assert history[new]["phase"] == "Stable"
    starts = [m for _, r, m in events(kubectl, namespace, name) if r == "RolloutStarted"]
    assert any(new in m and "(Rolling)" in m for m in starts), starts
    obj = wait_ready(kubectl, namespace, name, timeout=30)
    assert obj["status"]["revision"] == new
    assert obj["status"]["readyReplicas"] == replicas
    print(
        f"\nrolling {replicas} replicas (maxSurge {max_surge}, maxUnavailable {max_unavailable}):"
        f" {took:.1f}s,"
        f" {len(samples)} samples, lowest ready {lowest} (floor {floor}), most asked {most}"
        f" (ceiling {ceiling}), (old, new) replicas {shares}"
    )


# -- Recreate ----------------------------------------------------------------------------------------


def test_recreate_removes_the_old_revision_before_the_new_one_gets_pods(
    api: Api, kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    """Old pods take two seconds to go away once deleted (kwok's terminate-seconds), as a model server
    draining its requests would: the new revision must wait for them, not only for the scale-down."""
    name = "recreate"
    replicas = 3
    annotations = {**START, "e2e.kubeforge.dev/terminate-seconds": "2"}
    body = fleet(
        name,
        **base_spec(replicas, rollout={"strategy": "Recreate"}, podMetadata={"annotations": annotations}),
    )
    old = steady(api, kubectl, namespace, body, replicas)
    new_body = fleet(name, **{**body["spec"], "image": IMAGE + "-v2"})
    new = revision_of(new_body)

    def invariants(s: Sample) -> None:
        old_s, new_s = s.of(old), s.of(new)
        # Never both revisions with pods (terminating ones included), nor both asked for.
        assert not (old_s.pods and new_s.pods), f"both revisions have pods: {s.revisions}"
        assert not (old_s.spec_replicas and new_s.spec_replicas), f"both revisions scaled up: {s.revisions}"
        assert s.spec_replicas <= replicas, f"more than {replicas} replicas asked: {s.revisions}"

    started = time.monotonic()
    kubectl.apply(new_body, namespace)
    samples = watch(
        api,
        namespace,
        name,
        promoted_alone(new, replicas),
        timeout=120,
        description=f"{new} recreated",
        check=invariants,
    )
    took = time.monotonic() - started
    # The gap in service Recreate accepts: at some point nothing served.
    assert min(s.ready for s in samples) == 0
    gone_at = next(s.at for s in samples if s.of(old).pods == 0)
    first_new_at = next(s.at for s in samples if s.of(new).pods)
    assert first_new_at >= gone_at
    assert any(s.of(old).terminating for s in samples), "old pods never seen terminating"
    ro = samples[-1].rollout
    history = {e["revision"]: e for e in ro["history"]}
    assert (history[old]["phase"], history[new]["phase"]) == ("Superseded", "Stable")
    obj = wait_ready(kubectl, namespace, name, timeout=30)
    assert obj["status"]["revision"] == new
    print(
        f"\nrecreate {replicas} replicas: {took:.1f}s; old pods gone {gone_at - started:.1f}s after apply,"
        f" first new pod {first_new_at - started:.1f}s"
    )


# -- Canary without data -----------------------------------------------------------------------------


def test_canary_without_analysis_data_never_promotes_and_aborts_after_the_inconclusive_limit(
    api: Api,
    cluster: LocalCluster,
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    loadsim: LoadSimulator,
) -> None:
    """The load simulator offers this fleet no load: no revision has a request in Prometheus, so every
    measurement of the canary is inconclusive. The step's pause is short, so only the missing pass holds
    it; after `inconclusiveLimit` measurements the rollout aborts, and `resume` (with load) completes it."""
    name = "nodata"
    interval, limit = 2, 3
    analysis = {
        "intervalSeconds": interval,
        "windowSeconds": 4,
        "maxErrorRate": 0.05,
        "maxLatencyP95": 1.0,
        "inconclusiveLimit": limit,
    }
    rollout = {"steps": [{"weight": 50, "pauseSeconds": 1}], "analysis": analysis}
    body = fleet(name, **base_spec(4, rollout=rollout))
    stable = steady(api, kubectl, namespace, body, 4)
    new_body = fleet(name, **{**body["spec"], "image": IMAGE + "-v2"})
    canary = revision_of(new_body)

    def never_promoted(s: Sample) -> None:
        ro = s.rollout
        assert ro.get("stableRevision") == stable, f"promoted without data: {ro}"
        assert s.of(canary).spec_replicas <= 2, f"canary beyond its 50% step: {s.revisions}"
        analysis_run = ro.get("lastAnalysis") or {}
        assert analysis_run.get("verdict") in (None, "Inconclusive"), analysis_run

    kubectl.apply(new_body, namespace)
    samples = watch(
        api,
        namespace,
        name,
        lambda s: s.rollout.get("phase") == "Aborted",
        timeout=90,
        description=f"{canary} aborted",
        check=never_promoted,
    )
    step_ready = next(s.at for s in samples if s.rollout.get("stepReadyAt"))
    aborted = samples[-1]
    paused = [s.rollout for s in samples if s.rollout.get("phase") == "Paused"]
    assert paused, "the rollout never paused on inconclusive analysis"
    assert "inconclusive" in paused[-1]["message"], paused[-1]
    counts = [int(s.rollout.get("consecutiveInconclusive") or 0) for s in samples]
    assert max(counts) >= limit - 1, counts
    ro = aborted.rollout
    assert ro["canaryRevision"] == canary
    assert ro["stableRevision"] == stable
    assert ro["canaryWeight"] == 0
    assert ro["lastAnalysis"]["verdict"] == "Inconclusive"
    assert canary not in (ro.get("failedRevisions") or []), "an abort is not held against the revision"
    # limit measurements, one interval apart, after the step's pods were ready (plus a pass's latency).
    took = aborted.at - step_ready
    assert (limit - 1) * interval - 1 <= took <= (limit + 2) * interval + 2, took

    # All traffic and replicas back on stable; Degraded says why; an Event and the history too.
    final = watch(
        api,
        namespace,
        name,
        lambda s: s.of(stable).ready == 4 and s.of(canary).pods == 0,
        timeout=30,
        description="canary at zero, stable at 4",
    )[-1]
    degraded = condition(final.fleet, "Degraded")
    assert degraded is not None
    assert (degraded["status"], degraded["reason"]) == ("True", "RolloutAborted")
    history = {e["revision"]: e for e in final.rollout["history"]}
    assert history[canary]["phase"] == "Aborted"
    assert history[stable]["phase"] == "Stable"
    warnings = [(r, m) for t, r, m in events(kubectl, namespace, name) if t == "Warning"]
    assert any(r == "RolloutAborted" and canary in m for r, m in warnings), warnings
    # ... and counted in the operator's own metrics as an aborted rollout.
    assert f'kubeforge_rollout_outcomes_total{{namespace="{namespace}",outcome="Aborted"}} 1.0' in (
        operator.metrics()
    )

    # It stays aborted: later passes (resync, ticks) do not start it again.
    def holds(s: Sample) -> None:
        assert s.rollout.get("phase") == "Aborted", s.rollout
        assert s.of(canary).spec_replicas == 0, s.revisions

    watch(
        api,
        namespace,
        name,
        lambda s: s.at - final.at >= 3 * interval,
        timeout=30,
        description="the abort holding",
        check=holds,
    )

    # With load (and so data), `kubeforge rollout resume` starts it again and it is promoted.
    loadsim.set_load(namespace, name, 20.0, **MODEL)
    cli(cluster, namespace, "rollout", "resume", name)
    watch(
        api,
        namespace,
        name,
        promoted_alone(canary, 4),
        timeout=90,
        description=f"{canary} promoted after resume",
    )
    assert "RolloutRetried" in [r for _, r, _ in events(kubectl, namespace, name)]
    print(
        f"\ncanary without data: aborted {took:.1f}s after its step was ready "
        f"(interval {interval}s, inconclusiveLimit {limit})"
    )


# -- Autoscaling during a canary step ----------------------------------------------------------------


def test_autoscaler_changing_the_total_mid_step_keeps_the_canary_split(
    api: Api, kubectl: Kubectl, namespace: str, operator: OperatorProcess, loadsim: LoadSimulator
) -> None:
    """Requests per second per replica, target 5: 20 rps holds 4 replicas, 30 rps wants 6. A canary held at
    a 25% step (no pause: it waits for a promote) runs ceil(total * 25%) canary pods and ceil(total * 75%)
    stable ones (both round up, so the stable revision keeps its share): 3 + 1 of 4, then 5 + 2 of 6.

    The bounds are [4, 6] on purpose: this test is about the split, not the autoscaler's arithmetic. (A
    per-replica rate averaged over a window that still remembers fewer replicas, multiplied by the ready
    count just after new pods became ready, overshoots a scale-up; the bounds keep that out of the way.)"""
    name = "split"
    weight = 25
    autoscaling: dict[str, Any] = {
        "minReplicas": 4,
        "maxReplicas": 6,
        "metric": "requestsPerSecond",
        "target": 5,
        "tolerance": 0.15,
        "intervalSeconds": 2,
        "stableWindowSeconds": 6,
        "panicWindowSeconds": 3,
        "scaleDownStabilizationSeconds": 120,
    }
    spec = base_spec(4, autoscaling=autoscaling, rollout={"steps": [{"weight": weight}]})
    body = fleet(name, **spec)
    loadsim.set_load(namespace, name, 20.0, **MODEL)
    stable = steady(api, kubectl, namespace, body, 4)
    new_body = fleet(name, **{**body["spec"], "image": IMAGE + "-v2"})
    canary = revision_of(new_body)

    # The Service's share of the canary: its ready pods over all ready pods, in whole percents.
    traffic = {4: 25, 6: 29}

    def split_ok(s: Sample, total: int) -> bool:
        want = math.ceil(total * weight / 100)
        kept = math.ceil(total * (100 - weight) / 100)
        return (
            s.fleet["status"].get("desiredReplicas") == total
            and (s.of(stable).spec_replicas, s.of(canary).spec_replicas) == (kept, want)
            and (s.of(stable).ready, s.of(canary).ready) == (kept, want)
            and s.rollout.get("canaryWeight") == traffic[total]
        )

    def no_promotion(s: Sample) -> None:
        assert s.rollout.get("stableRevision") == stable, f"promoted without approval: {s.rollout}"

    kubectl.apply(new_body, namespace)
    at_four = watch(
        api,
        namespace,
        name,
        lambda s: split_ok(s, 4) and s.rollout.get("phase") == "Paused",
        timeout=60,
        description="25% of 4: 3 stable + 1 canary, waiting for a promote",
        check=no_promotion,
    )[-1]
    assert at_four.rollout["currentStep"] == 0

    raised = time.monotonic()
    loadsim.set_load(namespace, name, 30.0, **MODEL)
    totals: set[int] = set()

    def consistent(s: Sample) -> None:
        no_promotion(s)
        # The operator writes the revision Deployments before the fleet's status, so a sample can see
        # the new total in the Deployments while status.desiredReplicas still says the old one: the
        # total a sample shows is the larger of the two.
        desired = int(s.fleet["status"].get("desiredReplicas") or 0)
        totals.add(desired)
        assert desired <= autoscaling["maxReplicas"]
        # Both revisions round up: at most one pod above the total.
        assert s.spec_replicas <= autoscaling["maxReplicas"] + 1, f"more pods asked: {s.revisions}"
        # Whatever the total, the canary is never asked for more than its share.
        total = max(desired, s.spec_replicas)
        assert s.of(canary).spec_replicas <= math.ceil(total * weight / 100), s.revisions

    at_six = watch(
        api,
        namespace,
        name,
        lambda s: split_ok(s, 6),
        timeout=90,
        description="25% of 6: 5 stable + 2 canary",
        check=consistent,
    )[-1]
    took = at_six.at - raised
    ro = at_six.rollout
    assert ro["canaryRevision"] == canary
    assert ro["currentStep"] == 0
    assert at_six.fleet["status"]["autoscaler"]["desiredReplicas"] == 6
    assert totals <= {4, 5, 6}, f"the total wandered: {sorted(totals)}"

    # Promoted, the new revision takes the whole autoscaled total.
    kubectl.run(
        "patch",
        "inferencefleet",
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"rollout":{"promote":{"revision":"' + canary + '","step":0}}}}',
    )
    watch(api, namespace, name, promoted_alone(canary, 6), timeout=60, description=f"{canary} promoted at 6")
    print(f"\nautoscaled 4 -> 6 mid-step in {took:.1f}s; split 3/1 -> 5/2 at {weight}%")
