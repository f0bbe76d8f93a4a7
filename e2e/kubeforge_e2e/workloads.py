"""Helpers the end-to-end tests share: the CRDs, the operator as a user runs it, fleet lookups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kubeforge_e2e.cluster import LocalCluster
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.tools import Kubectl, wait_for

# An image no node could pull: KWOK runs no containers, and nothing must ever try to.
IMAGE = "registry.invalid/vllm/vllm-openai:v0.8.5"


def install_crds(kubectl: Kubectl) -> None:
    """Apply the CRDs as the models generate them now (the committed files may lag a model change
    while it is being written; a unit test keeps them fresh)."""
    from kubeforge.cli import render_crds

    docs = [yaml.safe_load(text) for text in render_crds().values()]
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(docs))
    for doc in docs:
        kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{doc['metadata']['name']}")


def start_operator(
    cluster: LocalCluster, namespace: str, log_dir: Path, extra: list[str] | None = None
) -> OperatorProcess:
    """The operator as a user runs it, watching only the test's namespace (so tests never share one)."""
    operator = OperatorProcess(
        cluster.kubeconfig,
        log_dir / f"operator-{namespace}.log",
        extra_args=["--namespace", namespace, *(extra or [])],
        env=cluster.env(),
    )
    operator.start()
    return operator


def _kubeforge(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kubeforge.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def fleet(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"name": "llama-3.1-8b", "uri": "s3://models/llama-3.1-8b"},
        "image": IMAGE,
    }
    return _kubeforge("InferenceFleet", name, {**body, **spec})


TRAINER_IMAGE = "registry.invalid/kubeforge/trainer:1"
SIMULATION_PREFIX = "e2e.kubeforge.dev/"
"""Pod annotations under this prefix tell the simulated workloads how to behave (e.g. `run-seconds`)."""


def trainingjob(name: str, simulation: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """A TrainingJob of one 1-GPU worker by default; `simulation` becomes the workers' simulation
    annotations (`{"run-seconds": "60"}`), `spec` overrides the rest."""
    annotations = {f"{SIMULATION_PREFIX}{k}": v for k, v in (simulation or {}).items()}
    body: dict[str, Any] = {
        "image": TRAINER_IMAGE,
        "workers": 1,
        "resources": {"gpus": 1},
        "podMetadata": {"annotations": annotations},
    }
    return _kubeforge("TrainingJob", name, {**body, **spec})


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in (obj or {}).get("status", {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def is_true(obj: dict[str, Any] | None, type_: str) -> bool:
    cond = condition(obj, type_)
    return cond is not None and cond.get("status") == "True"


def get_fleet(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    obj = kubectl.get("inferencefleet", name, namespace)
    assert obj is not None, f"fleet {namespace}/{name} is gone"
    return dict(obj)


def fleet_pods(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    body = kubectl.json("get", "pods", "-n", namespace, "-l", f"kubeforge.dev/inferencefleet={name}")
    return [p for p in body["items"] if not p["metadata"].get("deletionTimestamp")]


def wait_ready(kubectl: Kubectl, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        obj = get_fleet(kubectl, namespace, name)
        return obj if is_true(obj, "Ready") else None

    return wait_for(ready, timeout=timeout, interval=0.5, description=f"fleet {name} Ready")
