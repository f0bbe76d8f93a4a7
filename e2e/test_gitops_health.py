"""GitOps health end to end: what Flux (kstatus, the real library through the project's checker) and Argo
CD (the chart's Lua health check, in a real Lua interpreter) conclude about live InferenceFleets and
TrainingJobs at each phase, read from the API server as those tools read them.

Specs change by `kubectl apply` of the whole manifest, as a GitOps pipeline pushes them; promote and
abort are the `spec.rollout.promote` and `spec.rollout.abortRevision` fields the CLI would set."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from kubeforge_e2e import Kubectl, wait_for
from kubeforge_e2e.gitops import argocd_health, kstatus
from kubeforge_e2e.loadsim import LoadSimulator
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.workloads import (
    ANNOTATION,
    IMAGE,
    Obj,
    fleet,
    get_fleet,
    get_trainingjob,
    trainingjob_manifest,
)
from test_rollout import ANALYSIS, STEPS, base_spec, revision_of, rollout_of, steady_fleet, wait_phase

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus, pytest.mark.timeout(420)]

Verdict = tuple[str, str]
"""(kstatus status, Argo CD health status)."""


def verdicts(obj: Obj) -> Verdict:
    return kstatus(obj)[0], argocd_health(obj)[0]


def watch(
    read: Callable[[], Obj], until: Callable[[Obj], bool], timeout: float = 90
) -> list[tuple[Obj, Verdict]]:
    """Every distinct state seen (with its verdicts) until `until` holds for one, which ends the list."""
    seen: list[tuple[Obj, Verdict]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = read()
        state = (obj, verdicts(obj))
        if not seen or seen[-1][0].get("status") != obj.get("status"):
            seen.append(state)
        if until(obj):
            return seen
        time.sleep(0.25)
    raise AssertionError(f"not reached in {timeout}s; last seen {seen[-1] if seen else None}")


def phase_of(obj: Obj) -> str | None:
    return (obj.get("status", {}).get("rollout") or {}).get("phase")


def wait_verdicts(read: Callable[[], Obj], expected: Verdict, timeout: float = 60) -> Obj:
    def reached() -> Obj | None:
        obj = read()
        return obj if verdicts(obj) == expected else None

    found: Obj = wait_for(reached, timeout=timeout, interval=0.25, description=f"verdicts {expected}")
    return found


def test_fleet_health_through_a_canary_pause_promote_abort_and_new_spec(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess, loadsim: LoadSimulator
) -> None:
    name = "gitops"
    body = base_spec(rollout={"steps": [{"weight": 50}]})  # no pauseSeconds: waits for a promote

    def read() -> Obj:
        return get_fleet(kubectl, namespace, name)

    steady_fleet(kubectl, loadsim, namespace, name, body)
    wait_verdicts(read, ("Current", "Healthy"))

    # A new template: InProgress from the moment it is applied until the canary waits at its step.
    v2_body = {**body, "image": IMAGE + "-v2"}
    v2 = revision_of(fleet(name, **v2_body)["spec"])
    kubectl.apply(fleet(name, **v2_body), namespace)
    seen = watch(
        read,
        lambda o: phase_of(o) == "Paused" and rollout_of(kubectl, namespace, name).get("canaryWeight") == 50,
    )
    assert {v[0] for _, v in seen} == {"InProgress"}, [(phase_of(o), v) for o, v in seen]
    assert "Progressing" in {phase_of(o) for o, _ in seen}, "the canary was never seen on its way"
    paused = seen[-1]
    assert paused[1] == ("InProgress", "Suspended")
    assert kstatus(paused[0])[1].endswith("waiting for `kubeforge rollout promote`")

    # Promote (GitOps: the field in the manifest): Current once v2 alone serves.
    promoted_body = {**v2_body, "rollout": {**body["rollout"], "promote": {"revision": v2, "step": 0}}}
    kubectl.apply(fleet(name, **promoted_body), namespace)
    seen = watch(read, lambda o: verdicts(o) == ("Current", "Healthy"))
    assert phase_of(seen[-1][0]) == "Promoted"
    assert "Failed" not in {v[0] for _, v in seen}

    # Abort a third revision at its step: Failed, and it stays Failed while the spec stays.
    v3_body = {**body, "image": IMAGE + "-v3"}
    v3 = revision_of(fleet(name, **v3_body)["spec"])
    kubectl.apply(fleet(name, **v3_body), namespace)
    wait_phase(kubectl, namespace, name, "Paused", canaryRevision=v3, canaryWeight=50)
    aborted_body = {**v3_body, "rollout": {**body["rollout"], "abortRevision": v3}}
    kubectl.apply(fleet(name, **aborted_body), namespace)
    obj = wait_verdicts(read, ("Failed", "Degraded"))
    assert phase_of(obj) == "Aborted"
    assert kstatus(obj)[1] == f"rollout of {v3} aborted by spec.rollout.abortRevision"
    until = time.monotonic() + 6  # several resyncs and rollout ticks
    while time.monotonic() < until:
        assert verdicts(read()) == ("Failed", "Degraded")
        time.sleep(0.5)

    # A new spec: InProgress at once (generation not yet observed), and still once the operator saw it.
    v4_body = {**body, "image": IMAGE + "-v4"}
    kubectl.apply(fleet(name, **v4_body), namespace)
    assert verdicts(read())[0] == "InProgress"

    def observed() -> Obj | None:
        o = read()
        return o if o["status"].get("observedGeneration") == o["metadata"]["generation"] else None

    obj = wait_for(observed, timeout=30, interval=0.25, description="new generation observed")
    assert verdicts(obj)[0] == "InProgress"
    assert argocd_health(obj)[0] in ("Progressing", "Suspended")


def test_a_rolled_back_fleet_is_failed_until_its_template_changes(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess, loadsim: LoadSimulator
) -> None:
    name = "rollback"
    body = base_spec(rollout={"steps": STEPS, "analysis": ANALYSIS})

    def read() -> Obj:
        return get_fleet(kubectl, namespace, name)

    stable = steady_fleet(kubectl, loadsim, namespace, name, body)
    bad_body = {**body, "image": IMAGE + "-broken"}
    bad = revision_of(fleet(name, **bad_body)["spec"])
    loadsim.set_fault(namespace, name, bad, error_rate=0.3)
    kubectl.apply(fleet(name, **bad_body), namespace)
    seen = watch(read, lambda o: phase_of(o) == "RolledBack", timeout=120)
    assert {v[0] for _, v in seen[:-1]} == {"InProgress"}, [(phase_of(o), v) for o, v in seen]
    obj = wait_verdicts(read, ("Failed", "Degraded"))
    assert obj["status"]["rollout"]["stableRevision"] == stable
    assert bad in kstatus(obj)[1]

    fixed_body = {**body, "image": IMAGE + "-fixed"}
    fixed = revision_of(fleet(name, **fixed_body)["spec"])
    kubectl.apply(fleet(name, **fixed_body), namespace)
    seen = watch(read, lambda o: verdicts(o) == ("Current", "Healthy"), timeout=120)
    assert seen[-1][0]["status"]["rollout"]["stableRevision"] == fixed
    assert "Failed" not in {v[0] for _, v in seen[1:]}, "the new spec is not judged by the old failure"


def test_training_job_health_queued_running_succeeded_and_failed(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    def reader(name: str) -> Callable[[], Obj]:
        return lambda: get_trainingjob(kubectl, namespace, name)

    # Three workers of 8 H100s: the cluster has two such nodes, so it waits for capacity.
    kubectl.apply(
        trainingjob_manifest("toobig", workers=3, resources={"gpus": 8, "gpuType": "H100"}), namespace
    )
    queued = watch(reader("toobig"), lambda o: o.get("status", {}).get("phase") == "Queued")[-1]
    assert queued[1] == ("InProgress", "Progressing")
    kubectl("delete", "trainingjob", "toobig", "-n", namespace, "--wait=true")

    kubectl.apply(trainingjob_manifest("ok", run_seconds=6), namespace)
    seen = watch(reader("ok"), lambda o: o.get("status", {}).get("phase") == "Succeeded", timeout=120)
    during = {(o.get("status", {}).get("phase"), v) for o, v in seen[:-1]}
    assert ("Running", ("InProgress", "Progressing")) in during, during
    assert {v for _, v in during} <= {("InProgress", "Progressing")}, during
    assert seen[-1][1] == ("Current", "Healthy")

    failing = trainingjob_manifest(
        "broken",
        annotations={f"{ANNOTATION}fail-exit-code": "42", f"{ANNOTATION}fail-after-seconds": "1"},
        policy={"maxRestarts": 3, "backoffSeconds": 1, "permanentExitCodes": [42]},
    )
    kubectl.apply(failing, namespace)
    seen = watch(reader("broken"), lambda o: o.get("status", {}).get("phase") == "Failed", timeout=120)
    assert seen[-1][1] == ("Failed", "Degraded")
    assert "exited with code 42" in kstatus(seen[-1][0])[1]
