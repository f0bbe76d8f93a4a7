"""TrainingJob children, as pure functions of the validated spec: the headless Service that gives every
worker a stable DNS name, and one Indexed batch Job per attempt.

Names are deterministic (`<name>` and `<name>-a<attempt>`), so a reconcile that is retried, or an operator
that was killed half-way, finds what it made before instead of making it twice.
"""

from __future__ import annotations

__all__ = [
    "ATTEMPT_LABEL",
    "Owner",
    "build_job",
    "build_pod_template",
    "build_service",
    "job_name",
    "master_addr",
    "resize_patch",
    "selector_labels",
    "service_name",
    "worker_env",
]

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubeforge.api.names import COMPLETION_INDEX_ANNOTATION as COMPLETION_INDEX_ANNOTATION
from kubeforge.api.names import KUEUE_QUEUE_LABEL as KUEUE_QUEUE_LABEL
from kubeforge.api.names import WORKER_CONTAINER
from kubeforge.api.objective import NO_POD_POLICY, PodPolicy
from kubeforge.api.trainingjob import (
    ATTEMPT_LABEL,
    KIND,
    RESIZE_REASON_ANNOTATION,
    TrainingJobSpec,
    job_name,
)
from kubeforge.builders.common import (
    affinity,
    child_metadata,
    container_security_context,
    gpu_tolerations,
    owner_labels,
    pod_metadata,
    pod_security_context,
    resource_requirements,
)

CONTAINER_NAME = WORKER_CONTAINER
PORT_NAME = "rendezvous"
CHECKPOINT_ENV = "KUBEFORGE_CHECKPOINT_DIR"
RDZV_BACKEND = "c10d"
ELASTIC_MAX_RESTARTS = 100
"""torchrun's `--max-restarts` for elastic workers: a peer that leaves (a shrink) costs the survivors one
worker-group restart (a re-rendezvous), so the budget must outlast many resizes. A peer that joins costs
none. A worker's own failure still fails the pod after that, and the operator restarts the gang."""
SHM_VOLUME = "dshm"
PODINFO_VOLUME = "kubeforge-podinfo"
PODINFO_PATH = "/etc/kubeforge"
ANNOTATIONS_FILE = "annotations"
ANNOTATIONS_ENV = "KUBEFORGE_ANNOTATIONS_FILE"
"""Where a worker reads its own annotations (the checkpoint request among them)."""
CHECKPOINT_VOLUME = "checkpoint"
# Taints the node lifecycle controller puts on a node it lost contact with.
NODE_LOSS_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


@dataclass(frozen=True)
class Owner:
    """The TrainingJob a child belongs to."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Owner:
        meta = obj["metadata"]
        return cls(name=str(meta["name"]), namespace=str(meta["namespace"]), uid=str(meta["uid"]))


def service_name(name: str) -> str:
    return name


def master_addr(owner: Owner, attempt: int) -> str:
    """The stable DNS name of rank 0: `<job>-0.<service>.<namespace>.svc` (Indexed Job
    hostname + subdomain)."""
    return f"{job_name(owner.name, attempt)}-0.{service_name(owner.name)}.{owner.namespace}.svc"


def selector_labels(name: str) -> dict[str, str]:
    """Labels on every worker pod of a TrainingJob, whatever the attempt."""
    return owner_labels(KIND, name)


def build_service(spec: TrainingJobSpec, owner: Owner) -> dict[str, Any]:
    """Headless Service: DNS records for every worker, ready or not, so rank 0 resolves before it serves."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(
            kind=KIND,
            owner=owner.name,
            uid=owner.uid,
            name=service_name(owner.name),
            namespace=owner.namespace,
        ),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(owner.name),
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": spec.distributed.port,
                    "targetPort": spec.distributed.port,
                    "protocol": "TCP",
                }
            ],
        },
    }


