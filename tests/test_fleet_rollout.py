"""Rollouts wired into the InferenceFleet controller, against the in-memory API of
test_fleet_controller.py: canary steps, analysis from a fake metric source, automatic rollback that
survives a restart, rebuilding a drained revision from its ControllerRevision, the HTTPRoute."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from kubeforge.api.inferencefleet import InferenceFleetSpec
from kubeforge.api.rollout import AnalysisSpec
from kubeforge.builders import inferencefleet as build
from kubeforge.metrics import exposition
from kubeforge.metrics.promql import revision_queries, revision_selector
from kubeforge.policy.analysis import MetricSample
from kubeforge.policy.conditions import ConditionUpdate
from kubeforge.policy.fleet_status import PodSummary, RevisionState, RolloutConditions, condition_updates
from test_fleet_controller import NS, Clock, FakeKube, FakeSource, cond, controller

ANALYSIS: dict[str, Any] = {"intervalSeconds": 1, "maxErrorRate": 0.05, "failureLimit": 2}
CANARY: dict[str, Any] = {
    "model": {"name": "m"},
    "image": "img",
    "replicas": 4,
    "rollout": {"steps": [{"weight": 25, "pauseSeconds": 0}], "analysis": ANALYSIS},
}


def rev(spec: dict[str, Any]) -> str:
    return build.revision(InferenceFleetSpec.model_validate(spec))


def replicas(kube: FakeKube) -> dict[str, int]:
    return {
        d["metadata"]["labels"][build.REVISION_LABEL]: int(d["spec"]["replicas"]) for d in kube.deployments()
    }


def fleet(kube: FakeKube, name: str = "chat") -> dict[str, Any]:
    return kube.objects[("InferenceFleet", NS, name)]


def rollout(kube: FakeKube, name: str = "chat") -> dict[str, Any]:
    return dict(fleet(kube, name)["status"]["rollout"])


async def steady(kube: FakeKube, ctrl: Any, spec: dict[str, Any], name: str = "chat") -> None:
    obj = kube.add_fleet(name, spec)
    await ctrl.reconcile(obj)
    kube.run_deployment()
    await ctrl.reconcile(fleet(kube, name))
    assert rollout(kube, name)["phase"] == "Promoted"


# -- the controller ------------------------------------------------------------------------------------


async def test_failed_analysis_rolls_back_and_a_restart_does_not_promote_it() -> None:
    kube, source, clock = FakeKube(), FakeSource(), Clock()
    ctrl = controller(kube, source, clock)
    await steady(kube, ctrl, CANARY)
    old = rev(CANARY)
    bad_spec = {**CANARY, "image": "img-bad"}
    bad = rev(bad_spec)
    source.samples = {bad: MetricSample(error_rate=0.4, latency_p95=0.2), old: MetricSample(0.0, 0.2)}

    fleet(kube)["spec"] = bad_spec
    await ctrl.reconcile(fleet(kube))
    assert replicas(kube) == {old: 4, bad: 1}, "a surge: stable keeps serving until the canary is ready"
    kube.run_deployment()
    for _ in range(2):
        clock.now += timedelta(seconds=2)
        await ctrl.reconcile(fleet(kube))
    assert replicas(kube) == {old: 4, bad: 0}
    status = rollout(kube)
    assert status["phase"] == "RolledBack"
    assert status["failedRevisions"] == [bad]
    assert status["lastAnalysis"]["verdict"] == "Fail"
    assert cond(fleet(kube), "Degraded") == ("True", "RolledBack")
    assert any(e["type"] == "Warning" and e["reason"] == "RolledBack" for e in kube.events)
    assert not any(e["reason"] == "RolledBack" and e["message"].startswith("Degraded") for e in kube.events)

    # A new operator (a restart) reads the same status and does nothing else.
    fresh = controller(kube, source, clock)
    kube.run_deployment()
    for _ in range(3):
        clock.now += timedelta(seconds=5)
        await fresh.reconcile(fleet(kube))
    assert replicas(kube) == {old: 4, bad: 0}
    assert rollout(kube)["phase"] == "RolledBack"
    assert cond(fleet(kube), "Ready") == ("True", "Serving")
    await ctrl.forget(NS, "chat")
    await fresh.forget(NS, "chat")


async def test_good_revision_is_promoted_and_a_drained_one_is_rebuilt_from_its_template() -> None:
    kube, source, clock = FakeKube(), FakeSource(), Clock()
    ctrl = controller(kube, source, clock)
    await steady(kube, ctrl, CANARY)
    old = rev(CANARY)
    new_spec = {**CANARY, "image": "img2"}
    new = rev(new_spec)
    source.samples = {new: MetricSample(0.0, 0.2), old: MetricSample(0.0, 0.2)}
    fleet(kube)["spec"] = new_spec
    for _ in range(6):
        await ctrl.reconcile(fleet(kube))
        kube.run_deployment()
        clock.now += timedelta(seconds=2)
    await ctrl.reconcile(fleet(kube))
    assert replicas(kube) == {new: 4}
    status = rollout(kube)
    assert (status["phase"], status["stableRevision"]) == ("Promoted", new)
    assert [(e["revision"], e["phase"]) for e in status["history"]] == [(old, "Superseded"), (new, "Stable")]
    assert cond(fleet(kube), "Ready") == ("True", "Serving")
    assert ("ControllerRevision", NS, f"chat-{old}") in kube.objects

    # Roll back to the first revision: its Deployment is gone, its template is not.
    fleet(kube)["spec"] = {**new_spec, "rollout": {**new_spec["rollout"], "targetRevision": old}}
    source.samples[old] = MetricSample(0.0, 0.2)
    await ctrl.reconcile(fleet(kube))
    deployment = kube.objects[("Deployment", NS, f"chat-{old}")]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "img"
    assert rollout(kube)["canaryRevision"] == old
    await ctrl.forget(NS, "chat")


async def test_an_upgrade_from_the_former_revision_hash_starts_no_rollout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 9.14: a fleet deployed by an operator that hashed templates with every default included keeps
    its revision (Deployment name, stable revision) when the operator is upgraded; the next template
    change gets a hash of the new kind and rolls out over it."""
    kube, source, clock = FakeKube(), FakeSource(), Clock()
    with monkeypatch.context() as old_operator:
        old_operator.setattr(build, "revision", build.legacy_revision)
        ctrl = controller(kube, source, clock)
        await steady(kube, ctrl, CANARY)
        await ctrl.forget(NS, "chat")
    legacy = build.legacy_revision(InferenceFleetSpec.model_validate(CANARY))
    assert legacy != rev(CANARY)
    assert replicas(kube) == {legacy: 4}

    upgraded = controller(kube, source, clock)
    events = len(kube.events)
    for _ in range(3):
        await upgraded.reconcile(fleet(kube))
        kube.run_deployment()
        clock.now += timedelta(seconds=2)
    assert replicas(kube) == {legacy: 4}
    status = rollout(kube)
    assert (status["phase"], status["stableRevision"]) == ("Promoted", legacy)
    assert fleet(kube)["status"]["revision"] == legacy
    assert not [e for e in kube.events[events:] if e["reason"] == "RolloutStarted"]

    new_spec = {**CANARY, "image": "img2"}
    source.samples = {rev(new_spec): MetricSample(0.0, 0.2), legacy: MetricSample(0.0, 0.2)}
    fleet(kube)["spec"] = new_spec
    await upgraded.reconcile(fleet(kube))
    assert rollout(kube)["canaryRevision"] == rev(new_spec)
    assert rollout(kube)["stableRevision"] == legacy
    await upgraded.forget(NS, "chat")


