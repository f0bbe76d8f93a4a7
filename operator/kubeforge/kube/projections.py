"""What the caches keep of each kind: the fields the policies read, nothing else.

A projection is still a plain object of the same shape (a trimmed copy), so the pure views in
`policy/` (`pod_view`, `pod_info`, `summarize_pods`, `job_view`, ...) read cached and fresh objects alike.
Dropping `managedFields`, full pod specs and the bodies of pods that are neither ours nor hold a GPU is
what keeps the operator's memory flat as the cluster grows.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from kubeforge.api.names import (
    APPLIED_HASH_ANNOTATION,
    COMPLETION_INDEX_ANNOTATION,
    GPU_RESOURCE,
    MANAGED_BY,
    MANAGED_BY_VALUE,
)
from kubeforge.api.trainingjob import RESIZE_REASON_ANNOTATION
from kubeforge.policy.checkpoint import MAX_REPORT_BYTES, REPORT_ANNOTATION, REQUEST_ANNOTATION

Obj = dict[str, Any]

_META_KEYS = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "labels",
    "ownerReferences",
)


def _meta(obj: Mapping[str, Any], annotations: tuple[str, ...] = ()) -> Obj:
    meta = obj.get("metadata") or {}
    out: Obj = {k: meta[k] for k in _META_KEYS if meta.get(k) is not None}
    if "ownerReferences" in out:
        out["ownerReferences"] = [
            {k: ref.get(k) for k in ("apiVersion", "kind", "name", "uid", "controller") if k in ref}
            for ref in out["ownerReferences"]
        ]
    # Values are capped: a tenant's annotation can hold 256 KiB, the policies read at most a report.
    kept = {
        k: v[: MAX_REPORT_BYTES + 1] if isinstance(v, str) else v
        for k, v in (meta.get("annotations") or {}).items()
        if k in annotations
    }
    if kept:
        out["annotations"] = kept
    return out


def _head(obj: Mapping[str, Any]) -> Obj:
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind")}


def _gpus(container: Mapping[str, Any]) -> Obj:
    resources = container.get("resources") or {}
    out: Obj = {}
    for part in ("requests", "limits"):
        amount = (resources.get(part) or {}).get(GPU_RESOURCE)
        if amount is not None:
            out[part] = {GPU_RESOURCE: amount}
    return {"name": container.get("name"), "resources": out}


def _holds_gpus(containers: list[Obj]) -> bool:
    for container in containers:
        for part in container["resources"].values():
            try:
                if int(str(part.get(GPU_RESOURCE, 0))) > 0:
                    return True
            except ValueError:
                continue
    return False


_CONTAINER_STATUS_KEYS = ("name", "ready", "restartCount", "state", "lastState")
_CONDITION_KEYS = ("type", "status", "reason", "message", "lastTransitionTime")


def pod(obj: Obj) -> Obj | None:
    """Pods of kubeforge's workloads (any GPU count) and any pod holding GPUs (for capacity); the rest are
    not kept. Finished pods that are not ours are dropped too: they hold nothing."""
    meta = obj.get("metadata") or {}
    ours = (meta.get("labels") or {}).get(MANAGED_BY) == MANAGED_BY_VALUE
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    containers = [_gpus(c) for c in spec.get("containers") or []]
    init = [_gpus(c) for c in spec.get("initContainers") or []]
    if not ours and (status.get("phase") in ("Succeeded", "Failed") or not _holds_gpus(containers + init)):
        return None
    projected_spec: Obj = {"containers": containers}
    if init:
        projected_spec["initContainers"] = init
    if spec.get("nodeName"):
        projected_spec["nodeName"] = spec["nodeName"]
    elif _holds_gpus(containers + init):
        # Where an unbound GPU pod may land (its GPU product), for capacity; dropped once it is bound.
        if spec.get("nodeSelector"):
            projected_spec["nodeSelector"] = spec["nodeSelector"]
        required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        if required:
            projected_spec["affinity"] = {
                "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}
            }
    projected_status: Obj = {
        k: status[k] for k in ("phase", "reason", "message", "startTime") if status.get(k) is not None
    }
    if status.get("conditions"):
        projected_status["conditions"] = [
            {k: c[k] for k in _CONDITION_KEYS if k in c} for c in status["conditions"]
        ]
    if status.get("containerStatuses"):
        projected_status["containerStatuses"] = [
            {
                k: _bounded_state(s[k]) if k in ("state", "lastState") else s[k]
                for k in _CONTAINER_STATUS_KEYS
                if k in s
            }
            for s in status["containerStatuses"]
        ]
    kept = (
        (COMPLETION_INDEX_ANNOTATION, REPORT_ANNOTATION, REQUEST_ANNOTATION)
        if ours
        else (COMPLETION_INDEX_ANNOTATION,)
    )
    return {
        **_head(obj),
        "metadata": _meta(obj, kept),
        "spec": projected_spec,
        "status": projected_status,
    }


def _bounded_state(state: Any) -> Any:
    """A container state with its termination message (a worker's last checkpoint report) capped: the
    kubelet allows 4 KiB per container, and a longer report is refused anyway."""
    if not isinstance(state, Mapping):
        return state
    terminated = state.get("terminated")
    if not isinstance(terminated, Mapping) or not isinstance(terminated.get("message"), str):
        return dict(state)
    return {**state, "terminated": {**terminated, "message": terminated["message"][: MAX_REPORT_BYTES + 1]}}


def node(obj: Obj) -> Obj | None:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    projected_spec: Obj = {}
    if spec.get("unschedulable"):
        projected_spec["unschedulable"] = True
    if spec.get("taints"):
        projected_spec["taints"] = [
            {k: t[k] for k in ("key", "value", "effect") if k in t} for t in spec["taints"]
        ]
    meta = _meta(obj)
    meta.pop("ownerReferences", None)
    return {
        **_head(obj),
        "metadata": meta,
        "spec": projected_spec,
        "status": {
            "allocatable": {
                k: v for k, v in (status.get("allocatable") or {}).items() if k in (GPU_RESOURCE, "pods")
            },
            "conditions": [
                {k: c[k] for k in _CONDITION_KEYS if k in c}
                for c in status.get("conditions") or []
                if c.get("type") == "Ready"
            ],
        },
    }


_STATUS_READ = frozenset({"Deployment", "Job", "Workload"})
"""Children whose status a policy reads. A PodDisruptionBudget's status changes with every pod of the
fleet that comes or goes, and nothing reads it: kept, each change would be a pass for nothing."""


def child(obj: Obj) -> Obj | None:
    """A child the operator writes (Deployment, Job, Service, PDB, ControllerRevision, a Kueue claim):
    metadata with the applied-hash annotation, the few spec fields the policies read, and the status of
    those whose status they read."""
    spec = obj.get("spec") or {}
    # `parallelism` and the resize reason: an elastic TrainingJob's attempt size and why it last changed.
    projected_spec = {k: spec[k] for k in ("replicas", "suspend", "parallelism") if k in spec}
    kept = (APPLIED_HASH_ANNOTATION, RESIZE_REASON_ANNOTATION)
    out: Obj = {**_head(obj), "metadata": _meta(obj, kept), "spec": projected_spec}
    if obj.get("status") and obj.get("kind") in _STATUS_READ:
        out["status"] = obj["status"]
    return out


def owner_link(obj: Obj) -> Obj | None:
    """A ReplicaSet: only who it is and who controls it (a link in pod -> ReplicaSet -> Deployment)."""
    meta = _meta(obj)
    return {
        **_head(obj),
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "ownerReferences")
            if k in meta
        },
    }


def priority_class(obj: Obj) -> Obj | None:
    meta = _meta(obj)
    return {
        **_head(obj),
        "metadata": {k: meta[k] for k in ("name", "resourceVersion") if k in meta},
        "value": obj.get("value", 0),
        "globalDefault": bool(obj.get("globalDefault")),
    }


def resource_quota(obj: Obj) -> Obj | None:
    """A ResourceQuota: only its GPU request limit and use matter (gang admission checks them)."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    key = f"requests.{GPU_RESOURCE}"
    projected_spec: Obj = {k: spec[k] for k in ("scopes", "scopeSelector") if spec.get(k)}
    projected_spec["hard"] = {k: v for k, v in (spec.get("hard") or {}).items() if k == key}
    return {
        **_head(obj),
        "metadata": _meta(obj),
        "spec": projected_spec,
        "status": {"used": {k: v for k, v in (status.get("used") or {}).items() if k == key}},
    }


def owned_resource(obj: Obj) -> Obj | None:
    """A TrainingJob or InferenceFleet: everything but the managed fields (spec and status are the input)."""
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if annotations and "kubectl.kubernetes.io/last-applied-configuration" in annotations:
        meta["annotations"] = {
            k: v for k, v in annotations.items() if k != "kubectl.kubernetes.io/last-applied-configuration"
        }
    return {**obj, "metadata": meta}


SHARED_MAX = 64
"""Strings up to this length are shared between cached objects."""

_UNIQUE_VALUES = frozenset(
    {
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "lastTransitionTime",
        "lastUpdateTime",
        "lastHeartbeatTime",
        "lastProbeTime",
        "startTime",
        "startedAt",
        "finishedAt",
        "podIP",
        "hostIP",
        "containerID",
    }
)
"""Keys whose values differ from object to object and from event to event: nothing to share."""

# CPython 3.12 made interned strings immortal (3.11 and 3.13 free them with their last user): there,
# sharing values would keep every name the operator ever saw, so only keys are shared.
_SHARE_VALUES = sys.version_info[:2] != (3, 12)


def shared(value: Any, key: str = "") -> Any:
    """A copy of a decoded object whose keys and repeated short strings are the interned, shared ones.

    Every watch event is decoded on its own, so without this each cached object holds its own copy of
    every key ("metadata", "lastTransitionTime", ...) and of every repeated value (namespaces, label
    values, condition types and reasons): about half of what a cached fleet, Deployment or Service
    costs. Values that are unique by nature (UIDs, resource versions, timestamps, IPs) are left alone:
    interning them would only fill the interpreter's table."""
    if isinstance(value, dict):
        return {sys.intern(k): shared(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [shared(v, key) for v in value]
    if _SHARE_VALUES and isinstance(value, str) and len(value) <= SHARED_MAX and key not in _UNIQUE_VALUES:
        return sys.intern(value)
    return value