def managed_env(
    spec: TrainingJobSpec, owner: Owner, attempt: int, resume: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """The variables every launcher expects, consistent with the pods kubeforge actually runs; `resume`:
    the checkpoint a resumed attempt starts from (`policy.checkpoint.resume_env`)."""
    extra = dict(resume or {})
    if spec.checkpoint is not None:
        extra[ANNOTATIONS_ENV] = f"{PODINFO_PATH}/{ANNOTATIONS_FILE}"
    return _managed_env(spec, owner, attempt) + [{"name": k, "value": v} for k, v in extra.items()]


def _managed_env(spec: TrainingJobSpec, owner: Owner, attempt: int) -> list[dict[str, Any]]:
    rank: dict[str, Any] = {
        "fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}
    }
    nproc = spec.procs_per_worker
    if spec.elastic is not None:
        return _elastic_env(spec, owner, attempt)
    static: dict[str, str] = {
        "MASTER_ADDR": master_addr(owner, attempt),
        "MASTER_PORT": str(spec.distributed.port),
        "WORLD_SIZE": str(spec.workers * nproc),
        "NNODES": str(spec.workers),
        "NPROC_PER_NODE": str(nproc),
    }
    if spec.distributed.framework == "torchrun":
        static |= {
            "PET_NNODES": str(spec.workers),
            "PET_NPROC_PER_NODE": str(nproc),
            "PET_MASTER_ADDR": static["MASTER_ADDR"],
            "PET_MASTER_PORT": static["MASTER_PORT"],
        }
    static |= {"KUBEFORGE_ATTEMPT": str(attempt), "KUBEFORGE_TRAININGJOB": owner.name}
    if spec.checkpoint is not None and spec.checkpoint.claim_name:
        static[CHECKPOINT_ENV] = spec.checkpoint.mount_path
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in static.items()]
    env.append({"name": "NODE_RANK", "valueFrom": rank})
    if spec.distributed.framework == "torchrun":
        env.append({"name": "PET_NODE_RANK", "valueFrom": rank})
    return env


def _elastic_env(spec: TrainingJobSpec, owner: Owner, attempt: int) -> list[dict[str, Any]]:
    """torchrun's elastic launch: `--nnodes=MIN:MAX` with c10d rendezvous on rank 0 (`PET_*` are the
    variables torchrun reads for its flags). The size is not fixed, so there is no `WORLD_SIZE` (torchrun
    sets it for each rendezvous) and no `PET_NODE_RANK` (the rendezvous assigns ranks); `NODE_RANK` stays
    the pod's index, for logs."""
    assert spec.elastic is not None
    nproc = str(spec.procs_per_worker)
    nnodes = f"{spec.elastic.min_workers}:{spec.elastic.max_workers}"
    addr, port = master_addr(owner, attempt), str(spec.distributed.port)
    static: dict[str, str] = {
        "MASTER_ADDR": addr,
        "MASTER_PORT": port,
        "NNODES": nnodes,
        "NPROC_PER_NODE": nproc,
        "PET_NNODES": nnodes,
        "PET_NPROC_PER_NODE": nproc,
        "PET_RDZV_BACKEND": RDZV_BACKEND,
        "PET_RDZV_ENDPOINT": f"{addr}:{port}",
        "PET_RDZV_ID": job_name(owner.name, attempt),
        "PET_MAX_RESTARTS": str(ELASTIC_MAX_RESTARTS),
        "KUBEFORGE_MIN_WORKERS": str(spec.elastic.min_workers),
        "KUBEFORGE_MAX_WORKERS": str(spec.elastic.max_workers),
        "KUBEFORGE_ATTEMPT": str(attempt),
        "KUBEFORGE_TRAININGJOB": owner.name,
    }
    if spec.checkpoint is not None and spec.checkpoint.claim_name:
        static[CHECKPOINT_ENV] = spec.checkpoint.mount_path
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in static.items()]
    rank: dict[str, Any] = {
        "fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}
    }
    env.append({"name": "NODE_RANK", "valueFrom": rank})
    return env


def worker_env(
    spec: TrainingJobSpec, owner: Owner, attempt: int, resume: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Managed variables first; a user variable with a managed name is dropped (see `spec.env`)."""
    managed = managed_env(spec, owner, attempt, resume)
    names = {var["name"] for var in managed}
    return managed + [var.to_wire() for var in spec.env if var.name not in names]


def _tolerations(spec: TrainingJobSpec, policy: PodPolicy) -> list[dict[str, Any]]:
    # A short grace on node loss: the gang is restarted elsewhere instead of waiting 5 minutes for a
    # node that may never come back (the default toleration the API server adds).
    seconds = spec.policy.node_loss_timeout_seconds
    loss = [
        {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}
        for key in NODE_LOSS_TAINTS
    ]
    return gpu_tolerations(spec.resources, policy) + loss


def _pod_security(spec: TrainingJobSpec) -> dict[str, Any]:
    context = pod_security_context()
    user = spec.security_context
    if user is not None:
        context |= user.to_wire()
    return context


def build_pod_template(
    spec: TrainingJobSpec,
    owner: Owner,
    attempt: int,
    policy: PodPolicy = NO_POD_POLICY,
    resume: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One worker of attempt `attempt`; `policy` is what the job's objective derived for its pods, `resume`
    the checkpoint the attempt starts from (`KUBEFORGE_CHECKPOINT_*`)."""
    labels = {**selector_labels(owner.name), ATTEMPT_LABEL: str(attempt)}
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "env": worker_env(spec, owner, attempt, resume),
        "ports": [{"name": PORT_NAME, "containerPort": spec.distributed.port, "protocol": "TCP"}],
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}],
    }
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    requirements = resource_requirements(spec.resources)
    if requirements:
        container["resources"] = requirements
    # Shared memory for data loader workers and NCCL: a container's default /dev/shm is 64Mi.
    volumes: list[dict[str, Any]] = [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}}]
    if spec.checkpoint is not None and spec.checkpoint.claim_name:
        volumes.append(
            {"name": CHECKPOINT_VOLUME, "persistentVolumeClaim": {"claimName": spec.checkpoint.claim_name}}
        )
        container["volumeMounts"].append({"name": CHECKPOINT_VOLUME, "mountPath": spec.checkpoint.mount_path})
    if spec.checkpoint is not None:
        _checkpoint_protocol(spec, container, volumes)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "subdomain": service_name(owner.name),
        # Workers do not talk to the API server; no token is mounted, and no other ServiceAccount can be set.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": _pod_security(spec),
        "tolerations": _tolerations(spec, policy),
        "containers": [container],
        "volumes": volumes,
    }
    if spec.checkpoint is not None:
        # A trainer that checkpoints on its stop signal gets the whole grace period to finish it.
        pod_spec["terminationGracePeriodSeconds"] = spec.checkpoint.grace_period_seconds
        if spec.checkpoint.signal is not None and spec.checkpoint.signal != "SIGTERM":
            pod_spec["os"] = {"name": "linux"}
    placed = affinity(spec.resources, policy, selector_labels(owner.name))
    if placed is not None:
        pod_spec["affinity"] = placed
    if spec.priority_class_name:
        pod_spec["priorityClassName"] = spec.priority_class_name
    return {"metadata": pod_metadata(spec.pod_metadata, labels), "spec": pod_spec}


