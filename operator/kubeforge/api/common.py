"""Types shared by every kubeforge kind: pod shaping, GPU resources, conditions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# Non-negative Kubernetes quantities ("500m", "16Gi", 2): apimachinery's resource.Quantity grammar
# without the sign, so a typo or a negative amount is refused at apply time, not by a kubelet.
QUANTITY_PATTERN = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# RFC 1123 label: what names of Services, Jobs and Deployments built from a resource's name must be.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

Quantity = Annotated[
    str,
    Field(
        pattern=QUANTITY_PATTERN,
        json_schema_extra={"x-kubernetes-int-or-string": True},
    ),
]


class KubeModel(BaseModel):
    """Base of every API model: camelCase on the wire, docstrings become the CRD's descriptions."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="ignore",
        frozen=True,
        # YAML `cpu: 8` arrives as an int; quantities are strings on the wire.
        coerce_numbers_to_str=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class PodMetadata(KubeModel):
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels added to every pod; kubeforge's own labels win on a clash."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations added to every pod."""


class KeySelector(KubeModel):
    name: str = Field(min_length=1)
    """Name of the Secret or ConfigMap."""
    key: str = Field(min_length=1)
    """Key within it."""
    optional: bool | None = None


class FieldSelector(KubeModel):
    field_path: str = Field(min_length=1)
    """Path of the pod field, e.g. `metadata.name` or `status.podIP`."""


class EnvVarSource(KubeModel):
    secret_key_ref: KeySelector | None = None
    config_map_key_ref: KeySelector | None = None
    field_ref: FieldSelector | None = None


class EnvVar(KubeModel):
    name: str = Field(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    """Variable name."""
    value: str | None = None
    """Literal value."""
    value_from: EnvVarSource | None = None
    """Source for the value (a Secret key, a ConfigMap key, or a pod field)."""


GPU_ALIASES: dict[str, tuple[str, ...]] = {
    # Short names users write -> `nvidia.com/gpu.product` values GPU Feature Discovery reports.
    "H100": ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe", "NVIDIA-H100-NVL", "NVIDIA-H100-SXM5-80GB"),
    "H200": ("NVIDIA-H200", "NVIDIA-H200-141GB-HBM3e"),
    "B200": ("NVIDIA-B200",),
    "A100": (
        "NVIDIA-A100-SXM4-80GB",
        "NVIDIA-A100-SXM4-40GB",
        "NVIDIA-A100-80GB-PCIe",
        "NVIDIA-A100-PCIE-40GB",
    ),
    "L40S": ("NVIDIA-L40S",),
    "L4": ("NVIDIA-L4",),
    "A10G": ("NVIDIA-A10G",),
    "T4": ("Tesla-T4",),
}


def gpu_products(gpu_type: str) -> tuple[str, ...]:
    """The node label values a `gpuType` matches: an alias expands, anything else is a literal product."""
    return GPU_ALIASES.get(gpu_type.upper(), (gpu_type,))


class Resources(KubeModel):
    """What each pod gets. GPUs are requested and limited as `nvidia.com/gpu`."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.gpuType) || (has(self.gpus) && self.gpus > 0)",
                    "message": "resources.gpuType needs resources.gpus above 0",
                    "fieldPath": ".gpuType",
                }
            ]
        }
    )

    gpus: int = Field(default=0, ge=0, le=64)
    """GPUs per pod (`nvidia.com/gpu` request and limit)."""
    gpu_type: str | None = Field(
        default=None, min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
    )
    """GPU model, as an alias (H100, H200, B200, A100, L40S, L4, A10G, T4) or an exact
    `nvidia.com/gpu.product` label value; placed by required node affinity."""
    cpu: Quantity | None = None
    """CPU request and limit per pod, e.g. `8` or `500m`."""
    memory: Quantity | None = None
    """Memory request and limit per pod, e.g. `64Gi`."""


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(KubeModel):
    """A Kubernetes API condition (metav1.Condition)."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


def condition_list_schema() -> dict[str, Any]:
    """Conditions are a map keyed by `type`, so server-side apply merges them per type."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
