"""InferenceFleet children, as pure functions of the validated spec.

- one Deployment per *revision*, named `<fleet>-<revision>`, where the revision is a hash of the serving
  pod template (image, command, args, env, resources, model, port, probe path, pod metadata, security
  context). A template change makes a new Deployment beside the old one, which is what canaries and
  rollbacks will need; placement and priority are not part of the revision and change in place.
- one Service `<fleet>` selecting the pods of *every* revision by the fleet's owner labels, so traffic
  is split between revisions by their ready replicas;
- one PodDisruptionBudget `<fleet>` over the same pods;
- one ControllerRevision `<fleet>-<revision>` per revision in the rollout history, holding the template
  fields of that revision, so a rollback (`spec.rollout.targetRevision`) can rebuild a Deployment that
  was deleted once its revision was drained;
- with `spec.rollout.httpRoute`: one Service `<fleet>-<revision>` per serving revision, the backends of
  the user's HTTPRoute, whose weights follow the split between revisions (`route_patch`).

The children's names (and which fleet names cannot make them) are `kubeforge.api.fleet_names`, shared with
the policy; they are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from kubeforge.api.fleet_names import deployment_name as deployment_name
from kubeforge.api.fleet_names import fleet_labels as fleet_labels
from kubeforge.api.fleet_names import is_fleet_backend
from kubeforge.api.fleet_names import name_problem as name_problem
from kubeforge.api.fleet_names import revision_service_name as revision_service_name
from kubeforge.api.fleet_names import revision_service_problem as revision_service_problem
from kubeforge.api.fleet_names import selector_string as selector_string
from kubeforge.api.inferencefleet import KIND, InferenceFleetSpec
from kubeforge.api.names import REVISION_LABEL as REVISION_LABEL
from kubeforge.api.names import SERVER_CONTAINER as CONTAINER
from kubeforge.api.objective import NO_POD_POLICY, PodPolicy
from kubeforge.builders import common
from kubeforge.builders.common import (
    affinity,
    child_metadata,
    container_security_context,
    env_list,
    gpu_tolerations,
    pod_metadata,
    pod_security_context,
    resource_requirements,
    stable_hash,
)

PORT_NAME = "http"
ZONE_KEY = common.ZONE_KEY
HOST_KEY = common.HOST_KEY

TEMPLATE_FIELDS = (
    "image",
    "command",
    "args",
    "env",
    "resources",
    "model",
    "port",
    "readinessPath",
    "podMetadata",
    "securityContext",
    "objective",
    "privacy",
)
"""The spec fields (wire names) a revision is made of; the rest (replicas, placement, priority,
disruption, autoscaling, rollout) applies to every revision and changes in place."""


def revision(spec: InferenceFleetSpec) -> str:
    """Hash of what the user wrote in the serving template, normalised: a field left out and a field
    written with its default value are the same, and the operator's defaults never enter it, so an
    operator upgrade that adds a defaulted field (or a defaulted sub-field) changes no revision."""
    return stable_hash(user_template(spec))


def user_template(spec: InferenceFleetSpec) -> dict[str, Any]:
    """The revision-making fields as the user wrote them: values equal to their default left out, at
    every depth (quantities are already strings, label maps are sorted by the hash)."""
    wire = spec.model_dump(by_alias=True, exclude_defaults=True, exclude_none=True, mode="json")
    return {key: wire[key] for key in TEMPLATE_FIELDS if key in wire and wire[key] not in ({}, [])}


# The keys each template field had when revisions were hashed with every default included (kubeforge
# up to this change). Frozen here so that the legacy hash of a template never changes again.
_LEGACY_FIELDS = frozenset(
    {"image", "command", "args", "env", "resources", "model", "port", "readinessPath", "podMetadata"}
    | {"securityContext"}
)
"""The template fields the legacy hash covered."""
_LEGACY_KEYS: dict[str, frozenset[str]] = {
    "resources": frozenset({"gpus", "gpuType", "cpu", "memory"}),
    "model": frozenset({"name", "uri"}),
    "podMetadata": frozenset({"labels", "annotations"}),
    "securityContext": frozenset({"runAsUser", "runAsGroup", "fsGroup"}),
}


def legacy_revision(spec: InferenceFleetSpec) -> str:
    """The revision the same template had under the former hash (every default included). A fleet
    whose running revision is this keeps it (`template_revision`): an upgrade re-rolls nothing."""

    def keep(field: str, wire: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in wire.items() if k in _LEGACY_KEYS[field]}

    return stable_hash(
        {
            "image": spec.image,
            "command": spec.command,
            "args": spec.args,
            "env": [e.to_wire() for e in spec.env],
            "resources": keep("resources", spec.resources.to_wire()),
            "model": keep("model", spec.model.to_wire()),
            "port": spec.port,
            "readinessPath": spec.readiness_path,
            "podMetadata": keep("podMetadata", spec.pod_metadata.to_wire()),
            "securityContext": keep("securityContext", spec.security_context.to_wire())
            if spec.security_context
            else None,
        }
    )


def template_revision(spec: InferenceFleetSpec, known: Iterable[str | None]) -> str:
    """The revision of the template: `revision(spec)`, unless the fleet already runs or remembers this
    very template under its legacy hash (`known`: its Deployments, stable, canary and history), in which
    case that name is kept so the upgrade neither starts a rollout nor renames a Deployment."""
    current = revision(spec)
    names = set(known)
    if current in names:
        return current
    legacy = legacy_revision(spec)
    return legacy if legacy in names and _legacy_covers(spec) else current


def _legacy_covers(spec: InferenceFleetSpec) -> bool:
    """The legacy hash saw everything the user wrote in the template. A field added since (`objective`,
    `privacy`, `model.memoryGiB`, ...) is a change the legacy name cannot stand for: keeping that name
    would re-apply its ControllerRevision with other data, which the API server refuses."""
    for key, value in user_template(spec).items():
        if key not in _LEGACY_FIELDS:
            return False
        allowed = _LEGACY_KEYS.get(key)
        if allowed is not None and isinstance(value, dict) and not set(value) <= allowed:
            return False
    return True


def spread_constraints(spec: InferenceFleetSpec, name: str) -> list[dict[str, Any]]:
    placement = spec.placement
    selector = {"matchLabels": fleet_labels(name)}
    out: list[dict[str, Any]] = []
    if placement.spread_zones:
        out.append(
            {
                "maxSkew": placement.max_skew,
                "topologyKey": ZONE_KEY,
                "whenUnsatisfiable": "DoNotSchedule" if placement.require_zone_spread else "ScheduleAnyway",
                "labelSelector": selector,
            }
        )
    if placement.spread_nodes:
        out.append(
            {
                "maxSkew": placement.max_skew,
                "topologyKey": HOST_KEY,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": selector,
            }
        )
    return out


def pod_env(spec: InferenceFleetSpec) -> list[dict[str, Any]]:
    managed = {"MODEL_NAME": spec.model.name, "PORT": str(spec.port)}
    if spec.model.uri:
        managed["MODEL_URI"] = spec.model.uri
    return env_list(spec.env, managed)


def pod_template(
    spec: InferenceFleetSpec, name: str, rev: str, policy: PodPolicy = NO_POD_POLICY
) -> dict[str, Any]:
    """The serving pod of revision `rev`; `policy` is what the fleet's objective derived for its pods."""
    labels = {**fleet_labels(name), REVISION_LABEL: rev}
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "env": pod_env(spec),
        "ports": [{"name": PORT_NAME, "containerPort": spec.port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": spec.readiness_path, "port": PORT_NAME},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "securityContext": container_security_context(),
    }
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    requirements = resource_requirements(spec.resources)
    if requirements:
        container["resources"] = requirements
    security = pod_security_context()
    if spec.security_context is not None:
        security.update(spec.security_context.to_wire())
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "securityContext": security,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
    }
    placed = affinity(spec.resources, policy, fleet_labels(name))
    if placed:
        pod_spec["affinity"] = placed
    tolerations = gpu_tolerations(spec.resources, policy)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    spread = spread_constraints(spec, name)
    if spread:
        pod_spec["topologySpreadConstraints"] = spread
    if spec.priority_class_name:
        pod_spec["priorityClassName"] = spec.priority_class_name
    return {"metadata": pod_metadata(spec.pod_metadata, labels), "spec": pod_spec}


