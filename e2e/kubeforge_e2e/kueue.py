"""Kueue's manager as a process next to the local control plane, for the tests that queue work with it.

Kueue is not started with the cluster (a warm ``make cluster-up`` stays fast): a test session starts it
with :func:`start` and stops it with :func:`stop`. It runs the binary built from the pinned
``sigs.k8s.io/kueue`` module (``e2e/tools/build.sh kueue``), linked into ``.cluster/bin`` and recorded in
``.cluster/run/kueue.pid`` like the control plane's own processes, so ``make cluster-down`` (and every
teardown that stops the cluster) stops it too.

Its webhooks are served on loopback with a certificate signed by the cluster's CA; the webhook
configurations call them by ``url`` with that CA as ``caBundle`` (Kueue's own certificate management,
which needs a Service, is off). Only the batch/Job integration and Kueue's own kinds are served, and the
Job webhooks only see namespaces labelled :data:`NAMESPACE_LABEL`, so a Kueue that is not running never
blocks the Jobs of other tests.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from kubeforge_e2e import pki, procs
from kubeforge_e2e.cluster import ClusterError, LocalCluster
from kubeforge_e2e.operator import free_port
from kubeforge_e2e.paths import BUILD_SCRIPT, cache_dir, read_versions
from kubeforge_e2e.tools import wait_for

PROCESS = "kueue"
BINARY = "kueue-manager"
NAMESPACE = "kueue-system"
# The Job webhooks only act in namespaces with this label (a test labels the namespaces it queues in).
NAMESPACE_LABEL = "kubeforge.dev/e2e-kueue"
# Webhook configuration names, distinct from a Kueue installed by its own manifests.
MUTATING = "kubeforge-e2e-kueue-mutating"
VALIDATING = "kubeforge-e2e-kueue-validating"


def _log(message: str) -> None:
    print(f"[kubeforge-e2e] {message}", file=sys.stderr, flush=True)


# `unshare` (util-linux): a user and mount namespace in which the folder given first is bind-mounted on
# /etc, then the rest of the arguments is exec'd (same pid, so the pid file stays right).
_IN_OWN_ETC = [
    "unshare",
    "--user",
    "--map-root-user",
    "--mount",
    "sh",
    "-c",
    'mount --bind "$1" /etc && shift && exec "$@"',
    "kueue-etc",
]


def _version() -> str:
    return read_versions()["KUEUE_VERSION"]


def _release_dir() -> Path:
    """The cached release: ``crds/`` and ``webhooks.yaml`` copied from the module by build.sh."""
    return cache_dir() / f"kueue-{_version()}"


def ensure_built() -> Path:
    """Build (or find cached) the manager; returns the cached binary."""
    bindir = cache_dir() / "bin"
    release = _release_dir()
    ready = (
        (bindir / f".kueue-{_version()}").is_file()
        and (bindir / BINARY).is_file()
        and (release / "crds").is_dir()
        and (release / "webhooks.yaml").is_file()
    )
    if not ready:
        _log(f"building Kueue {_version()} (a few minutes the first time)")
        result = subprocess.run(["bash", str(BUILD_SCRIPT), "kueue"], check=False)
        if result.returncode != 0:
            raise ClusterError(f"{BUILD_SCRIPT} kueue failed with exit code {result.returncode}")
    return bindir / BINARY


def is_running(cluster: LocalCluster) -> bool:
    pid = procs.recorded(cluster.paths.run).get(PROCESS)
    return pid is not None and procs.is_alive(pid, cluster.marker)


def webhook_configurations(manifests: str, base_url: str, ca_bundle: bytes) -> list[dict[str, Any]]:
    """Kueue's webhook configurations (its ``config/components/webhook/manifests.yaml``) rewritten for a
    manager on loopback: ``url`` instead of a Service, our CA, the batch/Job integration and Kueue's own
    kinds only, and the Job webhooks limited to namespaces labelled :data:`NAMESPACE_LABEL`."""
    names = {"MutatingWebhookConfiguration": MUTATING, "ValidatingWebhookConfiguration": VALIDATING}
    out = []
    for doc in yaml.safe_load_all(manifests):
        if not doc or doc.get("kind") not in names:
            continue
        config = copy.deepcopy(doc)
        config["metadata"] = {"name": names[doc["kind"]]}
        hooks = []
        for hook in config.get("webhooks") or []:
            path = hook["clientConfig"]["service"]["path"]
            jobs = path.endswith("-batch-v1-job")
            if not (jobs or "-kueue-x-k8s-io-" in path):
                continue
            hook["clientConfig"] = {
                "url": f"{base_url}{path}",
                "caBundle": base64.b64encode(ca_bundle).decode(),
            }
            if jobs:
                hook["namespaceSelector"] = {"matchLabels": {NAMESPACE_LABEL: "true"}}
            hooks.append(hook)
        config["webhooks"] = hooks
        out.append(config)
    return out


def _config(cert_dir: Path, webhook_port: int, health_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "clientConnection": {"qps": 50, "burst": 100},
        "integrations": {"frameworks": ["batch/job"]},
    }


def _serving(port: int, ca_file: Path) -> bool:
    """The webhook server answers TLS on loopback with a certificate our CA signed."""
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=2) as sock,
            context.wrap_socket(sock, server_hostname="127.0.0.1"),
        ):
            return True
    except OSError:
        return False


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def start(cluster: LocalCluster, timeout: float = 120.0) -> bool:
    """Start Kueue next to the running cluster unless it runs already: CRDs, its namespace, the manager
    and then its webhook configurations. Returns True when this call started it."""
    if is_running(cluster):
        return False
    binary = ensure_built()
    paths, kubectl = cluster.paths, cluster.kubectl
    release = _release_dir()
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(release / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(release / "crds"))
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})

    home = paths.root / "kueue"
    cert_dir = home / "certs"
    cert_dir.mkdir(parents=True, exist_ok=True)
    crt, key = pki.serving_cert(paths.pki, "kueue-webhook", ["IP:127.0.0.1", "DNS:localhost"])
    (cert_dir / "tls.crt").write_bytes(crt.read_bytes())
    (cert_dir / "tls.key").write_bytes(key.read_bytes())
    (cert_dir / "tls.key").chmod(0o600)
    webhook_port, health_port = free_port(), free_port()
    config = home / "config.yaml"
    config.write_text(yaml.safe_dump(_config(cert_dir, webhook_port, health_port)))

    # The manager reads a metrics certificate from a fixed path, /etc/kueue/metrics/certs, whenever its
    # own certificate management is off (even with metrics disabled) and exits without one. Rather than
    # write into the host's /etc, it runs in its own user and mount namespace where /etc is a folder of
    # ours holding that certificate (and an /etc/hosts for loopback); it needs nothing else from /etc.
    etc = home / "etc"
    metrics_certs = etc / "kueue" / "metrics" / "certs"
    metrics_certs.mkdir(parents=True, exist_ok=True)
    (etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
    for name in ("tls.crt", "tls.key"):
        (metrics_certs / name).write_bytes((cert_dir / name).read_bytes())
    (metrics_certs / "tls.key").chmod(0o600)

    link = paths.bin / BINARY
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(binary)
    argv = [
        *_IN_OWN_ETC,
        str(etc),
        str(link),
        f"--kubeconfig={paths.kubeconfig}",
        f"--config={config}",
        # The on-demand visibility API is an aggregated API server of its own; nothing here needs it.
        "--feature-gates=VisibilityOnDemand=false",
        "--zap-log-level=2",
    ]
    _log(f"starting Kueue {_version()} (webhooks on https://127.0.0.1:{webhook_port})")
    pid = procs.start(PROCESS, argv, run_dir=paths.run, log_dir=paths.logs, cwd=paths.root, env=cluster.env())

    def up() -> str:
        if procs.has_exited(pid):
            return "exited"
        return "ready" if _healthy(health_port) and _serving(webhook_port, paths.ca_cert) else ""

    try:
        state = wait_for(
            up, timeout=timeout, interval=0.5, description="Kueue ready and serving its webhooks"
        )
    except BaseException:
        stop(cluster)
        raise
    if state != "ready":
        stop(cluster)
        raise ClusterError(f"Kueue exited; see {paths.logs / (PROCESS + '.log')}")
    configs = webhook_configurations(
        (release / "webhooks.yaml").read_text(),
        f"https://127.0.0.1:{webhook_port}",
        paths.ca_cert.read_bytes(),
    )
    kubectl.apply(configs)
    return True


def stop(cluster: LocalCluster) -> None:
    """Remove the webhook configurations first (the API server must never call a stopped manager), then
    stop the manager. Kueue's CRDs and objects stay; they do nothing without it."""
    for kind, name in (
        ("mutatingwebhookconfiguration", MUTATING),
        ("validatingwebhookconfiguration", VALIDATING),
    ):
        with contextlib.suppress(Exception):
            cluster.kubectl("delete", kind, name, "--ignore-not-found")
    pid_file = cluster.paths.run / f"{PROCESS}.pid"
    pid = procs.recorded(cluster.paths.run).get(PROCESS)
    if pid is not None:
        left = procs.stop([pid], cluster.marker)
        if left:
            raise ClusterError(f"Kueue (pid {left[0]}) did not stop")
    pid_file.unlink(missing_ok=True)
