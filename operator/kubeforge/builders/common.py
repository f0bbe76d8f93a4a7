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


def gpu_tolerations(resources: Resources) -> list[dict[str, Any]]:
    """GPU nodes are commonly tainted `nvidia.com/gpu:NoSchedule` to keep CPU pods off them."""
    if not resources.gpus:
        return []
    return [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]


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
