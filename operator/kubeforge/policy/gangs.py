"""Which TrainingJobs hold admitted GPU room and which wait in the admission queue, read from their
stored spec and status: what both gang admission and a fleet's surge count before they take GPUs.

Read from the objects (not from memory) so that a restarted operator, or a fleet controller that never
admitted anything, sees the same gangs as the pass that admitted them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from pydantic import ValidationError

from kubeforge.api.catalog import GpuCatalog
from kubeforge.api.trainingjob import TrainingJobSpec, TrainingJobStatus
from kubeforge.policy import status as status_model
from kubeforge.policy.capacity import Demand, demand_of

K = TypeVar("K")

QueueOrder = tuple[int, str, str]
"""(-priority, waiting since, key): smaller is served first (see `queue_order`)."""


def queue_order(priority: int, meta: Mapping[str, Any], status: TrainingJobStatus, key: str) -> QueueOrder:
    """A gang's place in the queue: by priority, then since when it waits, its creation or the last
    time it gave its GPUs back because its workers were not scheduled in time (`status.requeuedAt`), so
    a gang that cannot place goes behind the gangs that waited for it, instead of taking every GPU back
    at once for another schedule timeout. Both times are RFC 3339 in UTC to the second: they compare as
    strings."""
    since = max(str(meta.get("creationTimestamp") or ""), status.requeued_at or "")
    return (-priority, since, key)


@dataclass(frozen=True)
class Gangs:
    admitted: dict[str, tuple[Demand, int]] = field(default_factory=dict)
    """`<namespace>/<name>` -> (all its workers, current attempt), for gangs admitted by kubeforge
    whose attempt is still being placed (Pending), and running elastic jobs (their added workers may
    still be unplaced: `Ledger.unplaced` counts only those)."""
    queued: list[tuple[QueueOrder, Demand]] = field(default_factory=list)
    """Gangs waiting for GPUs (not for quota or a reservation limit), in no particular order."""


def gangs_of(
    objs: Iterable[Mapping[str, Any]],
    priority: Callable[[TrainingJobSpec], int],
    *,
    skip: str | None = None,
    catalog: GpuCatalog | None = None,
) -> Gangs:
    """The admitted and queued gangs among TrainingJob objects (`skip`: the one being decided). A gang
    without `resources.gpuType` whose objective chose a GPU type counts for that type (its `status.policy`
    entry `gpuType`, resolved through `catalog`), as its workers require it."""
    out = Gangs()
    for obj in objs:
        meta = obj.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        if key == skip or meta.get("deletionTimestamp"):
            continue
        # Cheap test first: this runs over every TrainingJob for each admission and each fleet surge.
        # A Running gang has every worker on a node, so it claims nothing beyond what its pods hold;
        # a running elastic job may have grown, and its added workers are promised their room.
        phase = (obj.get("status") or {}).get("phase")
        if phase not in ("Pending", "Queued") and not (
            phase == "Running" and (obj.get("spec") or {}).get("elastic")
        ):
            continue
        status = status_model.parse_status(TrainingJobStatus, obj.get("status"))
        admitted = next((c for c in status.conditions if c.type == "Admitted"), None)
        if admitted is None:
            continue
        try:
            spec = TrainingJobSpec.model_validate(obj.get("spec") or {})
        except ValidationError:
            continue
        whole = demand_of(key, gang_size(spec, status), spec.resources.gpus, spec.resources.gpu_type)
        chosen = next((e.value for e in status.policy if e.setting == "gpuType"), None)
        offering = (
            catalog.for_gpu_type(chosen) if catalog and chosen and not spec.resources.gpu_type else None
        )
        if offering is not None:
            whole = replace(whole, products=tuple(offering.products))
        if (
            status.phase == "Queued"
            and admitted.reason == "InsufficientCapacity"
            and not spec.suspend
            and not spec.queue_name
        ):
            order = queue_order(priority(spec), meta, status, key)
            out.queued.append((order, whole))
        elif holds_admission(obj):
            out.admitted[key] = (whole, status.attempt)
    return out


def holds_admission(obj: Mapping[str, Any]) -> bool:
    """`obj` is a gang whose admission `gangs_of` counts as holding GPUs for workers not placed yet (read
    from the raw object: this runs on every TrainingJob event)."""
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return False
    status = obj.get("status") or {}
    phase = status.get("phase")
    if phase != "Pending" and not (phase == "Running" and (obj.get("spec") or {}).get("elastic")):
        return False
    return any(
        c.get("type") == "Admitted" and c.get("status") == "True" and c.get("reason") == "GangAdmitted"
        for c in status.get("conditions") or []
        if isinstance(c, Mapping)
    )


def gave_back_admission(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """A gang stopped holding GPUs it was admitted for before its workers ran on them: deleted, suspended,
    preempted, failed or timed out while Pending. No pod event says so when its workers were never
    created (or not yet bound), so the gangs waiting behind it must be woken by this one. Not when it
    started Running: its pods hold the GPUs now, and their binding already woke the queue."""
    if old is None or not holds_admission(old):
        return False
    if new is None or (new.get("metadata") or {}).get("deletionTimestamp"):
        return True
    return not holds_admission(new) and (new.get("status") or {}).get("phase") != "Running"


def gang_size(spec: TrainingJobSpec, status: TrainingJobStatus) -> int:
    """Workers a gang waits for or holds: `spec.workers`; for an elastic job the size its status records
    for the running attempt, or `minWorkers` (what admission waits for)."""
    if spec.elastic is None:
        return spec.workers
    current = status.workers.current if status.workers is not None else None
    if status.phase in ("Pending", "Running") and current:
        return current
    return spec.elastic.min_workers


@dataclass(frozen=True)
class Waiting:
    """A gang that did not fit at its last admission, as wake-ups compare it."""

    order: QueueOrder
    shape: tuple[object, ...]
    """Everything admission judges a gang by besides its count: namespace (its quota and reservation
    limit), GPUs per worker, accepted products, tolerations."""
    workers: int
    """What it waits for (an elastic job: `minWorkers`)."""


def woken_by_capacity(waiting: Mapping[K, Waiting | None]) -> set[K]:
    """The waiting gangs a change of capacity (a GPU freed or claimed, a node, a quota) may admit.

    A gang stays asleep behind an earlier one of the same shape that waits for no more workers: whatever
    the change, if the earlier one is not admitted neither is this one (admission is monotone in the
    count, and this one sees the same nodes, claims, quota and reservation limit, and more gangs ahead).
    When the earlier one is admitted, its workers' pods are events of their own and wake the next. So one
    namespace's queue of like gangs costs one pass per event, not one per gang. Gangs without a shape
    (a running elastic job waiting for room to grow) are always woken."""
    woken = {key for key, gang in waiting.items() if gang is None}
    fewest: dict[tuple[object, ...], int] = {}
    queued = [(key, gang) for key, gang in waiting.items() if gang is not None]
    for key, gang in sorted(queued, key=lambda item: item[1].order):
        if gang.shape not in fewest or gang.workers < fewest[gang.shape]:
            woken.add(key)
            fewest[gang.shape] = gang.workers
    return woken
