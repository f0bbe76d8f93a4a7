"""Register kopf watch handlers that feed each kind's Runtime.

Only `on.event` handlers are used: they need no progress storage on the user's object and add no
finalizer, so the operator writes nothing but `status` on objects it does not own, and deleting a
TrainingJob never waits for the operator to be up.
"""

from __future__ import annotations

from typing import Any

import kopf

from kubeforge.builders.common import MANAGED_BY, MANAGED_BY_VALUE, kind_label
from kubeforge.controllers.runtime import Runtime, owner_of
from kubeforge.kube.client import Kind


def register(registry: kopf.OperatorRegistry, runtime: Runtime) -> None:
    kind = runtime.controller.kind

    @kopf.on.event(*_spec(kind), registry=registry)
    async def _on_object(body: kopf.Body, type: str | None, **_: Any) -> None:
        meta = body.get("metadata", {})
        runtime.request(meta["namespace"], meta["name"])

    for child in runtime.controller.child_kinds:
        _register_child(registry, runtime, kind, child)


def _register_child(registry: kopf.OperatorRegistry, runtime: Runtime, owner: Kind, child: Kind) -> None:
    labels: dict[str, Any] = {MANAGED_BY: MANAGED_BY_VALUE, kind_label(owner.kind): kopf.PRESENT}

    @kopf.on.event(*_spec(child), labels=labels, registry=registry, id=f"{owner.plural}-{child.plural}")
    async def _on_child(body: kopf.Body, **_: Any) -> None:
        meta = body.get("metadata", {})
        parent = meta.get("labels", {}).get(kind_label(owner.kind)) or owner_of(dict(body), owner)
        if parent and meta.get("namespace"):
            runtime.request(meta["namespace"], parent)


def _spec(kind: Kind) -> tuple[str, ...]:
    """kopf's resource spec: `("v1", "pods")` for the core group, `("batch", "v1", "jobs")` otherwise."""
    if not kind.group:
        return (kind.version, kind.plural)
    return (kind.group, kind.version, kind.plural)
