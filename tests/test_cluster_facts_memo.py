"""The node facts objectives read are derived once per change of the node cache, and a change (a node
replaced, added or removed) is never missed."""

from __future__ import annotations

import copy
from typing import Any

from kubeforge.api.catalog import DEFAULT_CATALOG
from kubeforge.controllers.facts import ClusterFactsMemo
from kubeforge.policy.objective import cluster_facts


def node(name: str, gpus: int = 8, *, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus)},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_the_same_node_objects_give_the_same_facts_without_deriving_again() -> None:
    memo = ClusterFactsMemo()
    nodes = [node("a"), node("b")]
    first = memo(nodes, DEFAULT_CATALOG)
    assert first == cluster_facts(nodes, DEFAULT_CATALOG)
    assert memo(list(nodes), DEFAULT_CATALOG) is first


def test_a_replaced_added_or_removed_node_is_seen() -> None:
    memo = ClusterFactsMemo()
    nodes = [node("a"), node("b")]
    memo(nodes, DEFAULT_CATALOG)
    # The cache replaces a changed node's object (never mutates it): an equal copy is also new.
    cordoned = copy.deepcopy(nodes[1])
    cordoned["spec"] = {"unschedulable": True}
    after = memo([nodes[0], cordoned], DEFAULT_CATALOG)
    assert [f.schedulable for f in after.nodes] == [True, False]
    grown = memo([nodes[0], cordoned, node("c", 4)], DEFAULT_CATALOG)
    assert [f.name for f in grown.nodes] == ["a", "b", "c"]
    assert [f.name for f in memo([nodes[0]], DEFAULT_CATALOG).nodes] == ["a"]


def test_another_catalog_derives_again() -> None:
    memo = ClusterFactsMemo()
    nodes = [node("a")]
    first = memo(nodes, DEFAULT_CATALOG)
    other = DEFAULT_CATALOG.model_copy()
    assert memo(nodes, other) is not first
