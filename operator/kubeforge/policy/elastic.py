"""How many workers an elastic TrainingJob may have now: one pure decision over the attempt's size, its
bounds, the room the capacity ledger offers, and a ceiling a later lender may impose.

Growth takes only what the ledger says fits beside every claim (admitted gangs' unplaced workers, unbound
pods, gangs queued before it), so an elastic job never takes the room of a rigid gang or a fleet's surge:
one capacity for all. A shrink always has a reason: a ceiling below the current size (GPUs reclaimed for
someone else), or added workers that could not be placed in time (their room was taken). Nothing here
goes below `minWorkers`: taking a job below its minimum is a preemption, not a resize.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubeforge.api.trainingjob import ResizeReason

CAPACITY_FREED: ResizeReason = "CapacityFreed"
CAPACITY_RECLAIMED: ResizeReason = "CapacityReclaimed"
LENT_TO_FLEET: ResizeReason = "LentToFleet"
"""A shrink to a lender's ceiling: not a failed growth, so growth does not cool down after it."""


@dataclass(frozen=True)
class Bounds:
    minimum: int
    maximum: int


@dataclass(frozen=True)
class Resize:
    to: int
    reason: ResizeReason
    message: str


def allowed(bounds: Bounds, ceiling: int | None = None) -> int:
    """The most workers the job may have now: `maxWorkers`, lowered by a lender's `ceiling`, never below
    `minWorkers`."""
    top = bounds.maximum if ceiling is None else min(bounds.maximum, ceiling)
    return max(bounds.minimum, top)


def _workers(n: int) -> str:
    return f"{n} worker" if n == 1 else f"{n} workers"


def decide_size(
    current: int,
    bounds: Bounds,
    *,
    room: int | None,
    stranded: int = 0,
    ceiling: int | None = None,
    timeout: int | None = None,
) -> Resize | None:
    """The resize to make now, or None.

    `current`: workers the attempt has; `room`: more whole workers the ledger says fit now (None: not
    asked, e.g. while some of the attempt's workers are still unplaced); `stranded`: the highest-indexed
    workers that were not placed within the schedule timeout (`timeout` seconds) after they were added;
    `ceiling`: the most workers a lender leaves the job (None: no lender)."""
    top = allowed(bounds, ceiling)
    if current > top:
        return Resize(
            top,
            LENT_TO_FLEET,
            f"shrank from {_workers(current)} to {top}: the GPUs above {top} were lent to an InferenceFleet; "
            "the job grows back once they are given back",
        )
    if stranded > 0 and current > bounds.minimum:
        to = max(bounds.minimum, current - stranded)
        within = f" within {timeout}s" if timeout is not None else ""
        return Resize(
            to,
            CAPACITY_RECLAIMED,
            f"shrank from {_workers(current)} to {to}: {_workers(current - to)} added could not be "
            f"placed{within} (their GPUs were taken)",
        )
    if room is not None and room > 0 and current < top:
        to = min(top, current + room)
        return Resize(
            to,
            CAPACITY_FREED,
            f"grew from {_workers(current)} to {to}: GPUs freed up and {_workers(to - current)} more fit",
        )
    return None