def _checkpoint_protocol(
    spec: TrainingJobSpec, container: dict[str, Any], volumes: list[dict[str, Any]]
) -> None:
    """The worker's side of the checkpoint protocol (`policy.checkpoint`): its own annotations in a
    downward-API file the kubelet refreshes, where the trainer sees the operator's checkpoint request; the
    report goes back as a JSON termination message, kept even when the container is killed."""
    assert spec.checkpoint is not None
    volumes.append(
        {
            "name": PODINFO_VOLUME,
            "downwardAPI": {
                "items": [{"path": ANNOTATIONS_FILE, "fieldRef": {"fieldPath": "metadata.annotations"}}]
            },
        }
    )
    container["volumeMounts"].append({"name": PODINFO_VOLUME, "mountPath": PODINFO_PATH, "readOnly": True})
    container["terminationMessagePolicy"] = "File"
    if spec.checkpoint.signal is not None and spec.checkpoint.signal != "SIGTERM":
        # Kept only where the API server runs with the ContainerStopSignals gate (which also wants the
        # pod's OS); elsewhere it drops the field and the kubelet sends SIGTERM (see docs/trainingjob.md).
        container["lifecycle"] = {"stopSignal": spec.checkpoint.signal}


def build_job(
    spec: TrainingJobSpec,
    owner: Owner,
    attempt: int,
    workers: int | None = None,
    policy: PodPolicy = NO_POD_POLICY,
    resume: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One attempt of the whole gang: an Indexed Job whose pod `i` is rank `i`.

    `backoffLimit: 0`: any worker failure fails the attempt, and kubeforge restarts the whole gang, since a
    torchrun rendezvous cannot take one replaced worker. With a Kueue queue the Job starts suspended and
    Kueue admits it by unsuspending it.

    An elastic job's attempt starts with `workers` (what fitted at admission) and is resized in place by
    `resize_patch()`: an Indexed Job whose `parallelism` equals its `completions` may change both, the
    Job controller adds the missing indexes or removes the highest ones, and rank 0 (the rendezvous
    host) always stays."""
    size = spec.workers if spec.elastic is None else (workers or spec.elastic.min_workers)
    extra = {ATTEMPT_LABEL: str(attempt)}
    if spec.queue_name:
        extra[KUEUE_QUEUE_LABEL] = spec.queue_name
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": size,
        "parallelism": size,
        "backoffLimit": 0,
        "template": build_pod_template(spec, owner, attempt, policy, resume),
    }
    if spec.queue_name:
        job_spec["suspend"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": child_metadata(
            kind=KIND,
            owner=owner.name,
            uid=owner.uid,
            name=job_name(owner.name, attempt),
            namespace=owner.namespace,
            extra_labels=extra,
        ),
        "spec": job_spec,
    }


def resize_patch(workers: int, reason: str) -> dict[str, Any]:
    """The merge patch that resizes an elastic attempt's Job, with the reason beside it in one write."""
    return {
        "metadata": {"annotations": {RESIZE_REASON_ANNOTATION: reason}},
        "spec": {"parallelism": workers, "completions": workers},
    }