async def test_missing_httproute_is_a_condition_and_an_event_and_a_present_one_is_weighted() -> None:
    kube, source, clock = FakeKube(), FakeSource(), Clock()
    ctrl = controller(kube, source, clock)
    spec = {**CANARY, "rollout": {"httpRoute": {"name": "web"}}}
    await steady(kube, ctrl, spec)
    assert cond(fleet(kube), "TrafficRouted") == ("False", "HTTPRouteNotFound")
    assert any(e["type"] == "Warning" and e["reason"] == "HTTPRouteNotFound" for e in kube.events)

    kube.objects[("HTTPRoute", NS, "web")] = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": "web",
            "namespace": NS,
            "resourceVersion": "7",
            "labels": {"kubeforge.dev/inferencefleet": "chat"},
        },
        "spec": {
            "rules": [
                {"matches": [{"path": {"value": "/v1"}}], "backendRefs": [{"name": "chat", "port": 8000}]},
                {"backendRefs": [{"name": "elsewhere", "port": 80}]},
            ]
        },
    }
    await ctrl.reconcile(fleet(kube))
    route = kube.objects[("HTTPRoute", NS, "web")]
    stable = rev(spec)
    assert route["spec"]["rules"][0]["backendRefs"] == [
        {"name": f"chat-{stable}", "port": 8000, "weight": 100}
    ]
    assert route["spec"]["rules"][0]["matches"] == [{"path": {"value": "/v1"}}]
    assert route["spec"]["rules"][1] == {"backendRefs": [{"name": "elsewhere", "port": 80}]}
    assert ("Service", NS, f"chat-{stable}") in kube.objects
    assert cond(fleet(kube), "TrafficRouted") == ("True", "WeightsSet")
    await ctrl.forget(NS, "chat")


