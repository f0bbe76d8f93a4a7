"""Every kind the operator reads or writes, with what its REST paths are built from."""

from __future__ import annotations

from dataclasses import dataclass


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


# Generic (dict-backed) resources keep objects exactly as the builders made them: no round trip through
# typed models that could drop a field.
KINDS: dict[tuple[str, str], Kind] = {
    (k.api_version, k.kind): k
    for k in (
        Kind("v1", "Pod", "pods"),
        Kind("v1", "Service", "services"),
        Kind("v1", "Event", "events"),
        Kind("v1", "Node", "nodes", namespaced=False),
        Kind("v1", "Namespace", "namespaces", namespaced=False),
        Kind("v1", "ResourceQuota", "resourcequotas"),
        Kind("batch/v1", "Job", "jobs"),
        Kind("apps/v1", "Deployment", "deployments"),
        Kind("apps/v1", "ReplicaSet", "replicasets"),
        Kind("apps/v1", "ControllerRevision", "controllerrevisions"),
        Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
        Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
        Kind("coordination.k8s.io/v1", "Lease", "leases"),
        Kind("scheduling.k8s.io/v1", "PriorityClass", "priorityclasses", namespaced=False),
        Kind("kubeforge.dev/v1alpha1", "TrainingJob", "trainingjobs"),
        Kind("kubeforge.dev/v1alpha1", "InferenceFleet", "inferencefleets"),
        Kind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes"),
        Kind("kueue.x-k8s.io/v1beta2", "Workload", "workloads"),
        Kind("authentication.k8s.io/v1", "TokenReview", "tokenreviews", namespaced=False),
        Kind("authorization.k8s.io/v1", "SubjectAccessReview", "subjectaccessreviews", namespaced=False),
    )
}


def kind(api_version: str, name: str) -> Kind:
    return KINDS[(api_version, name)]


POD = kind("v1", "Pod")
NODE = kind("v1", "Node")
SERVICE = kind("v1", "Service")
JOB = kind("batch/v1", "Job")
DEPLOYMENT = kind("apps/v1", "Deployment")
REPLICASET = kind("apps/v1", "ReplicaSet")
CONTROLLER_REVISION = kind("apps/v1", "ControllerRevision")
PDB = kind("policy/v1", "PodDisruptionBudget")
NETWORK_POLICY = kind("networking.k8s.io/v1", "NetworkPolicy")
LEASE = kind("coordination.k8s.io/v1", "Lease")
PRIORITY_CLASS = kind("scheduling.k8s.io/v1", "PriorityClass")
RESOURCE_QUOTA = kind("v1", "ResourceQuota")
TRAININGJOB = kind("kubeforge.dev/v1alpha1", "TrainingJob")
INFERENCEFLEET = kind("kubeforge.dev/v1alpha1", "InferenceFleet")
HTTPROUTE = kind("gateway.networking.k8s.io/v1", "HTTPRoute")
KUEUE_WORKLOAD = kind("kueue.x-k8s.io/v1beta2", "Workload")
