"""Pieces every child object shares: names, labels, owner references, GPU placement, pod security."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from kubeforge.api import API_VERSION
from kubeforge.api.common import EnvVar, PodMetadata, Resources, gpu_products
from kubeforge.api.names import FIELD_MANAGER as FIELD_MANAGER
from kubeforge.api.names import GPU_PRODUCT_LABEL as GPU_PRODUCT_LABEL
from kubeforge.api.names import GPU_RESOURCE as GPU_RESOURCE
from kubeforge.api.names import MANAGED_BY as MANAGED_BY
from kubeforge.api.names import MANAGED_BY_VALUE as MANAGED_BY_VALUE
from kubeforge.api.names import kind_label as kind_label
from kubeforge.api.names import owner_labels as owner_labels
from kubeforge.api.objective import NO_POD_POLICY, PodPolicy


def owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    """Controller owner reference: garbage collection removes children with their owner."""
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(
    *,
    kind: str,
    owner: str,
    uid: str,
    name: str,
    namespace: str,
    extra_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    labels = {**(extra_labels or {}), **owner_labels(kind, owner)}
    return {
        "name": name,
        "namespace": namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(kind, owner, uid)],
    }


def stable_hash(value: Any, length: int = 10) -> str:
    """A short, deterministic digest of a JSON-able value (revision names, change detection)."""
    encoded = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:length]


def resource_requirements(resources: Resources) -> dict[str, Any]:
    """Requests equal limits: GPUs must (extended resources cannot overcommit) and the rest follows
    so that GPU pods get the Guaranteed QoS class and are the last to be evicted."""
    amounts: dict[str, Any] = {}
    if resources.cpu is not None:
        amounts["cpu"] = resources.cpu
    if resources.memory is not None:
        amounts["memory"] = resources.memory
    if resources.gpus:
        amounts[GPU_RESOURCE] = str(resources.gpus)
    if not amounts:
        return {}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def gpu_node_affinity(resources: Resources) -> dict[str, Any] | None:
    if not resources.gpu_type or not resources.gpus:
        return None
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": GPU_PRODUCT_LABEL,
                                "operator": "In",
                                "values": list(gpu_products(resources.gpu_type)),
                            }
                        ]
                    }
                ]
            }
        }
    }


ZONE_KEY = "topology.kubernetes.io/zone"
HOST_KEY = "kubernetes.io/hostname"


def affinity(
    resources: Resources, policy: PodPolicy = NO_POD_POLICY, own: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """The pod's affinity: the GPU product (the spec's `gpuType`, else the objective's choice), the
    spot pool excluded or preferred, the data region, and packing onto the workload's own pods (`own`:
    labels every pod of the workload carries).

    Everything required goes into one node selector term, since terms are ORed and expressions ANDed;
    the capacity ledger reads the product from that term (`policy.capacity.pod_products`)."""
    required: list[dict[str, Any]] = []
    if resources.gpus and resources.gpu_type:
        required.append(
            {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": list(gpu_products(resources.gpu_type))}
        )
    elif resources.gpus and policy.gpu_required:
        required.append({"key": GPU_PRODUCT_LABEL, "operator": "In", "values": list(policy.gpu_required)})
    if policy.spot == "avoid":
        # NotIn also matches nodes without the label: everything but the spot pool.
        required.extend(
            {"key": k, "operator": "NotIn", "values": [v]} for k, v in sorted(policy.spot_selector.items())
        )
    if policy.region is not None:
        required.append({"key": policy.region[0], "operator": "In", "values": [policy.region[1]]})
    preferred: list[dict[str, Any]] = []
    if resources.gpus and not resources.gpu_type and policy.gpu_preferred:
        term = {
            "matchExpressions": [
                {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": list(policy.gpu_preferred)}
            ]
        }
        preferred.append({"weight": 100, "preference": term})
    if policy.spot in ("prefer", "shun") and policy.spot_selector:
        # `shun`: anything but the spot pool, as a preference (NotIn also matches unlabelled nodes).
        op = "In" if policy.spot == "prefer" else "NotIn"
        expressions = [
            {"key": k, "operator": op, "values": [v]} for k, v in sorted(policy.spot_selector.items())
        ]
        preferred.append({"weight": 50, "preference": {"matchExpressions": expressions}})
    out: dict[str, Any] = {}
    node: dict[str, Any] = {}
    if required:
        node["requiredDuringSchedulingIgnoredDuringExecution"] = {
            "nodeSelectorTerms": [{"matchExpressions": required}]
        }
    if preferred:
        node["preferredDuringSchedulingIgnoredDuringExecution"] = preferred
    if node:
        out["nodeAffinity"] = node
    if policy.packing != "none" and own:
        selector = {"matchLabels": dict(own)}
        # A preference, never a rule: a gang that does not fit on one node must still be placed.
        packs = [{"weight": 100, "podAffinityTerm": {"labelSelector": selector, "topologyKey": HOST_KEY}}]
        if policy.packing == "gang":
            packs.append(
                {"weight": 50, "podAffinityTerm": {"labelSelector": selector, "topologyKey": ZONE_KEY}}
            )
        out["podAffinity"] = {"preferredDuringSchedulingIgnoredDuringExecution": packs}
    return out or None


def gpu_tolerations(resources: Resources, policy: PodPolicy = NO_POD_POLICY) -> list[dict[str, Any]]:
    """GPU nodes are commonly tainted `nvidia.com/gpu:NoSchedule` to keep CPU pods off them; a workload
    that prefers the spot pool also tolerates the catalog's spot taints."""
    if not resources.gpus:
        return []
    spot = [dict(t) for t in policy.spot_tolerations] if policy.spot == "prefer" else []
    return [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}, *spot]


def pod_security_context() -> dict[str, Any]:
    """The `restricted` Pod Security Standard; nothing in a user's spec can loosen it."""
    return {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def env_list(user: tuple[EnvVar, ...] | list[EnvVar], managed: Mapping[str, str]) -> list[dict[str, Any]]:
    """Operator-managed variables first; a user variable of the same name is dropped, since a rank or
    world size that disagrees with the pods kubeforge actually runs would hang the job."""
    out: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in managed.items()]
    out.extend(var.to_wire() for var in user if var.name not in managed)
    return out


def pod_metadata(
    user: PodMetadata, managed_labels: Mapping[str, str], annotations: Mapping[str, str] | None = None
) -> dict[str, Any]:
    return {
        "labels": {**user.labels, **managed_labels},
        "annotations": {**user.annotations, **(annotations or {})},
    }
