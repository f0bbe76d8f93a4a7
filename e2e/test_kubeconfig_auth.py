"""Logging in the way managed clusters do: exec credential plugins (v1 and v1beta1) that print a
ServiceAccount token or the admin client certificate, for the CLI run as `kubectl kubeforge` and for
`kubeforge run --kubeconfig`, which must keep working when credentials expire or are revoked.

Every process gets HOME and KUBECONFIG set by the test: nothing reads the ambient ~/.kube/config."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import yaml

from kubeforge_e2e import Kubectl, LocalCluster, wait_for
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.workloads import (
    IMAGE,
    fleet,
    get_fleet,
    kubectl_kubeforge,
    plugin_env,
    start_operator,
    wait_ready,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

V1, V1BETA1 = "client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"


def write_plugin(
    directory: Path,
    api_version: str,
    *,
    ttl: float,
    token_file: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
) -> tuple[Path, Path]:
    """An exec plugin that prints what is in `token_file` (read at each run: the test may rotate it) or the
    certificate `cert`/`key`, valid for `ttl` seconds from now; each run is logged (one line)."""
    log = directory / "plugin-runs.log"
    script = directory / "credential-plugin"
    script.write_text(
        f"#!{sys.executable}\n"
        "import datetime, json, os\n"
        f"status = {{}}\n"
        f"token_file, cert, key = {str(token_file) if token_file else None!r}, "
        f"{str(cert) if cert else None!r}, {str(key) if key else None!r}\n"
        "if token_file:\n"
        "    status['token'] = open(token_file).read().strip()\n"
        "else:\n"
        "    status['clientCertificateData'] = open(cert).read()\n"
        "    status['clientKeyData'] = open(key).read()\n"
        f"expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds={ttl})\n"
        "status['expirationTimestamp'] = expiry.strftime('%Y-%m-%dT%H:%M:%SZ')\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        f"open({str(log)!r}, 'a').write(json.dumps(info) + '\\n')\n"
        f"print(json.dumps({{'apiVersion': {api_version!r}, 'kind': 'ExecCredential', 'status': status}}))\n"
    )
    script.chmod(0o755)
    return script, log


def plugin_runs(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def exec_kubeconfig(
    path: Path,
    api_version: str,
    plugin: Path,
    context: dict[str, str],
    *,
    clusters: Sequence[dict[str, object]] = (),
    **exec_fields: object,
) -> Path:
    """A kubeconfig whose user `exec-user` runs `plugin`, with the context `exec` (current) and the
    given clusters (none: the cluster comes from another file merged through KUBECONFIG)."""
    user = {"exec": {"apiVersion": api_version, "command": str(plugin), **exec_fields}}
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "exec",
        "clusters": list(clusters),
        "users": [{"name": "exec-user", "user": user}],
        "contexts": [{"name": "exec", "context": {**context, "user": "exec-user"}}],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def standalone_kubeconfig(path: Path, cluster: LocalCluster, api_version: str, plugin: Path) -> Path:
    """One file with everything, as `kubeforge run --kubeconfig` takes it (no terminal: Never)."""
    local = {"server": cluster.server, "certificate-authority": str(cluster.ca_file)}
    return exec_kubeconfig(
        path,
        api_version,
        plugin,
        {"cluster": "local"},
        clusters=[{"name": "local", "cluster": local}],
        interactiveMode="Never",
    )


def service_account_token(
    kubectl: Kubectl, namespace: str, name: str, bound_secret: str | None = None
) -> str:
    args = ["create", "token", name, "-n", namespace, "--duration", "1h"]
    if bound_secret:
        args += ["--bound-object-kind", "Secret", "--bound-object-name", bound_secret]
    return kubectl(*args).stdout.strip()


def status_with_token(cluster: LocalCluster, token: str) -> int:
    request = urllib.request.Request(
        f"{cluster.server}/api/v1/namespaces/default", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(
            request, context=ssl.create_default_context(cafile=cluster.ca_file), timeout=10
        ) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def fleet_reader(kubectl: Kubectl, namespace: str) -> str:
    """A ServiceAccount that may only read InferenceFleets in the test's namespace."""
    kubectl("create", "serviceaccount", "fleet-reader", "-n", namespace)
    kubectl(
        "create",
        "role",
        "fleet-reader",
        "-n",
        namespace,
        "--verb=get,list",
        "--resource=inferencefleets.kubeforge.dev",
    )
    kubectl(
        "create",
        "rolebinding",
        "fleet-reader",
        "-n",
        namespace,
        "--role=fleet-reader",
        f"--serviceaccount={namespace}:fleet-reader",
    )
    return "fleet-reader"


@pytest.fixture
def operator_account(kubectl: Kubectl, namespace: str) -> Iterator[str]:
    """A ServiceAccount allowed to run the operator (cluster-admin on this throwaway cluster)."""
    kubectl("create", "serviceaccount", "operator", "-n", namespace)
    binding = f"{namespace}-operator"
    kubectl(
        "create",
        "clusterrolebinding",
        binding,
        "--clusterrole=cluster-admin",
        f"--serviceaccount={namespace}:operator",
    )
    try:
        yield "operator"
    finally:
        kubectl("delete", "clusterrolebinding", binding, "--ignore-not-found", "--wait=false")


