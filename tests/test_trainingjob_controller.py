"""The TrainingJob controller against an in-memory API server: ordering, crash safety, the admission
lock, events, and that it never writes a user's spec."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import copy
import itertools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from fakecaches import FakeCaches
from kubeforge.controllers import trainingjob as trainingjob_controller
from kubeforge.controllers.runtime import OperatorConfig
from kubeforge.controllers.trainingjob import TrainingJobController
from kubeforge.kube.client import Kube
from kubeforge.policy.conditions import format_time
from kubeforge.policy.usage import UsageReading
from podvalidation import refuse_unsupported_field_refs

Obj = dict[str, Any]
TJ = ("kubeforge.dev/v1alpha1", "TrainingJob")
H100 = "NVIDIA-H100-80GB-HBM3"


class CrashError(Exception):
    """The operator died here."""


class FakeKube:
    """Just enough of an API server: objects by (apiVersion, kind, namespace, name), server-side apply
    as create-or-replace, background cascade for Jobs, merge patches of status."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str | None, str], Obj] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.events: list[tuple[str, str, str]] = []
        self.crash_at: int | None = None
        self.writes = 0
        self._uids = itertools.count(1)

    def _write(self, op: str, kind: str, name: str) -> None:
        if self.crash_at is not None and self.writes == self.crash_at:
            self.crash_at = None
            raise CrashError(f"killed before {op} {kind}/{name}")
        self.writes += 1
        self.calls.append((op, kind, name))

    def add(self, obj: Obj) -> Obj:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{next(self._uids)}")
        meta.setdefault("creationTimestamp", format_time(datetime.now(UTC)))
        meta.setdefault("generation", 1)
        self.objects[(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])] = obj
        return obj

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        found = self.objects.get((api_version, kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        labels: Mapping[str, str] | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> builtins.list[Obj]:
        out = []
        for (av, k, ns, _), obj in self.objects.items():
            if (av, k) != (api_version, kind) or (namespace is not None and ns != namespace):
                continue
            have = obj["metadata"].get("labels") or {}
            if all(have.get(key) == value for key, value in (labels or {}).items()):
                out.append(copy.deepcopy(obj))
        return out

    async def apply(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        self._write("apply", obj["kind"], meta["name"])
        key = (obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        if key in self.objects:
            merged = copy.deepcopy(self.objects[key])
            merged["spec"] = copy.deepcopy(obj["spec"])
            merged["metadata"]["labels"] = dict(meta.get("labels") or {})
            self.objects[key] = merged
            return copy.deepcopy(merged)
        return copy.deepcopy(self.add(obj))

    async def apply_if_changed(self, obj: Obj, cached: Obj | None) -> Obj | None:
        if cached is not None and cached.get("spec") == obj.get("spec"):
            return None
        return await self.apply(obj)

    def caches(self) -> FakeCaches:
        return FakeCaches(
            lambda: [(k, ns or "", obj) for (_, k, ns, _), obj in list(self.objects.items())], copies=True
        )

    async def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        foreground: bool = False,
    ) -> bool:
        self._write("delete", kind, name)
        gone = self.objects.pop((api_version, kind, namespace, name), None)
        if gone is None:
            return False
        uid = gone["metadata"]["uid"]
        for key, obj in list(self.objects.items()):
            if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or []):
                del self.objects[key]
        return True

    async def patch_status(self, api_version: str, kind: str, name: str, namespace: str, status: Obj) -> Obj:
        self._write("patch_status", kind, name)
        obj = self.objects[(api_version, kind, namespace, name)]
        current = obj.setdefault("status", {})
        for key, value in status.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = copy.deepcopy(value)
        return copy.deepcopy(obj)

    async def patch(self, *args: Any, **kwargs: Any) -> Obj:
        raise AssertionError("the TrainingJob controller never patches objects")

    async def event(self, involved: Mapping[str, Any], *, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    # ------------------------------------------------------------------ what other controllers do

    def nodes(self, count: int, gpus: int = 8) -> None:
        for i in range(count):
            self.add(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": f"h100-{i}", "labels": {"nvidia.com/gpu.product": H100}},
                    "status": {
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "allocatable": {"nvidia.com/gpu": str(gpus)},
                    },
                }
            )

    def jobs(self, namespace: str = "ns") -> builtins.list[Obj]:
        return [o for (av, k, ns, _), o in self.objects.items() if k == "Job" and ns == namespace]

    def run_pods(
        self, job: Obj, *, phase: str = "Running", exit_code: int | None = None, failed_index: int = -1
    ) -> None:
        """The Job controller and scheduler: one bound pod per index. With a failed index, the Job fails
        (backoffLimit 0) and the Job controller is stopping the other workers (deleted, still running)."""
        template = job["spec"]["template"]
        for index in range(job["spec"]["completions"]):
            pod_phase = "Failed" if index == failed_index else phase
            stopping = failed_index >= 0 and pod_phase == "Running"
            state: Obj = {"running": {}}
            if pod_phase in ("Failed", "Succeeded"):
                code = exit_code if pod_phase == "Failed" else 0
                state = {"terminated": {"exitCode": code, "finishedAt": format_time(datetime.now(UTC))}}
            self.add(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"{job['metadata']['name']}-{index}",
                        "namespace": job["metadata"]["namespace"],
                        **({"deletionTimestamp": format_time(datetime.now(UTC))} if stopping else {}),
                        "labels": dict(template["metadata"]["labels"]),
                        "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
                        "ownerReferences": [
                            {"kind": "Job", "uid": job["metadata"]["uid"], "controller": True}
                        ],
                    },
                    "spec": {**template["spec"], "nodeName": f"h100-{index % 2}"},
                    "status": {
                        "phase": pod_phase,
                        "startTime": format_time(datetime.now(UTC)),
                        "conditions": [
                            {"type": "Ready", "status": "True" if pod_phase == "Running" else "False"}
                        ],
                        "containerStatuses": [{"name": "worker", "state": state}],
                    },
                }
            )
        if failed_index >= 0:
            job.setdefault("status", {})["conditions"] = [{"type": "Failed", "status": "True"}]


