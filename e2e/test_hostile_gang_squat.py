"""A tenant in bad faith against gang admission, with the real kube-scheduler deciding placement.

The tenant creates plain pods of its own (no kubeforge labels, no owner) that ask for all the H100 GPUs
and for more CPU than any node has. kube-scheduler marks them `Unschedulable` (Insufficient cpu) and
every GPU stays free; gang admission still counts them as taking GPUs wherever they may land, so a
gang that fits stays `Queued` for as long as the tenant keeps the pods. Nothing bounds it: no schedule
timeout and no `--max-unplaced-gpus-per-namespace` applies to pods that are not a gang's workers
(`tests/test_hostile_gpus.py` shows the same with the cap set)."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest

from kubeforge_e2e import Kubectl, wait_for
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.workloads import trainingjob_manifest, trainingjob_status
from test_gang_admission import operator as operator  # a fixture: schedule timeout bound 10 s

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

H100 = "NVIDIA-H100-80GB-HBM3"


def hog(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"nvidia.com/gpu.product": H100},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [
                {
                    "name": "hog",
                    "image": "registry.invalid/hog:1",
                    "resources": {
                        "requests": {"nvidia.com/gpu": "8", "cpu": "100000"},
                        "limits": {"nvidia.com/gpu": "8"},
                    },
                }
            ],
        },
    }


def _unschedulable(kubectl: Kubectl, namespace: str, name: str) -> bool:
    pod = kubectl.get("pod", name, namespace) or {}
    return any(
        c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def test_pods_the_scheduler_cannot_place_do_not_keep_a_gang_out(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    for name in ("hog-0", "hog-1"):
        kubectl.apply(hog(name), namespace)
    for name in ("hog-0", "hog-1"):
        wait_for(
            partial(_unschedulable, kubectl, namespace, name),
            timeout=60,
            description=f"{name} Unschedulable (Insufficient cpu) while its GPUs are free",
        )
    kubectl.apply(
        trainingjob_manifest("victim", run_seconds=30, resources={"gpus": 8, "gpuType": "H100"}), namespace
    )
    wait_for(
        lambda: trainingjob_status(kubectl, namespace, "victim").get("phase") not in (None, "Queued"),
        timeout=45,
        description="the gang admitted onto the free H100s",
    )