# -- the CLI as a kubectl plugin ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["v1-token", "v1beta1-token", "v1-client-certificate"])
def test_kubectl_kubeforge_logs_in_through_an_exec_plugin(
    cluster: LocalCluster,
    kubectl: Kubectl,
    crds: None,
    namespace: str,
    fleet_reader: str,
    tmp_path: Path,
    kind: str,
) -> None:
    api_version = V1BETA1 if kind.startswith("v1beta1") else V1
    if kind.endswith("token"):
        token_file = tmp_path / "token"
        token_file.write_text(service_account_token(kubectl, namespace, fleet_reader))
        plugin, log = write_plugin(tmp_path, api_version, ttl=600, token_file=token_file)
    else:
        pki = cluster.ca_file.parent
        plugin, log = write_plugin(
            tmp_path, api_version, ttl=600, cert=pki / "admin.crt", key=pki / "admin.key"
        )
    kubectl.apply(fleet("chat", replicas=1, resources={"gpus": 1, "gpuType": "L4"}), namespace)
    # Our file first (user, context, current-context), the project's kubeconfig second (the cluster).
    ours = exec_kubeconfig(
        tmp_path / "exec-config",
        api_version,
        plugin,
        {"cluster": "kubeforge-e2e", "namespace": namespace},
        interactiveMode="IfAvailable",
        provideClusterInfo=True,
    )
    env = plugin_env(tmp_path, cluster, [tmp_path / "missing", ours, cluster.kubeconfig])

    # no --kubeconfig, no -n: KUBECONFIG merged, the namespace from the context
    result = kubectl_kubeforge(cluster, env, "rollout", "status", "chat")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == (get_fleet(kubectl, namespace, "chat").get("status") or {}).get(
        "rollout", {}
    )
    assert plugin_runs(log) == 1
    info = json.loads(log.read_text().splitlines()[0])
    assert info["apiVersion"] == api_version
    assert info["spec"]["interactive"] is False
    assert info["spec"]["cluster"]["server"] == cluster.server

    missing = kubectl_kubeforge(cluster, env, "rollout", "status", "absent")
    assert missing.returncode == 1
    assert f"inferencefleet {namespace}/absent not found" in missing.stderr

    if kind.endswith("token"):
        # the token is the ServiceAccount's: its Role ends at its namespace
        other = kubectl_kubeforge(cluster, env, "rollout", "status", "chat", "-n", "default")
        assert other.returncode != 0
        assert "403" in other.stderr or "forbidden" in other.stderr.lower()


# -- the operator with a credential that keeps expiring ---------------------------------------------------


def operator_with_plugin(
    cluster: LocalCluster, tmp_path: Path, namespace: str, api_version: str, plugin: Path, *extra: str
) -> OperatorProcess:
    """`kubeforge run --kubeconfig` with a kubeconfig whose user is the exec plugin, started."""
    kubeconfig = standalone_kubeconfig(tmp_path / "operator-config", cluster, api_version, plugin)
    operator = OperatorProcess(
        kubeconfig,
        tmp_path / "operator.log",
        extra_args=["--namespace", namespace, *extra],
        env=plugin_env(tmp_path, cluster, [Path(os.devnull)]),
    )
    operator.start()
    return operator


def _children_follow(kubectl: Kubectl, namespace: str, name: str, replicas: int) -> None:
    """The operator is alive and writing: a fleet applied now gets its desired replicas in status."""
    kubectl.apply(fleet(name, replicas=replicas, resources={"gpus": 1, "gpuType": "L4"}), namespace)
    wait_for(
        lambda: (get_fleet(kubectl, namespace, name).get("status") or {}).get("desiredReplicas") == replicas,
        timeout=60,
        description=f"fleet {name} reconciled with {replicas} replicas",
    )


@pytest.mark.parametrize("kind", ["v1-token", "v1beta1-client-certificate"])
def test_operator_keeps_working_across_credential_expiries(
    cluster: LocalCluster,
    kubectl: Kubectl,
    crds: None,
    namespace: str,
    operator_account: str,
    tmp_path: Path,
    kind: str,
) -> None:
    if kind == "v1-token":
        token_file = tmp_path / "token"
        token_file.write_text(service_account_token(kubectl, namespace, operator_account))
        plugin, log = write_plugin(tmp_path, V1, ttl=3, token_file=token_file)
        api_version = V1
    else:
        pki = cluster.ca_file.parent
        plugin, log = write_plugin(tmp_path, V1BETA1, ttl=3, cert=pki / "admin.crt", key=pki / "admin.key")
        api_version = V1BETA1
    # Leader election renews its Lease every 2 s: the operator needs the API all the time, and a renewal
    # that failed past the renew deadline would end the process.
    operator = operator_with_plugin(
        cluster,
        tmp_path,
        namespace,
        api_version,
        plugin,
        "--leader-elect",
        "--leader-election-namespace",
        namespace,
    )
    try:
        _children_follow(kubectl, namespace, "before", 1)
        first = plugin_runs(log)
        # past several expiries (3 s each), each noticed by the next request that needed the credential
        wait_for(
            lambda: plugin_runs(log) >= first + 3, timeout=60, description="the plugin run again on expiry"
        )
        _children_follow(kubectl, namespace, "after", 2)
        assert operator.running, operator.tail()
        assert "Unauthorized" not in operator.log_path.read_text()
    finally:
        operator.stop()