async def test_fleet_without_spec_rollout_has_no_analysis_and_no_route() -> None:
    kube, clock = FakeKube(), Clock()
    ctrl = controller(kube, None, clock)
    await steady(kube, ctrl, {"model": {"name": "m"}, "image": "img", "replicas": 2})
    assert cond(fleet(kube), "TrafficRouted") is None
    assert rollout(kube).get("lastAnalysis") is None
    await ctrl.forget(NS, "chat")


class RecordingKube(FakeKube):
    """FakeKube that records every write of a Deployment's replicas, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, int]] = []

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj["kind"] == "Deployment":
            self.writes.append((obj["metadata"]["name"], int(obj["spec"]["replicas"])))
        return await super().apply(obj)

    async def patch(
        self, api_version: str, kind: str, name: str, namespace: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        if kind == "Deployment":
            self.writes.append((name, int(body["spec"]["replicas"])))
        return await super().patch(api_version, kind, name, namespace, body)


@pytest.mark.parametrize("image", ["img2", "img7"])  # the new revision sorts after, then before the old
async def test_scale_downs_are_written_before_scale_ups(image: str) -> None:
    """Between the writes of one pass the revisions never ask for more than the plan allows (Rolling,
    maxSurge 1 over 4 replicas: at most 5), whichever revision's name sorts first."""
    kube, clock = RecordingKube(), Clock()
    ctrl = controller(kube, None, clock)
    spec: dict[str, Any] = {"model": {"name": "m"}, "image": "img", "replicas": 4}
    await steady(kube, ctrl, spec)
    old, new = rev(spec), rev({**spec, "image": image})
    asked = {f"chat-{old}": 4}
    fleet(kube)["spec"] = {**spec, "image": image}
    for _ in range(6):
        kube.writes.clear()
        await ctrl.reconcile(fleet(kube))
        for deployment, count in kube.writes:
            asked[deployment] = count
            assert sum(asked.values()) <= 5, f"{kube.writes}: {asked}"
        kube.run_deployment()
    assert replicas(kube) == {new: 4}
    await ctrl.forget(NS, "chat")


