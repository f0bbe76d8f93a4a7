"""Cost and energy accounting in status (`status.usage`) and the budgets a user sets (`spec.budget`).

Shared by both kinds. The status holds totals up to `accountedUntil` and the rates in force since then;
a reader (the operator's /metrics, `kubeforge top`) extrapolates `total + rate * (now - accountedUntil)`.
How and when the operator folds the elapsed time into the totals is `kubeforge.policy.usage`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kubeforge.api.common import KubeModel

EnergySource = Literal["dcgm", "utilization", "tdp"]


class UsagePool(KubeModel):
    """GPUs held right now on one GPU product and capacity type, and what they cost and draw."""

    gpu_type: str = Field(max_length=63)
    """The catalog's name of the GPU (`H100`), or `unknown` for a node whose product the catalog lacks."""
    spot: bool = False
    """On spot/preemptible nodes (the catalog's `spot.nodeSelector`), priced at the spot price."""
    gpus: int = Field(ge=0)
    price_per_gpu_hour: float = Field(ge=0)
    watts_per_gpu: float = Field(ge=0)


class Usage(KubeModel):
    """GPU-hours, cost and energy so far, and the rates in force since `accountedUntil`."""

    gpu_hours: float = Field(default=0.0, ge=0)
    """GPU-hours held up to `accountedUntil`."""
    cost: float = Field(default=0.0, ge=0)
    """Cost up to `accountedUntil`, in `currency`: catalog price x time, spot priced as spot."""
    currency: str = Field(default="USD", max_length=8)
    energy_kwh: float = Field(default=0.0, ge=0, alias="energyKWh")
    """Energy drawn by the GPUs up to `accountedUntil`, in kWh."""
    energy_source: EnergySource = "tdp"
    """How the last segment's energy was measured: `dcgm` (the GPUs' power as DCGM reports it),
    `utilization` (idle power + utilization x (TDP - idle)) or `tdp` (the board's TDP)."""
    accounted_until: str | None = None
    """RFC 3339 time up to which the totals are accounted; after it, the rates below apply."""
    gpus: int = Field(default=0, ge=0)
    """GPUs held now."""
    cost_per_hour: float = Field(default=0.0, ge=0)
    """What the GPUs held now cost per hour."""
    watts: float = Field(default=0.0, ge=0)
    """Power the GPUs held now draw, in watts (estimated as `energySource` says)."""
    pools: list[UsagePool] = Field(default_factory=list, max_length=64)
    """The GPUs held now, by GPU product and capacity type."""
    cost_per_1k_requests: float | None = Field(default=None, ge=0, alias="costPer1kRequests")
    """Fleets: cost of 1,000 requests over the last accounted segment, when a request counter exists."""
    cost_per_m_tokens: float | None = Field(default=None, ge=0, alias="costPerMTokens")
    """Fleets: cost of 1M generated tokens over the last accounted segment, when a token counter exists."""


class FleetBudget(KubeModel):
    """What an InferenceFleet may spend: the autoscaler never scales up past what the budget buys."""

    max_cost_per_hour: float | None = Field(default=None, gt=0)
    """Most the fleet's GPUs may cost per hour, in the catalog's currency."""
    max_energy_kwh_per_day: float | None = Field(default=None, gt=0, alias="maxEnergyKWhPerDay")
    """Most energy the fleet's GPUs may draw in a day at their current power, in kWh."""


class TrainingBudget(KubeModel):
    """What a TrainingJob may spend in all: once its cost reaches `maxCost` it is suspended."""

    max_cost: float = Field(gt=0)
    """Most the job may cost over its whole life, in the catalog's currency."""
