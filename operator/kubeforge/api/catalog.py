"""The GPU catalog: what each GPU product costs, draws and delivers, for objectives and accounting.

Platform teams know their prices and their fleet; the operator cannot. So the catalog is data, not code:
the chart installs it as a ConfigMap (`gpuCatalog` in the values replaces it whole), the operator reads it
with `--gpu-catalog FILE`, and without the flag it uses `DEFAULT_CATALOG` below, whose figures are
illustrative list prices and datasheet powers, good enough to rank GPUs but not to bill anyone.

Throughputs are relative (H100 = 1.0) because only the ratios matter to a choice between products:
"price-performance for training" is `training / pricePerHour`, "work per watt" is `inference / tdpWatts`.
"""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from kubeforge.api.common import GPU_ALIASES, KubeModel


class GpuPrice(KubeModel):
    """Price of one GPU for one hour, in the catalog's currency."""

    on_demand: float = Field(ge=0)
    spot: float | None = Field(default=None, ge=0)
    """Price on the spot/preemptible pool; None: this product has no spot pool."""


class GpuPower(KubeModel):
    """Board power of one GPU, in watts."""

    tdp_watts: float = Field(gt=0)
    idle_watts: float = Field(ge=0)


class GpuThroughput(KubeModel):
    """Work one GPU does, relative to one H100 (1.0)."""

    training: float = Field(gt=0)
    inference: float = Field(gt=0)


class GpuOffering(KubeModel):
    """One GPU product as the catalog knows it."""

    name: str = Field(min_length=1, max_length=63)
    """The short name users write in `resources.gpuType`, e.g. `H100`."""
    products: list[str] = Field(min_length=1)
    """`nvidia.com/gpu.product` label values of this GPU, as GPU Feature Discovery reports them."""
    memory_gib: float = Field(gt=0, alias="memoryGiB")
    price_per_hour: GpuPrice
    power: GpuPower
    throughput: GpuThroughput


class Toleration(KubeModel):
    """A pod toleration, as in the core API."""

    key: str = Field(min_length=1, max_length=316)
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class SpotPool(KubeModel):
    """How spot/preemptible GPU nodes are told apart: the label they carry and the taint they may have."""

    node_selector: dict[str, str] = Field(
        default_factory=lambda: {"kubeforge.dev/capacity-type": "spot"}, min_length=1
    )
    """Node labels that mark a spot node (Karpenter: `karpenter.sh/capacity-type: spot`; GKE:
    `cloud.google.com/gke-spot: "true"`; EKS managed node groups: `eks.amazonaws.com/capacityType: SPOT`)."""
    tolerations: list[Toleration] = Field(default_factory=list)
    """Tolerations a pod needs to land on a spot node, if spot nodes are tainted."""


class GpuCatalog(KubeModel):
    """Every GPU product the operator may choose between, and how spot capacity is labelled."""

    currency: str = Field(default="USD", min_length=1, max_length=8)
    gpus: list[GpuOffering] = Field(min_length=1)
    spot: SpotPool = Field(default_factory=SpotPool)

    @model_validator(mode="after")
    def _unique(self) -> GpuCatalog:
        names = [g.name.upper() for g in self.gpus]
        if len(names) != len(set(names)):
            raise ValueError("gpus: each name may appear once")
        products = [p for g in self.gpus for p in g.products]
        if len(products) != len(set(products)):
            raise ValueError("gpus: each nvidia.com/gpu.product value may belong to one GPU only")
        return self

    def by_product(self, product: str) -> GpuOffering | None:
        """The offering a node's `nvidia.com/gpu.product` label belongs to."""
        return next((g for g in self.gpus if product in g.products), None)

    def for_gpu_type(self, gpu_type: str) -> GpuOffering | None:
        """The offering a `resources.gpuType` names, as a short name or as an exact product."""
        wanted = gpu_type.upper()
        return next((g for g in self.gpus if g.name.upper() == wanted), None) or self.by_product(gpu_type)

    def hourly_price(self, offering: GpuOffering, *, spot: bool) -> float:
        """Price of one GPU-hour; spot falls back to on-demand for a product without a spot price."""
        if spot and offering.price_per_hour.spot is not None:
            return offering.price_per_hour.spot
        return offering.price_per_hour.on_demand


class CatalogError(ValueError):
    """The catalog file is not a valid catalog; the message says where."""


def parse_catalog(text: str) -> GpuCatalog:
    """A catalog from its YAML text (the ConfigMap's `catalog.yaml`)."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise CatalogError(f"not YAML: {error}") from error
    if not isinstance(data, dict):
        raise CatalogError("expected a mapping with `gpus`")
    try:
        return GpuCatalog.model_validate(data)
    except ValidationError as error:
        raise CatalogError(str(error)) from error


def render_catalog(catalog: GpuCatalog) -> str:
    """The YAML text of a catalog, in the shape `parse_catalog` reads."""
    return yaml.safe_dump(catalog.to_wire(), sort_keys=False, width=120)


def _offering(
    name: str,
    memory_gib: float,
    on_demand: float,
    spot: float | None,
    tdp: float,
    idle: float,
    training: float,
    inference: float,
) -> GpuOffering:
    return GpuOffering(
        name=name,
        products=list(GPU_ALIASES[name]),
        memory_gib=memory_gib,
        price_per_hour=GpuPrice(on_demand=on_demand, spot=spot),
        power=GpuPower(tdp_watts=tdp, idle_watts=idle),
        throughput=GpuThroughput(training=training, inference=inference),
    )


DEFAULT_CATALOG = GpuCatalog(
    currency="USD",
    gpus=[
        _offering("B200", 180, 7.50, 3.40, 1000, 140, 2.20, 2.30),
        _offering("H200", 141, 5.00, 2.30, 700, 80, 1.30, 1.40),
        _offering("H100", 80, 4.00, 1.80, 700, 70, 1.00, 1.00),
        _offering("A100", 80, 2.50, 1.10, 400, 50, 0.45, 0.50),
        _offering("L40S", 48, 1.90, 0.85, 350, 35, 0.35, 0.45),
        _offering("A10G", 24, 1.00, 0.45, 150, 20, 0.10, 0.15),
        _offering("L4", 24, 0.80, 0.35, 72, 16, 0.12, 0.20),
        _offering("T4", 16, 0.50, 0.20, 70, 10, 0.05, 0.07),
    ],
)