def build_deployment(
    spec: InferenceFleetSpec,
    *,
    name: str,
    namespace: str,
    uid: str,
    rev: str,
    replicas: int,
    policy: PodPolicy = NO_POD_POLICY,
) -> dict[str, Any]:
    labels = {REVISION_LABEL: rev}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(
            kind=KIND,
            owner=name,
            uid=uid,
            name=deployment_name(name, rev),
            namespace=namespace,
            extra_labels=labels,
        ),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {**fleet_labels(name), REVISION_LABEL: rev}},
            # Only placement or priority changes roll in place; never drop below the ready count for it.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "revisionHistoryLimit": 2,
            "progressDeadlineSeconds": 600,
            "template": pod_template(spec, name, rev, policy),
        },
    }


def build_service(spec: InferenceFleetSpec, *, name: str, namespace: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(kind=KIND, owner=name, uid=uid, name=name, namespace=namespace),
        "spec": {
            "type": "ClusterIP",
            "selector": fleet_labels(name),
            "ports": [{"name": PORT_NAME, "port": spec.port, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def build_pdb(spec: InferenceFleetSpec, *, name: str, namespace: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(kind=KIND, owner=name, uid=uid, name=name, namespace=namespace),
        "spec": {
            "maxUnavailable": spec.disruption.max_unavailable,
            "selector": {"matchLabels": fleet_labels(name)},
            # A pod that never became ready must not block a node drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def build_network_policy(spec: InferenceFleetSpec, *, name: str, namespace: str, uid: str) -> dict[str, Any]:
    """Under `objective: privacy`: the fleet's pods admit connections only from their own namespace and
    `privacy.allowedNamespaces`, and open connections only to DNS and `privacy.egress`."""
    privacy = spec.privacy
    allowed = [namespace, *(privacy.allowed_namespaces if privacy else [])]
    sources = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": n}}}
        for n in dict.fromkeys(allowed)
    ]
    dns = {
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    egress: list[dict[str, Any]] = [dns]
    if privacy and privacy.egress:
        egress.append({"to": [{"ipBlock": {"cidr": cidr}} for cidr in privacy.egress]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(kind=KIND, owner=name, uid=uid, name=name, namespace=namespace),
        "spec": {
            "podSelector": {"matchLabels": fleet_labels(name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": sources, "ports": [{"protocol": "TCP", "port": spec.port}]}],
            "egress": egress,
        },
    }


# -- revision templates (ControllerRevision) -----------------------------------------------------------


def template_fields(spec: InferenceFleetSpec) -> dict[str, Any]:
    """The revision-making fields of a spec, as the wire shows them."""
    wire = spec.to_wire()
    return {key: wire[key] for key in TEMPLATE_FIELDS if key in wire}


def build_controller_revision(
    spec: InferenceFleetSpec, *, name: str, namespace: str, uid: str, rev: str
) -> dict[str, Any]:
    """The template of revision `rev`, kept while the revision is in the rollout history."""
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": child_metadata(
            kind=KIND,
            owner=name,
            uid=uid,
            name=deployment_name(name, rev),
            namespace=namespace,
            extra_labels={REVISION_LABEL: rev},
        ),
        "data": {"spec": template_fields(spec)},
        "revision": 1,
    }


def spec_of_revision(
    current: InferenceFleetSpec, controller_revision: Mapping[str, Any], rev: str
) -> InferenceFleetSpec | None:
    """The spec that builds revision `rev`: the stored template fields over the current spec (so
    placement, priority and the rest follow the fleet as it is now). None when the stored template is
    unreadable or does not hash to `rev`."""
    stored = (controller_revision.get("data") or {}).get("spec")
    if not isinstance(stored, Mapping):
        return None
    wire = {k: v for k, v in current.to_wire().items() if k not in TEMPLATE_FIELDS}
    wire.update({k: v for k, v in stored.items() if k in TEMPLATE_FIELDS})
    try:
        spec = InferenceFleetSpec.model_validate(wire)
    except ValidationError:
        return None
    return spec if rev in (revision(spec), legacy_revision(spec)) else None


# -- Gateway API ---------------------------------------------------------------------------------------


def build_revision_service(
    spec: InferenceFleetSpec, *, name: str, namespace: str, uid: str, rev: str
) -> dict[str, Any]:
    """A Service selecting one revision's pods: an HTTPRoute backend that can be weighted."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(
            kind=KIND,
            owner=name,
            uid=uid,
            name=revision_service_name(name, rev),
            namespace=namespace,
            extra_labels={REVISION_LABEL: rev},
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": {**fleet_labels(name), REVISION_LABEL: rev},
            "ports": [{"name": PORT_NAME, "port": spec.port, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


# What a revision's backend sets itself (a revision Service is always in the route's own namespace);
# any other field of the backend it joins (filters, group, kind) it carries over.
_OWN_BACKEND_FIELDS = ("name", "namespace", "port", "weight")


def route_patch(
    route: Mapping[str, Any],
    *,
    name: str,
    port: int,
    weights: Mapping[str, int],
    revisions: set[str],
) -> dict[str, Any] | None:
    """The merge patch that sets the fleet's backends of an HTTPRoute to `weights` (percent per
    revision), or None when the route already agrees.

    In every rule that has a backend pointing at the fleet (its Service `<fleet>`, or a revision Service
    `<fleet>-<rev>` of any revision in `revisions`), those backends are replaced by one per revision with
    a positive weight (in revision order, the rest of the rule untouched; a new revision's backend
    carries the filters of the rule's first fleet backend); rules and backends that point elsewhere are
    left alone. Lists are replaced whole by a merge patch, so the patch carries all rules
    and the route's resourceVersion (a concurrent edit makes it fail and the next reconcile retry)."""
    spec = route.get("spec") or {}
    rules = spec.get("rules") or []
    namespace = (route.get("metadata") or {}).get("namespace")
    known = {revision_service_name(name, r) for r in {*revisions, *weights}}
    wanted = [
        {"name": revision_service_name(name, rev), "port": port, "weight": weight}
        for rev, weight in sorted(weights.items())
        if weight > 0
    ]
    new_rules: list[Any] = []
    changed = False
    for rule in rules:
        refs = list((rule or {}).get("backendRefs") or [])
        if not any(isinstance(r, Mapping) and is_fleet_backend(r, name, known, namespace) for r in refs):
            new_rules.append(rule)
            continue
        kept: list[Any] = []
        inserted = False
        for ref in refs:
            if isinstance(ref, Mapping) and is_fleet_backend(ref, name, known, namespace):
                if not inserted:
                    # A backend that stays keeps its filters and other fields; a new one takes those of
                    # the rule's first fleet backend (the user's `<fleet>` at first), so every revision,
                    # the canary too, is reached through the same filters.
                    by_name = {
                        r.get("name"): r
                        for r in refs
                        if isinstance(r, Mapping) and is_fleet_backend(r, name, known, namespace)
                    }
                    joined = {k: v for k, v in ref.items() if k not in _OWN_BACKEND_FIELDS}
                    for backend in wanted:
                        previous = by_name.get(backend["name"])
                        base = previous if isinstance(previous, Mapping) else joined
                        kept.append({**base, **backend})
                    inserted = True
                continue
            kept.append(ref)
        if kept != refs:
            changed = True
        new_rules.append({**rule, "backendRefs": kept})
    if not changed:
        return None
    patch: dict[str, Any] = {"spec": {"rules": new_rules}}
    version = (route.get("metadata") or {}).get("resourceVersion")
    if version:
        patch["metadata"] = {"resourceVersion": version}
    return patch