async def test_recreate_waits_for_terminating_pods_of_the_old_revision() -> None:
    """A Deployment scaled to zero no longer counts its terminating pods ready; they still run (and hold
    their GPUs) until they are gone, and Recreate must not start the new revision before."""
    kube, clock = FakeKube(), Clock()
    ctrl = controller(kube, None, clock)
    spec: dict[str, Any] = {"model": {"name": "m"}, "image": "img", "replicas": 2}
    spec["rollout"] = {"strategy": "Recreate"}
    await steady(kube, ctrl, spec)
    old, new = rev(spec), rev({**spec, "image": "img2"})
    fleet(kube)["spec"] = {**spec, "image": "img2"}
    await ctrl.reconcile(fleet(kube))
    assert replicas(kube) == {old: 0, new: 0}
    # The ReplicaSet reports nothing ready; one pod is still terminating.
    kube.run_deployment()
    kube.objects[("Pod", NS, f"chat-{old}-0")] = {
        "metadata": {
            "name": f"chat-{old}-0",
            "namespace": NS,
            "labels": {**build.fleet_labels("chat"), build.REVISION_LABEL: old},
            "ownerReferences": kube.pod_owner(f"chat-{old}"),
            "deletionTimestamp": "2026-03-01T00:00:00Z",
        },
        "spec": {"nodeName": "node"},
        "status": {"phase": "Running"},
    }
    await ctrl.reconcile(fleet(kube))
    assert replicas(kube).get(new, 0) == 0, "the new revision started while an old pod still ran"
    assert rollout(kube)["phase"] == "Progressing"
    del kube.objects[("Pod", NS, f"chat-{old}-0")]
    await ctrl.reconcile(fleet(kube))
    assert replicas(kube)[new] == 2
    await ctrl.forget(NS, "chat")


async def test_an_abort_is_counted_as_an_aborted_outcome() -> None:
    """Aborts are announced by `RolloutAborted` (or `ProgressDeadlineExceeded`) events; the outcome
    counter names them `Aborted`, as its help says."""
    kube, source, clock = FakeKube(), FakeSource(), Clock()
    ctrl = controller(kube, source, clock)
    name = "abort-outcome"
    spec = {**CANARY, "rollout": {**CANARY["rollout"], "analysis": {**ANALYSIS, "inconclusiveLimit": 2}}}
    await steady(kube, ctrl, spec, name)

    def count(outcome: str) -> float:
        value = exposition.REGISTRY.get_sample_value(
            "kubeforge_rollout_outcomes_total", {"namespace": NS, "outcome": outcome}
        )
        return value or 0.0

    before = count("Aborted")
    fleet(kube, name)["spec"] = {**spec, "image": "img-nodata"}  # FakeSource has no samples: no data
    for _ in range(6):
        await ctrl.reconcile(fleet(kube, name))
        kube.run_deployment()
        clock.now += timedelta(seconds=2)
    assert rollout(kube, name)["phase"] == "Aborted"
    assert any(e["reason"] == "RolloutAborted" for e in kube.events)
    assert count("Aborted") == before + 1
    await ctrl.forget(NS, name)


# -- builders ------------------------------------------------------------------------------------------


SPEC = InferenceFleetSpec.model_validate(
    {"model": {"name": "m"}, "image": "img", "env": [{"name": "A", "value": "1"}], "replicas": 3}
)


class TestControllerRevision:
    def test_round_trip_keeps_the_template_and_takes_the_rest_from_the_current_spec(self) -> None:
        stored = build.build_controller_revision(
            SPEC, name="chat", namespace=NS, uid="u", rev=build.revision(SPEC)
        )
        assert stored["metadata"]["name"] == f"chat-{build.revision(SPEC)}"
        assert stored["data"]["spec"]["image"] == "img"
        assert "replicas" not in stored["data"]["spec"]
        current = SPEC.model_copy(update={"image": "img2", "replicas": 7, "priority_class_name": "high"})
        rebuilt = build.spec_of_revision(current, stored, build.revision(SPEC))
        assert rebuilt is not None
        assert (rebuilt.image, rebuilt.replicas, rebuilt.priority_class_name) == ("img", 7, "high")
        assert build.revision(rebuilt) == build.revision(SPEC)

    @pytest.mark.parametrize(
        "stored", [{}, {"data": {}}, {"data": {"spec": "nope"}}, {"data": {"spec": {"image": "other"}}}]
    )
    def test_unusable_or_mismatched_templates_are_refused(self, stored: dict[str, Any]) -> None:
        assert build.spec_of_revision(SPEC, stored, build.revision(SPEC)) is None


