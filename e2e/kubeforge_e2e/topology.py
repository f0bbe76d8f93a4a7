"""Simulated nodes: the topology file and the Node objects kwok manages."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubeforge_e2e.paths import DEFAULT_TOPOLOGY

# kwok manages exactly the nodes carrying this label (a label, not an annotation: removing it makes the
# API server's label-selected watch report the node as gone, so kwok stops heartbeating it).
KWOK_LABEL = "kwok.x-k8s.io/node"
KWOK_LABEL_VALUE = "fake"
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class GpuSpec:
    product: str
    count: int
    memory_mib: int
    family: str = ""


@dataclass(frozen=True)
class NodeSpec:
    """One simulated node."""

    name: str
    zone: str
    cpu: str = "32"
    memory: str = "128Gi"
    pods: int = 110
    gpu: GpuSpec | None = None
    instance_type: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)

    def manifest(self) -> dict[str, Any]:
        """The Node object, status included (the API server keeps a new node's status)."""
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "topology.kubernetes.io/zone": self.zone,
            "topology.kubernetes.io/region": "local",
            "type": "kwok",
            KWOK_LABEL: KWOK_LABEL_VALUE,
        }
        if self.instance_type:
            labels["node.kubernetes.io/instance-type"] = self.instance_type
        resources: dict[str, str] = {"cpu": self.cpu, "memory": self.memory, "pods": str(self.pods)}
        if self.gpu is not None:
            labels.update(
                {
                    "nvidia.com/gpu.present": "true",
                    "nvidia.com/gpu.product": self.gpu.product,
                    "nvidia.com/gpu.count": str(self.gpu.count),
                    "nvidia.com/gpu.memory": str(self.gpu.memory_mib),
                }
            )
            if self.gpu.family:
                labels["nvidia.com/gpu.family"] = self.gpu.family
            resources[GPU_RESOURCE] = str(self.gpu.count)
        labels.update(self.labels)
        spec: dict[str, Any] = {}
        if self.taints:
            spec["taints"] = [dict(t) for t in self.taints]
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": labels,
                "annotations": {"node.alpha.kubernetes.io/ttl": "0", KWOK_LABEL: KWOK_LABEL_VALUE},
            },
            "spec": spec,
            "status": {"allocatable": dict(resources), "capacity": dict(resources)},
        }


@dataclass(frozen=True)
class Topology:
    nodes: tuple[NodeSpec, ...]

    def names(self) -> list[str]:
        return [n.name for n in self.nodes]


def topology_path() -> Path:
    override = os.environ.get("KUBEFORGE_TOPOLOGY")
    return Path(override) if override else DEFAULT_TOPOLOGY


def _gpu(raw: Any) -> GpuSpec | None:
    if raw is None:
        return None
    return GpuSpec(
        product=str(raw["product"]),
        count=int(raw["count"]),
        memory_mib=int(raw["memoryMiB"]),
        family=str(raw.get("family", "")),
    )


def parse_topology(data: Any) -> Topology:
    """``{"pools": [{name, count, zone, cpu, memory, pods, gpu: {product, count, memoryMiB, family},
    instanceType, labels, taints}]}``."""
    if not isinstance(data, dict) or not isinstance(data.get("pools"), list):
        raise ValueError("a topology is a mapping with a 'pools' list")
    nodes: list[NodeSpec] = []
    for pool in data["pools"]:
        for i in range(int(pool.get("count", 1))):
            nodes.append(
                NodeSpec(
                    name=f"{pool['name']}-{i}",
                    zone=str(pool["zone"]),
                    cpu=str(pool.get("cpu", "32")),
                    memory=str(pool.get("memory", "128Gi")),
                    pods=int(pool.get("pods", 110)),
                    gpu=_gpu(pool.get("gpu")),
                    instance_type=str(pool.get("instanceType", "")),
                    labels={str(k): str(v) for k, v in (pool.get("labels") or {}).items()},
                    taints=[{str(k): str(v) for k, v in t.items()} for t in (pool.get("taints") or [])],
                )
            )
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate node names in topology: {names}")
    return Topology(tuple(nodes))


def load_topology(path: Path | None = None) -> Topology:
    """The topology from ``path``, else ``$KUBEFORGE_TOPOLOGY``, else ``e2e/topology.yaml``."""
    return parse_topology(yaml.safe_load((path or topology_path()).read_text()))
