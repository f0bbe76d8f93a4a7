"""The InferenceFleet controller against an in-memory API (no cluster): what it applies, what status it
writes, and how an autoscaler evaluation turns into a Deployment's replicas and an Event."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from lightkube import ApiError

from fakecaches import FakeCaches
from kubeforge.api.inferencefleet import Autoscaling, InferenceFleetSpec, InferenceFleetStatus
from kubeforge.api.rollout import AnalysisSpec
from kubeforge.controllers.inferencefleet import InferenceFleetController
from kubeforge.controllers.runtime import OperatorConfig
from kubeforge.kube.client import Kube
from kubeforge.metrics import exposition
from kubeforge.policy.analysis import MetricSample
from kubeforge.policy.autoscaler import Reading
from kubeforge.policy.capacity import surge_room
from kubeforge.policy.fleet import FleetObserved
from kubeforge.policy.status import apply_merge_patch
from podvalidation import refuse_unsupported_field_refs, unprocessable

NS = "ns"


class FakeKube:
    """Just enough of `Kube`: objects by (kind, namespace, name), SSA as replace, merge-patched status."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.status_patches = 0
        self.apply_calls = 0
        self.deleted: list[str] = []

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Any:
        obj = self.objects.get((kind, namespace or "", name))
        return dict(obj) if obj is not None else None

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        labels: Any = None,
        fields: Any = None,
    ) -> builtins.list[dict[str, Any]]:
        out = []
        for (k, ns, _), obj in self.objects.items():
            if k != kind or ns != namespace:
                continue
            have = obj.get("metadata", {}).get("labels", {})
            if all(have.get(key) == value for key, value in (labels or {}).items()):
                out.append(dict(obj))
        return out

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        previous = self.objects.get(key, {})
        merged = {**obj, "status": previous.get("status", {})}
        merged["metadata"] = {
            **obj["metadata"],
            "uid": previous.get("metadata", {}).get("uid", f"uid-{key[0]}-{key[2]}"),
            "generation": previous.get("metadata", {}).get("generation", 1),
        }
        self.objects[key] = merged
        return merged

    async def apply_if_changed(self, obj: dict[str, Any], cached: dict[str, Any] | None) -> Any:
        self.apply_calls += 1
        if cached is not None and {**cached, "status": None} == {
            **obj,
            "status": None,
            "metadata": cached["metadata"],
        }:
            return None
        return await self.apply(obj)

    def caches(self) -> FakeCaches:
        return FakeCaches(lambda: [(k, ns, obj) for (k, ns, _), obj in list(self.objects.items())])

    async def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        foreground: bool = False,
    ) -> bool:
        self.deleted.append(name)
        return self.objects.pop((kind, namespace or "", name), None) is not None

    async def patch_status(
        self, api_version: str, kind: str, name: str, namespace: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        self.status_patches += 1
        obj = self.objects[(kind, namespace, name)]
        obj["status"] = apply_merge_patch(obj.get("status") or {}, status)
        return obj

    async def patch(
        self, api_version: str, kind: str, name: str, namespace: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        key = (kind, namespace or "", name)
        self.objects[key] = apply_merge_patch(self.objects[key], body)
        return self.objects[key]

    async def event(self, involved: Mapping[str, Any], *, type_: str, reason: str, message: str) -> None:
        self.events.append({"type": type_, "reason": reason, "message": message})

    # -- test helpers ------------------------------------------------------------------------------

    def add_fleet(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        obj = {
            "apiVersion": "kubeforge.dev/v1alpha1",
            "kind": "InferenceFleet",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1},
            "spec": spec,
        }
        self.objects[("InferenceFleet", NS, name)] = obj
        return obj

    def pod_owner(self, deployment: str) -> builtins.list[dict[str, Any]]:
        """The owner references the Deployment controller gives a pod: its ReplicaSet, by UID."""
        return [{"kind": "ReplicaSet", "uid": f"uid-ReplicaSet-{deployment}-rs", "controller": True}]

    def deployments(self) -> builtins.list[dict[str, Any]]:
        return [o for (k, _, _), o in self.objects.items() if k == "Deployment"]

    def run_deployment(self, ready: int | None = None) -> None:
        """Play the Deployment controller and kubelets: every pod asked for exists and is ready."""
        for dep in self.deployments():
            n = dep["spec"]["replicas"] if ready is None else ready
            dep["status"] = {
                "observedGeneration": 1,
                "replicas": n,
                "readyReplicas": n,
                "availableReplicas": n,
                "updatedReplicas": n,
            }
            labels = dep["spec"]["template"]["metadata"]["labels"]
            rs = dep["metadata"]["name"] + "-rs"
            self.objects[("ReplicaSet", NS, rs)] = {
                "metadata": {
                    "name": rs,
                    "namespace": NS,
                    "uid": f"uid-ReplicaSet-{rs}",
                    "ownerReferences": [{"uid": dep["metadata"]["uid"], "controller": True}],
                }
            }
            for key in [
                k for k in self.objects if k[0] == "Pod" and k[2].startswith(dep["metadata"]["name"])
            ]:
                del self.objects[key]
            for i in range(n):
                name = f"{dep['metadata']['name']}-{i}"
                self.objects[("Pod", NS, name)] = {
                    "metadata": {
                        "name": name,
                        "namespace": NS,
                        "labels": labels,
                        "ownerReferences": self.pod_owner(dep["metadata"]["name"]),
                    },
                    "spec": {"nodeName": "node"},
                    "status": {
                        "phase": "Running",
                        "conditions": [
                            {"type": "Ready", "status": "True"},
                            {"type": "PodScheduled", "status": "True"},
                        ],
                    },
                }


class FakeSource:
    def __init__(self) -> None:
        self.reading = Reading()
        self.samples: dict[str, MetricSample] = {}

    async def read(self, spec: Autoscaling, namespace: str, name: str) -> Reading:
        return self.reading

    async def sample(self, spec: AnalysisSpec, namespace: str, name: str, revision: str) -> MetricSample:
        return self.samples.get(revision, MetricSample())


class Clock:
    """Wall and monotonic time that move only when a test moves them."""

    def __init__(self) -> None:
        self.start = self.now = datetime(2026, 3, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return (self.now - self.start).total_seconds()


SPEC: dict[str, Any] = {"model": {"name": "m"}, "image": "img", "replicas": 2}
AUTO: dict[str, Any] = {
    **SPEC,
    "autoscaling": {
        "minReplicas": 1,
        "maxReplicas": 6,
        "metric": "queueDepth",
        "target": 4,
        "scaleDownStabilizationSeconds": 0,
        "intervalSeconds": 1,
    },
}


def controller(
    kube: FakeKube, source: FakeSource | None = None, clock: Clock | None = None
) -> InferenceFleetController:
    clock = clock or Clock()
    return InferenceFleetController(
        cast(Kube, kube),
        kube.caches(),
        OperatorConfig(),
        source=source,
        clock=clock,
        monotonic=clock.monotonic,
    )


async def evaluate(ctrl: InferenceFleetController, kube: FakeKube, clock: Clock) -> float | None:
    """Let the autoscaler's interval pass and run the pass that evaluates it (the runtime's requeue)."""
    clock.now += timedelta(seconds=AUTO["autoscaling"]["intervalSeconds"])
    return await ctrl.reconcile(kube.objects[("InferenceFleet", NS, "chat")])


def cond(obj: dict[str, Any], type_: str) -> tuple[str, str] | None:
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return c["status"], c["reason"]
    return None


async def test_reconcile_builds_children_and_status() -> None:
    kube = FakeKube()
    obj = kube.add_fleet("chat", SPEC)
    ctrl = controller(kube)
    await ctrl.reconcile(obj)
    kinds = sorted(k for (k, _, _) in kube.objects)
    assert kinds == ["ControllerRevision", "Deployment", "InferenceFleet", "PodDisruptionBudget", "Service"]
    fleet = kube.objects[("InferenceFleet", NS, "chat")]
    assert fleet["status"]["desiredReplicas"] == 2
    assert cond(fleet, "Ready") == ("False", "WaitingForReplicas")

    kube.run_deployment()
    await ctrl.reconcile(fleet)
    assert cond(fleet, "Ready") == ("True", "Serving")
    assert fleet["status"]["readyReplicas"] == 2
    patches = kube.status_patches
    await ctrl.reconcile(fleet)
    assert kube.status_patches == patches, "nothing changed, nothing written"
    assert [e["reason"] for e in kube.events] == ["Serving"]


async def test_a_restarted_operator_exports_a_converged_fleets_conditions_without_writing() -> None:
    kube = FakeKube()
    kube.add_fleet("chat", SPEC)
    first = controller(kube)
    await first.reconcile(kube.objects[("InferenceFleet", NS, "chat")])
    kube.run_deployment()
    await first.reconcile(kube.objects[("InferenceFleet", NS, "chat")])
    exposition.forget("InferenceFleet", NS, "chat")  # a new process: no series yet
    patches = kube.status_patches

    await controller(kube).reconcile(kube.objects[("InferenceFleet", NS, "chat")])
    assert kube.status_patches == patches
    labels = {"kind": "InferenceFleet", "namespace": NS, "name": "chat", "type": "Ready", "status": "True"}
    assert exposition.REGISTRY.get_sample_value("kubeforge_condition", labels) == 1.0
    exposition.forget("InferenceFleet", NS, "chat")


async def test_invalid_name_is_degraded_and_builds_nothing() -> None:
    kube = FakeKube()
    obj = kube.add_fleet("9lives", SPEC)
    await controller(kube).reconcile(obj)
    assert kube.deployments() == []
    assert cond(kube.objects[("InferenceFleet", NS, "9lives")], "Degraded") == ("True", "InvalidName")


async def test_template_change_keeps_old_revision_until_new_is_available() -> None:
    kube = FakeKube()
    obj = kube.add_fleet("chat", SPEC)
    ctrl = controller(kube)
    await ctrl.reconcile(obj)
    kube.run_deployment()
    obj["spec"] = {**SPEC, "image": "img2"}
    await ctrl.reconcile(obj)
    assert len(kube.deployments()) == 2
    # Without spec.rollout a new revision rolls in like a Deployment's (Rolling, one pod of surge).
    assert cond(kube.objects[("InferenceFleet", NS, "chat")], "Progressing") == ("True", "RolloutProgressing")
    for _ in range(6):
        kube.run_deployment()
        await ctrl.reconcile(obj)
        total = sum(d["spec"]["replicas"] for d in kube.deployments())
        assert total <= 3, "never more than one pod above the desired count"
        if len(kube.deployments()) == 1:
            break
    assert len(kube.deployments()) == 1
    assert kube.deleted
    fleet = kube.objects[("InferenceFleet", NS, "chat")]
    assert fleet["status"]["rollout"]["phase"] == "Promoted"
    assert [e["phase"] for e in fleet["status"]["rollout"]["history"]] == ["Superseded", "Stable"]
    await ctrl.forget(NS, "chat")


async def test_evaluation_scales_the_deployment_and_records_the_decision() -> None:
    kube, source, clock = FakeKube(), FakeSource(), Clock()
    obj = kube.add_fleet("chat", AUTO)
    ctrl = controller(kube, source, clock)
    await ctrl.reconcile(obj)
    kube.run_deployment()
    [dep] = kube.deployments()
    assert dep["spec"]["replicas"] == 1  # a new autoscaled fleet starts at minReplicas

    source.reading = Reading(stable=16.0, panic=16.0, rate=10.0)
    assert await evaluate(ctrl, kube, clock) == 1.0, "the next evaluation is an interval away"
    [dep] = kube.deployments()
    assert dep["spec"]["replicas"] == 4
    fleet = kube.objects[("InferenceFleet", NS, "chat")]
    record = fleet["status"]["autoscaler"]
    assert (record["desiredReplicas"], record["currentReplicas"], record["metricValue"]) == (4, 1, 16.0)
    assert record["reason"] in ("ScaleUp", "PanicScaleUp")
    assert fleet["status"]["desiredReplicas"] == 4
    assert cond(fleet, "MetricsUnavailable") == ("False", "MetricsAvailable")
    assert any(e["reason"] == "ScaledUp" and "1 -> 4" in e["message"] for e in kube.events)

    # Prometheus goes away: hold, flag.
    kube.run_deployment()
    clock.now += timedelta(seconds=120)
    source.reading = Reading(error="PrometheusUnreachable", message="refused")
    await evaluate(ctrl, kube, clock)
    assert kube.deployments()[0]["spec"]["replicas"] == 4
    assert cond(kube.objects[("InferenceFleet", NS, "chat")], "MetricsUnavailable") == (
        "True",
        "PrometheusUnreachable",
    )
    series = {"namespace": NS, "name": "chat"}
    assert exposition.REGISTRY.get_sample_value("kubeforge_autoscaler_metric_value", series) is None
    assert exposition.REGISTRY.get_sample_value("kubeforge_autoscaler_desired_replicas", series) == 4

    # A new controller (an operator restart) resumes from status, not from spec.replicas.
    fresh = controller(kube, source, clock)
    await fresh.reconcile(kube.objects[("InferenceFleet", NS, "chat")])
    assert kube.deployments()[0]["spec"]["replicas"] == 4
    await fresh.forget(NS, "chat")
    await ctrl.forget(NS, "chat")


async def test_turning_the_autoscaler_off_hands_back_to_spec_replicas() -> None:
    kube, source, clock = FakeKube(), FakeSource(), Clock()
    obj = kube.add_fleet("chat", AUTO)
    ctrl = controller(kube, source, clock)
    source.reading = Reading(stable=12.0)
    await ctrl.reconcile(obj)
    kube.run_deployment()
    await evaluate(ctrl, kube, clock)
    assert kube.deployments()[0]["spec"]["replicas"] == 3
    desired = {"namespace": NS, "name": "chat"}
    assert exposition.REGISTRY.get_sample_value("kubeforge_autoscaler_desired_replicas", desired) == 3
    obj = kube.objects[("InferenceFleet", NS, "chat")]
    obj["spec"] = {**SPEC, "autoscaling": {**AUTO["autoscaling"], "enabled": False}}
    await ctrl.reconcile(obj)
    assert kube.deployments()[0]["spec"]["replicas"] == 2
    # Its series go with it: a dashboard must not show a desired count nobody acts on.
    assert exposition.REGISTRY.get_sample_value("kubeforge_autoscaler_desired_replicas", desired) is None
    status = kube.objects[("InferenceFleet", NS, "chat")]["status"]
    assert "autoscaler" not in status
    assert cond(kube.objects[("InferenceFleet", NS, "chat")], "MetricsUnavailable") is None
    kube.run_deployment()
    assert await evaluate(ctrl, kube, clock) is None, "no autoscaler, no rollout: nothing to come back for"


async def test_the_autoscaler_evaluates_on_its_interval_through_requeues_only() -> None:
    kube, source, clock = FakeKube(), FakeSource(), Clock()
    obj = kube.add_fleet("chat", AUTO)
    ctrl = controller(kube, source, clock)
    source.reading = Reading(stable=4.0)
    assert await ctrl.reconcile(obj) == 1.0
    kube.run_deployment()
    reads = 0

    async def counting(spec: Autoscaling, namespace: str, name: str) -> Reading:
        nonlocal reads
        reads += 1
        return source.reading

    source.read = counting  # type: ignore[method-assign]
    # Watch events between evaluations run passes, but the metric is read only when one is due.
    clock.now += timedelta(seconds=0.4)
    assert await ctrl.reconcile(obj) == pytest.approx(0.6)
    assert reads == 0
    clock.now += timedelta(seconds=0.6)
    assert await ctrl.reconcile(obj) == 1.0
    assert reads == 1
    assert kube.objects[("InferenceFleet", NS, "chat")]["status"]["autoscaler"]["reason"] == "WithinTolerance"
    await ctrl.forget(NS, "chat")
    assert (NS, "chat") not in ctrl._fleets


@pytest.mark.parametrize("source", [None])
async def test_without_prometheus_url_metrics_are_unavailable(source: None) -> None:
    kube, clock = FakeKube(), Clock()
    obj = kube.add_fleet("chat", AUTO)
    ctrl = controller(kube, None, clock)
    await ctrl.reconcile(obj)
    kube.run_deployment()
    await evaluate(ctrl, kube, clock)
    assert cond(kube.objects[("InferenceFleet", NS, "chat")], "MetricsUnavailable") == (
        "True",
        "PrometheusNotConfigured",
    )
    await ctrl.forget(NS, "chat")


async def test_a_surge_reads_the_capacity_gang_admission_reads() -> None:
    """Two 8-GPU H100 nodes, one tainted `nvidia.com/gpu:NoExecute` (the fleet's pods tolerate only
    `NoSchedule`), and an admitted gang whose 4-GPU worker is not placed yet: of the 4 two-GPU pods the
    free node holds, the surge is offered only what leaves the gang's worker sure of a place."""
    kube = FakeKube()
    for name, taints in (("h0", []), ("h1", [{"key": "nvidia.com/gpu", "effect": "NoExecute"}])):
        kube.objects[("Node", "", name)] = {
            "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
            "spec": {"taints": taints},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "allocatable": {"nvidia.com/gpu": "8"},
            },
        }
    spec = {**SPEC, "resources": {"gpus": 2, "gpuType": "H100"}}
    fleet = InferenceFleetSpec.model_validate(spec)
    observed = FleetObserved(
        name="chat", namespace=NS, generation=1, status=InferenceFleetStatus(), now=Clock()(), spec=fleet
    )

    def room() -> int | None:
        cap = controller(kube)._capacity(observed)
        return surge_room(2, "H100", cap.nodes, cap.free, cap.claims, cap.tolerations)

    assert room() == 4  # the tainted node offers nothing
    kube.objects[("TrainingJob", NS, "tj")] = {
        "metadata": {"name": "tj", "namespace": NS},
        "spec": {"image": "x", "workers": 1, "resources": {"gpus": 4, "gpuType": "H100"}},
        "status": {
            "phase": "Pending",
            "attempt": 0,
            "conditions": [
                {
                    "type": "Admitted",
                    "status": "True",
                    "reason": "GangAdmitted",
                    "message": "",
                    "lastTransitionTime": "2026-03-01T00:00:00Z",
                }
            ],
        },
    }
    assert room() == 1


class RefusingKube(FakeKube):
    """A FakeKube whose applies are validated as the API server validates a pod template."""

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        refuse_unsupported_field_refs(obj)
        return await super().apply(obj)


BOGUS_ENV = [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]


async def test_a_child_the_api_server_refuses_is_invalid_spec_until_the_spec_changes() -> None:
    kube = RefusingKube()
    obj = kube.add_fleet("chat", {**SPEC, "env": BOGUS_ENV})
    ctrl = controller(kube)
    assert await ctrl.reconcile(obj) is None, "nothing to come back for until the spec changes"
    fleet = kube.objects[("InferenceFleet", NS, "chat")]
    assert cond(fleet, "Ready") == ("False", "InvalidSpec")
    assert cond(fleet, "Degraded") == ("True", "InvalidSpec")
    [degraded] = [c for c in fleet["status"]["conditions"] if c["type"] == "Degraded"]
    assert degraded["message"].startswith('the API server refused a child object: Deployment.apps "chat-')
    assert 'valueFrom.fieldRef.fieldPath: Invalid value: "spec.bogus"' in degraded["message"]
    assert fleet["status"]["observedGeneration"] == 1
    assert [e["reason"] for e in kube.events if e["type"] == "Warning"] == ["InvalidSpec"]
    assert kube.deployments() == []

    # Watch events and resyncs of the same generation: no write is sent again, nothing is patched.
    calls, patches = kube.apply_calls, kube.status_patches
    for _ in range(3):
        assert await ctrl.reconcile(fleet) is None
    assert (kube.apply_calls, kube.status_patches) == (calls, patches)

    # The user fixes the spec: a new generation builds the fleet.
    fleet["spec"]["env"] = [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    fleet["metadata"]["generation"] = 2
    await ctrl.reconcile(fleet)
    assert len(kube.deployments()) == 1
    assert cond(fleet, "Degraded") != ("True", "InvalidSpec")
    assert cond(fleet, "Ready") == ("False", "WaitingForReplicas")


@pytest.mark.parametrize("history_limit", [1, 3])
async def test_controller_revisions_are_capped_by_the_history_limit(history_limit: int) -> None:
    """Many template changes, each rolled out to the end: the ControllerRevisions kept never exceed the
    history plus the template's, the stable and the canary revision."""
    kube = FakeKube()
    spec = {**SPEC, "rollout": {"strategy": "Rolling", "historyLimit": history_limit}}
    obj = kube.add_fleet("chat", spec)
    ctrl = controller(kube)
    most = 0
    for version in range(8):
        obj["spec"] = {**spec, "image": f"img:{version}"}
        obj["metadata"]["generation"] = version + 1
        for _ in range(12):
            await ctrl.reconcile(obj)
            kube.run_deployment()
            kept = [k for k in kube.objects if k[0] == "ControllerRevision"]
            most = max(most, len(kept))
    assert obj["status"]["rollout"]["phase"] == "Promoted"
    assert len(obj["status"]["rollout"]["history"]) <= history_limit
    assert 1 < most <= history_limit + 3, most


async def _scale_whose_status_write_failed() -> tuple[FakeKube, InferenceFleetController]:
    """An autoscaled fleet whose evaluation decides 1 -> 4 in a pass whose status patch fails; the API
    server then answers again."""
    kube, source, clock = FakeKube(), FakeSource(), Clock()
    obj = kube.add_fleet("chat", AUTO)
    ctrl = controller(kube, source, clock)
    await ctrl.reconcile(obj)
    kube.run_deployment()

    async def unavailable(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("the API server went away")

    kube.patch_status = unavailable  # type: ignore[method-assign]
    source.reading = Reading(stable=16.0, panic=16.0, rate=10.0)
    with pytest.raises(RuntimeError):
        await evaluate(ctrl, kube, clock)
    kube.patch_status = FakeKube.patch_status.__get__(kube)  # type: ignore[method-assign]
    return kube, ctrl


async def test_a_scale_decided_in_a_pass_whose_status_write_failed_is_still_told() -> None:
    """The retried pass does not evaluate again (Prometheus is read once per interval), yet carries the
    decision out: its ScaledUp Event goes out with it, once."""
    kube, ctrl = await _scale_whose_status_write_failed()
    await ctrl.reconcile(kube.objects[("InferenceFleet", NS, "chat")])
    assert kube.deployments()[0]["spec"]["replicas"] == 4
    scaled = [e for e in kube.events if e["reason"] == "ScaledUp"]
    assert len(scaled) == 1
    assert "1 -> 4" in scaled[0]["message"]
    await ctrl.reconcile(kube.objects[("InferenceFleet", NS, "chat")])
    assert len([e for e in kube.events if e["reason"] == "ScaledUp"]) == 1, "told once"
    await ctrl.forget(NS, "chat")


async def test_a_scale_that_failed_is_not_told_when_the_spec_changed_before_the_retry() -> None:
    kube, ctrl = await _scale_whose_status_write_failed()
    obj = kube.objects[("InferenceFleet", NS, "chat")]
    obj["spec"] = {**SPEC, "autoscaling": {**AUTO["autoscaling"], "enabled": False}}
    obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
    await ctrl.reconcile(obj)
    assert kube.deployments()[0]["spec"]["replicas"] == 2
    assert not [e for e in kube.events if e["reason"] == "ScaledUp"], "a scale that never happened"
    await ctrl.forget(NS, "chat")


async def test_a_refused_status_patch_is_a_failed_pass_not_invalid_spec() -> None:
    """Only a child refused is the user's spec's fault; a status the server refuses is the operator's
    bug, and the pass fails (retried with backoff by the runtime)."""
    kube = FakeKube()
    obj = kube.add_fleet("chat", SPEC)

    refused: list[str] = []

    async def refuse(*args: Any, **kwargs: Any) -> dict[str, Any]:
        refused.append("status")
        raise unprocessable('InferenceFleet.kubeforge.dev "chat" is invalid: status.message: Too long')

    kube.patch_status = refuse  # type: ignore[method-assign]
    ctrl = controller(kube)
    with pytest.raises(ApiError):
        await ctrl.reconcile(obj)
    assert refused == ["status"], "the pass ends at the refused patch: no InvalidSpec status is tried"
    kube.patch_status = FakeKube.patch_status.__get__(kube)  # type: ignore[method-assign]
    await ctrl.reconcile(obj)
    assert cond(kube.objects[("InferenceFleet", NS, "chat")], "Ready") == ("False", "WaitingForReplicas")


async def test_a_fleet_stored_with_a_key_reserved_since_is_invalid_spec_and_not_built() -> None:
    kube = FakeKube()
    obj = kube.add_fleet("chat", {**SPEC, "podMetadata": {"labels": {"app.kubernetes.io/managed-by": "me"}}})
    await controller(kube).reconcile(obj)
    fleet = kube.objects[("InferenceFleet", NS, "chat")]
    assert cond(fleet, "Degraded") == ("True", "InvalidSpec")
    [degraded] = [c for c in fleet["status"]["conditions"] if c["type"] == "Degraded"]
    assert "podMetadata.labels may not set app.kubernetes.io/managed-by" in degraded["message"]
    assert kube.deployments() == []
