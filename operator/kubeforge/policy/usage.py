"""Cost and energy accounting, and budgets, as pure functions.

Design. `status.usage` holds totals (GPU-hours, cost, energy) up to `accountedUntil`, and the rates in
force since then (GPUs by product and capacity type, cost per hour, watts). Anyone who wants the figure
*now* (the operator's /metrics at scrape time, `kubeforge top`) extrapolates
`total + rate * (now - accountedUntil)`. The operator folds the elapsed segment into the totals, which is
a status write, only when:

- a rate changes: a pod of the workload starts or stops holding GPUs, or lands on another product or
  capacity type (known from the pod and node caches: node -> `nvidia.com/gpu.product` -> catalog
  offering; spot when the node carries the catalog's `spot.nodeSelector` labels) -- this includes the
  object finishing, when its pods stop;
- `checkpoint` has passed since `accountedUntil` while GPUs are held (`--usage-checkpoint-seconds`,
  default an hour), so the totals in status never lag far behind and energy measured by DCGM is folded
  in segments.

So an idle or steady object costs no writes for accounting beyond one an hour, as the operator core asks
(no periodic writes of nothing), and the figures stay exact to the second between writes.

Folding a segment `(accountedUntil, now]` charges each pod the operator can still see for the part of
its own life (`startTime` to its end, or now) inside the segment, priced by its pool. A pod the caches
no longer hold (deleted and gone before the pass ran) is charged from the stored rates: the stored
pools' GPUs not accounted for by visible pods are charged to `now`. The first is exact; the second
over-charges by at most the time between the pod going and the pass, never under-charges, and never
charges a GPU twice (each segment starts where the last one ended).

Never double counted across restarts: the totals and `accountedUntil` live in status, and a fold depends
only on the stored status, the pods and `now`. A restarted operator (or a fold whose write was lost)
starts again from the stored `accountedUntil`, so each second is charged once.

Energy per GPU: the average power DCGM reported for the workload's pods over the segment when Prometheus
has it (`dcgm`); else idle + utilization x (TDP - idle) when the GPU utilization is known
(`utilization`); else TDP (`tdp`). `energySource` says which applied to the last segment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kubeforge.api.catalog import GpuCatalog, GpuOffering
from kubeforge.api.names import GPU_PRODUCT_LABEL
from kubeforge.api.usage import EnergySource, FleetBudget, TrainingBudget, Usage, UsagePool
from kubeforge.policy.conditions import format_time, parse_time

DEFAULT_CHECKPOINT = timedelta(hours=1)
CHECKPOINT_JITTER = 0.1
"""Each object's checkpoint period is the configured one within +-10 %, fixed per object."""


def spread(checkpoint: timedelta, key: str) -> timedelta:
    """`checkpoint` moved by up to `CHECKPOINT_JITTER` either way, by a fraction fixed per object (a hash
    of `key`, its `<namespace>/<name>`). Objects created together would otherwise fold their usage in
    the same second every period: a thousand status writes at once on an otherwise idle cluster. Fixed
    rather than random, so one object's folds stay evenly spaced and a restart does not move them."""
    fraction = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0**64
    return checkpoint * (1 - CHECKPOINT_JITTER + 2 * CHECKPOINT_JITTER * fraction)


UNKNOWN_GPU = "unknown"
"""The pool of GPUs on a node whose product the catalog does not know (priced at the workload's
`gpuType`, or at nothing when it names none the catalog knows)."""
_DIGITS = 9


@dataclass(frozen=True)
class Held:
    """One pod's GPUs as accounting sees them: how many, from when to when, at what price and power."""

    gpus: int
    gpu_type: str
    spot: bool
    price: float
    """Per GPU-hour."""
    watts: float
    """Per GPU, at TDP."""
    start: datetime
    end: datetime | None = None
    """None while the pod still holds its GPUs."""
    idle_watts: float = 0.0
    """Per GPU, idle."""

    @property
    def pool(self) -> tuple[str, bool, float]:
        return (self.gpu_type, self.spot, self.price)

    def running_at(self, when: datetime) -> bool:
        return self.start <= when and (self.end is None or self.end > when)


