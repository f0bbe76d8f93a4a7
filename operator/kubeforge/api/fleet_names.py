"""Names and addresses that follow from an InferenceFleet's name: its children's names, the rules those
names must follow, the selector of its pods and where clients reach it.

Both the builders (which make the children) and the policy (which decides what to make, and judges a
name no child can have) need them; they live here, below both, so the two can never disagree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from kubeforge.api.inferencefleet import KIND, Endpoint, InferenceFleetSpec
from kubeforge.api.names import owner_labels

SERVICE_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
"""A Service name is an RFC 1035 label: it must start with a letter."""


def fleet_labels(name: str) -> dict[str, str]:
    """The labels on every child and pod of the fleet, all revisions."""
    return owner_labels(KIND, name)


def selector_string(name: str) -> str:
    """status.selector for the scale subresource: every pod of the fleet, all revisions."""
    return ",".join(f"{k}={v}" for k, v in sorted(fleet_labels(name).items()))


def deployment_name(name: str, rev: str) -> str:
    """The Deployment (and ControllerRevision) of one revision."""
    return f"{name}-{rev}"


def revision_service_name(name: str, rev: str) -> str:
    """The Service selecting one revision's pods: an HTTPRoute backend."""
    return f"{name}-{rev}"


def name_problem(name: str) -> str | None:
    """Why a fleet name cannot name its children, or None. Only the operator can judge this: the CRD
    cannot validate metadata.name beyond the API server's own rules."""
    if not SERVICE_NAME_RE.match(name):
        return f"fleet name {name!r} must be a DNS-1035 label (start with a letter, at most 63 characters)"
    return None


def revision_service_problem(name: str, rev: str) -> str | None:
    """Why the per-revision Service of `rev` cannot exist (its name is too long), or None."""
    svc = revision_service_name(name, rev)
    if not SERVICE_NAME_RE.match(svc):
        return (
            f"Service {svc!r} (the HTTPRoute backend of revision {rev}) would be longer than 63 characters:"
            " shorten the fleet name to use spec.rollout.httpRoute"
        )
    return None


def endpoint(spec: InferenceFleetSpec, *, name: str, namespace: str) -> Endpoint:
    """status.endpoint: the fleet's Service, in-cluster."""
    host = f"{name}.{namespace}.svc"
    return Endpoint(service=host, port=spec.port, url=f"http://{host}:{spec.port}")


def is_fleet_backend(ref: Mapping[str, Any], name: str, known: set[str], namespace: str | None) -> bool:
    """A backend is the fleet's by kind, name and namespace: a Service of the same name in another
    namespace (a cross-namespace backendRef) is someone else's."""
    if ref.get("group", "") not in ("", None) or ref.get("kind", "Service") != "Service":
        return False
    if ref.get("namespace") not in (None, "", namespace):
        return False
    target = ref.get("name")
    return target == name or target in known


def routes_to_fleet(route: Mapping[str, Any], name: str, revisions: Iterable[str]) -> bool:
    """Whether some rule of an HTTPRoute has a backend that is the fleet's (its Service `<fleet>` or a
    revision Service of one of `revisions`): only then do weights the operator sets reach the fleet."""
    namespace = (route.get("metadata") or {}).get("namespace")
    known = {revision_service_name(name, r) for r in revisions}
    return any(
        isinstance(ref, Mapping) and is_fleet_backend(ref, name, known, namespace)
        for rule in (route.get("spec") or {}).get("rules") or []
        for ref in (rule or {}).get("backendRefs") or []
    )
