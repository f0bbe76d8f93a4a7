"""What GPU arbitration reads from the caches: the running TrainingJobs as `policy.arbitration` sees them,
and PriorityClass values. Gathered here so both controllers read training the same way; every decision is
in `kubeforge.policy.arbitration`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from pydantic import ValidationError

from kubeforge.api.common import gpu_products
from kubeforge.api.inferencefleet import InferenceFleetStatus
from kubeforge.api.trainingjob import TrainingJobSpec
from kubeforge.kube.client import Obj
from kubeforge.kube.informer import Mark, Reader, controller_uid
from kubeforge.kube.kinds import INFERENCEFLEET, JOB, POD, TRAININGJOB
from kubeforge.policy import arbitration, training
from kubeforge.policy.conditions import parse_time
from kubeforge.policy.status import parse_status

_FINISHED = ("Succeeded", "Failed")


def _borrowing(fleet: Obj) -> bool:
    return bool((fleet.get("status") or {}).get("borrowed")) and not (fleet.get("metadata") or {}).get(
        "deletionTimestamp"
    )


BORROWING = Mark("borrowing", _borrowing)
"""Fleets with a `status.borrowed` record that are not being deleted: the fleet cache keeps their keys."""


def records(caches: Reader) -> dict[str, dict[str, list[arbitration.Held]]]:
    """Every fleet's `status.borrowed`, by job and then by fleet; a fleet being deleted holds nothing.

    Read on every TrainingJob pass, so the fleets are found through the cache's `BORROWING` index and
    only their records are parsed: parsing each fleet's whole status made one pass cost O(fleets) model
    validations, which at a thousand fleets blocked the event loop long enough to lose the Lease."""
    statuses: dict[str, InferenceFleetStatus | None] = {}
    for f in caches.marked(INFERENCEFLEET, BORROWING):
        meta = f["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        statuses[key] = parse_status(InferenceFleetStatus, {"borrowed": f["status"]["borrowed"]})
    return arbitration.held_by_job(statuses)


def priorities(classes: Iterable[Obj]) -> dict[str | None, int]:
    """PriorityClass values by name; None: the cluster's global default (0 without one)."""
    out: dict[str | None, int] = {None: 0}
    for c in classes:
        out[str(c["metadata"]["name"])] = int(c.get("value") or 0)
        if c.get("globalDefault"):
            out[None] = int(c.get("value") or 0)
    return out


def priority_of(name: str | None, values: Mapping[str | None, int]) -> int:
    """The priority pods naming `name` get (an unknown class counts as the default)."""
    return values.get(name, values[None]) if name else values[None]


def lending_of(spec: TrainingJobSpec) -> arbitration.Lending:
    """What a job lends: `spec.preemptible`, and nothing while Kueue admits it (the operator does not act
    behind Kueue's back: Kueue's own preemption governs those jobs)."""
    if spec.queue_name or spec.preemptible is False:
        return "none"
    if spec.preemptible:
        return "whole"
    return "aboveMin" if spec.elastic is not None else "none"


def trainings(
    caches: Reader, values: Mapping[str | None, int], now: datetime
) -> tuple[list[arbitration.Training], frozenset[str]]:
    """The TrainingJobs holding GPUs, with their running workers (highest rank first, the order an
    elastic job gives them up) and those being deleted, what a preemption now would lose (work since
    the last checkpoint, or since the start), and the keys of every job that exists and has not
    finished."""
    jobs: list[arbitration.Training] = []
    present: set[str] = set()
    for obj in caches.list(TRAININGJOB):
        meta = obj["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        key = f"{namespace}/{name}"
        status = training.parse_status(obj.get("status"))
        if meta.get("deletionTimestamp") or status.phase in _FINISHED:
            continue
        present.add(key)
        if status.phase not in ("Running", "Queued", "Pending"):
            continue
        try:
            spec = TrainingJobSpec.model_validate(obj.get("spec") or {})
        except ValidationError:
            continue
        uid = str(meta.get("uid"))
        owned = [
            str(j["metadata"].get("uid")) for j in caches.list(JOB, namespace) if controller_uid(j) == uid
        ]
        views = [training.pod_view(p) for p in caches.controlled(POD, namespace, owned)]
        bound = [v for v in views if v.node is not None and not v.terminal]
        # Only a Running job offers workers; one being stopped (Queued after a preemption) still has
        # departing workers whose GPUs a fleet that took them counts as its room.
        running = sorted((v for v in bound if not v.deleting and status.phase == "Running"), key=_rank_down)
        departing = sorted((v for v in bound if v.deleting), key=_rank_down)
        if not running and not departing:
            continue
        workers = tuple(arbitration.Worker(v.name, str(v.node), v.gpus, v.index) for v in running)
        gpu_type = spec.resources.gpu_type
        started = parse_time(status.start_time)
        saved = parse_time(status.checkpoint.time) if status.checkpoint is not None else None
        jobs.append(
            arbitration.Training(
                key=key,
                priority=priority_of(spec.priority_class_name, values),
                workers=workers,
                min_workers=spec.min_workers,
                lending=lending_of(spec),
                products=gpu_products(gpu_type) if gpu_type else None,
                refuses=_refuses(spec),
                departing=tuple(arbitration.Worker(v.name, str(v.node), v.gpus, v.index) for v in departing),
                checkpointing=status.preemption is not None,
                kueue=bool(spec.queue_name) and spec.preemptible is not False,
                seconds_since_checkpoint=_seconds(now, saved),
                seconds_running=_seconds(now, started) or 0.0,
            )
        )
    return jobs, frozenset(present)


def _rank_down(view: training.PodView) -> int:
    """Highest rank first: the order an elastic job gives workers up."""
    return -(view.index or 0)


def _seconds(now: datetime, since: datetime | None) -> float | None:
    return max(0.0, (now - since).total_seconds()) if since is not None else None


def _refuses(spec: TrainingJobSpec) -> str:
    if spec.queue_name:
        return "is admitted by Kueue (its preemption is Kueue's)"
    if spec.preemptible is False:
        return "is not preemptible (spec.preemptible: false)"
    if spec.elastic is None and not spec.preemptible:
        return "is rigid and not preemptible"
    return ""
