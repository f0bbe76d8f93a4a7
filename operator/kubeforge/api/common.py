"""Types shared by every kubeforge kind: pod shaping, GPU resources, conditions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
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
        max_length=64,
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


# -- bounds -------------------------------------------------------------------------------------------
# Every string and list a user writes has a maximum: the API server's CEL cost estimate multiplies list
# sizes by string lengths, and the operator copies these fields into every pod, Job and (for fleets) every
# ControllerRevision of the history, so an unbounded field would be an unbounded object.

MAX_DURATION_SECONDS = 366 * 86400
"""The longest time any `...Seconds` field may ask for (a leap year): a deadline of 10^12 s is a typo,
not a plan, and would overflow the date arithmetic of every pass."""
MAX_COMMAND_ITEMS = 256
MAX_ARGS_ITEMS = 1024
MAX_ARG_LENGTH = 4096
"""One entry of `command` or `args`."""
MAX_COMMAND_CHARS = 32768
"""All of `command` and `args` together, in characters."""
MAX_ENV_VARS = 256
MAX_ENV_VALUE_LENGTH = 32768
MAX_ENV_CHARS = 32768
"""All literal `env` values together, in characters."""
MAX_POD_LABELS = 64
MAX_POD_ANNOTATIONS = 64
MAX_ANNOTATION_CHARS = 32768
"""All annotation keys and values of `podMetadata` together, in characters."""
MAX_KEY_LENGTH = 317
"""A qualified key: a DNS subdomain prefix (253), `/`, a name (63)."""
MAX_LABEL_VALUE_LENGTH = 63

QUALIFIED_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
"""A label or annotation key as the API server accepts it on a pod: `[prefix/]name`."""
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"

# Keys a tenant may not put on pods: what the operator itself sets (its own labels, Kueue's queue and
# priority, managed-by), what overrides the pod's security profile (AppArmor, seccomp), and what switches
# a service mesh's sidecar on or off or reconfigures it (the namespace owner decides that, not a workload).
RESERVED_KEY_PREFIXES: tuple[str, ...] = (
    # Only the operator's own prefix: subdomains such as `e2e.kubeforge.dev` (the simulated workloads of
    # the local cluster read their behaviour from it) are the user's to set.
    "kubeforge.dev",
    "kueue.x-k8s.io",
    "*.kueue.x-k8s.io",
    "*.security.alpha.kubernetes.io",
    "*.security.beta.kubernetes.io",
    "pod-security.kubernetes.io",
    "sidecar.istio.io",
    "*.sidecar.istio.io",
    "proxy.istio.io",
    # Istio's own labels: `rev` picks the injector, and in ambient mode `dataplane-mode: none` takes a
    # pod out of the mesh (no mTLS, no authorization policy) and `use-waypoint` skips its L7 policy.
    "istio.io",
    "linkerd.io",
    "*.linkerd.io",
)
"""Prefixes (the part before `/`) reserved whole; `*.` also covers every subdomain."""
RESERVED_KEYS: tuple[str, ...] = (
    "app.kubernetes.io/managed-by",
    "istio-injection",
    "kuma.io/sidecar-injection",
    "consul.hashicorp.com/connect-inject",
)
"""Single keys reserved: the managed-by label and the remaining mesh injection switches."""


def _prefix_regex(prefixes: tuple[str, ...]) -> str:
    parts = []
    for prefix in prefixes:
        if prefix.startswith("*."):
            parts.append(r"[a-z0-9.-]*\." + re.escape(prefix[2:]))
        else:
            parts.append(re.escape(prefix))
    return "^(" + "|".join(parts) + ")/"


RESERVED_PREFIX_PATTERN = _prefix_regex(RESERVED_KEY_PREFIXES)


def is_reserved_key(key: str) -> bool:
    """Whether a pod label or annotation key is one a tenant may not set (see RESERVED_KEY_PREFIXES)."""
    return key in RESERVED_KEYS or re.match(RESERVED_PREFIX_PATTERN, key) is not None


def is_qualified_key(key: str) -> bool:
    """Whether a key has the `[prefix/]name` shape the API server takes on pods."""
    if len(key) > MAX_KEY_LENGTH or re.match(QUALIFIED_KEY_PATTERN, key) is None:
        return False
    return "/" not in key or key.index("/") <= 253


def _cel_string(value: str) -> str:
    """A CEL raw string literal (the patterns hold backslashes, never a quote)."""
    assert "'" not in value
    return "r'" + value + "'"


_CEL_RESERVED = (
    f"(k in [{', '.join(_cel_string(k) for k in RESERVED_KEYS)}]"
    f" || k.matches({_cel_string(RESERVED_PREFIX_PATTERN)}))"
)
_CEL_QUALIFIED = (
    f"(size(k) <= {MAX_KEY_LENGTH} && k.matches({_cel_string(QUALIFIED_KEY_PATTERN)})"
    " && (!k.contains('/') || k.indexOf('/') <= 253))"
)
_KEY_SHAPE = (
    "[prefix/]name, the name at most 63 characters of [A-Za-z0-9-_.] starting and ending alphanumeric,"
    " the prefix a DNS subdomain of at most 253"
)
_RESERVED_HINT = (
    "keys under kubeforge.dev/*, kueue.x-k8s.io/*, app.kubernetes.io/managed-by, AppArmor and seccomp"
    " annotations and service-mesh injection switches are set by the operator or the platform"
)


def _key_rules(field: str) -> list[Any]:
    """CEL rules on a map of pod labels or annotations; the message names the first offending key (a `join` of
    all of them would exceed the API server's CEL cost budget)."""
    return [
        {
            "rule": f"self.all(k, {_CEL_QUALIFIED})",
            "messageExpression": f"'{field} has an invalid key ' + self.filter(k, !{_CEL_QUALIFIED})[0]"
            f" + '; a key is {_KEY_SHAPE}'",
        },
        {
            "rule": f"!self.exists(k, {_CEL_RESERVED})",
            "messageExpression": f"'{field} may not set ' + self.filter(k, {_CEL_RESERVED})[0]"
            f" + ': {_RESERVED_HINT}'",
        },
    ]


def _check_keys(field: str) -> Any:
    def check(value: Mapping[str, str]) -> Mapping[str, str]:
        for key in value:
            if not is_qualified_key(key):
                raise ValueError(f"{field} has an invalid key {key}; a key is {_KEY_SHAPE}")
            if is_reserved_key(key):
                raise ValueError(f"{field} may not set {key}: {_RESERVED_HINT}")
        return value

    return AfterValidator(check)


LabelValue = Annotated[str, Field(max_length=MAX_LABEL_VALUE_LENGTH, pattern=LABEL_VALUE_PATTERN)]
AnnotationValue = Annotated[str, Field(max_length=MAX_ANNOTATION_CHARS)]


class PodMetadata(KubeModel):
    """Labels and annotations for the pods. Keys are checked as the API server checks a pod's, and keys
    the operator or the platform own are refused (see `docs/validation.md`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.annotations)"
                    " || self.annotations.map(k, size(k) + size(self.annotations[k]))"
                    f".sum() <= {MAX_ANNOTATION_CHARS}",
                    "message": "podMetadata.annotations: keys and values may hold at most"
                    f" {MAX_ANNOTATION_CHARS} characters together",
                    "fieldPath": ".annotations",
                }
            ]
        }
    )

    labels: Annotated[dict[str, LabelValue], _check_keys("podMetadata.labels")] = Field(
        default_factory=dict,
        max_length=MAX_POD_LABELS,
        json_schema_extra={"x-kubernetes-validations": _key_rules("podMetadata.labels")},
    )
    """Labels added to every pod (at most 64; values up to 63 characters); kubeforge's own labels win on
    a clash, and reserved keys are refused."""
    annotations: Annotated[dict[str, AnnotationValue], _check_keys("podMetadata.annotations")] = Field(
        default_factory=dict,
        max_length=MAX_POD_ANNOTATIONS,
        json_schema_extra={"x-kubernetes-validations": _key_rules("podMetadata.annotations")},
    )
    """Annotations added to every pod (at most 64, keys and values 32768 characters together); reserved
    keys are refused."""

    @model_validator(mode="after")
    def _annotations_fit(self) -> PodMetadata:
        # The same rule as the CEL one above, for specs that did not come through the API server.
        if sum(len(k) + len(v) for k, v in self.annotations.items()) > MAX_ANNOTATION_CHARS:
            raise ValueError(
                f"podMetadata.annotations: keys and values may hold at most {MAX_ANNOTATION_CHARS}"
                " characters together"
            )
        return self


_SECRET_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class KeySelector(KubeModel):
    name: str = Field(min_length=1, max_length=253, pattern=_SECRET_NAME)
    """Name of the Secret or ConfigMap."""
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    """Key within it."""
    optional: bool | None = None


class FieldSelector(KubeModel):
    field_path: str = Field(min_length=1, max_length=256)
    """Path of the pod field, e.g. `metadata.name` or `status.podIP`."""


class EnvVarSource(KubeModel):
    """Exactly one source, as a pod's env takes it."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef)]"
                    ".filter(x, x).size() == 1",
                    "message": "env[].valueFrom needs exactly one of secretKeyRef, configMapKeyRef or"
                    " fieldRef",
                }
            ]
        }
    )

    secret_key_ref: KeySelector | None = None
    config_map_key_ref: KeySelector | None = None
    field_ref: FieldSelector | None = None

    @model_validator(mode="after")
    def _one_source(self) -> EnvVarSource:
        sources = (self.secret_key_ref, self.config_map_key_ref, self.field_ref)
        if sum(source is not None for source in sources) != 1:
            raise ValueError("env[].valueFrom needs exactly one of secretKeyRef, configMapKeyRef or fieldRef")
        return self


