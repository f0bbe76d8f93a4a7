"""The Helm chart, checked offline: `helm lint` and `helm template`, never a cluster.

The rendered YAML is parsed and checked for what matters in production: the `restricted`
security context, least-privilege RBAC (exactly the rules the operator uses, no wildcards,
no Secrets), the operator's command line, high availability (two replicas, leader election on a
Lease, a PodDisruptionBudget, anti-affinity), and a values schema that refuses typos.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeforge.api.catalog import DEFAULT_CATALOG, parse_catalog

Obj = dict[str, Any]

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "kubeforge"
HELM = Path(os.environ.get("KUBEFORGE_CACHE", str(Path.home() / ".cache" / "kubeforge"))) / "bin" / "helm"
KUBE_VERSION = "1.36.3"
RELEASE = "kubeforge"
NAMESPACE = "kubeforge-system"

# The operator's RBAC, one tuple per rule: (apiGroups, resources, verbs). This table is the
# contract: adding a permission means changing it here and in templates/rbac.yaml.
NAMESPACED_RULES: list[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = [
    (("kubeforge.dev",), ("trainingjobs", "inferencefleets"), ("get", "list", "watch")),
    (("kubeforge.dev",), ("trainingjobs",), ("delete",)),
    (("kubeforge.dev",), ("trainingjobs/status", "inferencefleets/status"), ("get", "patch")),
    (("batch",), ("jobs",), ("get", "list", "watch", "create", "patch", "delete")),
    (("",), ("services",), ("get", "list", "watch", "create", "patch", "delete")),
    # patch: only the checkpoint-request annotation on a TrainingJob's workers (docs/security.md).
    (("",), ("pods",), ("get", "list", "watch", "patch")),
    (("",), ("resourcequotas",), ("get", "list", "watch")),
    (("apps",), ("replicasets",), ("get", "list", "watch")),
    (("",), ("events",), ("create", "patch")),
    (("events.k8s.io",), ("events",), ("create", "patch")),
    (("apps",), ("deployments",), ("get", "list", "watch", "create", "patch", "delete")),
    (("apps",), ("controllerrevisions",), ("get", "list", "watch", "create", "patch", "delete")),
    (("policy",), ("poddisruptionbudgets",), ("get", "list", "watch", "create", "patch", "delete")),
    (("networking.k8s.io",), ("networkpolicies",), ("get", "list", "watch", "create", "patch", "delete")),
    (("gateway.networking.k8s.io",), ("httproutes",), ("get", "patch")),
    # Only the fleets' own claims on Kueue (spec.kueueQueueName), read by label.
    (("kueue.x-k8s.io",), ("workloads",), ("get", "list", "watch", "create", "delete")),
]
Rule = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
CLUSTER_RULES: list[Rule] = [
    (("",), ("nodes",), ("get", "list", "watch")),
    (("scheduling.k8s.io",), ("priorityclasses",), ("get", "list", "watch")),
    # metrics.auth (on by default): every scrape's token is reviewed.
    (("authentication.k8s.io",), ("tokenreviews",), ("create",)),
    (("authorization.k8s.io",), ("subjectaccessreviews",), ("create",)),
]
# Watching some namespaces only, pods are still read everywhere (gangAdmission.readPodsInAllNamespaces):
# GPUs held by pods the operator cannot see would look free.
PODS_EVERYWHERE: Rule = (("",), ("pods",), ("get", "list", "watch"))
RESTRICTED_CLUSTER_RULES = [CLUSTER_RULES[0], PODS_EVERYWHERE, *CLUSTER_RULES[1:]]
METRICS_READER = f"{RELEASE}-metrics-reader"
# Leader election, in a Role of the release namespace: (apiGroups, resources, resourceNames, verbs).
LEADER_ELECTION_ROLE = f"{RELEASE}-leader-election"
LEADER_ELECTION_RULES = [
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": [RELEASE],
        "verbs": ["get", "update"],
    },
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
]

STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)


@pytest.fixture(scope="session")
def helm() -> Path:
    if not HELM.is_file() or not os.access(HELM, os.X_OK):
        pytest.skip(
            f"helm binary not found at {HELM}: build it with `e2e/tools/build.sh helm` "
            "(or set KUBEFORGE_CACHE to the cache that holds bin/helm)"
        )
    return HELM


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment in which helm cannot reach any cluster or read the user's config."""
    home = tmp_path_factory.mktemp("helm-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "HELM_"))}
    env.update(
        HOME=str(home),
        KUBECONFIG=str(home / "no-kubeconfig"),
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
    )
    return env


def run_helm(helm: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def set_args(values: Sequence[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        out += ["--set", value]
    return out


def template_cmd(*extra: str) -> list[str]:
    return ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, *extra]


def render(helm: Path, env: dict[str, str], *values: str) -> list[Obj]:
    result = run_helm(helm, env, *template_cmd(*set_args(values)))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def only(docs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def kinds(docs: list[Obj]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def as_rules(role: Obj) -> list[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]]:
    return [(tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r["verbs"])) for r in role["rules"]]


def operator_container(docs: list[Obj]) -> Obj:
    containers: list[Obj] = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return containers[0]


@pytest.fixture(scope="module")
def default_docs(helm: Path, helm_env: dict[str, str]) -> list[Obj]:
    return render(helm, helm_env)


# --- chart metadata and lint -------------------------------------------------------------------


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "kubeforge"
    assert chart["version"] == "0.1.0"
    assert chart["appVersion"] == "0.1.0"
    assert chart["kubeVersion"] == ">=1.30.0-0"


LINT_CASES: dict[str, list[str]] = {
    "defaults": [],
    "single-replica-no-election": ["replicaCount=1", "leaderElection.enabled=false"],
    "ha-tuned": [
        "replicaCount=3",
        "leaderElection.leaseDurationSeconds=30",
        "leaderElection.renewDeadlineSeconds=20",
        "leaderElection.retryPeriodSeconds=4",
        "podDisruptionBudget.maxUnavailable=50%",
        "maxConcurrentReconciles=25",
        "resyncSeconds=600",
    ],
    "namespaced": ["watchNamespaces={team-a,team-b}"],
    "everything-on": [
        "prometheus.url=http://prometheus.monitoring.svc:9090",
        "metrics.serviceMonitor.enabled=true",
        "networkPolicy.enabled=true",
        "priorityClassName=system-cluster-critical",
        "image.digest=sha256:" + "a" * 64,
    ],
    "no-rbac-no-sa": ["rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=ops"],
}


@pytest.mark.parametrize("values", LINT_CASES.values(), ids=LINT_CASES.keys())
def test_helm_lint_strict(helm: Path, helm_env: dict[str, str], values: list[str]) -> None:
    result = run_helm(
        helm, helm_env, "lint", str(CHART), "--strict", "--namespace", NAMESPACE, *set_args(values)
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_old_kubernetes_is_refused(helm: Path, helm_env: dict[str, str]) -> None:
    cmd = ["template", RELEASE, str(CHART), "--kube-version", "1.29.9"]
    result = run_helm(helm, helm_env, *cmd)
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr


def test_default_objects(default_docs: list[Obj]) -> None:
    assert kinds(default_docs) == sorted(
        [
            "ServiceAccount",
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "Service",
            "NetworkPolicy",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicyBinding",
            "Role",
            "RoleBinding",
            "Role",
            "RoleBinding",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
        ]
    )


def test_every_object_carries_the_standard_labels(default_docs: list[Obj]) -> None:
    for doc in default_docs:
        labels = doc["metadata"]["labels"]
        for key in STANDARD_LABELS:
            assert labels.get(key), f"{doc['kind']} {doc['metadata']['name']} lacks {key}"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["helm.sh/chart"] == "kubeforge-0.1.0"


def test_namespaced_objects_are_in_the_release_namespace(default_docs: list[Obj]) -> None:
    for doc in default_docs:
        if not doc["kind"].startswith(("Cluster", "ValidatingAdmission")):
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]


# --- Deployment --------------------------------------------------------------------------------


def test_deployment_shape(default_docs: list[Obj]) -> None:
    deploy = only(default_docs, "Deployment", RELEASE)
    spec = deploy["spec"]
    assert spec["replicas"] == 2
    # A new pod starts as a standby before an old one stops; never fewer ready pods than replicas.
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    selector = spec["selector"]["matchLabels"]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == RELEASE
    assert pod["automountServiceAccountToken"] is True
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}


def test_container_image_ports_probes_resources(default_docs: list[Obj]) -> None:
    container = operator_container(default_docs)
    assert container["image"] == "ghcr.io/kubeforge/kubeforge:0.1.0"
    assert container["imagePullPolicy"] == "IfNotPresent"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    assert container["resources"]["limits"]["memory"] == "512Mi"


@pytest.mark.parametrize(
    ("values", "image"),
    [
        (["image.tag=v9"], "ghcr.io/kubeforge/kubeforge:v9"),
        (["image.repository=registry.local/kf", "image.tag=dev"], "registry.local/kf:dev"),
        (["image.digest=sha256:" + "b" * 64], "ghcr.io/kubeforge/kubeforge@sha256:" + "b" * 64),
    ],
)
def test_image_reference(helm: Path, helm_env: dict[str, str], values: list[str], image: str) -> None:
    assert operator_container(render(helm, helm_env, *values))["image"] == image


def test_pod_passes_restricted_pod_security(default_docs: list[Obj]) -> None:
    pod = only(default_docs, "Deployment")["spec"]["template"]["spec"]
    pod_sc = pod["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == 65532
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod
    assert "hostPID" not in pod
    assert "hostIPC" not in pod
    assert all("hostPath" not in v for v in pod.get("volumes", []))
    sc = operator_container([only(default_docs, "Deployment")])["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc.get("privileged", False) is False


BASE_ARGS = [
    "run",
    "--in-cluster",
    "--metrics-port",
    "8080",
    "--health-port",
    "8081",
    "--log-format",
    "json",
    "--max-concurrent-reconciles=10",
    "--resync-seconds=300",
    "--usage-checkpoint-seconds=3600",
    "--max-schedule-timeout-seconds=300",
    "--max-unplaced-gpus-per-namespace=0",
    "--gpu-return-after-seconds=300",
    "--gpu-catalog=/etc/kubeforge/catalog/catalog.yaml",
]
# The trust boundary's flags (docs/security.md), after the namespaces.
TRUST_ARGS = ["--metrics-bind-address=0.0.0.0", "--metrics-auth", "--allowed-priority-classes="]
ALL_NAMESPACES = ["--all-namespaces", *TRUST_ARGS]
OWN_NAMESPACE = ["--namespace", NAMESPACE, *TRUST_ARGS]
LEADER_ARGS = [
    "--leader-elect",
    f"--leader-election-namespace={NAMESPACE}",
    f"--leader-election-id={RELEASE}",
    "--leader-election-lease-duration=15",
    "--leader-election-renew-deadline=10",
    "--leader-election-retry-period=2",
]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], [*BASE_ARGS, *LEADER_ARGS, *OWN_NAMESPACE]),
        (["watchNamespaces={*}"], [*BASE_ARGS, *LEADER_ARGS, *ALL_NAMESPACES]),
        (["watchNamespaces={ml}"], [*BASE_ARGS, *LEADER_ARGS, "--namespace", "ml", *TRUST_ARGS]),
        (
            ["watchNamespaces={team-a,team-b}"],
            [*BASE_ARGS, *LEADER_ARGS, "--namespace", "team-a", "--namespace", "team-b", *TRUST_ARGS],
        ),
        (
            ["priorityClasses.allowed={batch-low,serving}", "metrics.bindAddress=127.0.0.1"],
            [
                *BASE_ARGS,
                *LEADER_ARGS,
                "--namespace",
                NAMESPACE,
                "--metrics-bind-address=127.0.0.1",
                "--metrics-auth",
                "--allowed-priority-classes=batch-low,serving",
            ],
        ),
        (
            ["prometheus.url=http://prom.monitoring.svc:9090"],
            [
                *BASE_ARGS,
                *LEADER_ARGS,
                *OWN_NAMESPACE,
                "--prometheus-url",
                "http://prom.monitoring.svc:9090",
            ],
        ),
        (
            ["metrics.port=9000", "health.port=9001", "extraArgs={--verbose}"],
            [
                "run",
                "--in-cluster",
                "--metrics-port",
                "9000",
                "--health-port",
                "9001",
                "--log-format",
                "json",
                "--max-concurrent-reconciles=10",
                "--resync-seconds=300",
                "--usage-checkpoint-seconds=3600",
                "--max-schedule-timeout-seconds=300",
                "--max-unplaced-gpus-per-namespace=0",
                "--gpu-return-after-seconds=300",
                "--gpu-catalog=/etc/kubeforge/catalog/catalog.yaml",
                *LEADER_ARGS,
                *OWN_NAMESPACE,
                "--verbose",
            ],
        ),
        (
            [
                "maxConcurrentReconciles=32",
                "resyncSeconds=1800000",
                "usageCheckpointSeconds=7200",
                "leaderElection.leaseDurationSeconds=60",
                "leaderElection.renewDeadlineSeconds=40",
                "leaderElection.retryPeriodSeconds=5",
                "gangAdmission.maxScheduleTimeoutSeconds=120",
                "gangAdmission.maxUnplacedGpusPerNamespace=64",
                "arbitration.gpuReturnAfterSeconds=60",
            ],
            [
                *BASE_ARGS[:-7],
                "--max-concurrent-reconciles=32",
                "--resync-seconds=1800000",  # not 1.8e+06
                "--usage-checkpoint-seconds=7200",
                "--max-schedule-timeout-seconds=120",
                "--max-unplaced-gpus-per-namespace=64",
                "--gpu-return-after-seconds=60",
                "--gpu-catalog=/etc/kubeforge/catalog/catalog.yaml",
                "--leader-elect",
                f"--leader-election-namespace={NAMESPACE}",
                f"--leader-election-id={RELEASE}",
                "--leader-election-lease-duration=60",
                "--leader-election-renew-deadline=40",
                "--leader-election-retry-period=5",
                *OWN_NAMESPACE,
            ],
        ),
        (
            ["replicaCount=1", "leaderElection.enabled=false"],
            [*BASE_ARGS, *OWN_NAMESPACE],
        ),
    ],
    ids=[
        "release-namespace",
        "all-namespaces",
        "one-namespace",
        "two-namespaces",
        "priority-classes-and-metrics-address",
        "prometheus",
        "ports-and-extra-args",
        "tuning-and-timings",
        "no-leader-election",
    ],
)
def test_operator_args(helm: Path, helm_env: dict[str, str], values: list[str], expected: list[str]) -> None:
    container = operator_container(render(helm, helm_env, *values))
    assert container["args"] == expected
    assert all(isinstance(a, str) for a in container["args"])


