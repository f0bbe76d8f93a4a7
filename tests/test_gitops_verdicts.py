"""GitOps health of both kinds, judged by the code Argo CD and Flux run, on statuses the real status
functions write.

- Argo CD: the chart's `argocd/health.lua`, run in a real Lua 5.1 interpreter (the dialect Argo CD
  embeds), from the `lupa` wheel (a pinned dev dependency, so it is always there).
- Flux: kstatus itself (sigs.k8s.io/cli-utils), through the small checker `e2e/tools/build.sh kstatus`
  builds into the binary cache (built on first use, about 10 s). e2e/test_gitops_health.py uses both on
  a live cluster.

The fleets are driven through the controller against the in-memory API of test_fleet_controller.py, so
each status is what a reconcile writes; `metadata.generation` is bumped on every spec change, as the
API server does.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from kubeforge.api.rollout import AnalysisSpec
from kubeforge.policy.analysis import MetricSample
from kubeforge.policy.training import Plan, decide
from kubeforge_e2e.gitops import HEALTH_LUA, argocd_health, kstatus
from test_chart import helm, helm_env, only, render
from test_fleet_controller import NS, Clock, FakeKube, FakeSource, controller
from test_fleet_rollout import fleet, replicas, rev, rollout
from test_trainingjob_policy import FITS, NO_FIT, _failed_worker, _job, _obs, _pod, _running, _spec, _status

__all__ = ["helm", "helm_env"]  # fixtures used by name below

Obj = dict[str, Any]


def verdicts(obj: Obj) -> tuple[str, str]:
    """(kstatus status, Argo CD health status)."""
    return kstatus(obj)[0], argocd_health(obj)[0]


# -- InferenceFleet ------------------------------------------------------------------------------------

MANUAL: dict[str, Any] = {
    "model": {"name": "m"},
    "image": "img",
    "replicas": 4,
    "rollout": {"steps": [{"weight": 25}]},  # no pauseSeconds: waits for `kubeforge rollout promote`
}


class Fleet:
    """One fleet on the in-memory API, with the spec changes a GitOps tool would push."""

    def __init__(self, spec: dict[str, Any], source: FakeSource | None = None) -> None:
        self.kube, self.clock = FakeKube(), Clock()
        self.ctrl = controller(self.kube, source, self.clock)
        self.kube.add_fleet("chat", spec)

    @property
    def obj(self) -> Obj:
        return fleet(self.kube)

    def push(self, spec: dict[str, Any]) -> None:
        self.obj["spec"] = spec
        self.obj["metadata"]["generation"] += 1

    async def settle(self, passes: int = 3, seconds: float = 2) -> None:
        for _ in range(passes):
            await self.ctrl.reconcile(self.obj)
            self.kube.run_deployment()
            self.clock.now += timedelta(seconds=seconds)
        await self.ctrl.reconcile(self.obj)

    def phase(self) -> str | None:
        return rollout(self.kube).get("phase")


async def test_a_fleet_reads_in_progress_paused_failed_until_a_new_spec_then_current() -> None:
    f = Fleet(MANUAL)
    await f.settle()
    assert f.phase() == "Promoted"
    assert verdicts(f.obj) == ("Current", "Healthy")

    second = {**MANUAL, "image": "img2"}
    f.push(second)
    assert verdicts(f.obj) == ("InProgress", "Progressing"), "the operator has not seen the new spec"
    await f.ctrl.reconcile(f.obj)
    assert f.phase() == "Progressing"  # the canary pod is not ready yet
    assert verdicts(f.obj) == ("InProgress", "Progressing")

    await f.settle()
    assert f.phase() == "Paused"
    assert verdicts(f.obj) == ("InProgress", "Suspended")

    f.push({**second, "rollout": {**MANUAL["rollout"], "abortRevision": rev(second)}})
    await f.settle()
    assert f.phase() == "Aborted"
    assert verdicts(f.obj) == ("Failed", "Degraded")
    assert argocd_health(f.obj)[1] == f"rollout of {rev(second)} aborted by spec.rollout.abortRevision"
    patches = f.kube.status_patches
    await f.settle(seconds=600)
    assert f.phase() == "Aborted"
    assert verdicts(f.obj) == ("Failed", "Degraded"), "still failed while the spec stays"
    assert f.kube.status_patches == patches, "nothing changed, nothing written"

    third = {**MANUAL, "image": "img3"}
    f.push(third)
    await f.ctrl.reconcile(f.obj)
    assert verdicts(f.obj) == ("InProgress", "Progressing"), "a new spec is in progress again"
    await f.settle()
    f.push({**third, "rollout": {**MANUAL["rollout"], "promote": {"revision": rev(third), "step": 0}}})
    await f.settle()
    assert f.phase() == "Promoted"
    assert replicas(f.kube) == {rev(third): 4}
    assert verdicts(f.obj) == ("Current", "Healthy")
    await f.ctrl.forget(NS, "chat")


async def test_a_rolled_back_fleet_reads_failed_until_the_template_changes() -> None:
    analysis = AnalysisSpec.model_validate({"intervalSeconds": 1, "maxErrorRate": 0.05, "failureLimit": 2})
    spec = {
        **MANUAL,
        "rollout": {"steps": [{"weight": 25, "pauseSeconds": 0}], "analysis": analysis.to_wire()},
    }
    source = FakeSource()
    f = Fleet(spec, source)
    await f.settle()
    bad = {**spec, "image": "img-bad"}
    source.samples = {rev(bad): MetricSample(0.4, 0.2), rev(spec): MetricSample(0.0, 0.2)}
    f.push(bad)
    await f.settle(passes=4)
    assert f.phase() == "RolledBack"
    assert verdicts(f.obj) == ("Failed", "Degraded")

    # Scaling the fleet is a new generation, but the template still asks for the failed revision.
    f.push({**bad, "replicas": 5})
    await f.settle()
    assert f.phase() == "RolledBack"
    assert verdicts(f.obj) == ("Failed", "Degraded")

    good = {**bad, "image": "img-good"}
    source.samples[rev(good)] = MetricSample(0.0, 0.2)
    f.push(good)
    await f.ctrl.reconcile(f.obj)
    assert verdicts(f.obj) == ("InProgress", "Progressing")
    await f.settle(passes=6)
    assert f.phase() == "Promoted"
    assert verdicts(f.obj) == ("Current", "Healthy")
    await f.ctrl.forget(NS, "chat")


async def test_an_invalid_fleet_reads_failed() -> None:
    f = FakeKube()
    obj = f.add_fleet("9lives", MANUAL)  # no Service can have this name
    await controller(f).reconcile(obj)
    assert verdicts(obj) == ("Failed", "Degraded")


# -- TrainingJob ---------------------------------------------------------------------------------------


def _job_object(plan: Plan, generation: int = 1) -> Obj:
    return {
        "apiVersion": "kubeforge.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "tj", "namespace": "ns", "generation": generation},
        "status": plan.status.to_wire(),
    }


TRAINING_PHASES: dict[str, tuple[Callable[[], Plan], str, tuple[str, str]]] = {
    "queued": (lambda: decide(_obs(admission=NO_FIT)), "Queued", ("InProgress", "Progressing")),
    "pending": (lambda: decide(_obs(admission=FITS)), "Pending", ("InProgress", "Progressing")),
    "running": (
        lambda: decide(_obs(status=_status(phase="Pending"), jobs=(_job(),), pods=(_pod(0), _pod(1)))),
        "Running",
        ("InProgress", "Progressing"),
    ),
    "restarting": (
        lambda: decide(
            # The Job controller stops the surviving peer when the Job fails, as the real one does.
            _obs(
                status=_running(), jobs=(_job(failed=True),), pods=(_pod(0, deleting=True), _failed_worker(1))
            )
        ),
        "Restarting",
        ("InProgress", "Progressing"),
    ),
    "succeeded": (
        lambda: decide(
            _obs(
                status=_running(),
                jobs=(_job(complete=True),),
                pods=(_pod(0, phase="Succeeded"), _pod(1, phase="Succeeded")),
            )
        ),
        "Succeeded",
        ("Current", "Healthy"),
    ),
    "failed": (
        lambda: decide(
            _obs(
                _spec(policy={"maxRestarts": 0}),
                _running(),
                jobs=(_job(failed=True),),
                pods=(_failed_worker(1),),
            )
        ),
        "Failed",
        ("Failed", "Degraded"),
    ),
    "suspended": (
        lambda: decide(_obs(_spec(suspend=True), _running(), jobs=(_job(),), pods=(_pod(0),))),
        "Suspended",
        ("InProgress", "Suspended"),
    ),
}


@pytest.mark.parametrize("case", list(TRAINING_PHASES))
def test_training_job_health(case: str) -> None:
    make, phase, expected = TRAINING_PHASES[case]
    plan = make()
    assert plan.status.phase == phase
    assert verdicts(_job_object(plan)) == expected
    assert verdicts(_job_object(plan, generation=2)) == ("InProgress", "Progressing"), "spec not seen yet"


def test_lua_without_a_status_is_progressing() -> None:
    bare: Obj = {"kind": "TrainingJob", "metadata": {"name": "tj", "generation": 1}}
    assert argocd_health(bare) == ("Progressing", "Waiting for the operator to write a status")


# -- the chart -----------------------------------------------------------------------------------------


def test_the_chart_ships_the_lua_for_both_kinds(helm: Path, helm_env: dict[str, str]) -> None:
    health = "kubeforge-argocd-health"
    assert not [d for d in render(helm, helm_env) if d["metadata"]["name"] == health], "opt-in"
    config = only(render(helm, helm_env, "argocd.healthCheckConfigMap=true"), "ConfigMap", health)
    lua = HEALTH_LUA.read_text()
    assert config["data"] == {
        "resource.customizations.health.kubeforge.dev_InferenceFleet": lua,
        "resource.customizations.health.kubeforge.dev_TrainingJob": lua,
    }
