"""Guards that keep tests on the project's own cluster and nowhere else."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from kubeforge_e2e.paths import Paths


class UnsafeKubeconfigError(RuntimeError):
    """The kubeconfig is not the project's own local cluster: refuse to use it."""


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify_kubeconfig(paths: Paths, kubeconfig: Path | None = None) -> str:
    """Check that ``kubeconfig`` is ``<repo>/.cluster/kubeconfig``, has exactly one cluster, served on a
    loopback address and trusted through the CA this harness generated (recorded in ``state.json``).
    Returns the server URL; raises :class:`UnsafeKubeconfigError` otherwise."""
    path = (kubeconfig or paths.kubeconfig).resolve()
    if path != paths.kubeconfig.resolve():
        raise UnsafeKubeconfigError(f"{path} is not the project's kubeconfig {paths.kubeconfig}")
    if not path.is_file():
        raise UnsafeKubeconfigError(f"{path} does not exist (is the cluster up?)")
    try:
        config: Any = yaml.safe_load(path.read_text())
        state: Any = json.loads(paths.state.read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise UnsafeKubeconfigError(f"cannot read {path} or {paths.state}: {exc}") from exc
    clusters = config.get("clusters") if isinstance(config, dict) else None
    if not isinstance(clusters, list) or len(clusters) != 1:
        raise UnsafeKubeconfigError(f"{path} must name exactly one cluster")
    cluster = clusters[0].get("cluster", {})
    server = str(cluster.get("server", ""))
    url = urlparse(server)
    try:
        loopback = url.hostname is not None and ipaddress.ip_address(url.hostname).is_loopback
    except ValueError:
        loopback = False
    if url.scheme != "https" or not loopback:
        raise UnsafeKubeconfigError(f"{path} points at {server!r}, not an https loopback address")
    if cluster.get("insecure-skip-tls-verify") or "certificate-authority-data" in cluster:
        raise UnsafeKubeconfigError(f"{path} must trust the harness's CA file, nothing else")
    ca = Path(str(cluster.get("certificate-authority", ""))).resolve()
    if ca != paths.ca_cert.resolve() or not ca.is_file():
        raise UnsafeKubeconfigError(f"{path} trusts {ca}, not the harness's CA {paths.ca_cert}")
    if not isinstance(state, dict) or file_sha256(ca) != state.get("ca_sha256"):
        raise UnsafeKubeconfigError(f"{ca} is not the CA this harness generated")
    if state.get("server") != server:
        raise UnsafeKubeconfigError(
            f"{path} server {server} differs from the harness's {state.get('server')}"
        )
    return server