def test_scheduling_values_reach_the_pod(helm: Path, helm_env: dict[str, str]) -> None:
    docs = render(
        helm,
        helm_env,
        "priorityClassName=kf-critical",
        "podAnnotations.example\\.com/a=hello",
        "podLabels.team=ml",
        "tolerations[0].key=dedicated",
        "tolerations[0].operator=Exists",
        "nodeSelector.pool=system",
    )
    template = only(docs, "Deployment")["spec"]["template"]
    assert template["metadata"]["annotations"]["example.com/a"] == "hello"
    assert template["metadata"]["labels"]["team"] == "ml"
    pod = template["spec"]
    assert pod["priorityClassName"] == "kf-critical"
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert pod["nodeSelector"]["pool"] == "system"


# --- RBAC --------------------------------------------------------------------------------------


def rbac_roles(docs: list[Obj]) -> Iterator[Obj]:
    return (d for d in docs if d["kind"] in ("ClusterRole", "Role"))


@pytest.mark.parametrize("values", LINT_CASES.values(), ids=LINT_CASES.keys())
def test_rbac_has_no_wildcards_and_no_secrets(
    helm: Path, helm_env: dict[str, str], values: list[str]
) -> None:
    for role in rbac_roles(render(helm, helm_env, *values)):
        if role["metadata"]["name"] == METRICS_READER:
            # Not the operator's: for scrapers, and only `get /metrics`.
            assert role["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
            continue
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)
            assert not any(r.endswith("/*") for r in rule["resources"])
            assert "secrets" not in rule["resources"], (role["metadata"]["name"], rule)
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
            assert "nonResourceURLs" not in rule


