"""The one status diff both controllers write with (`policy.status`): properties over typed statuses of
both kinds, and reading a stored status that is partly unreadable."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kubeforge.api.common import Condition, KubeModel
from kubeforge.api.inferencefleet import AutoscalerStatus, Endpoint, InferenceFleetStatus, Recommendation
from kubeforge.api.rollout import RevisionHistoryEntry, RolloutStatus
from kubeforge.api.trainingjob import TrainingJobStatus, WorkerCounts
from kubeforge.policy.status import apply_merge_patch, parse_status, status_diff

TIMES = st.sampled_from(["2026-03-01T12:00:00Z", "2026-03-01T12:05:00Z"])
SMALL = st.integers(0, 4)
WORDS = st.text(alphabet="ab ", max_size=4)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


conditions = st.lists(
    st.builds(
        Condition,
        type=st.sampled_from(["Ready", "Progressing", "Degraded", "CapacityLimited"]),
        status=st.sampled_from(["True", "False", "Unknown"]),
        reason=st.sampled_from(["Serving", "Scaling", "AsExpected"]),
        message=WORDS,
        last_transition_time=TIMES,
        observed_generation=maybe(SMALL),
    ),
    max_size=4,
    unique_by=lambda c: c.type,
)
autoscalers = st.builds(
    AutoscalerStatus,
    metric=maybe(st.sampled_from(["queueDepth", "query"])),
    metric_value=maybe(st.floats(0, 100, allow_nan=False)),
    desired_replicas=maybe(SMALL),
    reason=maybe(st.sampled_from(["ScaleUp", "WithinTolerance"])),
    last_decision_time=maybe(TIMES),
    recommendations=st.lists(st.builds(Recommendation, time=TIMES, replicas=SMALL), max_size=2),
)
rollouts = st.builds(
    RolloutStatus,
    phase=maybe(st.sampled_from(["Progressing", "Promoted", "RolledBack"])),
    current_step=maybe(SMALL),
    canary_weight=st.integers(0, 100),
    stable_revision=maybe(st.sampled_from(["a", "b"])),
    canary_revision=maybe(st.sampled_from(["a", "b"])),
    failed_revisions=st.lists(st.sampled_from(["a", "b"]), max_size=2),
    message=WORDS,
    history=st.lists(
        st.builds(
            RevisionHistoryEntry,
            revision=st.sampled_from(["a", "b"]),
            number=SMALL,
            image=maybe(WORDS),
            created_at=TIMES,
            phase=st.sampled_from(["Stable", "Superseded"]),
        ),
        max_size=2,
    ),
)
fleet_statuses = st.builds(
    InferenceFleetStatus,
    observed_generation=maybe(SMALL),
    replicas=maybe(SMALL),
    ready_replicas=maybe(SMALL),
    desired_replicas=maybe(SMALL),
    selector=maybe(st.just("a=b")),
    revision=maybe(st.sampled_from(["a", "b"])),
    endpoint=maybe(st.builds(Endpoint, service=st.just("s"), port=st.sampled_from([80, 8000]), url=WORDS)),
    conditions=conditions,
    autoscaler=maybe(autoscalers),
    rollout=maybe(rollouts),
)
job_statuses = st.builds(
    TrainingJobStatus,
    phase=maybe(st.sampled_from(["Pending", "Running", "Restarting"])),
    message=maybe(WORDS),
    conditions=conditions,
    workers=maybe(st.builds(WorkerCounts, desired=SMALL, active=SMALL, ready=SMALL)),
    restarts=SMALL,
    next_attempt_time=maybe(TIMES),
    gpu_hours=st.floats(0, 10, allow_nan=False),
    observed_generation=maybe(SMALL),
)
pairs = st.tuples(fleet_statuses, fleet_statuses) | st.tuples(job_statuses, job_statuses)


@given(pairs)
def test_the_diff_applied_to_the_stored_status_gives_the_new_one(pair: tuple[KubeModel, KubeModel]) -> None:
    old, new = pair
    patch = status_diff(old, new)
    stored = apply_merge_patch(old.to_wire(), patch or {})
    assert stored == new.to_wire()
    assert parse_status(type(new), stored) == new


@given(pairs)
def test_no_diff_exactly_when_nothing_changed(pair: tuple[KubeModel, KubeModel]) -> None:
    old, new = pair
    assert status_diff(old, old) is None
    assert (status_diff(old, new) is None) is (old.to_wire() == new.to_wire())


@given(fleet_statuses)
def test_the_diff_touches_only_what_changed(status: InferenceFleetStatus) -> None:
    moved = status.model_copy(update={"desired_replicas": (status.desired_replicas or 0) + 1})
    assert status_diff(status, moved) == {"desiredReplicas": moved.desired_replicas}


def test_an_unreadable_field_is_dropped_not_the_status() -> None:
    raw = {"revision": "abc", "replicas": "many", "rollout": {"phase": "Nonsense"}, "desiredReplicas": 3}
    status = parse_status(InferenceFleetStatus, raw)
    assert (status.revision, status.desired_replicas) == ("abc", 3)
    assert (status.replicas, status.rollout) == (None, None)
    assert parse_status(InferenceFleetStatus, None) == InferenceFleetStatus()