def test_operator_logs_in_again_when_its_token_is_revoked(
    cluster: LocalCluster,
    kubectl: Kubectl,
    crds: None,
    namespace: str,
    operator_account: str,
    tmp_path: Path,
) -> None:
    """No expiry announced: only the API server's 401 says the token is gone (its bound Secret deleted)."""
    for secret in ("login-1", "login-2"):
        kubectl("create", "secret", "generic", secret, "-n", namespace)
    token_file = tmp_path / "token"
    old_token = service_account_token(kubectl, namespace, operator_account, bound_secret="login-1")
    token_file.write_text(old_token)
    plugin, log = write_plugin(tmp_path, V1, ttl=3600, token_file=token_file)
    operator = operator_with_plugin(cluster, tmp_path, namespace, V1, plugin)
    try:
        _children_follow(kubectl, namespace, "before", 1)
        assert plugin_runs(log) == 1
        # the login helper hands out a new token; the old one dies with its Secret
        token_file.write_text(
            service_account_token(kubectl, namespace, operator_account, bound_secret="login-2")
        )
        kubectl("delete", "secret", "login-1", "-n", namespace)
        # the API server caches a token's authentication for a few seconds: wait until it refuses it
        wait_for(
            lambda: status_with_token(cluster, old_token) == 401, timeout=60, description="old token refused"
        )
        _children_follow(kubectl, namespace, "after", 2)
        assert plugin_runs(log) == 2
        assert "refused the credential (401)" in operator.log_path.read_text()
        assert operator.running, operator.tail()
    finally:
        operator.stop()


# -- following a rollout live ------------------------------------------------------------------------------


def test_rollout_status_watch_follows_a_rollout_to_the_end(
    cluster: LocalCluster, kubectl: Kubectl, crds: None, namespace: str, tmp_path: Path
) -> None:
    """`kubectl kubeforge rollout status -w` prints the canary step while it waits for a promote, then the
    outcome, and exits 0 — the promote comes from another `kubectl kubeforge` while it is following."""
    operator = start_operator(cluster, namespace, tmp_path)
    env = plugin_env(tmp_path, cluster, [cluster.kubeconfig])
    spec: dict[str, object] = {
        "replicas": 2,
        "resources": {"cpu": "100m"},
        "placement": {"spreadZones": False, "spreadNodes": False},
        "rollout": {"steps": [{"weight": 50}]},  # no pause: the step waits for `rollout promote`
    }
    output = tmp_path / "follow.out"
    # a context of our own, in the test's namespace, over the project's cluster and admin user
    (tmp_path / "ns-config").write_text(
        yaml.safe_dump(
            {
                "current-context": "ns",
                "contexts": [
                    {
                        "name": "ns",
                        "context": {"cluster": "kubeforge-e2e", "user": "admin", "namespace": namespace},
                    }
                ],
            }
        )
    )
    try:
        kubectl.apply(fleet("chat", **spec), namespace)
        wait_ready(kubectl, namespace, "chat")
        kubectl.apply(fleet("chat", **spec, image=IMAGE + "-v2"), namespace)
        with output.open("w") as out:
            follow = subprocess.Popen(
                [str(cluster.bin_dir / "kubectl"), "kubeforge", "rollout", "status", "chat", "-w"],
                env={**env, "KUBECONFIG": f"{tmp_path / 'ns-config'}{os.pathsep}{cluster.kubeconfig}"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for(
                lambda: "50% Paused step 1/1" in output.read_text(),
                timeout=90,
                description="the watch showing the canary step",
            )
            assert follow.poll() is None, output.read_text()  # still following
            promote = kubectl_kubeforge(cluster, env, "rollout", "promote", "chat", "-n", namespace)
            assert promote.returncode == 0, promote.stderr
            assert follow.wait(timeout=90) == 0, output.read_text()
        finally:
            if follow.poll() is None:
                follow.kill()
                follow.wait()
        v2 = get_fleet(kubectl, namespace, "chat")["status"]["rollout"]["stableRevision"]
    finally:
        operator.stop()
    lines = output.read_text().splitlines()
    assert lines[-1] == f"inferencefleet/chat successfully rolled out (revision {v2})"
    assert any("[##########----------]  50% Paused step 1/1, canary " + v2 in line for line in lines), lines