@pytest.fixture(scope="module")
def all_namespaces_docs(helm: Path, helm_env: dict[str, str]) -> list[Obj]:
    return render(helm, helm_env, "watchNamespaces={*}")


def test_cluster_wide_rbac_is_exactly_what_the_operator_uses(all_namespaces_docs: list[Obj]) -> None:
    default_docs = all_namespaces_docs
    role = only(default_docs, "ClusterRole", RELEASE)
    assert as_rules(role) == CLUSTER_RULES + NAMESPACED_RULES
    binding = only(default_docs, "ClusterRoleBinding", RELEASE)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": RELEASE,
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]
    namespaced = [d["metadata"]["name"] for d in default_docs if d["kind"] in ("Role", "RoleBinding")]
    assert namespaced == [LEADER_ELECTION_ROLE, LEADER_ELECTION_ROLE]


def test_operator_never_creates_updates_or_deletes_user_objects(all_namespaces_docs: list[Obj]) -> None:
    """The only exception: a finished TrainingJob past `ttlSecondsAfterFinished` is deleted."""
    for group, resources, verbs in as_rules(only(all_namespaces_docs, "ClusterRole", RELEASE)):
        if "kubeforge.dev" not in group:
            continue
        allowed = {"delete"} if resources == ("trainingjobs",) else set()
        assert not ({"create", "update", "delete", "deletecollection"} - allowed) & set(verbs), resources


