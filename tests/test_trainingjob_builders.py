"""TrainingJob children: the headless Service and the Indexed Job of each attempt."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeforge.api.common import PodMetadata
from kubeforge.api.trainingjob import MAX_NAME_LENGTH, MAX_RESTARTS, MAX_WORKERS, TrainingJobSpec
from kubeforge.builders.trainingjob import (
    ATTEMPT_LABEL,
    Owner,
    build_job,
    build_service,
    job_name,
    master_addr,
    worker_env,
)

OWNER = Owner(name="llama", namespace="research", uid="uid-1")


def _spec(**fields: Any) -> TrainingJobSpec:
    return TrainingJobSpec.model_validate({"image": "trainer:1", **fields})


def _env(job: dict[str, Any]) -> dict[str, Any]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


class TestService:
    def test_headless_and_publishes_unready_workers(self) -> None:
        svc = build_service(_spec(distributed={"port": 23456}), OWNER)
        assert svc["metadata"]["name"] == "llama"
        assert svc["spec"]["clusterIP"] == "None"
        assert svc["spec"]["publishNotReadyAddresses"] is True
        assert svc["spec"]["ports"][0]["port"] == 23456

    def test_selects_the_workers_of_every_attempt(self) -> None:
        svc = build_service(_spec(), OWNER)
        for attempt in (0, 3):
            labels = build_job(_spec(), OWNER, attempt)["spec"]["template"]["metadata"]["labels"]
            assert svc["spec"]["selector"].items() <= labels.items()

    def test_owned_and_labelled(self) -> None:
        meta = build_service(_spec(), OWNER)["metadata"]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "kubeforge"
        assert meta["labels"]["kubeforge.dev/trainingjob"] == "llama"
        [ref] = meta["ownerReferences"]
        assert ref["uid"] == "uid-1"
        assert ref["controller"] is True


class TestJob:
    def test_indexed_gang_of_workers(self) -> None:
        job = build_job(_spec(workers=4), OWNER, 2)
        assert job["metadata"]["name"] == "llama-a2"
        assert job["metadata"]["namespace"] == "research"
        spec = job["spec"]
        assert spec["completionMode"] == "Indexed"
        assert spec["completions"] == spec["parallelism"] == 4
        assert spec["backoffLimit"] == 0
        assert "suspend" not in spec
        pod = _pod(job)
        assert pod["restartPolicy"] == "Never"
        assert pod["subdomain"] == "llama"
        assert job["spec"]["template"]["metadata"]["labels"][ATTEMPT_LABEL] == "2"
        assert job["metadata"]["labels"][ATTEMPT_LABEL] == "2"

    def test_deterministic(self) -> None:
        assert build_job(_spec(workers=2), OWNER, 1) == build_job(_spec(workers=2), OWNER, 1)

    def test_kueue_queue_creates_it_suspended_and_labelled(self) -> None:
        job = build_job(_spec(queueName="team-a"), OWNER, 0)
        assert job["spec"]["suspend"] is True
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"

    def test_gpus_placed_by_type(self) -> None:
        pod = _pod(build_job(_spec(resources={"gpus": 4, "gpuType": "H100", "cpu": "8"}), OWNER, 0))
        resources = pod["containers"][0]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == "4"
        assert resources["requests"] == resources["limits"]
        [term] = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ]
        assert "NVIDIA-H100-80GB-HBM3" in term["matchExpressions"][0]["values"]
        keys = {t["key"] for t in pod["tolerations"]}
        assert {"nvidia.com/gpu", "node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"} <= keys

    def test_node_loss_tolerations_are_short(self) -> None:
        pod = _pod(build_job(_spec(policy={"nodeLossTimeoutSeconds": 15}), OWNER, 0))
        loss = [t for t in pod["tolerations"] if t["key"].startswith("node.kubernetes.io/")]
        assert len(loss) == 2
        assert all(t["tolerationSeconds"] == 15 and t["effect"] == "NoExecute" for t in loss)

    def test_cpu_only_has_no_gpu_placement(self) -> None:
        pod = _pod(build_job(_spec(), OWNER, 0))
        assert "affinity" not in pod
        assert "resources" not in pod["containers"][0]
        assert all(t["key"] != "nvidia.com/gpu" for t in pod["tolerations"])

    def test_checkpoint_volume(self) -> None:
        job = build_job(_spec(checkpoint={"claimName": "ckpt", "mountPath": "/ckpt"}), OWNER, 0)
        pod = _pod(job)
        assert {"name": "checkpoint", "persistentVolumeClaim": {"claimName": "ckpt"}} in pod["volumes"]
        assert {"name": "checkpoint", "mountPath": "/ckpt"} in pod["containers"][0]["volumeMounts"]
        assert _env(job)["KUBEFORGE_CHECKPOINT_DIR"] == "/ckpt"

    def test_pod_metadata_cannot_override_kubeforge_labels(self) -> None:
        # The API refuses reserved keys; a spec stored before that rule still cannot take the labels over.
        stored = PodMetadata.model_construct(
            labels={"team": "nlp", "kubeforge.dev/trainingjob": "other"}, annotations={"a": "b"}
        )
        spec = _spec().model_copy(update={"pod_metadata": stored})
        meta = build_job(spec, OWNER, 0)["spec"]["template"]["metadata"]
        assert meta["labels"]["team"] == "nlp"
        assert meta["labels"]["kubeforge.dev/trainingjob"] == "llama"
        assert meta["annotations"] == {"a": "b"}

    def test_command_args_priority(self) -> None:
        job = build_job(_spec(command=["torchrun"], args=["train.py"], priorityClassName="high"), OWNER, 0)
        container = _pod(job)["containers"][0]
        assert container["command"] == ["torchrun"]
        assert container["args"] == ["train.py"]
        assert _pod(job)["priorityClassName"] == "high"


class TestEnvironment:
    @pytest.mark.parametrize(
        ("workers", "gpus", "procs", "world", "nproc"),
        [(2, 4, None, 8, 4), (1, 0, None, 1, 1), (3, 8, 2, 6, 2), (4, 0, 2, 8, 2)],
    )
    def test_sizes(self, workers: int, gpus: int, procs: int | None, world: int, nproc: int) -> None:
        distributed = {"procsPerWorker": procs} if procs else {}
        env = _env(
            build_job(_spec(workers=workers, resources={"gpus": gpus}, distributed=distributed), OWNER, 0)
        )
        assert env["WORLD_SIZE"] == str(world)
        assert env["NNODES"] == env["PET_NNODES"] == str(workers)
        assert env["NPROC_PER_NODE"] == env["PET_NPROC_PER_NODE"] == str(nproc)

    def test_rank_zero_address_and_port(self) -> None:
        env = _env(build_job(_spec(workers=2), OWNER, 3))
        assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == "llama-a3-0.llama.research.svc"
        assert master_addr(OWNER, 3) == env["MASTER_ADDR"]
        assert env["MASTER_PORT"] == env["PET_MASTER_PORT"] == "29500"
        assert env["KUBEFORGE_ATTEMPT"] == "3"

    def test_node_rank_comes_from_the_completion_index(self) -> None:
        env = _env(build_job(_spec(workers=2), OWNER, 0))
        path = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        assert env["NODE_RANK"] == {"fieldRef": {"fieldPath": path}}
        assert env["PET_NODE_RANK"] == env["NODE_RANK"]

    def test_framework_none_has_no_torchrun_variables(self) -> None:
        env = _env(build_job(_spec(distributed={"framework": "none"}), OWNER, 0))
        assert "MASTER_ADDR" in env
        assert not [name for name in env if name.startswith("PET_")]

    def test_user_cannot_override_managed_variables(self) -> None:
        spec = _spec(env=[{"name": "WORLD_SIZE", "value": "999"}, {"name": "NCCL_DEBUG", "value": "INFO"}])
        env = worker_env(spec, OWNER, 0)
        assert [e["value"] for e in env if e["name"] == "WORLD_SIZE"] == ["1"]
        assert {"name": "NCCL_DEBUG", "value": "INFO"} in env


def _restricted(pod: dict[str, Any]) -> None:
    """The checks of the `restricted` Pod Security Standard that a pod template can fail."""
    assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC"))
    assert "serviceAccountName" not in pod
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"].get("runAsUser", 1) != 0
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= {"emptyDir", "persistentVolumeClaim", "downwardAPI"}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert not context.get("privileged")


def test_security_context_sets_ids_but_stays_restricted() -> None:
    pod = _pod(
        build_job(_spec(securityContext={"runAsUser": 1000, "runAsGroup": 100, "fsGroup": 100}), OWNER, 0)
    )
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["fsGroup"] == 100
    _restricted(pod)


names = st.from_regex(r"[a-z]([-a-z0-9]{0,50}[a-z0-9])?", fullmatch=True).filter(
    lambda n: len(n) <= MAX_NAME_LENGTH
)


@given(
    name=names,
    attempt=st.integers(0, MAX_RESTARTS),
    workers=st.integers(1, MAX_WORKERS),
    gpus=st.integers(0, 8),
    uid=st.one_of(st.none(), st.integers(1, 65535)),
    checkpoint=st.booleans(),
    framework=st.sampled_from(["torchrun", "none"]),
)
def test_any_spec_gives_a_valid_restricted_job(
    name: str, attempt: int, workers: int, gpus: int, uid: int | None, checkpoint: bool, framework: str
) -> None:
    spec = _spec(
        workers=workers,
        resources={"gpus": gpus},
        distributed={"framework": framework},
        securityContext={"runAsUser": uid} if uid else None,
        checkpoint={"claimName": "ckpt"} if checkpoint else None,
    )
    owner = Owner(name=name, namespace="ns", uid="u")
    job = build_job(spec, owner, attempt)
    _restricted(_pod(job))
    # The Job controller names pod hostnames `<job>-<index>`: they must be DNS labels.
    assert len(f"{job_name(name, attempt)}-{workers - 1}") <= 63
    assert len(job["metadata"]["name"]) <= 63
    env = _env(job)
    assert int(env["WORLD_SIZE"]) == workers * spec.procs_per_worker
    assert len({e["name"] for e in _pod(job)["containers"][0]["env"]}) == len(
        _pod(job)["containers"][0]["env"]
    )
