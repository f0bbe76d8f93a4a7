"""The TrainingJob side of arbitration: an elastic job keeps to the ceiling every fleet's `status.borrowed`
implies, derived from the fleet cache alone (so a restarted operator derives the same), says so in an
Event, and grows back once the record is gone."""

from __future__ import annotations

import copy
from typing import Any

from kubeforge.api.inferencefleet import KIND
from kubeforge.api.trainingjob import TrainingJobSpec
from kubeforge.controllers.lending import lending_of
from kubeforge.controllers.trainingjob import _lender_keys
from kubeforge.kube.kinds import INFERENCEFLEET
from test_trainingjob_controller import TJ, _controller, _settle
from test_trainingjob_resize import ResizingKube, _elastic_tj

API_VERSION = INFERENCEFLEET.api_version
TJ_KEY = (*TJ, "ns", "tj")


def _fleet(name: str = "chat", *, borrowed: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"model": {"name": "m"}, "image": "srv:1"},
        "status": {"borrowed": borrowed} if borrowed is not None else {},
    }


LENT = {
    "job": "ns/tj",
    "workers": 1,
    "gpus": 8,
    "fromWorkers": 2,
    "replicas": 8,
    "forReplicas": 9,
    "since": "2026-01-01T12:00:00Z",
}


async def test_an_elastic_job_shrinks_to_what_fleets_left_it_and_grows_back_when_given_back() -> None:
    kube = ResizingKube()
    kube.nodes(2)
    kube.add(_elastic_tj())
    controller = _controller(kube)
    await _settle(kube, controller)
    [job] = kube.jobs()
    assert job["spec"]["parallelism"] == 2
    kube.run_pods(job)
    await _settle(kube, controller)
    kube.calls.clear()

    kube.add(_fleet(borrowed=[LENT]))
    # A fresh controller (the operator restarted after the fleet wrote its record) derives the ceiling.
    controller = _controller(kube)
    await _settle(kube, controller)
    assert [c for c in kube.calls if c[0] == "patch"] == [("patch", "Job", "tj-a0")]
    assert kube.jobs()[0]["spec"]["parallelism"] == 1
    lent = [e for e in kube.events if e[1] == "LentToFleet"]
    assert len(lent) == 1
    assert "lent to an InferenceFleet" in lent[0][2]
    assert kube.objects[TJ_KEY]["status"]["lastResize"]["reason"] == "LentToFleet"

    # The worker above the ceiling leaves; no further resize (the ceiling does not move with the size).
    del kube.objects[("v1", "Pod", "ns", "tj-a0-1")]
    kube.calls.clear()
    await _settle(kube, controller)
    assert [c for c in kube.calls if c[0] == "patch"] == []

    # The fleet gives back (drops its record): the job grows back by its normal growth.
    fleet = kube.objects[(API_VERSION, KIND, "ns", "chat")]
    fleet["status"] = {}
    await _settle(kube, controller)
    assert kube.jobs()[0]["spec"]["parallelism"] == 2


async def test_a_deleted_fleets_record_holds_nothing() -> None:
    kube = ResizingKube()
    kube.nodes(2)
    gone = _fleet(borrowed=[LENT])
    gone["metadata"]["deletionTimestamp"] = "2026-01-01T12:00:00Z"
    kube.add(gone)
    kube.add(_elastic_tj())
    controller = _controller(kube)
    await _settle(kube, controller)
    [job] = kube.jobs()
    assert job["spec"]["parallelism"] == 2


def test_a_fleet_change_wakes_the_jobs_its_record_names_and_only_on_a_change() -> None:
    before = _fleet(borrowed=[LENT])
    after = copy.deepcopy(before)
    assert set(_lender_keys(None, before)) == {("ns", "tj")}
    assert set(_lender_keys(before, after)) == set()
    after["status"] = {}
    assert set(_lender_keys(before, after)) == {("ns", "tj")}
    assert set(_lender_keys(before, None)) == {("ns", "tj")}


def test_what_a_job_lends() -> None:
    base = {"image": "x", "resources": {"gpus": 2}}
    elastic = {**base, "elastic": {"minWorkers": 1, "maxWorkers": 4}}
    assert lending_of(TrainingJobSpec.model_validate(elastic)) == "aboveMin"
    assert lending_of(TrainingJobSpec.model_validate({**elastic, "preemptible": False})) == "none"
    assert lending_of(TrainingJobSpec.model_validate({**base, "workers": 2})) == "none"
    assert lending_of(TrainingJobSpec.model_validate({**base, "workers": 2, "preemptible": True})) == "whole"
    kueue = {**base, "workers": 2, "preemptible": True, "queueName": "q"}
    assert lending_of(TrainingJobSpec.model_validate(kueue)) == "none", "Kueue's jobs are Kueue's to preempt"


async def test_a_new_attempt_of_a_job_that_lent_is_admitted_within_its_ceiling() -> None:
    """A restarted attempt does not take back at admission what a fleet still holds."""
    kube = ResizingKube()
    kube.nodes(2)
    kube.add(_fleet(borrowed=[LENT]))
    kube.add(_elastic_tj())
    await _settle(kube, _controller(kube))
    [job] = kube.jobs()
    assert job["spec"]["parallelism"] == 1, "room for 2, ceiling 1"
