"""Helpers the end-to-end tests share: the CRDs, the operator as a user runs it, fleet and TrainingJob
manifests and lookups, the CLI run as a kubectl plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
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


# -- TrainingJobs -------------------------------------------------------------------------------------

Obj = dict[str, Any]
TRAINER_IMAGE = "registry.invalid/kubeforge/trainer:1"
ANNOTATION = "e2e.kubeforge.dev/"
"""Prefix of the pod annotations kwok's stages read (`run-seconds`, `fail-exit-code`, ...; e2e/kwok)."""


def container_env(pod: Obj) -> dict[str, Any]:
    """The first container's environment: name -> value (or valueFrom)."""
    container = pod["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def trainingjob_manifest(
    name: str, *, run_seconds: float = 2, annotations: dict[str, str] | None = None, **spec: Any
) -> Obj:
    """A TrainingJob of two 4-GPU H100 workers that kwok lets run for `run_seconds`, then exit 0."""
    pod_annotations = {f"{ANNOTATION}run-seconds": str(run_seconds), **(annotations or {})}
    body: Obj = {
        "image": TRAINER_IMAGE,
        "workers": 2,
        "resources": {"gpus": 4, "gpuType": "H100"},
        "podMetadata": {"annotations": pod_annotations},
        **spec,
    }
    return {
        "apiVersion": "kubeforge.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": body,
    }


def get_trainingjob(kubectl: Kubectl, namespace: str, name: str) -> Obj:
    found: Obj | None = kubectl.get("trainingjob", name, namespace)
    assert found is not None, f"TrainingJob {name} is gone"
    return found


def trainingjob_status(kubectl: Kubectl, namespace: str, name: str) -> Obj:
    status: Obj = get_trainingjob(kubectl, namespace, name).get("status") or {}
    return status


def status_condition(status: Obj, type_: str) -> Obj:
    """The condition `type_` of a status, {} when it has none."""
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def wait_trainingjob_phase(
    kubectl: Kubectl, namespace: str, name: str, phase: str, timeout: float = 90
) -> Obj:
    def reached() -> Obj | None:
        status = trainingjob_status(kubectl, namespace, name)
        if status.get("phase") == phase:
            return status
        return None

    result: Obj = wait_for(reached, timeout=timeout, description=f"TrainingJob {name} {phase}")
    return result


def list_items(kubectl: Kubectl, kind: str, namespace: str, selector: str | None = None) -> list[Obj]:
    args = ["get", kind, "-n", namespace]
    if selector:
        args += ["-l", selector]
    items: list[Obj] = kubectl.json(*args)["items"]
    return items


def trainingjob_events(kubectl: Kubectl, namespace: str, name: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the TrainingJob's Events, oldest first."""
    events = list_items(kubectl, "events", namespace)
    found = [
        e
        for e in events
        if e["involvedObject"].get("kind") == "TrainingJob" and e["involvedObject"]["name"] == name
    ]
    found.sort(key=lambda e: e.get("eventTime") or e.get("firstTimestamp") or "")
    return [(e["type"], e["reason"], e["message"]) for e in found]


def trainingjob_jobs(kubectl: Kubectl, namespace: str, name: str) -> list[str]:
    """Names of the TrainingJob's Jobs (one per attempt)."""
    return sorted(
        j["metadata"]["name"]
        for j in list_items(kubectl, "jobs", namespace, f"kubeforge.dev/trainingjob={name}")
    )


def wait_workers_deleting(
    kubectl: Kubectl, namespace: str, name: str, count: int, timeout: float = 60
) -> list[Obj]:
    """The TrainingJob's worker pods once `count` of them are being deleted (kept by kwok meanwhile)."""

    def deleting() -> list[Obj] | None:
        pods = list_items(kubectl, "pods", namespace, f"kubeforge.dev/trainingjob={name}")
        going = [p for p in pods if p["metadata"].get("deletionTimestamp")]
        return going if len(going) == count else None

    found: list[Obj] = wait_for(deleting, timeout=timeout, description=f"{count} workers of {name} deleted")
    return found


def kubelet_kills(
    kubectl: Kubectl, namespace: str, pod: Obj, exit_code: int, message: str | None = None
) -> None:
    """The kubelet's report for a worker it stopped because the pod was deleted (with the termination
    message the worker left, if any)."""
    meta, status = pod["metadata"], pod["status"]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    started = next(
        (
            c["state"]["running"]["startedAt"]
            for c in status.get("containerStatuses") or []
            if "running" in c["state"]
        ),
        status.get("startTime"),
    )
    patch = {
        "status": {
            "phase": "Failed",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "PodFailed", "lastTransitionTime": now},
                {
                    "type": "ContainersReady",
                    "status": "False",
                    "reason": "PodFailed",
                    "lastTransitionTime": now,
                },
            ],
            "containerStatuses": [
                {
                    "name": "worker",
                    "image": "registry.invalid/kubeforge/trainer:1",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "state": {
                        "terminated": {
                            "exitCode": exit_code,
                            "reason": "Error",
                            "startedAt": started,
                            "finishedAt": now,
                            **({"message": message} if message is not None else {}),
                        }
                    },
                }
            ],
        }
    }
    kubectl(
        "patch",
        "pod",
        str(meta["name"]),
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(patch),
    )


# -- the CLI as a kubectl plugin ----------------------------------------------------------------------


def kubectl_kubeforge(
    cluster: LocalCluster, env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`kubectl kubeforge ...` as a user types it: kubectl finds the plugin on PATH (kubectl takes no
    global flags before a plugin's name, so the harness's `--kubeconfig` cannot be used here)."""
    return subprocess.run(
        [str(cluster.bin_dir / "kubectl"), "kubeforge", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def plugin_env(tmp_path: Path, cluster: LocalCluster, kubeconfigs: list[Path]) -> dict[str, str]:
    """The environment of a user's shell: HOME in `tmp_path` (no ambient ~/.kube/config), KUBECONFIG
    listing `kubeconfigs`, and PATH with the project's kubectl and the venv's `kubectl-kubeforge`."""
    env = cluster.env()
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env["HOME"] = str(home)
    env["KUBECONFIG"] = os.pathsep.join(str(p) for p in kubeconfigs)
    env["PATH"] = os.pathsep.join(
        [str(cluster.bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")]
    )
    return env


LENDING_AUTOSCALING: Obj = {
    "minReplicas": 1,
    "maxReplicas": 3,
    "metric": "latencyP95",
    "target": 0.5,
    "intervalSeconds": 2,
    "stableWindowSeconds": 10,
    "panicWindowSeconds": 4,
    "scaleDownStabilizationSeconds": 10,
    "tolerance": 0.1,
}
"""The fleet of the GPU-arbitration tests and benchmark: 1 to 3 replicas on p95 latency, evaluated every
2 s, so a load step shows within seconds."""
LENDING_MODEL: dict[str, float] = {"service_seconds": 0.2, "slots": 4}
"""The simulated server of those fleets: 4 concurrent slots of 0.2 s, so 20 requests/s per replica."""
