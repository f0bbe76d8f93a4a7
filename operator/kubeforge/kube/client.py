"""A small, typed facade over lightkube: plain dicts in and out, server-side apply under one field
manager, 404 on delete and 409 on create treated as "already done"."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.types import CascadeType, PatchType

from kubeforge.builders.common import FIELD_MANAGER
from kubeforge.kube.config import ClusterAccess

log = logging.getLogger(__name__)

Obj = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


# Every kind the operator reads or writes. Generic (dict-backed) resources keep objects exactly as the
# builders made them: no round trip through typed models that could drop a field.
KINDS: dict[tuple[str, str], Kind] = {
    (k.api_version, k.kind): k
    for k in (
        Kind("v1", "Pod", "pods"),
        Kind("v1", "Service", "services"),
        Kind("v1", "Event", "events"),
        Kind("v1", "Node", "nodes", namespaced=False),
        Kind("v1", "Namespace", "namespaces", namespaced=False),
        Kind("batch/v1", "Job", "jobs"),
        Kind("apps/v1", "Deployment", "deployments"),
        Kind("apps/v1", "ReplicaSet", "replicasets"),
        Kind("apps/v1", "ControllerRevision", "controllerrevisions"),
        Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
        Kind("kubeforge.dev/v1alpha1", "TrainingJob", "trainingjobs"),
        Kind("kubeforge.dev/v1alpha1", "InferenceFleet", "inferencefleets"),
        Kind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes"),
    )
}

_resources: dict[tuple[str, str], Any] = {}


def _resource(api_version: str, kind: str) -> Any:
    key = (api_version, kind)
    if key not in _resources:
        k = KINDS[key]
        create = create_namespaced_resource if k.namespaced else create_global_resource
        _resources[key] = create(k.group, k.version, k.kind, k.plural)
    return _resources[key]


def is_not_found(error: Exception) -> bool:
    return isinstance(error, ApiError) and error.status.code == 404


def is_conflict(error: Exception) -> bool:
    return isinstance(error, ApiError) and error.status.code == 409


def _plain(obj: Any) -> Obj:
    # Generic resources are dicts already; a copy keeps callers from mutating lightkube's object.
    return dict(obj)


_event_seq = itertools.count()


class Kube:
    """The operator's API client. One instance per process; coroutine-safe."""

    def __init__(self, access: ClusterAccess, *, field_manager: str = FIELD_MANAGER) -> None:
        self._client = AsyncClient(
            config=access.config, field_manager=field_manager, timeout=httpx2.Timeout(30)
        )
        self.field_manager = field_manager

    async def close(self) -> None:
        await self._client.close()

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        try:
            found = await self._client.get(_resource(api_version, kind), name, namespace=namespace)
        except ApiError as error:
            if is_not_found(error):
                return None
            raise
        return _plain(found)

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        labels: Mapping[str, str] | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> list[Obj]:
        res = _resource(api_version, kind)
        ns: Any = (
            namespace if namespace is not None else ("*" if KINDS[(api_version, kind)].namespaced else None)
        )
        return [
            _plain(item)
            async for item in self._client.list(
                res,
                namespace=ns,
                labels=dict(labels) if labels else None,
                fields=dict(fields) if fields else None,
            )
        ]

    async def apply(self, obj: Obj) -> Obj:
        """Server-side apply, forced: the operator owns the fields it sets on its children."""
        res = _resource(obj["apiVersion"], obj["kind"])
        applied = await self._client.apply(res(obj), field_manager=self.field_manager, force=True)
        return _plain(applied)

    async def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        foreground: bool = False,
    ) -> bool:
        """Delete; False when it was already gone. Children of children go in the background unless
        `foreground` (then the object lingers until they are gone)."""
        cascade = CascadeType.FOREGROUND if foreground else CascadeType.BACKGROUND
        try:
            await self._client.delete(
                _resource(api_version, kind), name, namespace=namespace, cascade=cascade
            )
        except ApiError as error:
            if is_not_found(error):
                return False
            raise
        return True

    async def patch_status(self, api_version: str, kind: str, name: str, namespace: str, status: Obj) -> Obj:
        """Merge-patch the status subresource. The spec is never written: GitOps tools own it."""
        res = _resource(api_version, kind)
        patched = await self._client.patch(
            res.Status, name, {"status": status}, namespace=namespace, patch_type=PatchType.MERGE
        )
        return _plain(patched)

    async def patch(self, api_version: str, kind: str, name: str, namespace: str | None, body: Obj) -> Obj:
        res = _resource(api_version, kind)
        patched = await self._client.patch(res, name, body, namespace=namespace, patch_type=PatchType.MERGE)
        return _plain(patched)

    async def event(self, involved: Mapping[str, Any], *, type_: str, reason: str, message: str) -> None:
        """Record a core/v1 Event on an object; a failure to record is logged, never raised."""
        meta = involved.get("metadata", {})
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body: Obj = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta.get('name')}.{time.time_ns():x}{next(_event_seq):x}",
                "namespace": meta.get("namespace"),
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "kubeforge"},
            "reportingComponent": "kubeforge.dev/operator",
            "reportingInstance": "kubeforge",
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventTime": stamp,
            "action": reason,
            "count": 1,
        }
        try:
            await self._client.create(_resource("v1", "Event")(body))
        except (ApiError, httpx2.HTTPError) as error:
            log.warning("could not record event %s on %s: %s", reason, meta.get("name"), error)