def test_watch_namespaces_renders_roles_per_namespace(helm: Path, helm_env: dict[str, str]) -> None:
    docs = render(helm, helm_env, "watchNamespaces={team-a,team-b}")
    cluster_role = only(docs, "ClusterRole", RELEASE)
    assert as_rules(cluster_role) == RESTRICTED_CLUSTER_RULES
    blind = render(helm, helm_env, "watchNamespaces={team-a}", "gangAdmission.readPodsInAllNamespaces=false")
    assert as_rules(only(blind, "ClusterRole", RELEASE)) == CLUSTER_RULES
    only(docs, "ClusterRoleBinding", RELEASE)
    roles = {
        d["metadata"]["namespace"]: d
        for d in docs
        if d["kind"] == "Role" and d["metadata"]["name"] == RELEASE
    }
    bindings = {
        d["metadata"]["namespace"]: d
        for d in docs
        if d["kind"] == "RoleBinding" and d["metadata"]["name"] == RELEASE
    }
    assert sorted(roles) == sorted(bindings) == ["team-a", "team-b"]
    for namespace, role in roles.items():
        assert role["metadata"]["name"] == RELEASE
        assert as_rules(role) == NAMESPACED_RULES
        binding = bindings[namespace]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": RELEASE,
        }
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]


def test_aggregated_user_roles(default_docs: list[Obj]) -> None:
    edit = only(default_docs, "ClusterRole", f"{RELEASE}-edit")
    view = only(default_docs, "ClusterRole", f"{RELEASE}-view")
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    edit_rules = as_rules(edit)
    assert (
        ("kubeforge.dev",),
        ("trainingjobs", "inferencefleets"),
        ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"),
    ) in edit_rules
    # Users never write status: the operator owns it.
    assert not any(r.endswith("/status") for _, resources, _ in edit_rules for r in resources)
    for _, _, verbs in as_rules(view):
        assert set(verbs) <= {"get", "list", "watch"}