def _trainingjob(name: str = "tj", **spec: Any) -> Obj:
    return {
        "apiVersion": TJ[0],
        "kind": TJ[1],
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {
            "image": "trainer:1",
            "workers": 2,
            "resources": {"gpus": 8, "gpuType": "H100"},
            "policy": {"backoffSeconds": 0},
            **spec,
        },
    }


def _controller(kube: FakeKube) -> TrainingJobController:
    return TrainingJobController(cast(Kube, kube), kube.caches(), OperatorConfig(resync_seconds=1))


async def _settle(kube: FakeKube, controller: TrainingJobController, name: str = "tj") -> None:
    """Run passes as the runtime would while the controller asks to come back at once (a restart: the
    failed attempt's Job goes, then the next one is created): the watch events and requeues of a real
    cluster, without waiting."""
    for _ in range(10):
        obj = await kube.get(*TJ, name, "ns")
        if obj is None:
            return
        requeue = await controller.reconcile(obj)
        if requeue is None or requeue > 5:
            return


async def _reconcile(kube: FakeKube, name: str = "tj") -> Obj:
    await _settle(kube, _controller(kube), name)
    after = await kube.get(*TJ, name, "ns")
    assert after is not None
    return after


async def test_creates_service_and_first_attempt_and_reports_pending() -> None:
    kube = FakeKube()
    kube.nodes(2)
    kube.add(_trainingjob())
    tj = await _reconcile(kube)
    assert tj["status"]["phase"] == "Pending"
    assert [j["metadata"]["name"] for j in kube.jobs()] == ["tj-a0"]
    assert await kube.get("v1", "Service", "tj", "ns") is not None
    assert [e[1] for e in kube.events] == ["GangAdmitted"]
    # Nothing new: a second pass writes nothing.
    kube.calls.clear()
    await _reconcile(kube)
    assert [c for c in kube.calls if c[0] != "apply" or c[1] != "Service"] == []


async def test_two_gangs_that_cannot_both_fit_are_admitted_one_at_a_time() -> None:
    kube = FakeKube()
    kube.nodes(2)
    kube.add(_trainingjob("first"))
    kube.add(_trainingjob("second"))
    controller = _controller(kube)
    objs = [await kube.get(*TJ, n, "ns") for n in ("first", "second")]
    await asyncio.gather(*(controller.reconcile(o) for o in objs if o is not None))
    assert len(kube.jobs()) == 1
    phases = sorted(kube.objects[(*TJ, "ns", n)]["status"]["phase"] for n in ("first", "second"))
    assert phases == ["Pending", "Queued"]
    queued = next(
        n for n in ("first", "second") if kube.objects[(*TJ, "ns", n)]["status"]["phase"] == "Queued"
    )
    assert (
        "needs 2 workers x 8 GPUs (H100); 0 fit now" in kube.objects[(*TJ, "ns", queued)]["status"]["message"]
    )


