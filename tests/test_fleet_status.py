"""InferenceFleet status: conditions from observed Deployments and pods; minimal merge patches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeforge.api.inferencefleet import InferenceFleetSpec
from kubeforge.policy.conditions import find_condition
from kubeforge.policy.fleet_status import (
    MetricsHealth,
    PodSummary,
    RevisionState,
    apply_merge_patch,
    compute_status,
    invalid_status,
    merge_patch,
    ready_threshold,
    summarize_deployment,
    summarize_pods,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
REV = "abc123"


def spec(**overrides: Any) -> InferenceFleetSpec:
    fields: dict[str, Any] = {"model": {"name": "m"}, "image": "img", "replicas": 3}
    fields.update(overrides)
    return InferenceFleetSpec.model_validate(fields)


AUTO = {"minReplicas": 2, "maxReplicas": 8, "metric": "queueDepth", "target": 4}


def status(
    s: InferenceFleetSpec,
    revisions: list[RevisionState],
    *,
    desired: int = 3,
    pods: PodSummary | None = None,
    metrics: MetricsHealth | None = None,
    current: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return compute_status(
        s,
        name="chat",
        namespace="ns",
        generation=4,
        revision=REV,
        desired=desired,
        revisions=revisions,
        pods=pods or PodSummary(),
        metrics=metrics,
        autoscaler={"desiredReplicas": desired, "reason": "Steady"},
        selector="sel",
        endpoint={"service": "chat.ns.svc", "port": 8000, "url": "http://chat.ns.svc:8000"},
        current_status=current or {},
        now=T0,
    )


def cond(st_: dict[str, Any], type_: str) -> tuple[str, str]:
    found = find_condition(st_["conditions"], type_)
    assert found is not None, type_
    return str(found["status"]), str(found["reason"])


def rev(ready: int, replicas: int | None = None, revision: str = REV, **kw: Any) -> RevisionState:
    n = replicas if replicas is not None else ready
    return RevisionState(
        revision=revision,
        name=f"chat-{revision}",
        spec_replicas=n,
        replicas=n,
        ready=ready,
        available=ready,
        updated=n,
        **kw,
    )


class TestReady:
    @pytest.mark.parametrize(
        ("s", "revisions", "desired", "expected"),
        [
            (spec(), [rev(3)], 3, ("True", "Serving")),
            (spec(), [rev(2, 3)], 3, ("False", "WaitingForReplicas")),
            (spec(autoscaling=AUTO), [rev(2, 5)], 5, ("True", "Serving")),
            (spec(autoscaling=AUTO), [rev(1, 5)], 5, ("False", "WaitingForReplicas")),
            (spec(), [rev(3), rev(3, revision="old")], 3, ("False", "Updating")),
            (spec(replicas=0), [rev(0, 0)], 0, ("True", "ScaledToZero")),
        ],
        ids=[
            "all-ready",
            "short",
            "autoscaled-min-ready",
            "autoscaled-below-min",
            "old-revision-left",
            "zero",
        ],
    )
    def test_ready(
        self, s: InferenceFleetSpec, revisions: list[RevisionState], desired: int, expected: tuple[str, str]
    ) -> None:
        assert cond(status(s, revisions, desired=desired), "Ready") == expected

    def test_threshold(self) -> None:
        assert ready_threshold(spec(), 3) == 3
        assert ready_threshold(spec(autoscaling=AUTO), 6) == 2
        assert ready_threshold(spec(autoscaling=AUTO), 0) == 0

    def test_capacity_limited(self) -> None:
        pods = PodSummary(
            total=4, ready=2, scheduled=2, unschedulable=2, unschedulable_message="Insufficient gpu"
        )
        st_ = status(spec(replicas=4), [rev(2, 4)], desired=4, pods=pods)
        assert cond(st_, "Ready") == ("False", "CapacityLimited")
        assert cond(st_, "CapacityLimited") == ("True", "Unschedulable")
        assert "Insufficient gpu" in str(find_condition(st_["conditions"], "CapacityLimited"))


class TestOtherConditions:
    def test_progressing(self) -> None:
        assert cond(status(spec(), [rev(3)]), "Progressing") == ("False", "Stable")
        assert cond(status(spec(), [rev(1, 3)]), "Progressing") == ("True", "Scaling")
        assert cond(status(spec(), [rev(3), rev(3, revision="old")]), "Progressing") == (
            "True",
            "NewRevision",
        )

    def test_degraded(self) -> None:
        assert cond(status(spec(), [rev(3)]), "Degraded") == ("False", "AsExpected")
        failed = rev(1, 3, failure="ProgressDeadlineExceeded: too slow")
        assert cond(status(spec(), [failed]), "Degraded") == ("True", "DeploymentFailed")
        crashing = PodSummary(total=3, crashing=1, crash_message="CrashLoopBackOff: back-off")
        assert cond(status(spec(), [rev(2, 3)], pods=crashing), "Degraded") == ("True", "PodsFailing")

    def test_metrics_condition_only_with_autoscaler(self) -> None:
        down = MetricsHealth(True, "PrometheusUnreachable", "refused")
        on = status(spec(autoscaling=AUTO), [rev(3)], metrics=down)
        assert cond(on, "MetricsUnavailable") == ("True", "PrometheusUnreachable")
        assert on["autoscaler"] is not None
        off = status(spec(), [rev(3)], metrics=None, current=on)
        assert find_condition(off["conditions"], "MetricsUnavailable") is None
        assert off["autoscaler"] is None

    def test_status_fields(self) -> None:
        st_ = status(spec(), [rev(3), rev(1, 2, revision="old")])
        assert (st_["replicas"], st_["readyReplicas"], st_["desiredReplicas"]) == (5, 4, 3)
        assert st_["observedGeneration"] == 4
        assert st_["revision"] == REV
        assert st_["endpoint"]["service"] == "chat.ns.svc"

    def test_recomputing_the_same_status_patches_nothing(self) -> None:
        first = status(spec(), [rev(3)])
        later = compute_status(
            spec(),
            name="chat",
            namespace="ns",
            generation=4,
            revision=REV,
            desired=3,
            revisions=[rev(3)],
            pods=PodSummary(),
            metrics=None,
            autoscaler=None,
            selector="sel",
            endpoint=first["endpoint"],
            current_status=first,
            now=T0 + timedelta(minutes=5),
        )
        assert merge_patch(first, later) == {}

    def test_invalid(self) -> None:
        st_ = invalid_status("InvalidName", "bad", generation=1, current_status={}, now=T0)
        assert cond(st_, "Degraded") == ("True", "InvalidName")
        assert cond(st_, "Ready") == ("False", "InvalidName")


def pod(
    *, ready: bool = False, scheduled: bool | None = True, waiting: str | None = None, deleting: bool = False
) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = [{"type": "Ready", "status": "True" if ready else "False"}]
    if scheduled is True:
        conditions.append({"type": "PodScheduled", "status": "True"})
    elif scheduled is False:
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/5 nodes: gpu",
            }
        )
    status: dict[str, Any] = {"phase": "Running" if scheduled else "Pending", "conditions": conditions}
    if waiting:
        status["containerStatuses"] = [{"state": {"waiting": {"reason": waiting, "message": "m"}}}]
    meta: dict[str, Any] = {"name": "p"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"nodeName": "n"} if scheduled else {}, "status": status}


def test_summarize_pods() -> None:
    summary = summarize_pods(
        [
            pod(ready=True),
            pod(ready=True),
            pod(),
            pod(scheduled=False),
            pod(scheduled=None),
            pod(waiting="CrashLoopBackOff"),
            pod(ready=True, deleting=True),
        ]
    )
    assert (summary.total, summary.ready, summary.scheduled, summary.unschedulable, summary.crashing) == (
        6,
        2,
        4,
        1,
        1,
    )
    assert summary.unschedulable_message == "0/5 nodes: gpu"


def test_summarize_deployment() -> None:
    state = summarize_deployment(
        {
            "metadata": {"name": "chat-abc", "generation": 2, "labels": {"kubeforge.dev/revision": "abc"}},
            "spec": {"replicas": 3},
            "status": {
                "observedGeneration": 1,
                "replicas": 3,
                "readyReplicas": 2,
                "availableReplicas": 2,
                "updatedReplicas": 3,
                "conditions": [
                    {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
                ],
            },
        },
        "kubeforge.dev/revision",
    )
    assert (state.revision, state.spec_replicas, state.ready, state.current) == ("abc", 3, 2, False)
    assert state.failure is not None
    assert state.failure.startswith("ProgressDeadlineExceeded")


_json = st.recursive(
    st.none() | st.integers(-3, 3) | st.text(max_size=3),
    lambda children: (
        st.dictionaries(st.sampled_from("abcd"), children, max_size=4) | st.lists(children, max_size=3)
    ),
    max_leaves=12,
)
_objects = st.dictionaries(st.sampled_from("abcde"), _json, max_size=5)


def _strip_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    return value


def _overlay(old: Any, new: Any) -> Any:
    if isinstance(old, dict) and isinstance(new, dict):
        return {**old, **{k: _overlay(old.get(k), v) for k, v in new.items()}}
    return new


@given(old=_objects, new=_objects)
def test_merge_patch_round_trips(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Applying the patch to what the server has gives what we want: keys we set (null meaning absent)
    take our value, keys we do not mention (another writer's, such as status.rollout) are left alone."""
    server = _strip_nulls(old)
    patch = merge_patch(server, new)
    expected = _strip_nulls(_overlay(server, new))
    assert apply_merge_patch(server, patch) == expected
    if expected == server:
        assert patch == {}