@pytest.mark.parametrize(
    ("values", "absent"),
    [
        (["rbac.aggregateToDefaultRoles=false"], {f"{RELEASE}-edit", f"{RELEASE}-view"}),
        (["rbac.create=false"], {RELEASE, f"{RELEASE}-edit", f"{RELEASE}-view"}),
    ],
)
def test_rbac_toggles(helm: Path, helm_env: dict[str, str], values: list[str], absent: set[str]) -> None:
    docs = render(helm, helm_env, *values)
    names = {d["metadata"]["name"] for d in docs if d["kind"].startswith("Cluster")}
    assert not names & absent
    if "rbac.create=false" in values:
        assert not {"Role", "RoleBinding"} & set(kinds(docs))


def test_existing_service_account(helm: Path, helm_env: dict[str, str]) -> None:
    docs = render(helm, helm_env, "serviceAccount.create=false", "serviceAccount.name=ops-sa")
    assert "ServiceAccount" not in kinds(docs)
    assert only(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops-sa"
    binding = only(docs, "ClusterRoleBinding")
    assert binding["subjects"][0]["name"] == "ops-sa"
    assert only(docs, "RoleBinding", LEADER_ELECTION_ROLE)["subjects"][0]["name"] == "ops-sa"
    result = run_helm(helm, helm_env, *template_cmd("--set", "serviceAccount.create=false"))
    assert result.returncode != 0
    assert "serviceAccount.name is required" in result.stderr


# --- optional objects --------------------------------------------------------------------------


def test_service_monitor_is_opt_in(helm: Path, helm_env: dict[str, str], default_docs: list[Obj]) -> None:
    assert "ServiceMonitor" not in kinds(default_docs)
    docs = render(
        helm, helm_env, "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom"
    )
    monitor = only(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    service = only(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def test_metrics_service_targets_the_metrics_port(default_docs: list[Obj]) -> None:
    service = only(default_docs, "Service", f"{RELEASE}-metrics")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = only(default_docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_service_monitor_needs_the_service(helm: Path, helm_env: dict[str, str]) -> None:
    cmd = template_cmd(
        "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false"
    )
    result = run_helm(helm, helm_env, *cmd)
    assert result.returncode != 0
    assert "metrics.service.enabled" in result.stderr


def test_network_policy_is_on_by_default(
    helm: Path, helm_env: dict[str, str], default_docs: list[Obj]
) -> None:
    assert "NetworkPolicy" not in kinds(render(helm, helm_env, "networkPolicy.enabled=false"))
    docs = default_docs
    policy = only(docs, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert {53, 443, 6443} <= egress_ports
    pod_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()


# --- high availability: leader election, PodDisruptionBudget, anti-affinity --------------------


def test_leader_election_role_allows_only_the_one_lease(default_docs: list[Obj]) -> None:
    role = only(default_docs, "Role", LEADER_ELECTION_ROLE)
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == LEADER_ELECTION_RULES
    binding = only(default_docs, "RoleBinding", LEADER_ELECTION_ROLE)
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": LEADER_ELECTION_ROLE,
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]


def test_events_are_allowed_wherever_the_operator_reconciles(all_namespaces_docs: list[Obj]) -> None:
    rules = as_rules(only(all_namespaces_docs, "ClusterRole", RELEASE))
    assert (("",), ("events",), ("create", "patch")) in rules
    assert (("events.k8s.io",), ("events",), ("create", "patch")) in rules


def test_lease_name_follows_the_full_name(helm: Path, helm_env: dict[str, str]) -> None:
    docs = render(helm, helm_env, "fullnameOverride=kf-ops")
    assert "--leader-election-id=kf-ops" in operator_container(docs)["args"]
    role = only(docs, "Role", "kf-ops-leader-election")
    assert role["rules"][0]["resourceNames"] == ["kf-ops"]


def test_default_is_two_replicas_with_a_disruption_budget(default_docs: list[Obj]) -> None:
    deploy = only(default_docs, "Deployment")
    assert deploy["spec"]["replicas"] == 2
    pdb = only(default_docs, "PodDisruptionBudget", RELEASE)
    assert pdb["apiVersion"] == "policy/v1"
    # maxUnavailable >= 1: a drain can always evict one pod; a stuck pod never blocks it.
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_rollout_cannot_deadlock_on_the_budget(default_docs: list[Obj]) -> None:
    """The rollout surges a new pod before stopping an old one (the Deployment controller deletes pods
    itself, never through the eviction API the budget guards), and the budget always allows one."""
    strategy = only(default_docs, "Deployment")["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxSurge"] >= 1
    assert only(default_docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] >= 1


@pytest.mark.parametrize(
    "values",
    [["replicaCount=1"], ["replicaCount=0"], ["podDisruptionBudget.enabled=false"]],
    ids=["one-replica", "stopped", "disabled"],
)
def test_no_disruption_budget(helm: Path, helm_env: dict[str, str], values: list[str]) -> None:
    docs = render(helm, helm_env, *values)
    assert "PodDisruptionBudget" not in kinds(docs)


def test_one_replica_keeps_leader_election_and_rolling_updates(helm: Path, helm_env: dict[str, str]) -> None:
    docs = render(helm, helm_env, "replicaCount=1")
    assert only(docs, "Deployment")["spec"]["replicas"] == 1
    assert only(docs, "Deployment")["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "--leader-elect" in operator_container(docs)["args"]
    only(docs, "Role", LEADER_ELECTION_ROLE)


def test_disruption_budget_as_a_percentage(helm: Path, helm_env: dict[str, str]) -> None:
    docs = render(helm, helm_env, "replicaCount=4", "podDisruptionBudget.maxUnavailable=50%")
    assert only(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == "50%"


def test_without_leader_election_one_replica_recreates(helm: Path, helm_env: dict[str, str]) -> None:
    docs = render(helm, helm_env, "replicaCount=1", "leaderElection.enabled=false")
    assert only(docs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert not [a for a in operator_container(docs)["args"] if a.startswith("--leader-elect")]
    assert "PodDisruptionBudget" not in kinds(docs)
    roles = {d["metadata"]["name"] for d in docs if d["kind"] in ("Role", "RoleBinding")}
    assert roles == {RELEASE}, "no leader-election Role; the operator's own Role in its namespace"


@pytest.mark.parametrize("replicas", [2, 3])
def test_several_replicas_without_leader_election_fail(
    helm: Path, helm_env: dict[str, str], replicas: int
) -> None:
    cmd = template_cmd("--set", "leaderElection.enabled=false", "--set", f"replicaCount={replicas}")
    result = run_helm(helm, helm_env, *cmd)
    assert result.returncode != 0
    assert f"replicaCount is {replicas} but leaderElection.enabled is false" in result.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            ["leaderElection.renewDeadlineSeconds=15"],
            "leaseDurationSeconds (15) must be greater than leaderElection.renewDeadlineSeconds (15)",
        ),
        (
            ["leaderElection.leaseDurationSeconds=8"],
            "leaseDurationSeconds (8) must be greater than leaderElection.renewDeadlineSeconds (10)",
        ),
        (
            ["leaderElection.retryPeriodSeconds=9"],
            "renewDeadlineSeconds (10) must be greater than 1.2 x leaderElection.retryPeriodSeconds (9)",
        ),
        (
            ["leaderElection.renewDeadlineSeconds=6", "leaderElection.retryPeriodSeconds=5"],
            "renewDeadlineSeconds (6) must be greater than 1.2 x leaderElection.retryPeriodSeconds (5)",
        ),
    ],
)
def test_unsafe_election_timings_fail(
    helm: Path, helm_env: dict[str, str], values: list[str], message: str
) -> None:
    result = run_helm(helm, helm_env, *template_cmd(*set_args(values)))
    assert result.returncode != 0
    assert message in result.stderr


def test_default_anti_affinity_spreads_replicas_over_nodes(default_docs: list[Obj]) -> None:
    deploy = only(default_docs, "Deployment")
    affinity = deploy["spec"]["template"]["spec"]["affinity"]
    assert affinity == {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": deploy["spec"]["selector"]["matchLabels"]},
                    },
                }
            ]
        }
    }