class TestRoutePatch:
    ROUTE: dict[str, Any] = {
        "metadata": {"name": "r", "resourceVersion": "3"},
        "spec": {
            "rules": [
                {"backendRefs": [{"name": "chat-old", "port": 8000, "weight": 100, "filters": [{"x": 1}]}]},
                {"backendRefs": [{"name": "api", "port": 80}, {"name": "chat", "port": 8000}]},
                {
                    "backendRefs": [
                        {"name": "chat", "kind": "ServiceImport", "group": "multicluster.x-k8s.io"}
                    ]
                },
            ]
        },
    }

    def test_fleet_backends_are_replaced_others_kept(self) -> None:
        patch = build.route_patch(
            self.ROUTE, name="chat", port=8000, weights={"old": 75, "new": 25}, revisions={"old", "new"}
        )
        assert patch is not None
        assert patch["metadata"] == {"resourceVersion": "3"}
        rules = patch["spec"]["rules"]
        # The canary's new backend carries the filters of the backend it joins.
        assert rules[0]["backendRefs"] == [
            {"name": "chat-new", "port": 8000, "weight": 25, "filters": [{"x": 1}]},
            {"name": "chat-old", "port": 8000, "weight": 75, "filters": [{"x": 1}]},
        ]
        assert rules[1]["backendRefs"][0] == {"name": "api", "port": 80}
        assert [r["name"] for r in rules[1]["backendRefs"][1:]] == ["chat-new", "chat-old"]
        assert rules[2] == self.ROUTE["spec"]["rules"][2]

    def test_the_users_backend_hands_its_fields_to_the_revisions_and_agrees_afterwards(self) -> None:
        """The route as the user writes it (and as the API server defaults it): a backend naming the
        fleet's Service with a filter. Every revision's backend is reached through that filter, and the
        patched route needs no second patch."""
        tag = [
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "a", "value": "b"}]}}
        ]
        user = {"group": "", "kind": "Service", "name": "chat", "port": 8000, "weight": 1, "filters": tag}
        route: dict[str, Any] = {"spec": {"rules": [{"backendRefs": [user]}]}}
        for weights in ({"a": 100}, {"a": 75, "b": 25}, {"b": 100}):
            patch = build.route_patch(route, name="chat", port=8000, weights=weights, revisions={"a", "b"})
            assert patch is not None
            refs = patch["spec"]["rules"][0]["backendRefs"]
            assert {r["name"]: r["weight"] for r in refs} == {f"chat-{k}": w for k, w in weights.items()}
            assert all(r["filters"] == tag and r["kind"] == "Service" for r in refs), refs
            route = {"spec": patch["spec"]}
            assert (
                build.route_patch(route, name="chat", port=8000, weights=weights, revisions={"a", "b"})
                is None
            )

    def test_a_revision_backend_never_takes_the_namespace_of_a_foreign_one_of_its_name(self) -> None:
        theirs = {"name": "chat-a", "namespace": "other-team", "port": 8000}
        route: dict[str, Any] = {
            "spec": {"rules": [{"backendRefs": [{"name": "chat", "port": 8000}, theirs]}]}
        }
        patch = build.route_patch(route, name="chat", port=8000, weights={"a": 100}, revisions={"a"})
        assert patch is not None
        assert patch["spec"]["rules"][0]["backendRefs"] == [
            {"name": "chat-a", "port": 8000, "weight": 100},
            theirs,
        ]

    def test_zero_weights_are_dropped_and_an_agreeing_route_needs_no_patch(self) -> None:
        patch = build.route_patch(
            self.ROUTE, name="chat", port=8000, weights={"old": 100, "new": 0}, revisions={"old", "new"}
        )
        assert patch is not None
        assert [r["name"] for r in patch["spec"]["rules"][0]["backendRefs"]] == ["chat-old"]
        route = {**self.ROUTE, "spec": patch["spec"]}
        again = build.route_patch(
            route, name="chat", port=8000, weights={"old": 100, "new": 0}, revisions={"old"}
        )
        assert again is None

    def test_a_route_without_fleet_backends_is_left_alone(self) -> None:
        route = {"spec": {"rules": [{"backendRefs": [{"name": "api", "port": 80}]}]}}
        assert build.route_patch(route, name="chat", port=8000, weights={"a": 100}, revisions={"a"}) is None

    def test_revision_service_selects_one_revision_and_long_names_are_reported(self) -> None:
        svc = build.build_revision_service(SPEC, name="chat", namespace=NS, uid="u", rev="abc")
        assert svc["metadata"]["name"] == "chat-abc"
        assert svc["spec"]["selector"][build.REVISION_LABEL] == "abc"
        assert build.revision_service_problem("chat", "abc") is None
        assert build.revision_service_problem("a" * 60, "abcdef1234") is not None