async def test_queued_gangs_are_admitted_by_priority_then_age_whoever_reconciles_first() -> None:
    kube = FakeKube()
    kube.nodes(2)
    kube.add(_trainingjob("running"))
    await _reconcile(kube, "running")
    kube.add(
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": "urgent"},
            "value": 1000,
        }
    )
    kube.add(_trainingjob("older-low"))
    kube.add(_trainingjob("newer-urgent", priorityClassName="urgent"))
    for name in ("older-low", "newer-urgent"):
        assert (await _reconcile(kube, name))["status"]["phase"] == "Queued"
    # The running gang finishes: both queued gangs wake, the low-priority one reconciles first.
    job = kube.jobs()[0]
    kube.run_pods(job, phase="Succeeded")
    job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    assert (await _reconcile(kube, "running"))["status"]["phase"] == "Succeeded"
    await _reconcile(kube, "older-low")
    assert (await kube.get(*TJ, "older-low", "ns"))["status"]["phase"] == "Queued"  # type: ignore[index]
    await _reconcile(kube, "newer-urgent")
    assert (await kube.get(*TJ, "newer-urgent", "ns"))["status"]["phase"] == "Pending"  # type: ignore[index]


async def test_never_writes_the_spec() -> None:
    kube = FakeKube()
    kube.nodes(2)
    kube.add(_trainingjob())
    before = copy.deepcopy(kube.objects[(*TJ, "ns", "tj")]["spec"])
    await _reconcile(kube)
    kube.run_pods(kube.jobs()[0], exit_code=1, failed_index=1)
    await _reconcile(kube)
    assert kube.objects[(*TJ, "ns", "tj")]["spec"] == before
    assert not [c for c in kube.calls if c[1] == "TrainingJob" and c[0] != "patch_status"]


@pytest.mark.parametrize("crash_at", range(4))
async def test_killed_at_any_write_of_a_restart_loses_nothing(crash_at: int) -> None:
    kube = FakeKube()
    kube.nodes(2)
    kube.add(_trainingjob())
    await _reconcile(kube)
    kube.run_pods(kube.jobs()[0], exit_code=1, failed_index=1)
    kube.crash_at = kube.writes + crash_at  # counted from here: the writes of the restart itself
    with contextlib.suppress(CrashError):
        await _settle(kube, _controller(kube))
    assert kube.crash_at is None, "the restart made fewer writes than this test kills at"
    # A new operator process picks up from whatever was written.
    for _ in range(3):
        tj = await _reconcile(kube)
    assert tj["status"]["restarts"] == 1
    assert [j["metadata"]["name"] for j in kube.jobs()] == ["tj-a1"]
    assert tj["status"]["phase"] == "Pending"
    assert tj["status"]["jobName"] == "tj-a1"


async def test_restarts_then_fails_with_events() -> None:
    kube = FakeKube()
    kube.nodes(2)
    kube.add(_trainingjob(policy={"backoffSeconds": 0, "maxRestarts": 1}))
    await _reconcile(kube)
    kube.run_pods(kube.jobs()[0], exit_code=1, failed_index=0)
    tj = await _reconcile(kube)
    assert tj["status"]["restarts"] == 1
    kube.run_pods(kube.jobs()[0], exit_code=1, failed_index=0)
    tj = await _reconcile(kube)
    assert tj["status"]["phase"] == "Failed"
    reasons = [(t, r) for t, r, _ in kube.events]
    assert ("Warning", "WorkerFailed") in reasons
    assert reasons[-1] == ("Warning", "BackoffLimitExceeded")


async def test_ttl_deletes_the_finished_trainingjob() -> None:
    kube = FakeKube()
    kube.nodes(2)
    kube.add(_trainingjob(ttlSecondsAfterFinished=0))
    await _reconcile(kube)
    job = kube.jobs()[0]
    kube.run_pods(job, phase="Succeeded")
    job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    await _settle(kube, _controller(kube))
    assert await kube.get(*TJ, "tj", "ns") is None
    assert ("Normal", "Succeeded") in [(t, r) for t, r, _ in kube.events]


def _quota(hard: int, used: int = 0) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "gpus", "namespace": "ns"},
        "spec": {"hard": {"requests.nvidia.com/gpu": str(hard)}},
        "status": {"used": {"requests.nvidia.com/gpu": str(used)}},
    }


