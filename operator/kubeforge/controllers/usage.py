"""What accounting reads from the caches: the GPUs a workload's pods hold or held, and where.

Both controllers use it; the accounting itself is `kubeforge.policy.usage`.
"""

from __future__ import annotations

from collections.abc import Iterable

from kubeforge.controllers.runtime import OperatorConfig
from kubeforge.kube.informer import Reader
from kubeforge.kube.kinds import NODE
from kubeforge.policy import usage
from kubeforge.policy.training import PodView


def held_gpus(
    caches: Reader, pods: Iterable[PodView], gpu_type: str | None, config: OperatorConfig
) -> tuple[usage.Held, ...]:
    """The GPUs the pods hold or held, priced by the product and capacity type of their nodes (from the
    node cache: no API read)."""
    views = list(pods)
    nodes = {p.node: node for p in views if p.node and (node := caches.get(NODE, p.node)) is not None}
    held = (
        usage.held_of(p.gpus, p.node, p.start, p.end, nodes, config.catalog, gpu_type=gpu_type) for p in views
    )
    return tuple(h for h in held if h is not None)