# -- PromQL --------------------------------------------------------------------------------------------


class TestRevisionQueries:
    def test_defaults_select_the_revision_label_and_use_the_window(self) -> None:
        spec = AnalysisSpec.model_validate({"maxErrorRate": 0.01, "maxLatencyP95": 1, "intervalSeconds": 5})
        queries = revision_queries(spec, "ns", "chat", "abc")
        sel = revision_selector("ns", "chat", "abc")
        assert sel == 'namespace="ns",kubeforge_dev_inferencefleet="chat",kubeforge_dev_revision="abc"'
        assert queries.error_rate is not None
        assert queries.latency_p95 is not None
        # Matchers are printed sorted (the query is parsed to confine it to the namespace).
        sorted_sel = ",".join(sorted(sel.split(",")))
        assert 'http_requests_total{code=~"5..",handler!~' in queries.error_rate
        assert "or vector(0)" in queries.error_rate
        assert f"vllm:e2e_request_latency_seconds_bucket{{{sorted_sel}}}[30s]" in queries.latency_p95

    def test_only_the_metrics_a_limit_needs_and_custom_queries(self) -> None:
        spec = AnalysisSpec.model_validate(
            {"maxErrorRate": 0.01, "windowSeconds": 7, "errorRateQuery": "my_errors{$selector}[$window]"}
        )
        queries = revision_queries(spec, "ns", "chat", "abc")
        assert queries.latency_p95 is None
        sel = ",".join(sorted(revision_selector("ns", "chat", "abc").split(",")))
        assert queries.error_rate == f"my_errors{{{sel}}}[7s]"

    def test_default_window_is_at_least_thirty_seconds_and_two_intervals(self) -> None:
        assert AnalysisSpec.model_validate({"maxErrorRate": 0.1, "intervalSeconds": 5}).window == 30
        assert AnalysisSpec.model_validate({"maxErrorRate": 0.1, "intervalSeconds": 40}).window == 80


# -- conditions ----------------------------------------------------------------------------------------


def test_rollout_overrides_ready_progressing_and_degraded() -> None:
    spec = InferenceFleetSpec.model_validate({"model": {"name": "m"}, "image": "img", "replicas": 2})
    revisions = [RevisionState("a", "chat-a", 2, 2, 2, 2, 2)]
    progressing = ConditionUpdate("Progressing", "True", "RolloutPaused", "waiting")
    active = condition_updates(
        spec,
        revision="a",
        desired=2,
        revisions=revisions,
        pods=PodSummary(total=2, ready=2),
        metrics=None,
        rollout=RolloutConditions(active=True, message="step 1/2", progressing=progressing),
    )
    by_type = {u.type: (u.status, u.reason) for u in active}
    assert by_type["Ready"] == ("False", "RolloutInProgress")
    assert by_type["Progressing"] == ("True", "RolloutPaused")
    assert by_type["Degraded"] == ("False", "AsExpected")
    rolled = condition_updates(
        spec,
        revision="a",
        desired=2,
        revisions=revisions,
        pods=PodSummary(total=2, ready=2),
        metrics=None,
        rollout=RolloutConditions(
            active=False,
            message="",
            progressing=ConditionUpdate("Progressing", "False", "RolledBack", "x"),
            degraded=ConditionUpdate("Degraded", "True", "RolledBack", "x"),
        ),
    )
    by_type = {u.type: (u.status, u.reason) for u in rolled}
    assert by_type["Ready"] == ("True", "Serving")
    assert by_type["Degraded"] == ("True", "RolledBack")
