"""Where the operator's credentials come from: an explicit kubeconfig file or, only when asked for
with `--in-cluster`, the pod's service account. Never an ambient `~/.kube/config` or `$KUBECONFIG`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lightkube.config.kubeconfig import KubeConfig


class ConfigError(Exception):
    """The operator was not told, or was told wrongly, which cluster to talk to."""


@dataclass(frozen=True)
class ClusterAccess:
    """How to reach the API server, resolved once at start-up; the watches and the API client share it."""

    config: KubeConfig
    source: str
    use_env_proxy: bool = False
    """Whether HTTP(S)_PROXY / NO_PROXY (and SSL_CERT_FILE) from the environment apply to API requests.
    Off unless asked for: an inherited variable must not send the operator's token through a proxy."""

    @property
    def server(self) -> str:
        selected = self.config.get()
        return str(selected.cluster.server) if selected is not None else ""


def load_access(
    *,
    kubeconfig: Path | None,
    in_cluster: bool,
    context: str | None = None,
    use_env_proxy: bool = False,
) -> ClusterAccess:
    if kubeconfig is not None and in_cluster:
        raise ConfigError("--kubeconfig and --in-cluster exclude each other")
    if in_cluster:
        return ClusterAccess(KubeConfig.from_service_account(), "in-cluster service account", use_env_proxy)
    if kubeconfig is None:
        raise ConfigError(
            "no cluster given: pass --kubeconfig PATH, or --in-cluster when running inside Kubernetes"
        )
    if not kubeconfig.is_file():
        raise ConfigError(f"kubeconfig {kubeconfig} does not exist")
    config = KubeConfig.from_file(kubeconfig)
    if context is not None:
        config = KubeConfig(
            clusters=config.clusters,
            contexts=config.contexts,
            users=config.users,
            current_context=context,
            fname=kubeconfig,
        )
    return ClusterAccess(config, f"kubeconfig {kubeconfig}", use_env_proxy)