@dataclass(frozen=True)
class UsageReading:
    """What Prometheus measured of a workload over the segment being folded; None: not available."""

    watts: float | None = None
    """Average power of all its GPUs (DCGM `DCGM_FI_DEV_POWER_USAGE`), watts."""
    utilization: float | None = None
    """Average utilization of its GPUs, 0..1 (DCGM `DCGM_FI_DEV_GPU_UTIL` / 100)."""
    requests: float | None = None
    """Requests served in the segment."""
    tokens: float | None = None
    """Tokens generated in the segment."""


@dataclass(frozen=True)
class Accounting:
    """`status.usage` after this pass, and when to fold next (the checkpoint)."""

    usage: Usage | None
    requeue_after: float | None = None
    folded: bool = False


# -- pods and nodes -> Held ------------------------------------------------------------------------------


def is_spot(labels: Mapping[str, str], catalog: GpuCatalog) -> bool:
    """The node carries every label of the catalog's `spot.nodeSelector`."""
    return all(labels.get(k) == v for k, v in catalog.spot.node_selector.items())


def watts_per_gpu(offering: GpuOffering | None, utilization: float | None) -> tuple[float, EnergySource]:
    """Power of one GPU: idle + utilization x (TDP - idle) when the utilization (0..1) is known, else TDP."""
    if offering is None:
        return 0.0, "tdp"
    power = offering.power
    if utilization is None:
        return power.tdp_watts, "tdp"
    used = min(max(utilization, 0.0), 1.0)
    return power.idle_watts + used * (power.tdp_watts - power.idle_watts), "utilization"


def held_of(
    gpus: int,
    node: str | None,
    start: datetime | None,
    end: datetime | None,
    nodes: Mapping[str, Mapping[str, Any]],
    catalog: GpuCatalog,
    *,
    gpu_type: str | None = None,
    utilization: float | None = None,
) -> Held | None:
    """A pod's GPUs, priced by the node it runs on; None when it holds none (no GPUs, not started)."""
    if gpus <= 0 or node is None or start is None:
        return None
    labels = ((nodes.get(node) or {}).get("metadata") or {}).get("labels") or {}
    product = labels.get(GPU_PRODUCT_LABEL)
    offering = catalog.by_product(product) if product else None
    if offering is None and gpu_type:
        offering = catalog.for_gpu_type(gpu_type)
    spot = is_spot(labels, catalog)
    price = catalog.hourly_price(offering, spot=spot) if offering is not None else 0.0
    watts, _ = watts_per_gpu(offering, utilization)
    idle = offering.power.idle_watts if offering is not None else 0.0
    name = offering.name if offering is not None else UNKNOWN_GPU
    return Held(
        gpus=gpus, gpu_type=name, spot=spot, price=price, watts=watts, start=start, end=end, idle_watts=idle
    )


# -- folding -----------------------------------------------------------------------------------------------


def pools_at(held: Iterable[Held], when: datetime) -> list[UsagePool]:
    """The GPUs held at `when`, by product, capacity type and price; sorted, so equal inputs compare equal."""
    gpus: dict[tuple[str, bool, float], int] = {}
    watts: dict[tuple[str, bool, float], float] = {}
    for h in held:
        if h.running_at(when):
            gpus[h.pool] = gpus.get(h.pool, 0) + h.gpus
            watts[h.pool] = max(watts.get(h.pool, 0.0), h.watts)
    return [
        UsagePool(gpu_type=k[0], spot=k[1], gpus=n, price_per_gpu_hour=k[2], watts_per_gpu=round(watts[k], 3))
        for k, n in sorted(gpus.items())
    ]


def _rates(pools: Sequence[UsagePool]) -> tuple[tuple[str, bool, float, int], ...]:
    """What decides a fold: GPUs per pool and their price (power moves with utilization: not a trigger)."""
    return tuple((p.gpu_type, p.spot, p.price_per_gpu_hour, p.gpus) for p in pools)


@dataclass(frozen=True)
class Segment:
    gpu_seconds: float = 0.0
    cost: float = 0.0
    joules: float = 0.0
    """At each GPU's TDP."""
    idle_joules: float = 0.0
    """At each GPU's idle power (a pod gone from the caches: at its stored power)."""


