"""`spec.objective`: the one constraint a workload is tuned for, and what the operator derived from it.

Users name the constraint once (`throughput`, `latency`, `cost`, `energy`, `reliability`, `privacy`);
`kubeforge.policy.objective` (`derive_fleet`, `derive_training`) turns it, the GPU catalog and what the
cluster has into concrete settings, and `status.policy` lists them with where each came from. Anything
the user wrote explicitly wins over the objective.

The types here are shared by the policy that derives the settings and the builders that apply them
(the two layers may not import each other), and by the CRD models.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from kubeforge.api.common import DNS_LABEL_PATTERN, LABEL_VALUE_PATTERN, KubeModel

Objective = Literal["throughput", "latency", "cost", "energy", "reliability", "privacy"]
OBJECTIVES: tuple[Objective, ...] = ("throughput", "latency", "cost", "energy", "reliability", "privacy")

REGION_LABEL = "topology.kubernetes.io/region"
"""The node label `privacy.dataRegion` is matched against (the well-known region label every cloud
sets; a node without it is never eligible)."""

MAX_PRIVACY_ITEMS = 32


class Privacy(KubeModel):
    """Where a `privacy` workload may run and who may talk to it. Required with `objective: privacy`
    and refused with any other objective (it would be silently ignored there)."""

    data_region: str = Field(min_length=1, max_length=63, pattern=LABEL_VALUE_PATTERN)
    """The region the data may be processed in: pods go only to nodes labelled
    `topology.kubernetes.io/region=<dataRegion>` (required node affinity)."""
    allowed_namespaces: list[str] = Field(
        default_factory=list,
        max_length=MAX_PRIVACY_ITEMS,
        json_schema_extra={
            "x-kubernetes-list-type": "set",
            "items": {"type": "string", "maxLength": 63, "pattern": DNS_LABEL_PATTERN},
        },
    )
    """Namespaces whose pods may reach a fleet's pods (besides its own namespace); everything else is
    denied by the fleet's NetworkPolicy."""
    egress: list[str] = Field(
        default_factory=list,
        max_length=MAX_PRIVACY_ITEMS,
        json_schema_extra={"x-kubernetes-list-type": "set", "items": {"type": "string", "maxLength": 43}},
    )
    """CIDRs a fleet's pods may open connections to (e.g. `10.20.0.0/16` for a model store); DNS is
    always allowed, every other destination is denied."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.egress) || self.egress.all(c, isCIDR(c))",
                    "message": "privacy.egress entries must be CIDRs such as 10.20.0.0/16 or 2001:db8::/32",
                    "fieldPath": ".egress",
                }
            ]
        }
    )

    @field_validator("allowed_namespaces")
    @classmethod
    def _namespaces(cls, value: list[str]) -> list[str]:
        for name in value:
            if len(name) > 63 or not re.fullmatch(DNS_LABEL_PATTERN, name):
                raise ValueError(f"privacy.allowedNamespaces: {name!r} is not a namespace name")
        return value

    @field_validator("egress")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as error:
                raise ValueError(
                    "privacy.egress entries must be CIDRs such as 10.20.0.0/16 or 2001:db8::/32"
                ) from error
        return value


def objective_rules() -> list[Any]:
    """CEL rules on a spec with `objective` and `privacy`."""
    return [
        {
            "rule": "!has(self.objective) || self.objective != 'privacy' || has(self.privacy)",
            "message": "spec.objective privacy needs spec.privacy.dataRegion (the region the data may be"
            " processed in)",
            "fieldPath": ".privacy",
        },
        {
            "rule": "!has(self.privacy) || (has(self.objective) && self.objective == 'privacy')",
            "message": "spec.privacy applies only with spec.objective: privacy; set the objective or remove"
            " spec.privacy",
            "fieldPath": ".privacy",
        },
    ]


def check_objective(objective: Objective, privacy: Privacy | None) -> None:
    """The rules of `objective_rules`, for specs that did not come through the API server."""
    if objective == "privacy" and privacy is None:
        raise ValueError(
            "spec.objective privacy needs spec.privacy.dataRegion (the region the data may be processed in)"
        )
    if objective != "privacy" and privacy is not None:
        raise ValueError(
            "spec.privacy applies only with spec.objective: privacy; set the objective or remove spec.privacy"
        )


Source = Literal["objective", "explicit", "catalog"]


class PolicyEntry(KubeModel):
    """One setting the operator derived for the workload, and why."""

    setting: str
    """What is set: `gpuType`, `spotPool`, `placement`, `autoscaling.minReplicas`, ..."""
    value: str
    source: Source
    """`objective`: derived from `spec.objective`; `explicit`: the user's own field, which wins;
    `catalog`: taken from the GPU catalog."""
    reason: str = ""


# -- what the builders apply ---------------------------------------------------------------------------

SpotUse = Literal["prefer", "avoid", "shun", "any"]
"""`prefer`: preferred node affinity to the spot pool (and its tolerations); `avoid`: required affinity
away from it; `shun`: preferred affinity away from it."""
Packing = Literal["none", "gang", "binpack"]


@dataclass(frozen=True)
class PodPolicy:
    """The pod-template part of a derived policy, applied by the builders on top of the spec."""

    gpu_required: tuple[str, ...] = ()
    """`nvidia.com/gpu.product` values the pods must land on (empty: nothing derived)."""
    gpu_preferred: tuple[str, ...] = ()
    """Products the pods prefer when the derived one cannot be required (it has no room in the cluster)."""
    gpu_name: str | None = None
    """The catalog name of the required or preferred product (messages only)."""
    spot: SpotUse = "any"
    spot_selector: Mapping[str, str] = field(default_factory=dict)
    """The catalog's spot node labels."""
    spot_tolerations: tuple[Mapping[str, Any], ...] = ()
    """The catalog's tolerations for tainted spot nodes (given only when spot is preferred)."""
    region: tuple[str, str] | None = None
    """(label, value) the nodes must carry (privacy)."""
    packing: Packing = "none"
    """`gang`: preferred pod affinity to the workload's own pods by node, then zone; `binpack`: by node."""


NO_POD_POLICY = PodPolicy()