@pytest.mark.parametrize(
    ("hard", "used", "admitted", "message"),
    [
        (
            24,
            16,
            False,
            "ResourceQuota gpus has 8 of 24 requests.nvidia.com/gpu left (16 used); the gang needs 16",
        ),
        (8, 0, False, "allows 8 requests.nvidia.com/gpu in this namespace; the gang needs 16, more than"),
        (32, 16, True, ""),
    ],
)
async def test_a_gang_its_namespace_quota_cannot_hold_is_not_admitted(
    hard: int, used: int, admitted: bool, message: str
) -> None:
    kube = FakeKube()
    kube.nodes(2)
    kube.add(_quota(hard, used))
    kube.add(_trainingjob())
    tj = await _reconcile(kube)
    assert bool(kube.jobs()) is admitted
    if not admitted:
        assert tj["status"]["phase"] == "Queued"
        condition = next(c for c in tj["status"]["conditions"] if c["type"] == "Admitted")
        assert (condition["status"], condition["reason"]) == ("False", "QuotaExceeded")
        assert message in condition["message"]
        assert [e[1] for e in kube.events] == ["QuotaExceeded"]


async def _first_then_second(kube: FakeKube, controller: TrainingJobController) -> Obj:
    """Reconcile `first` then `second` once each; only `first` may be admitted. The second's status."""
    kube.add(_trainingjob("first"))
    kube.add(_trainingjob("second"))
    for name in ("first", "second"):
        obj = await kube.get(*TJ, name, "ns")
        assert obj is not None
        await controller.reconcile(obj)
    assert [j["metadata"]["name"] for j in kube.jobs()] == ["first-a0"]
    status: Obj = kube.objects[(*TJ, "ns", "second")]["status"]
    return status


async def test_gangs_admitted_but_not_created_count_against_the_quota() -> None:
    """The first gang's pods do not exist yet, so the quota's `used` does not show them: the second gang
    must not be admitted into the same quota."""
    kube = FakeKube()
    kube.nodes(4)
    kube.add(_quota(16))
    second = await _first_then_second(kube, _controller(kube))
    assert second["phase"] == "Queued"
    assert "16 promised to admitted gangs" in second["message"]


async def test_a_namespace_holds_at_most_the_operator_cap_reserved_but_unplaced() -> None:
    kube = FakeKube()
    kube.nodes(4)
    config = OperatorConfig(resync_seconds=1, max_unplaced_gpus_per_namespace=24)
    second = await _first_then_second(kube, TrainingJobController(cast(Kube, kube), kube.caches(), config))
    condition = next(c for c in second["conditions"] if c["type"] == "Admitted")
    assert condition["reason"] == "NamespaceReservationLimit"
    assert "at most 24 GPUs" in condition["message"]


class RefusingKube(FakeKube):
    """A FakeKube whose applies are validated as the API server validates a pod template."""

    async def apply(self, obj: Obj) -> Obj:
        refuse_unsupported_field_refs(obj)
        return await super().apply(obj)


def _condition(obj: Obj, type_: str) -> tuple[str, str]:
    [found] = [c for c in obj["status"]["conditions"] if c["type"] == type_]
    return found["status"], found["reason"]


async def _first_passes(kube: FakeKube, name: str, **spec: Any) -> tuple[Obj, TrainingJobController]:
    """A TrainingJob on two 8-GPU nodes after the passes of its creation, and the controller that ran them."""
    kube.nodes(2)
    kube.add(_trainingjob(name, **spec))
    controller = _controller(kube)
    await _settle(kube, controller, name)
    obj = await kube.get(*TJ, name, "ns")
    assert obj is not None
    return obj, controller


async def test_a_job_the_api_server_refuses_is_invalid_spec_and_holds_no_gpus() -> None:
    kube = RefusingKube()
    bogus = [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]
    bad, controller = await _first_passes(kube, "bad", env=bogus)
    assert _condition(bad, "Ready") == ("False", "InvalidSpec")
    assert _condition(bad, "Stalled") == ("True", "InvalidSpec")
    assert _condition(bad, "Admitted") == ("False", "InvalidSpec")
    assert 'Job.batch "bad-a0" is invalid' in bad["status"]["message"]
    assert 'valueFrom.fieldRef.fieldPath: Invalid value: "spec.bogus"' in bad["status"]["message"]
    assert ("Warning", "InvalidSpec") in [(e[0], e[1]) for e in kube.events]
    assert kube.jobs() == []

    # Passes of the same generation (watch events, resyncs) send nothing.
    kube.calls.clear()
    for _ in range(3):
        assert await controller.reconcile(bad) is None
    assert kube.calls == []

    # Its GPUs were never held: the next gang of the same size is admitted.
    kube.add(_trainingjob("good"))
    await _settle(kube, controller, "good")
    assert [j["metadata"]["name"] for j in kube.jobs()] == ["good-a0"]

    # Fixed spec, new generation: decided again, and now it waits for the GPUs like any gang.
    kube.objects[(*TJ, "ns", "bad")]["spec"]["env"] = []
    kube.objects[(*TJ, "ns", "bad")]["metadata"]["generation"] = 2
    await _settle(kube, controller, "bad")
    fixed = await kube.get(*TJ, "bad", "ns")
    assert fixed is not None
    assert _condition(fixed, "Admitted") == ("False", "InsufficientCapacity")
    assert _condition(fixed, "Stalled")[1] != "InvalidSpec"