def test_user_affinity_replaces_the_default(helm: Path, helm_env: dict[str, str]) -> None:
    docs = render(
        helm,
        helm_env,
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
        ".matchExpressions[0].key=pool",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
        ".matchExpressions[0].operator=Exists",
    )
    affinity = only(docs, "Deployment")["spec"]["template"]["spec"]["affinity"]
    assert list(affinity) == ["nodeAffinity"]


# --- the values schema refuses typos -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("replicaCountt=2", "additional properties 'replicaCountt' not allowed"),
        ("image.tagg=x", "additional properties 'tagg' not allowed"),
        ("metrics.serviceMonitor.enable=true", "additional properties 'enable' not allowed"),
        ("rbac.createe=false", "additional properties 'createe' not allowed"),
        ("resources.request.cpu=1", "additional properties 'request' not allowed"),
        ("networkPolicy.metricsFrom[0].podselector.app=x", "additional properties 'podselector' not allowed"),
        ("replicaCount=-1", "replicaCount"),
        ("leaderElection.leaseDuration=15", "additional properties 'leaseDuration' not allowed"),
        ("leaderElection.enable=false", "additional properties 'enable' not allowed"),
        ("leaderElection.leaseDurationSeconds=15s", "leaderElection/leaseDurationSeconds"),
        ("leaderElection.retryPeriodSeconds=0", "leaderElection/retryPeriodSeconds"),
        ("maxConcurrentReconciles=0", "maxConcurrentReconciles"),
        ("maxConcurrentReconciles=101", "maxConcurrentReconciles"),
        ("resyncSeconds=10", "resyncSeconds"),
        ("podDisruptionBudget.maxUnavailable=0", "podDisruptionBudget/maxUnavailable"),
        ("podDisruptionBudget.maxUnavailable=0%", "podDisruptionBudget/maxUnavailable"),
        ("podDisruptionBudget.minAvailable=1", "additional properties 'minAvailable' not allowed"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("watchNamespaces={Team_A}", "watchNamespaces"),
        ("metrics.port=0", "metrics/port"),
        ("prometheus.url=prometheus:9090", "prometheus/url"),
    ],
)
def test_values_schema_refuses_mistakes(
    helm: Path, helm_env: dict[str, str], value: str, message: str
) -> None:
    result = run_helm(helm, helm_env, *template_cmd("--set", value))
    assert result.returncode != 0, f"--set {value} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr


def test_values_file_typo_fails_lint(helm: Path, helm_env: dict[str, str], tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"serviceAccount": {"annotation": {"a": "b"}}}))
    result = run_helm(helm, helm_env, "lint", str(CHART), "--values", str(values))
    assert result.returncode != 0
    assert "additional properties 'annotation' not allowed" in result.stdout + result.stderr


def schema_objects(node: Any, path: str = "") -> Iterator[tuple[str, Obj]]:
    if isinstance(node, dict):
        if node.get("type") == "object" and path != "/properties/global":
            yield path, node
        for key, child in node.items():
            yield from schema_objects(child, f"{path}/{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from schema_objects(child, f"{path}/{i}")


def test_schema_closes_every_object() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    for path, node in schema_objects(schema):
        if "properties" in node:
            assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
        else:
            # Free-form maps (labels, annotations, quantities) must still type their values,
            # or be a Kubernetes object checked by the API server (affinity's nested fields).
            assert "additionalProperties" in node or path.startswith(
                ("/properties/affinity/", "/definitions/envVar/properties/valueFrom/")
            ), f"{path} is an untyped object"


def leaf_keys(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict) and node:
        for key, child in node.items():
            yield from leaf_keys(child, f"{prefix}{key}.")
    else:
        yield prefix.rstrip(".")


FREE_FORM = ("resources", "nodeSelector", "networkPolicy.egress")


def test_values_are_documented_in_readme() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE))
    for key in leaf_keys(values):
        key = next((f for f in FREE_FORM if key.startswith(f)), key)
        assert key in documented, f"values key {key} is missing from the README table"


def test_values_yaml_comments_every_key() -> None:
    """Every setting in values.yaml has a `# --` comment right above it (parents are headings)."""
    text = (CHART / "values.yaml").read_text()
    settings = {next((f for f in FREE_FORM if k.startswith(f)), k) for k in leaf_keys(yaml.safe_load(text))}
    lines = text.splitlines()
    stack: list[tuple[int, str]] = []
    seen: set[str] = set()
    for i, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line)
        if match is None:
            continue
        indent = len(match.group(1))
        stack = [(n, k) for n, k in stack if n < indent] + [(indent, match.group(2))]
        path = ".".join(k for _, k in stack)
        if path in settings:
            seen.add(path)
            above = lines[i - 1].strip() if i else ""
            assert above.startswith("#"), f"values.yaml line {i + 1}: {path} has no comment"
    assert seen == settings


# --- CRDs (generated by `kubeforge crds`) ------------------------------------------------------


def test_crds_are_shipped_when_generated(helm: Path, helm_env: dict[str, str]) -> None:
    crd_files = sorted((CHART / "crds").glob("*.yaml"))
    if not crd_files:
        pytest.skip("charts/kubeforge/crds/ is empty: run `kubeforge crds` to generate the CRDs")
    result = run_helm(helm, helm_env, *template_cmd("--include-crds"))
    assert result.returncode == 0, result.stderr
    crds = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "CustomResourceDefinition"]
    names = {d["metadata"]["name"] for d in crds}
    assert {"trainingjobs.kubeforge.dev", "inferencefleets.kubeforge.dev"} <= names


# --- the trust boundary: admission policies, namespaces (docs/security.md) ---------------------


def test_operator_writes_policy_binds_to_the_operator_only(default_docs: list[Obj]) -> None:
    policy = only(default_docs, "ValidatingAdmissionPolicy", f"{RELEASE}-operator-writes")["spec"]
    assert policy["failurePolicy"] == "Fail"
    [condition] = policy["matchConditions"]
    assert condition["expression"] == (
        f"request.userInfo.username == 'system:serviceaccount:{NAMESPACE}:{RELEASE}'"
    )
    resources = {r for rule in policy["matchConstraints"]["resourceRules"] for r in rule["resources"]}
    assert resources == {
        "pods",
        "services",
        "deployments",
        "controllerrevisions",
        "jobs",
        "poddisruptionbudgets",
        "networkpolicies",
        "workloads",
    }
    expressions = [v["expression"] for v in policy["validations"]]
    assert "request.namespace != 'kube-system'" in expressions
    assert f'request.namespace in ["{NAMESPACE}"]' in expressions
    assert any("app.kubernetes.io/managed-by" in e for e in expressions)
    # Each pod-spec check exists for pods and for the templates of Jobs and Deployments.
    assert sum(e.startswith("!variables.isPod") for e in expressions) == 6
    assert sum(e.startswith("!variables.hasTemplate") for e in expressions) == 5
    binding = only(default_docs, "ValidatingAdmissionPolicyBinding", f"{RELEASE}-operator-writes")
    assert binding["spec"] == {"policyName": f"{RELEASE}-operator-writes", "validationActions": ["Deny"]}


