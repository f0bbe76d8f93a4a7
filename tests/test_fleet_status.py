"""InferenceFleet status: conditions from observed Deployments and pods; minimal merge patches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeforge.api.inferencefleet import AutoscalerStatus, InferenceFleetSpec, InferenceFleetStatus
from kubeforge.api.rollout import RolloutPhase, RolloutStatus
from kubeforge.policy.conditions import ConditionUpdate
from kubeforge.policy.fleet_status import (
    MetricsHealth,
    PodSummary,
    RevisionPods,
    RevisionState,
    RolloutConditions,
    compute_status,
    count_revision_pods,
    invalid_status,
    ready_threshold,
    summarize_deployment,
    summarize_pods,
)
from kubeforge.policy.status import apply_merge_patch, merge_diff, status_diff

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
    current: InferenceFleetStatus | None = None,
    **rollout: Any,
) -> InferenceFleetStatus:
    """`compute_status` at T0; `rollout` passes `rollout=` and `rollout_status=` through."""
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
        autoscaler=AutoscalerStatus(desired_replicas=desired, reason="Steady"),
        current=current or InferenceFleetStatus(),
        now=T0,
        **rollout,
    )


def cond(st_: InferenceFleetStatus, type_: str) -> tuple[str, str]:
    found = next((c for c in st_.conditions if c.type == type_), None)
    assert found is not None, type_
    return found.status, found.reason


def has_cond(st_: InferenceFleetStatus, type_: str) -> bool:
    return any(c.type == type_ for c in st_.conditions)


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
        assert "Insufficient gpu" in next(c.message for c in st_.conditions if c.type == "CapacityLimited")


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
        assert on.autoscaler is not None
        off = status(spec(), [rev(3)], metrics=None, current=on)
        assert not has_cond(off, "MetricsUnavailable")
        assert off.autoscaler is None

    def test_status_fields(self) -> None:
        st_ = status(spec(), [rev(3), rev(1, 2, revision="old")])
        assert (st_.replicas, st_.ready_replicas, st_.desired_replicas) == (5, 4, 3)
        assert st_.observed_generation == 4
        assert st_.revision == REV
        assert st_.endpoint is not None
        assert st_.endpoint.service == "chat.ns.svc"
        assert st_.selector == "app.kubernetes.io/managed-by=kubeforge,kubeforge.dev/inferencefleet=chat"

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
            current=first,
            now=T0 + timedelta(minutes=5),
        )
        assert status_diff(first, later) is None

    def test_invalid_is_stalled_not_reconciling(self) -> None:
        st_ = invalid_status("InvalidName", "bad", generation=5, current=status(spec(), [rev(1, 3)]), now=T0)
        assert cond(st_, "Stalled") == ("True", "InvalidName")
        assert cond(st_, "Reconciling") == ("False", "Stalled")

    def test_invalid_keeps_the_rest_of_the_status(self) -> None:
        before = status(spec(), [rev(3)])
        st_ = invalid_status("InvalidName", "bad", generation=5, current=before, now=T0)
        assert cond(st_, "Degraded") == ("True", "InvalidName")
        assert cond(st_, "Ready") == ("False", "InvalidName")
        assert st_.observed_generation == 5
        assert (st_.replicas, st_.revision, st_.autoscaler) == (before.replicas, REV, before.autoscaler)


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


@given(old=_objects, new=_objects)
def test_merge_diff_round_trips(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Applying the diff to what the server has gives what we want (objects as the API server stores
    them: no null values), and nothing changed is no diff."""
    old, new = _strip_nulls(old), _strip_nulls(new)
    patch = merge_diff(old, new)
    assert apply_merge_patch(old, patch) == new
    assert (patch == {}) is (old == new)


def test_pods_per_revision() -> None:
    def labelled(p: dict[str, Any], rev: str) -> dict[str, Any]:
        return {**p, "metadata": {**p["metadata"], "labels": {"kubeforge.dev/revision": rev}}}

    finished = pod(ready=True)
    finished["status"]["phase"] = "Succeeded"
    counts = count_revision_pods(
        [
            labelled(pod(ready=True), "a"),
            labelled(pod(scheduled=False), "a"),
            labelled(pod(ready=True, deleting=True), "a"),
            labelled(finished, "a"),
            labelled(pod(scheduled=None), "b"),
        ],
        "kubeforge.dev/revision",
    )
    assert counts == {"a": RevisionPods(alive=2, pending=1, terminating=1), "b": RevisionPods(1, 1, 0)}