class EnvVar(KubeModel):
    """One variable: a literal `value` or a `valueFrom`, not both (a pod refuses both)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.value) && has(self.valueFrom))",
                    "message": "env[].value and env[].valueFrom are exclusive",
                    "fieldPath": ".valueFrom",
                }
            ]
        }
    )

    name: str = Field(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    """Variable name."""
    value: str | None = Field(default=None, max_length=MAX_ENV_VALUE_LENGTH)
    """Literal value."""
    value_from: EnvVarSource | None = None
    """Source for the value (a Secret key, a ConfigMap key, or a pod field)."""

    @model_validator(mode="after")
    def _value_or_source(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError("env[].value and env[].valueFrom are exclusive")
        return self


Arg = Annotated[str, Field(max_length=MAX_ARG_LENGTH)]
"""One entry of `command` or `args`."""


def process_rules() -> list[Any]:
    """CEL rules on a spec with `command`, `args` and `env`: their totals, which no single field's
    maximum can express."""
    return [
        {
            "rule": "(has(self.command) ? self.command.map(c, size(c)).sum() : 0)"
            " + (has(self.args) ? self.args.map(a, size(a)).sum() : 0)"
            f" <= {MAX_COMMAND_CHARS}",
            "message": f"spec.command and spec.args may hold at most {MAX_COMMAND_CHARS} characters together",
            "fieldPath": ".args",
        },
        {
            "rule": "!has(self.env) || self.env.map(e, has(e.value) ? size(e.value) : 0).sum()"
            f" <= {MAX_ENV_CHARS}",
            "message": f"spec.env values may hold at most {MAX_ENV_CHARS} characters together",
            "fieldPath": ".env",
        },
    ]


def check_process_totals(command: list[str], args: list[str], env: list[EnvVar]) -> None:
    """The totals `process_rules` enforce in the API server, for specs that did not come through it."""
    if sum(map(len, command)) + sum(map(len, args)) > MAX_COMMAND_CHARS:
        raise ValueError(
            f"spec.command and spec.args may hold at most {MAX_COMMAND_CHARS} characters together"
        )
    if sum(len(e.value or "") for e in env) > MAX_ENV_CHARS:
        raise ValueError(f"spec.env values may hold at most {MAX_ENV_CHARS} characters together")


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
