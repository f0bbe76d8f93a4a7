"""InferenceFleet status as a pure function of what the cluster shows.

Conditions:

- `Ready`: the current revision serves. True when it is the only revision left and has at least the
  replicas it needs ready: all of `desiredReplicas` with the autoscaler off (as a Deployment), at least
  `minReplicas` with it on (a fleet scaling up from 3 to 5 serves, and is `Progressing`). A fleet scaled
  to zero is Ready. kstatus (Argo CD, Flux) reads it directly.
- `Progressing`: a new revision is replacing an old one, or the replica count is converging.
- `Degraded`: the Deployment reports ProgressDeadlineExceeded or ReplicaFailure, pods crash-loop, or the
  operator cannot build the fleet at all (a name no Service can have).
- `CapacityLimited`: pods of the fleet are unschedulable (for lack of GPUs, usually); or, from
  `policy.fleet`, a rollout swaps in place because the free GPUs are unknown (`CapacityUnknown`).
- `MetricsUnavailable`: autoscaler only: Prometheus unreachable or without data; replicas are held.

With a rollout (`RolloutConditions`, from `policy.rollout.plan_rollout`), `Ready` is judged on the
stable revision and is False (reason `RolloutInProgress`) while a canary is walking its steps;
`Progressing` is the rollout's; `Degraded` is the rollout's when it has a reason (`RolledBack`,
`RolloutAborted`, `RevisionNotFound`), else the Deployments' and pods' as above.

For GitOps tools (`gitops_conditions`; kstatus reads them before `Ready`):

- `Reconciling`: True exactly when `Progressing` is (a canary walking or paused, old revisions
  draining, replicas converging), unless the fleet is `Stalled`.
- `Stalled`: True while the rollout of the desired revision is `Aborted` or `RolledBack` (it stays so
  until the spec changes: a new template, `retryAt`, `abortRevision` removed, or `targetRevision` back to
  a good revision), while `targetRevision` names a revision that does not exist, while a Deployment
  reports ProgressDeadlineExceeded or ReplicaFailure, and while the spec cannot be built (`invalid_status`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubeforge.api.common import Condition
from kubeforge.api.fleet_names import endpoint, selector_string
from kubeforge.api.inferencefleet import AutoscalerStatus, InferenceFleetSpec, InferenceFleetStatus
from kubeforge.api.rollout import RolloutStatus
from kubeforge.policy.conditions import ConditionUpdate, kstatus_conditions, merge_conditions


def switched_off(spec: InferenceFleetSpec) -> frozenset[str]:
    """The conditions of features the spec does not use. They go with their feature: a budget removed
    must not leave `BudgetLimited=True` behind, nor a route removed a `TrafficRouted` naming revisions
    that no longer serve (a condition type the pass does not compute is otherwise kept as it was)."""
    off: set[str] = set()
    if not spec.autoscaler_on:
        off.add("MetricsUnavailable")
    if spec.budget is None:
        off.add("BudgetLimited")
    if spec.rollout is None or spec.rollout.http_route is None:
        off.add("TrafficRouted")
    return frozenset(off)


CRASH_REASONS = frozenset(
    {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError"}
)
_MAX_MESSAGE = 512
STALLED_PHASES = {"Aborted": "RolloutAborted", "RolledBack": "RolledBack"}
"""Rollout phases in which the desired revision will not serve until the spec changes, and the
`Stalled` reason each gives."""
STALLING_DEGRADED = frozenset({"RevisionNotFound", "DeploymentFailed"})
"""`Degraded` reasons that no amount of waiting fixes (kstatus reads a Deployment past its progress
deadline as Failed too)."""


@dataclass(frozen=True)
class RevisionState:
    """One revision's Deployment, as observed."""

    revision: str
    name: str
    spec_replicas: int
    replicas: int = 0
    ready: int = 0
    available: int = 0
    updated: int = 0
    current: bool = True
    """The Deployment controller has seen the latest Deployment spec."""
    failure: str | None = None


@dataclass(frozen=True)
class PodSummary:
    total: int = 0
    ready: int = 0
    scheduled: int = 0
    unschedulable: int = 0
    unschedulable_message: str = ""
    crashing: int = 0
    crash_message: str = ""


@dataclass(frozen=True)
class RolloutConditions:
    """What the rollout says about the fleet's conditions."""

    active: bool
    """A canary is walking its steps (phase Progressing or Paused)."""
    message: str
    progressing: ConditionUpdate
    degraded: ConditionUpdate | None = None


