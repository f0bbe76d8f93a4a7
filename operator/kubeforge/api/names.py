"""Names the operator's builders, policies and API client share: labels, annotations, container and
resource names, the field manager. Defined once here, the lowest layer, so no two layers can drift."""

from __future__ import annotations

API_GROUP = "kubeforge.dev"
FIELD_MANAGER = "kubeforge"
"""Server-side apply field manager of every write."""

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "kubeforge"
TRAININGJOB_LABEL = "kubeforge.dev/trainingjob"
INFERENCEFLEET_LABEL = "kubeforge.dev/inferencefleet"
ATTEMPT_LABEL = "kubeforge.dev/attempt"
REVISION_LABEL = "kubeforge.dev/revision"
APPLIED_HASH_ANNOTATION = "kubeforge.dev/applied-hash"
"""On every child: the hash of the object the operator last applied, so an unchanged child is not
written again, even by a freshly started operator."""

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"

WORKER_CONTAINER = "worker"
"""The TrainingJob worker container: its exit code decides restarts."""
SERVER_CONTAINER = "server"
"""The InferenceFleet model-server container."""


def kind_label(kind: str) -> str:
    """`kubeforge.dev/trainingjob`: names the owning object on every child."""
    return f"{API_GROUP}/{kind.lower()}"


def owner_labels(kind: str, name: str) -> dict[str, str]:
    """The labels that select every child of one object."""
    return {MANAGED_BY: MANAGED_BY_VALUE, kind_label(kind): name}
