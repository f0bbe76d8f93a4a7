"""A fleet's claim on Kueue: a Kueue Workload standing for one replica's GPUs (`policy.kueue_claims`).

It requests exactly what one serving pod requests and carries the pod's node selector, required node
affinity and tolerations, so Kueue assigns it the ResourceFlavor the real replica will run on. It has no
pods and no owner reference: Kueue removes its own finalizer from a Workload without owners when that
Workload is deleted, while one owned by an object Kueue does not know (an InferenceFleet) would keep its
finalizer, and its quota, forever. The operator deletes the claims itself (when the fleet gives them
back, and when the fleet is deleted); the fleet label and the fleet's UID say whose they are.
"""

from __future__ import annotations

from typing import Any

from kubeforge.api.fleet_names import fleet_labels
from kubeforge.api.names import API_GROUP
from kubeforge.builders.common import stable_hash

FLEET_UID_LABEL = f"{API_GROUP}/fleet-uid"
"""The UID of the fleet a claim stands for: a claim left by a deleted fleet of the same name is not
taken for the new fleet's."""
CLAIM_HASH_LABEL = f"{API_GROUP}/claim-hash"
"""Hash of what a claim asks for (queue, priority, pod set): a claim whose hash is not the one the fleet
would make now asks for something the fleet no longer is, and is withdrawn."""
POD_SET = "replica"
API_VERSION = "kueue.x-k8s.io/v1beta2"
"""The Kueue Workload API version written (the one the pinned Kueue, e2e/versions.env, serves)."""


def claim(
    name: str, *, fleet: str, namespace: str, uid: str, queue: str, priority: int, pod: dict[str, Any]
) -> dict[str, Any]:
    """Claim Workload `name` for one replica of `fleet`, whose serving pod template is `pod`."""
    spec = pod.get("spec") or {}
    container = spec["containers"][0]
    requests = dict((container.get("resources") or {}).get("requests") or {})
    template: dict[str, Any] = {
        "containers": [
            {"name": container["name"], "image": container["image"], "resources": {"requests": requests}}
        ]
    }
    if spec.get("nodeSelector"):
        template["nodeSelector"] = spec["nodeSelector"]
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if required:
        template["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    if spec.get("tolerations"):
        template["tolerations"] = spec["tolerations"]
    spec_out = {
        "queueName": queue,
        "priority": priority,
        "podSets": [{"name": POD_SET, "count": 1, "template": {"spec": template}}],
    }
    # The image is left out: a new revision of the fleet needs the same GPUs from Kueue.
    asked = {
        **spec_out,
        "podSets": [{**template, "containers": [{**template["containers"][0], "image": ""}]}],
    }
    labels = {**fleet_labels(fleet), FLEET_UID_LABEL: uid, CLAIM_HASH_LABEL: stable_hash(asked)}
    return {
        "apiVersion": API_VERSION,
        "kind": "Workload",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec_out,
    }


def claim_hash(claim_body: dict[str, Any]) -> str:
    """The hash label of a claim as `claim()` built it."""
    return str(claim_body["metadata"]["labels"][CLAIM_HASH_LABEL])