def rollout_status(
    phase: RolloutPhase,
    progressing: ConditionUpdate,
    degraded: ConditionUpdate | None = None,
    current: InferenceFleetStatus | None = None,
) -> InferenceFleetStatus:
    """A fleet whose stable revision serves 3 replicas while the rollout is in `phase`."""
    message = f"rollout {phase}"
    return status(
        spec(),
        [rev(3)],
        current=current,
        rollout=RolloutConditions(phase in ("Progressing", "Paused"), message, progressing, degraded),
        rollout_status=RolloutStatus(phase=phase, canary_revision="new", message=message),
    )


class TestGitOpsConditions:
    """`Reconciling` and `Stalled` (kstatus) per rollout phase; the real kstatus and Argo CD verdicts on
    statuses the controller writes are in test_gitops_health.py."""

    @pytest.mark.parametrize(
        ("phase", "progressing", "degraded", "reconciling", "stalled"),
        [
            ("Progressing", ("True", "RolloutProgressing"), None, ("True", "RolloutProgressing"), "False"),
            ("Paused", ("True", "RolloutPaused"), None, ("True", "RolloutPaused"), "False"),
            ("Promoted", ("False", "RolloutComplete"), None, ("False", "Reconciled"), "False"),
            ("Promoted", ("True", "RolloutProgressing"), None, ("True", "RolloutProgressing"), "False"),
            ("Aborted", ("False", "Aborted"), "RolloutAborted", ("False", "Reconciled"), "RolloutAborted"),
            ("Aborted", ("False", "Aborted"), None, ("False", "Reconciled"), "RolloutAborted"),
            ("RolledBack", ("False", "RolledBack"), "RolledBack", ("False", "Reconciled"), "RolledBack"),
        ],
        ids=["progressing", "paused", "promoted", "draining", "self-aborted", "user-aborted", "rolled-back"],
    )
    def test_per_phase(
        self,
        phase: RolloutPhase,
        progressing: tuple[str, str],
        degraded: str | None,
        reconciling: tuple[str, str],
        stalled: str,
    ) -> None:
        updates = (
            ConditionUpdate("Progressing", progressing[0], progressing[1], "m"),  # type: ignore[arg-type]
            ConditionUpdate("Degraded", "True", degraded, "m") if degraded else None,
        )
        st_ = rollout_status(phase, *updates)
        assert cond(st_, "Reconciling") == reconciling
        assert cond(st_, "Stalled") == (("True", stalled) if stalled != "False" else ("False", "AsExpected"))
        again = rollout_status(phase, *updates, current=st_)
        assert status_diff(st_, again) is None, "the same conclusions write nothing"

    def test_a_stall_wins_over_scaling(self) -> None:
        """Draining the canary after an abort moves replicas, but the verdict is the abort."""
        st_ = status(
            spec(),
            [rev(1, 3)],
            rollout=RolloutConditions(False, "aborted", ConditionUpdate("Progressing", "False", "Aborted")),
            rollout_status=RolloutStatus(phase="Aborted", message="aborted"),
        )
        assert cond(st_, "Progressing") == ("True", "Scaling")
        assert cond(st_, "Stalled") == ("True", "RolloutAborted")
        assert cond(st_, "Reconciling") == ("False", "Stalled")

    @pytest.mark.parametrize(
        ("revisions", "reconciling"),
        [([rev(3)], ("False", "Reconciled")), ([rev(1, 3)], ("True", "Scaling"))],
        ids=["steady", "scaling"],
    )
    def test_without_a_rollout(self, revisions: list[RevisionState], reconciling: tuple[str, str]) -> None:
        st_ = status(spec(), revisions)
        assert cond(st_, "Reconciling") == reconciling
        assert cond(st_, "Stalled") == ("False", "AsExpected")

    def test_a_failed_deployment_stalls(self) -> None:
        failed = rev(1, 3, failure="ProgressDeadlineExceeded: too slow")
        assert cond(status(spec(), [failed]), "Stalled") == ("True", "DeploymentFailed")