async def test_a_spec_stored_before_a_crd_rule_is_invalid_spec_not_silence() -> None:
    """An object stored under an older CRD with a key now reserved is reported, and never built."""
    kube = FakeKube()
    old, _ = await _first_passes(
        kube, "old", podMetadata={"annotations": {"sidecar.istio.io/inject": "false"}}
    )
    assert _condition(old, "Stalled") == ("True", "InvalidSpec")
    assert "podMetadata.annotations may not set sidecar.istio.io/inject" in old["status"]["message"]
    assert kube.jobs() == []


class MeasuredGpus:
    """Prometheus with dcgm-exporter's power series for the job's pods."""

    def __init__(self, watts: float | None) -> None:
        self.watts = watts
        self.asked: list[tuple[str, str, float]] = []

    async def training_usage(self, namespace: str, name: str, seconds: float) -> UsageReading:
        self.asked.append((namespace, name, seconds))
        return UsageReading(watts=self.watts)


async def _running_with(prometheus: MeasuredGpus) -> tuple[FakeKube, TrainingJobController]:
    """A job of 2 workers running on 2 nodes, its controller reading `prometheus`."""
    kube = FakeKube()
    kube.nodes(2)
    kube.add(_trainingjob())
    controller = TrainingJobController(
        cast(Kube, kube), kube.caches(), OperatorConfig(resync_seconds=1), source=prometheus
    )
    await _settle(kube, controller)
    [job] = kube.jobs()
    kube.run_pods(job)
    await _settle(kube, controller)
    return kube, controller


@pytest.mark.parametrize(("watts", "source"), [(1400.0, "dcgm"), (None, "tdp")])
async def test_a_jobs_energy_is_what_dcgm_measured_when_prometheus_has_it(
    watts: float | None, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Folding a segment (here: the hourly checkpoint of the totals) asks Prometheus what the job's GPUs
    drew over it; without a series for its pods the TDP estimate stands."""
    prometheus = MeasuredGpus(watts)
    kube, controller = await _running_with(prometheus)
    assert prometheus.asked == [], "the first segment starts now: nothing to measure yet"
    later = datetime.now(UTC) + timedelta(hours=2)
    monkeypatch.setattr(trainingjob_controller, "_now", lambda: later)
    obj = await kube.get(*TJ, "tj", "ns")
    assert obj is not None
    await controller.reconcile(obj)
    after = await kube.get(*TJ, "tj", "ns")
    assert after is not None
    [(namespace, name, seconds)] = prometheus.asked
    assert (namespace, name) == ("ns", "tj")
    assert seconds == pytest.approx(7200, abs=2)
    usage = after["status"]["usage"]
    assert usage.get("energySource", "tdp") == source
    if watts is not None:
        assert usage["energyKWh"] == pytest.approx(watts * seconds / 3.6e6, rel=0.01)


class SlowPrometheus(MeasuredGpus):
    """A query that takes 1.5 s of the operator's clock."""

    def __init__(self, clock: list[datetime]) -> None:
        super().__init__(None)
        self.clock = clock

    async def training_usage(self, namespace: str, name: str, seconds: float) -> UsageReading:
        self.clock[0] += timedelta(seconds=1.5)
        return await super().training_usage(namespace, name, seconds)


async def test_a_fold_ends_at_the_instant_its_pods_were_seen_however_long_prometheus_takes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pods are read from the caches at one instant; the segment folded must end there. Ending it at
    the clock after the Prometheus query charged the pods seen running up to a later second, and a pod
    that started during the query was then charged only from that second on: one second lost per pod
    (seen in CI on a loaded machine, where the query took long enough to cross a second)."""
    prometheus = SlowPrometheus([datetime.now(UTC)])
    kube, controller = await _running_with(prometheus)
    seen = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    prometheus.clock[0] = seen + timedelta(milliseconds=600)
    monkeypatch.setattr(trainingjob_controller, "_now", lambda: prometheus.clock[0])
    obj = await kube.get(*TJ, "tj", "ns")
    assert obj is not None
    await controller.reconcile(obj)
    assert len(prometheus.asked) == 1, "the hourly checkpoint asked Prometheus"
    after = await kube.get(*TJ, "tj", "ns")
    assert after is not None
    assert after["status"]["usage"]["accountedUntil"] == format_time(seen)
