"""The GPU nodes an objective chooses between (`policy.objective.ClusterFacts`), derived from the node
cache once per change of it rather than once per pass.

Every fleet and TrainingJob pass derives its objective's settings from every GPU node; deriving the
facts of 170 nodes on each pass was a quarter of the operator's CPU while a thousand fleets came up.
The node cache replaces a node's object whenever the node changes and never mutates one in place, so
the same objects in the same order mean the same facts. The memo holds the objects it was derived
from, so their identities cannot be reused by others while it compares them.
"""

from __future__ import annotations

from collections.abc import Sequence

from kubeforge.api.catalog import GpuCatalog
from kubeforge.kube.client import Obj
from kubeforge.policy import objective as objectives


class ClusterFactsMemo:
    def __init__(self) -> None:
        self._nodes: Sequence[Obj] = ()
        self._catalog: GpuCatalog | None = None
        self._facts: objectives.ClusterFacts | None = None

    def __call__(self, nodes: Sequence[Obj], catalog: GpuCatalog) -> objectives.ClusterFacts:
        if (
            self._facts is not None
            and catalog is self._catalog
            and len(nodes) == len(self._nodes)
            and all(a is b for a, b in zip(nodes, self._nodes, strict=True))
        ):
            return self._facts
        self._facts = objectives.cluster_facts(nodes, catalog)
        self._nodes, self._catalog = tuple(nodes), catalog
        return self._facts
