"""The trust boundary on the local cluster, where the API server and the real controllers decide
(docs/security.md): the chart's admission policies refuse what the operator's ServiceAccount may not
create and the PriorityClasses tenants may not use; an object a user made under a child's name is never
taken over; a tenant's pod copying a TrainingJob's labels is not one of its workers."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeforge.api.names import FIELD_MANAGER
from kubeforge_e2e import Helm, Kubectl, LocalCluster
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.workloads import condition, fleet, is_true, start_operator, wait_ready
from test_chart_install import installed, token_kubeconfig

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

Obj = dict[str, Any]
ALLOWED_CLASS = "kf-e2e-batch"
RESTRICTED_CONTAINER: Obj = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


# -- the chart's admission policies ------------------------------------------------------------------


@pytest.fixture
def release(helm: Helm, kubectl: Kubectl, crds: None, namespace: str) -> Iterator[str]:
    """The chart in the test's namespace (so the operator watches that one namespace), allowing one
    PriorityClass. Its ServiceAccount is also granted `create` on pods, as a careless RBAC change might:
    the admission policy must hold on its own."""
    with installed(helm, namespace, "--set", f"priorityClasses.allowed={{{ALLOWED_CLASS}}}") as name:
        kubectl("create", "role", "too-broad", "--verb=create", "--resource=pods", "-n", namespace)
        kubectl(
            "create",
            "rolebinding",
            "too-broad",
            "--role=too-broad",
            f"--serviceaccount={namespace}:{name}-kubeforge",
            "-n",
            namespace,
        )
        yield name


def _pod(name: str, labels: dict[str, str], container_security: Obj) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {"name": "c", "image": "registry.invalid/x:1", "securityContext": container_security}
            ],
        },
    }


def _create_as(kubectl: Kubectl, namespace: str, user: str | None, obj: Obj) -> tuple[bool, str]:
    """Server-side dry run: admission runs in full, nothing is stored."""
    args = ["create", "--dry-run=server", "-n", namespace, "-f", "-"]
    if user is not None:
        args.append(f"--as={user}")
    result = kubectl.run(*args, input=yaml.safe_dump(obj), check=False)
    return result.returncode == 0, result.stderr


def test_admission_policy_refuses_what_the_operator_may_not_create(
    kubectl: Kubectl, namespace: str, release: str, wait_for: Callable[..., Any]
) -> None:
    sa = f"system:serviceaccount:{namespace}:{release}-kubeforge"
    ours = {"app.kubernetes.io/managed-by": "kubeforge", "kubeforge.dev/trainingjob": "tj"}

    # A policy is enforced a moment after it is created: wait for the first refusal.
    def refused() -> str | None:
        ok, err = _create_as(kubectl, namespace, sa, _pod("unlabelled", {}, RESTRICTED_CONTAINER))
        return None if ok else err

    message = wait_for(refused, timeout=60, description="the operator-writes policy in force")
    assert "ValidatingAdmissionPolicy" in message
    assert f"{release}-kubeforge-operator-writes" in message
    assert "app.kubernetes.io/managed-by=kubeforge" in message

    # (This API server refuses privileged containers outright: --allow-privileged=false.)
    admin = {**RESTRICTED_CONTAINER, "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}
    ok, err = _create_as(kubectl, namespace, sa, _pod("sys-admin", ours, admin))
    assert not ok
    assert "restricted Pod Security Standard" in err
    ok, err = _create_as(kubectl, namespace, sa, _pod("root", ours, {**RESTRICTED_CONTAINER, "runAsUser": 0}))
    assert not ok
    assert "restricted Pod Security Standard" in err
    escalating = {k: v for k, v in RESTRICTED_CONTAINER.items() if k != "allowPrivilegeEscalation"}
    ok, err = _create_as(kubectl, namespace, sa, _pod("escalating", ours, escalating))
    assert not ok
    host = _pod("host", ours, RESTRICTED_CONTAINER)
    host["spec"]["volumes"] = [{"name": "root", "hostPath": {"path": "/"}}]
    ok, err = _create_as(kubectl, namespace, sa, host)
    assert not ok
    assert "host path" in err

    template = _pod("t", {}, RESTRICTED_CONTAINER)["spec"] | {"restartPolicy": "Never"}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "unlabelled"},
        "spec": {"template": {"spec": template}},
    }
    ok, err = _create_as(kubectl, namespace, sa, job)
    assert not ok
    assert "managed-by=kubeforge" in err

    # What the operator itself builds passes; the same pod made by a user is not the policy's concern.
    ok, err = _create_as(kubectl, namespace, sa, _pod("compliant", ours, RESTRICTED_CONTAINER))
    assert ok, err
    ok, err = _create_as(kubectl, namespace, None, _pod("users-own", {}, {}))
    assert ok, err


def _scrape(url: str, token: str | None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_metrics_answer_only_scrapers_rbac_allows(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str, release: str, tmp_path: Path
) -> None:
    """The operator, with the chart's ServiceAccount token and the chart's --metrics-auth, asks the API
    server about each scraper: no token 401; a token RBAC does not let get /metrics 403; a
    ServiceAccount bound to <fullname>-metrics-reader 200."""
    sa = f"{release}-kubeforge"
    kubeconfig = token_kubeconfig(cluster, kubectl, namespace, sa, tmp_path / "kubeconfig")
    operator = OperatorProcess(
        kubeconfig, tmp_path / "operator.log", extra_args=["--namespace", namespace, "--metrics-auth"]
    )
    operator.start()
    try:
        kubectl("create", "serviceaccount", "scraper", "-n", namespace)
        kubectl(
            "create",
            "clusterrolebinding",
            f"{namespace}-scraper",
            f"--clusterrole={release}-kubeforge-metrics-reader",
            f"--serviceaccount={namespace}:scraper",
        )
        scraper = kubectl("create", "token", "scraper", "-n", namespace).stdout.strip()
        stranger = kubectl("create", "token", "default", "-n", namespace).stdout.strip()
        assert _scrape(operator.metrics_url, None) == 401
        assert _scrape(operator.metrics_url, "not-a-token") == 401
        assert _scrape(operator.metrics_url, stranger) == 403
        assert _scrape(operator.metrics_url, scraper) == 200
    finally:
        operator.stop()
        kubectl("delete", "clusterrolebinding", f"{namespace}-scraper", "--ignore-not-found", check=False)


def _trainingjob(name: str, **spec: Any) -> Obj:
    return {
        "apiVersion": "kubeforge.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {"image": "registry.invalid/trainer:1", "workers": 1, "resources": {"gpus": 1}, **spec},
    }


def test_priority_classes_outside_the_allow_list_are_refused(
    kubectl: Kubectl, namespace: str, release: str, wait_for: Callable[..., Any]
) -> None:
    critical = _trainingjob("critical", priorityClassName="system-node-critical")

    def refused() -> str | None:
        ok, err = _create_as(kubectl, namespace, None, critical)
        return None if ok else err

    message = wait_for(refused, timeout=60, description="the priority-classes policy in force")
    assert "spec.priorityClassName: system-node-critical is not allowed" in message
    assert f"allowed: {ALLOWED_CLASS}" in message
    serving = fleet("critical", replicas=1, priorityClassName="system-cluster-critical")
    ok, err = _create_as(kubectl, namespace, None, serving)
    assert not ok
    assert "system-cluster-critical is not allowed" in err
    for allowed in (_trainingjob("batch", priorityClassName=ALLOWED_CLASS), _trainingjob("plain")):
        ok, err = _create_as(kubectl, namespace, None, allowed)
        assert ok, err


# -- never adopt what it did not create --------------------------------------------------------------


@pytest.fixture
def operator(
    cluster: LocalCluster, crds: None, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    proc = start_operator(cluster, namespace, tmp_path_factory.mktemp("tenancy-operator"))
    try:
        yield proc
    finally:
        proc.stop()
        print(f"--- operator log ({proc.log_path}) ---\n{proc.tail(80)}")


def test_a_users_service_under_a_fleets_name_is_left_untouched(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess, wait_for: Callable[..., Any]
) -> None:
    theirs = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "chat", "labels": {"team": "web"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    kubectl.apply(theirs, namespace)
    before = kubectl.get("service", "chat", namespace)
    kubectl.apply(fleet("chat", replicas=1, resources={"gpus": 1, "gpuType": "L4"}), namespace)

    def conflict() -> Obj | None:
        found = condition(kubectl.get("inferencefleet", "chat", namespace), "Conflict")
        return found if found and found["status"] == "True" else None

    found = wait_for(conflict, timeout=60, description="a Conflict condition on the fleet")
    assert found["reason"] == "NameConflict"
    assert f"Service {namespace}/chat exists and is not controlled by this object" in found["message"]
    assert not is_true(kubectl.get("inferencefleet", "chat", namespace), "Ready")
    events = kubectl.json(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=chat,reason=NameConflict"
    )
    assert events["items"], "no NameConflict Event"
    after = kubectl.get("service", "chat", namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], (
        "the Service was written"
    )
    assert "ownerReferences" not in after["metadata"]
    managers = {m["manager"] for m in after["metadata"].get("managedFields") or []}
    assert FIELD_MANAGER not in managers

    # The user frees the name: the fleet takes it and the condition goes.
    kubectl("delete", "service", "chat", "-n", namespace)
    kubectl("annotate", "inferencefleet", "chat", "-n", namespace, "e2e.kubeforge.dev/touch=1")
    wait_ready(kubectl, namespace, "chat", timeout=120)
    assert condition(kubectl.get("inferencefleet", "chat", namespace), "Conflict") is None
    service = kubectl.get("service", "chat", namespace)
    assert service["metadata"]["ownerReferences"][0]["kind"] == "InferenceFleet"


# -- pods are matched by owner UID -------------------------------------------------------------------


def test_a_pod_copying_a_trainingjobs_labels_is_not_a_worker(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess, wait_for: Callable[..., Any], tmp_path: Path
) -> None:
    kubectl.apply(
        _trainingjob(
            "tj",
            resources={"gpus": 1, "gpuType": "L4"},
            podMetadata={"annotations": {"e2e.kubeforge.dev/run-seconds": "25"}},
        ),
        namespace,
    )

    def running() -> Obj | None:
        tj = kubectl.get("trainingjob", "tj", namespace) or {}
        return tj if tj.get("status", {}).get("phase") == "Running" else None

    wait_for(running, timeout=90, description="TrainingJob Running")
    [job] = kubectl.json("get", "jobs", "-n", namespace, "-l", "kubeforge.dev/trainingjob=tj")["items"]
    [worker] = kubectl.json("get", "pods", "-n", namespace, "-l", f"job-name={job['metadata']['name']}")[
        "items"
    ]
    # A tenant copies the worker's kubeforge labels (not the Job's own selector labels, which the Job
    # controller would adopt by) and names the Job as an owner: both need nothing but read access.
    labels = {
        k: v
        for k, v in worker["metadata"]["labels"].items()
        if not k.startswith(("batch.", "job-name", "controller-uid"))
    }
    copycat = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "copycat",
            "labels": labels,
            "annotations": {
                "e2e.kubeforge.dev/fail-exit-code": "1",
                "e2e.kubeforge.dev/fail-after-seconds": "1",
                "batch.kubernetes.io/job-completion-index": "0",
            },
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": job["metadata"]["name"],
                    "uid": job["metadata"]["uid"],
                }
            ],
        },
        "spec": {
            "restartPolicy": "Never",
            "nodeName": worker["spec"]["nodeName"],
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "worker", "image": "registry.invalid/x:1"}],
        },
    }
    kubectl.apply(copycat, namespace)
    wait_for(
        lambda: (kubectl.get("pod", "copycat", namespace) or {}).get("status", {}).get("phase") == "Failed",
        timeout=60,
        description="the copycat pod Failed",
    )

    def finished() -> Obj | None:
        tj = kubectl.get("trainingjob", "tj", namespace) or {}
        return tj if tj.get("status", {}).get("phase") in ("Succeeded", "Failed") else None

    tj = wait_for(finished, timeout=120, description="TrainingJob finished")
    assert tj["status"]["phase"] == "Succeeded", tj["status"]
    assert tj["status"].get("restarts", 0) == 0, "a tenant's failed pod restarted the gang"