def charge(stored: Usage | None, held: Sequence[Held], now: datetime) -> Segment:
    """What `(stored.accountedUntil, now]` adds: visible pods for their own time inside it, and GPUs of the
    stored pools that no visible pod accounts for (pods gone from the caches) to `now`."""
    since = parse_time(stored.accounted_until) if stored is not None else None
    gpu_s = cost = joules = idle = 0.0
    for h in held:
        begin = h.start if since is None else max(h.start, since)
        end = min(h.end or now, now)
        if end > begin:
            seconds = h.gpus * (end - begin).total_seconds()
            gpu_s += seconds
            cost += seconds * h.price / 3600.0
            joules += seconds * h.watts
            idle += seconds * h.idle_watts
    if stored is not None and since is not None and now > since:
        # The stored pools hold the pods that ran at `since`, and those whose end, written to the second,
        # fell in the same second as the last fold (it saw them running): both are visible and charged
        # above, whatever is left of the stored GPUs is gone.
        seen: dict[tuple[str, bool, float], int] = {}
        for h in held:
            if h.start <= since and (h.end is None or h.end >= since):
                seen[h.pool] = seen.get(h.pool, 0) + h.gpus
        elapsed = (now - since).total_seconds()
        for pool in stored.pools:
            key = (pool.gpu_type, pool.spot, pool.price_per_gpu_hour)
            gone = max(0, pool.gpus - seen.get(key, 0))
            if gone:
                gpu_s += gone * elapsed
                cost += gone * elapsed * pool.price_per_gpu_hour / 3600.0
                joules += gone * elapsed * pool.watts_per_gpu
                idle += gone * elapsed * pool.watts_per_gpu
    return Segment(gpu_s, cost, joules, idle)


def account(
    stored: Usage | None,
    held: Sequence[Held],
    now: datetime,
    *,
    currency: str,
    checkpoint: timedelta = DEFAULT_CHECKPOINT,
    reading: UsageReading | None = None,
) -> Accounting:
    """`status.usage` after a pass at `now`: the stored one when no rate changed and no checkpoint is due
    (no write), else the elapsed segment folded in.

    `reading` is what Prometheus measured over the segment, when the caller could ask (see
    `UsageReading`): it decides the energy source and the unit costs."""
    now = now.replace(microsecond=0)
    pools = pools_at(held, now)
    since = parse_time(stored.accounted_until) if stored is not None else None
    if stored is None and not pools and not any(h.end is not None for h in held):
        return Accounting(None)
    # A pod that stopped after `accountedUntil` is a rate change too, even when another one took its
    # place (or it started and stopped between two passes): its end is not accounted yet.
    # (An end still ahead, a deleted pod's grace period, is not one yet: the pod still holds its GPUs.)
    ended = any(h.end is not None and h.end <= now and (since is None or h.end > since) for h in held)
    changed = stored is None or _rates(stored.pools) != _rates(pools) or ended
    due = stored is not None and bool(stored.pools) and (since is None or now - since >= checkpoint)
    if stored is not None and not changed and not due:
        return Accounting(stored, _next_checkpoint(stored, now, checkpoint))
    seg = charge(stored, held, now)
    reading = reading or UsageReading()
    source: EnergySource = "tdp"
    joules = seg.joules
    scale = 1.0  # the power now, per GPU, as a share of TDP (for the rate written with the totals)
    elapsed = (now - since).total_seconds() if since is not None else 0.0
    if reading.watts is not None and elapsed > 0 and seg.joules > 0:
        joules, source = reading.watts * elapsed, "dcgm"
        scale = joules / seg.joules
    elif reading.utilization is not None:
        used = min(max(reading.utilization, 0.0), 1.0)
        joules, source = seg.idle_joules + used * (seg.joules - seg.idle_joules), "utilization"
        scale = joules / seg.joules if seg.joules > 0 else 1.0
    base = stored or Usage(currency=currency)
    unit: dict[str, float | None] = {}
    if reading.requests is not None:
        unit["cost_per_1k_requests"] = (
            round(seg.cost * 1000 / reading.requests, _DIGITS) if reading.requests > 0 else None
        )
    if reading.tokens is not None:
        unit["cost_per_m_tokens"] = (
            round(seg.cost * 1e6 / reading.tokens, _DIGITS) if reading.tokens > 0 else None
        )
    usage = base.model_copy(
        update={
            "gpu_hours": round(base.gpu_hours + seg.gpu_seconds / 3600.0, _DIGITS),
            "cost": round(base.cost + seg.cost, _DIGITS),
            "currency": currency,
            "energy_kwh": round(base.energy_kwh + joules / 3.6e6, _DIGITS),
            "energy_source": source,
            "accounted_until": format_time(now),
            "gpus": sum(p.gpus for p in pools),
            "cost_per_hour": round(sum(p.gpus * p.price_per_gpu_hour for p in pools), _DIGITS),
            "watts": round(scale * sum(p.gpus * p.watts_per_gpu for p in pools), 3),
            "pools": pools,
            **unit,
        }
    )
    usage = Usage.model_validate(usage.model_dump())  # re-validated: model_copy does not
    return Accounting(usage, _next_checkpoint(usage, now, checkpoint), folded=True)