@dataclass(frozen=True)
class MetricsHealth:
    unavailable: bool
    reason: str
    message: str


def _conditions_of(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(obj.get("status", {}).get("conditions", []) or [])


def _cond(conditions: Iterable[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def summarize_deployment(deployment: Mapping[str, Any], revision_label: str) -> RevisionState:
    meta = deployment.get("metadata", {})
    spec = deployment.get("spec", {})
    status = deployment.get("status", {}) or {}
    conditions = status.get("conditions", []) or []
    failure = None
    progressing = _cond(conditions, "Progressing")
    if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
        failure = f"ProgressDeadlineExceeded: {progressing.get('message', '')}"
    replica_failure = _cond(conditions, "ReplicaFailure")
    if replica_failure is not None and replica_failure.get("status") == "True":
        failure = f"ReplicaFailure: {replica_failure.get('message', '')}"
    generation = int(meta.get("generation", 0) or 0)
    observed = int(status.get("observedGeneration", 0) or 0)
    return RevisionState(
        revision=str(meta.get("labels", {}).get(revision_label, "")),
        name=str(meta.get("name", "")),
        spec_replicas=int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1),
        replicas=int(status.get("replicas", 0) or 0),
        ready=int(status.get("readyReplicas", 0) or 0),
        available=int(status.get("availableReplicas", 0) or 0),
        updated=int(status.get("updatedReplicas", 0) or 0),
        current=observed >= generation,
        failure=failure,
    )


def summarize_pods(pods: Sequence[Mapping[str, Any]]) -> PodSummary:
    total = ready = scheduled = unschedulable = crashing = 0
    unschedulable_message = crash_message = ""
    for pod in pods:
        meta = pod.get("metadata", {})
        if meta.get("deletionTimestamp"):
            continue
        status = pod.get("status", {}) or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        total += 1
        conditions = status.get("conditions", []) or []
        ready_cond = _cond(conditions, "Ready")
        if ready_cond is not None and ready_cond.get("status") == "True":
            ready += 1
        sched = _cond(conditions, "PodScheduled")
        if pod.get("spec", {}).get("nodeName") or (sched is not None and sched.get("status") == "True"):
            scheduled += 1
        elif sched is not None and sched.get("reason") == "Unschedulable":
            unschedulable += 1
            unschedulable_message = unschedulable_message or str(sched.get("message", ""))
        for container in status.get("containerStatuses", []) or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in CRASH_REASONS:
                crashing += 1
                crash_message = (
                    crash_message or f"{waiting.get('reason')}: {waiting.get('message', '')}".strip()
                )
                break
    return PodSummary(
        total=total,
        ready=ready,
        scheduled=scheduled,
        unschedulable=unschedulable,
        unschedulable_message=unschedulable_message[:_MAX_MESSAGE],
        crashing=crashing,
        crash_message=crash_message[:_MAX_MESSAGE],
    )


@dataclass(frozen=True)
class RevisionPods:
    """One revision's pods as a rollout counts them."""

    alive: int = 0
    """Not finished and not being deleted."""
    pending: int = 0
    """Alive without a node yet: about to take free GPUs."""
    terminating: int = 0
    """Being deleted but still running (and holding GPUs) until they are gone."""


def count_revision_pods(pods: Sequence[Mapping[str, Any]], revision_label: str) -> dict[str, RevisionPods]:
    """The fleet's pods per revision (by their revision label)."""
    alive: dict[str, int] = {}
    pending: dict[str, int] = {}
    terminating: dict[str, int] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        rev = str((meta.get("labels") or {}).get(revision_label, ""))
        if meta.get("deletionTimestamp"):
            # Not ready for its ReplicaSet any more, but still running until it is gone.
            terminating[rev] = terminating.get(rev, 0) + 1
            continue
        alive[rev] = alive.get(rev, 0) + 1
        if not (pod.get("spec") or {}).get("nodeName"):
            pending[rev] = pending.get(rev, 0) + 1
    return {
        rev: RevisionPods(alive.get(rev, 0), pending.get(rev, 0), terminating.get(rev, 0))
        for rev in {*alive, *terminating}
    }


def ready_threshold(spec: InferenceFleetSpec, desired: int) -> int:
    """Ready replicas the current revision needs for the fleet to count as Ready."""
    if desired <= 0:
        return 0
    if spec.autoscaler_on and spec.autoscaling is not None:
        return max(1, min(desired, spec.autoscaling.min_replicas))
    return desired


def condition_updates(
    spec: InferenceFleetSpec,
    *,
    revision: str,
    desired: int,
    revisions: Sequence[RevisionState],
    pods: PodSummary,
    metrics: MetricsHealth | None,
    rollout: RolloutConditions | None = None,
) -> list[ConditionUpdate]:
    updates = _base_updates(
        spec, revision=revision, desired=desired, revisions=revisions, pods=pods, metrics=metrics
    )
    if rollout is None:
        return updates
    out: list[ConditionUpdate] = []
    for update in updates:
        if update.type == "Ready" and rollout.active:
            update = ConditionUpdate("Ready", "False", "RolloutInProgress", rollout.message[:_MAX_MESSAGE])
        elif update.type == "Progressing" and not (
            rollout.progressing.status == "False" and update.reason == "Scaling"
        ):
            update = rollout.progressing
        elif update.type == "Degraded" and rollout.degraded is not None:
            update = rollout.degraded
        out.append(ConditionUpdate(update.type, update.status, update.reason, update.message[:_MAX_MESSAGE]))
    return out


def _base_updates(
    spec: InferenceFleetSpec,
    *,
    revision: str,
    desired: int,
    revisions: Sequence[RevisionState],
    pods: PodSummary,
    metrics: MetricsHealth | None,
) -> list[ConditionUpdate]:
    current = next((r for r in revisions if r.revision == revision), None)
    old = [r for r in revisions if r.revision != revision]
    ready_now = current.ready if current is not None else 0
    needed = ready_threshold(spec, desired)
    updates: list[ConditionUpdate] = []

    # Ready
    if desired == 0 and not old and (current is None or current.replicas == 0):
        updates.append(ConditionUpdate("Ready", "True", "ScaledToZero", "no replicas requested"))
    elif current is not None and not old and ready_now >= needed and needed > 0:
        updates.append(
            ConditionUpdate(
                "Ready", "True", "Serving", f"{ready_now}/{desired} replicas ready (revision {revision})"
            )
        )
    elif old and ready_now >= needed:
        updates.append(
            ConditionUpdate(
                "Ready",
                "False",
                "Updating",
                f"revision {revision} ready; removing {', '.join(r.name for r in old)}",
            )
        )
    elif pods.unschedulable:
        updates.append(
            ConditionUpdate(
                "Ready",
                "False",
                "CapacityLimited",
                f"{ready_now}/{desired} replicas ready; {pods.unschedulable} pod(s) unschedulable",
            )
        )
    else:
        updates.append(
            ConditionUpdate("Ready", "False", "WaitingForReplicas", f"{ready_now}/{desired} replicas ready")
        )

    # Progressing
    if old:
        updates.append(
            ConditionUpdate(
                "Progressing",
                "True",
                "NewRevision",
                f"revision {revision} replacing {', '.join(r.revision for r in old)}",
            )
        )
    elif current is None or not current.current or current.replicas != desired or ready_now < desired:
        updates.append(
            ConditionUpdate("Progressing", "True", "Scaling", f"{ready_now}/{desired} replicas ready")
        )
    else:
        updates.append(
            ConditionUpdate("Progressing", "False", "Stable", f"{desired} replicas at revision {revision}")
        )

    # Degraded
    failures = [f"{r.name}: {r.failure}" for r in revisions if r.failure]
    if failures:
        updates.append(
            ConditionUpdate("Degraded", "True", "DeploymentFailed", "; ".join(failures)[:_MAX_MESSAGE])
        )
    elif pods.crashing:
        updates.append(
            ConditionUpdate(
                "Degraded", "True", "PodsFailing", f"{pods.crashing} pod(s) failing: {pods.crash_message}"
            )
        )
    else:
        updates.append(ConditionUpdate("Degraded", "False", "AsExpected", ""))

    # CapacityLimited
    if pods.unschedulable:
        updates.append(
            ConditionUpdate(
                "CapacityLimited",
                "True",
                "Unschedulable",
                f"{pods.unschedulable} pod(s) cannot be scheduled: {pods.unschedulable_message}"[
                    :_MAX_MESSAGE
                ],
            )
        )
    else:
        updates.append(ConditionUpdate("CapacityLimited", "False", "Schedulable", "every pod has a node"))

    if metrics is not None:
        if metrics.unavailable:
            updates.append(
                ConditionUpdate("MetricsUnavailable", "True", metrics.reason, metrics.message[:_MAX_MESSAGE])
            )
        else:
            updates.append(
                ConditionUpdate("MetricsUnavailable", "False", "MetricsAvailable", metrics.message)
            )
    return updates


def compute_status(
    spec: InferenceFleetSpec,
    *,
    name: str,
    namespace: str,
    generation: int | None,
    revision: str,
    desired: int,
    revisions: Sequence[RevisionState],
    pods: PodSummary,
    metrics: MetricsHealth | None,
    autoscaler: AutoscalerStatus | None,
    current: InferenceFleetStatus,
    now: datetime,
    serving: str | None = None,
    rollout: RolloutConditions | None = None,
    rollout_status: RolloutStatus | None = None,
    extra: Sequence[ConditionUpdate] = (),
) -> InferenceFleetStatus:
    """The whole status the operator wants on the fleet. `revision` is the template's; `serving` the
    revision judged for `Ready` (the rollout's stable one; default the template's). `extra` conditions
    are merged as given."""
    existing = [c.to_wire() for c in current.conditions]
    off = switched_off(spec)
    existing = [c for c in existing if c.get("type") not in off]
    updates = condition_updates(
        spec,
        revision=serving or revision,
        desired=desired,
        revisions=revisions,
        pods=pods,
        metrics=metrics,
        rollout=rollout,
    )
    updates.extend(extra)
    rollout_now = rollout_status if rollout_status is not None else current.rollout
    updates.extend(gitops_conditions(updates, rollout_now))
    conditions = merge_conditions(existing, updates, now=now, generation=generation)
    return InferenceFleetStatus(
        observed_generation=generation,
        replicas=sum(r.replicas for r in revisions),
        ready_replicas=sum(r.ready for r in revisions),
        desired_replicas=desired,
        selector=selector_string(name),
        revision=revision,
        endpoint=endpoint(spec, name=name, namespace=namespace),
        conditions=[Condition.model_validate(c) for c in conditions],
        autoscaler=autoscaler if spec.autoscaler_on else None,
        rollout=rollout_now,
    )


def gitops_conditions(
    updates: Sequence[ConditionUpdate], rollout: RolloutStatus | None
) -> list[ConditionUpdate]:
    """`Reconciling` and `Stalled` (kstatus) from the fleet's other conclusions (the last update of a
    type wins, as in `merge_conditions`) and the rollout's phase."""
    latest = {u.type: u for u in updates}
    progressing = latest.get("Progressing")
    degraded = latest.get("Degraded")
    phase = rollout.phase if rollout is not None else None
    if rollout is not None and phase in STALLED_PHASES:
        why = rollout.message or f"the rollout of {rollout.canary_revision or 'the desired revision'} ended"
        stalled = ConditionUpdate("Stalled", "True", STALLED_PHASES[phase], why[:_MAX_MESSAGE])
    elif degraded is not None and degraded.status == "True" and degraded.reason in STALLING_DEGRADED:
        stalled = ConditionUpdate("Stalled", "True", degraded.reason, degraded.message[:_MAX_MESSAGE])
    else:
        stalled = ConditionUpdate("Stalled", "False", "AsExpected", "")
    if progressing is not None and progressing.status == "True":
        reconciling = ConditionUpdate("Reconciling", "True", progressing.reason, progressing.message)
    else:
        reconciling = ConditionUpdate("Reconciling", "False", "Reconciled", "")
    return kstatus_conditions(reconciling, stalled)


def invalid_status(
    reason: str, message: str, *, generation: int | None, current: InferenceFleetStatus, now: datetime
) -> InferenceFleetStatus:
    """Status of a fleet the operator cannot build: Degraded and Stalled (kstatus: Failed), not Ready,
    nothing created; the rest of what is stored (replicas, rollout history, autoscaler memory) is kept
    for when the spec is fixed."""
    conditions = merge_conditions(
        [c.to_wire() for c in current.conditions],
        [
            ConditionUpdate("Ready", "False", reason, message),
            ConditionUpdate("Degraded", "True", reason, message),
            ConditionUpdate("Progressing", "False", reason, message),
            *kstatus_conditions(
                ConditionUpdate("Reconciling", "False", "Stalled", message),
                ConditionUpdate("Stalled", "True", reason, message),
            ),
        ],
        now=now,
        generation=generation,
    )
    return current.model_copy(
        update={
            "observed_generation": generation,
            "conditions": [Condition.model_validate(c) for c in conditions],
        }
    )
