"""kubeforge's local Kubernetes control plane for end-to-end tests.

Real etcd, kube-apiserver, kube-controller-manager and kube-scheduler, built from pinned Go modules
(see ``e2e/versions.env`` and ``e2e/tools/build.sh``), run as plain loopback processes, with kwok
simulating GPU nodes and pod lifecycles. Everything lives in the repository's ``.cluster/`` folder.
"""

from kubeforge_e2e.cluster import ClusterError, LocalCluster
from kubeforge_e2e.paths import Paths, read_versions
from kubeforge_e2e.tools import Helm, Kubectl, KubectlError, wait_for
from kubeforge_e2e.topology import GpuSpec, NodeSpec, Topology, load_topology

__all__ = [
    "ClusterError",
    "GpuSpec",
    "Helm",
    "Kubectl",
    "KubectlError",
    "LocalCluster",
    "NodeSpec",
    "Paths",
    "Topology",
    "load_topology",
    "read_versions",
    "wait_for",
]