def _next_checkpoint(usage: Usage, now: datetime, checkpoint: timedelta) -> float | None:
    since = parse_time(usage.accounted_until)
    if not usage.pools or since is None:
        return None
    return max(1.0, (since + checkpoint - now).total_seconds())


@dataclass(frozen=True)
class Totals:
    gpu_hours: float = 0.0
    cost: float = 0.0
    energy_kwh: float = 0.0


def extrapolate(usage: Usage | None, now: datetime) -> Totals:
    """The totals at `now`: the stored ones plus the stored rates since `accountedUntil`."""
    if usage is None:
        return Totals()
    since = parse_time(usage.accounted_until)
    hours = max(0.0, (now - since).total_seconds() / 3600.0) if since is not None else 0.0
    return Totals(
        gpu_hours=usage.gpu_hours + usage.gpus * hours,
        cost=usage.cost + usage.cost_per_hour * hours,
        energy_kwh=usage.energy_kwh + usage.watts * hours / 1000.0,
    )


# -- budgets -----------------------------------------------------------------------------------------------


def replica_rates(
    usage: Usage | None, gpus_per_replica: int, gpu_type: str | None, catalog: GpuCatalog
) -> tuple[float, float]:
    """Cost per hour and watts of one more replica: at what the fleet's GPUs cost and draw now, else at
    the catalog's on-demand price and TDP of its `gpuType`, else of the dearest GPU the catalog knows
    (a budget errs on the side of spending less)."""
    if gpus_per_replica <= 0:
        return 0.0, 0.0
    if usage is not None and usage.gpus > 0:
        return (
            gpus_per_replica * usage.cost_per_hour / usage.gpus,
            gpus_per_replica * usage.watts / usage.gpus,
        )
    offering = catalog.for_gpu_type(gpu_type) if gpu_type else None
    if offering is None:
        offering = max(catalog.gpus, key=lambda g: g.price_per_hour.on_demand)
    return (
        gpus_per_replica * catalog.hourly_price(offering, spot=False),
        gpus_per_replica * offering.power.tdp_watts,
    )


@dataclass(frozen=True)
class BudgetCap:
    replicas: int
    """The most replicas the budget buys."""
    message: str


def fleet_budget_cap(
    budget: FleetBudget | None, cost_per_replica: float, watts_per_replica: float
) -> BudgetCap | None:
    """The most replicas `budget` buys at these per-replica rates; None without a budget that binds."""
    if budget is None:
        return None
    caps: list[BudgetCap] = []
    if budget.max_cost_per_hour is not None and cost_per_replica > 0:
        n = int(budget.max_cost_per_hour / cost_per_replica + 1e-9)
        caps.append(
            BudgetCap(
                n,
                f"spec.budget.maxCostPerHour {budget.max_cost_per_hour:g} buys {n} replica(s) at "
                f"{cost_per_replica:.4g}/h each",
            )
        )
    if budget.max_energy_kwh_per_day is not None and watts_per_replica > 0:
        per_day = watts_per_replica * 24 / 1000.0
        n = int(budget.max_energy_kwh_per_day / per_day + 1e-9)
        caps.append(
            BudgetCap(
                n,
                f"spec.budget.maxEnergyKWhPerDay {budget.max_energy_kwh_per_day:g} buys {n} replica(s) at "
                f"{per_day:.4g} kWh/day each",
            )
        )
    return min(caps, key=lambda c: c.replicas, default=None)


def training_over_budget(budget: TrainingBudget | None, usage: Usage | None, now: datetime) -> str | None:
    """Why a TrainingJob is over its budget (its cost so far reached `maxCost`), or None."""
    if budget is None:
        return None
    spent = extrapolate(usage, now).cost
    if spent < budget.max_cost:
        return None
    currency = usage.currency if usage is not None else ""
    return (
        f"cost so far {spent:.4g} {currency} reached spec.budget.maxCost {budget.max_cost:g}: the workers "
        "were removed; raise or remove the budget to resume"
    )