@pytest.mark.parametrize(
    ("values", "allowed", "namespaces"),
    [
        ([], [], [NAMESPACE]),
        (["priorityClasses.allowed={batch-low,serving}"], ["batch-low", "serving"], [NAMESPACE]),
        (["watchNamespaces={team-a,team-b}"], [], ["team-a", "team-b"]),
        (["watchNamespaces={*}"], [], None),
    ],
)
def test_priority_class_policy(
    helm: Path, helm_env: dict[str, str], values: list[str], allowed: list[str], namespaces: list[str] | None
) -> None:
    docs = render(helm, helm_env, *values)
    policy = only(docs, "ValidatingAdmissionPolicy", f"{RELEASE}-priority-classes")["spec"]
    assert policy["variables"] == [
        {"name": "allowed", "expression": json.dumps(allowed, separators=(",", ":"))}
    ]
    selector = policy["matchConstraints"].get("namespaceSelector")
    if namespaces is None:
        assert selector is None
    else:
        assert selector["matchExpressions"][0]["values"] == namespaces
    assert f"--allowed-priority-classes={','.join(allowed)}" in operator_container(docs)["args"]
    binding = only(docs, "ValidatingAdmissionPolicyBinding", f"{RELEASE}-priority-classes")
    assert binding["spec"]["validationActions"] == ["Deny"]


def test_every_namespace_is_asked_for_alone(helm: Path, helm_env: dict[str, str]) -> None:
    result = run_helm(helm, helm_env, *template_cmd("--set", "watchNamespaces={*,team-a}"))
    assert result.returncode != 0
    assert "must be the only entry" in result.stderr
    docs = render(helm, helm_env, "watchNamespaces={*}")
    policy = only(docs, "ValidatingAdmissionPolicy", f"{RELEASE}-operator-writes")["spec"]
    assert not [v for v in policy["validations"] if v["expression"].startswith("request.namespace in")]


def test_admission_policies_can_be_left_out(helm: Path, helm_env: dict[str, str]) -> None:
    docs = render(helm, helm_env, "admissionPolicy.enabled=false")
    assert not [d for d in docs if d["kind"].startswith("ValidatingAdmission")]


def test_metrics_auth_is_on_by_default(helm: Path, helm_env: dict[str, str], default_docs: list[Obj]) -> None:
    assert "--metrics-auth" in operator_container(default_docs)["args"]
    only(default_docs, "ClusterRole", METRICS_READER)
    docs = render(helm, helm_env, "metrics.serviceMonitor.enabled=true")
    endpoint = only(docs, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    off = render(helm, helm_env, "metrics.auth.enabled=false", "metrics.serviceMonitor.enabled=true")
    assert "--metrics-auth" not in operator_container(off)["args"]
    assert not [d for d in off if d["metadata"]["name"] == METRICS_READER]
    assert as_rules(only(off, "ClusterRole", RELEASE)) == RESTRICTED_CLUSTER_RULES[:3]
    assert "bearerTokenFile" not in only(off, "ServiceMonitor")["spec"]["endpoints"][0]


# --- the GPU catalog ---------------------------------------------------------------------------

OWN_CATALOG = (
    "gpuCatalog.gpus[0].name=X1",
    "gpuCatalog.gpus[0].products[0]=VENDOR-X1",
    "gpuCatalog.gpus[0].memoryGiB=40",
    "gpuCatalog.gpus[0].pricePerHour.onDemand=2",
    "gpuCatalog.gpus[0].power.tdpWatts=300",
    "gpuCatalog.gpus[0].power.idleWatts=30",
    "gpuCatalog.gpus[0].throughput.training=1",
    "gpuCatalog.gpus[0].throughput.inference=1",
)


def test_the_operator_reads_the_gpu_catalog_the_chart_installs(default_docs: list[Obj]) -> None:
    config_map = only(default_docs, "ConfigMap")
    assert config_map["metadata"]["name"] == f"{RELEASE}-gpu-catalog"
    assert parse_catalog(config_map["data"]["catalog.yaml"]) == DEFAULT_CATALOG
    operator = operator_container(default_docs)
    mount = next(m for m in operator["volumeMounts"] if m["name"] == "gpu-catalog")
    assert f"--gpu-catalog={mount['mountPath']}/catalog.yaml" in operator["args"]
    volumes = only(default_docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    volume = next(v for v in volumes if v["name"] == "gpu-catalog")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]


def test_a_catalog_from_the_values_replaces_the_default_and_rolls_the_operator(
    helm: Path, helm_env: dict[str, str], default_docs: list[Obj]
) -> None:
    def checksum(docs: list[Obj]) -> str:
        annotations = only(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["kubeforge.dev/gpu-catalog-checksum"])

    own = render(helm, helm_env, *OWN_CATALOG)
    assert [g.name for g in parse_catalog(only(own, "ConfigMap")["data"]["catalog.yaml"]).gpus] == ["X1"]
    assert checksum(own) != checksum(default_docs)


def test_a_catalog_missing_a_price_is_refused_at_install(helm: Path, helm_env: dict[str, str]) -> None:
    values = [v for v in OWN_CATALOG if "pricePerHour" not in v]
    result = run_helm(helm, helm_env, *template_cmd(*set_args(values)))
    assert result.returncode != 0
    assert "pricePerHour" in result.stderr
