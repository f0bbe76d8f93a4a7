"""Which cluster to talk to, and as whom.

Two sets of rules, on purpose:

- The operator (`kubeforge run`) is told: an explicit `--kubeconfig` file or, only when asked for with
  `--in-cluster`, the pod's service account. Never an ambient `~/.kube/config` or `$KUBECONFIG`: an
  operator that guesses its cluster can manage the wrong one.
- The CLI (`kubeforge rollout ...`, also installed as the kubectl plugin `kubectl-kubeforge`) resolves
  its cluster the way kubectl does, because that is what its users expect: `--kubeconfig` if given (it
  must exist), else every file in `$KUBECONFIG` merged (missing files skipped), else `~/.kube/config`;
  `--context` or the merged current-context; `-n` or the context's namespace or `default`.

Merging follows client-go: for clusters, users and contexts the first file to define a name wins the
whole entry, and the first file to set current-context wins. Relative paths in an entry resolve against
the directory of the file that entry came from.

Credentials of every kind (see `kube.credentials`) are resolved here into one `CredentialSource` that
all HTTP clients of the process share, through `kube.transport.CredentialTransport`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from lightkube.config.kubeconfig import KubeConfig
from lightkube.config.models import Cluster, Context, User

from kubeforge.kube.credentials import (
    CredentialError,
    CredentialSource,
    source_for_user,
    stdin_is_terminal,
)
from kubeforge.kube.transport import CredentialTransport, TlsSettings

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_NAMESPACE = "default"


class ConfigError(Exception):
    """We were not told, or were told wrongly, which cluster to talk to or how to log in."""


@dataclass
class MergedKubeconfig:
    """Kubeconfig files merged by kubectl's rules; each entry keeps the directory of its file."""

    clusters: dict[str, tuple[Mapping[str, Any], Path]] = field(default_factory=dict)
    users: dict[str, tuple[Mapping[str, Any], Path]] = field(default_factory=dict)
    contexts: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    current_context: str | None = None
    files: list[Path] = field(default_factory=list)

    def add(self, path: Path, doc: Mapping[str, Any]) -> None:
        """Merge one more file: what an earlier file defined stays."""
        base = path.resolve().parent
        self.files.append(path)
        for item in doc.get("clusters") or []:
            self.clusters.setdefault(str(item["name"]), (item.get("cluster") or {}, base))
        for item in doc.get("users") or []:
            self.users.setdefault(str(item["name"]), (item.get("user") or {}, base))
        for item in doc.get("contexts") or []:
            self.contexts.setdefault(str(item["name"]), item.get("context") or {})
        if not self.current_context and doc.get("current-context"):
            self.current_context = str(doc["current-context"])


def read_kubeconfig(path: Path) -> Mapping[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read kubeconfig {path}: {error}") from error
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"kubeconfig {path} is not a mapping")
    return doc


def merge_kubeconfigs(paths: Sequence[Path]) -> MergedKubeconfig:
    merged = MergedKubeconfig()
    for path in paths:
        merged.add(path, read_kubeconfig(path))
    return merged


def kubectl_kubeconfig_files(explicit: Path | None, env: Mapping[str, str]) -> list[Path]:
    """The files kubectl would read: `--kubeconfig`, else `$KUBECONFIG` (existing ones, each once, in
    order), else `~/.kube/config` (HOME from `env`) when it exists."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"kubeconfig {explicit} does not exist")
        return [explicit]
    listed = env.get("KUBECONFIG", "")
    if listed:
        files: list[Path] = []
        for entry in listed.split(os.pathsep):
            path = Path(entry).expanduser() if entry else None
            if path is not None and path.is_file() and path not in files:
                files.append(path)
        return files
    home = env.get("HOME")
    default = Path(home) / ".kube" / "config" if home else None
    return [default] if default is not None and default.is_file() else []


@dataclass(frozen=True)
class ClusterAccess:
    """How to reach the API server, resolved once at start-up; every client of the process shares its
    credential source, so a refreshed credential serves them all."""

    config: KubeConfig
    """The selected cluster and context for lightkube (server, namespace); credentials are not in it,
    they travel through `transport()`."""
    source: str
    tls: TlsSettings
    credentials: CredentialSource
    namespace: str = DEFAULT_NAMESPACE
    use_env_proxy: bool = False
    """Whether HTTP(S)_PROXY / NO_PROXY (and SSL_CERT_FILE) from the environment apply to API requests.
    Off unless asked for: an inherited variable must not send the operator's token through a proxy."""

    @property
    def server(self) -> str:
        return self.tls.server

    def transport(self) -> CredentialTransport:
        """A transport for one HTTP client: its own connections, the process's shared credentials."""
        return CredentialTransport(self.tls, self.credentials, use_env_proxy=self.use_env_proxy)


def _lightkube_config(server: str, context: str, namespace: str) -> KubeConfig:
    # lightkube only routes requests; TLS and credentials are the transport's. An empty user keeps
    # lightkube from attaching credentials of its own.
    return KubeConfig(
        clusters={"cluster": Cluster(server=server)},
        contexts={context: Context(cluster="cluster", user="user", namespace=namespace)},
        users={"user": User()},
        current_context=context,
    )


def select_access(
    merged: MergedKubeconfig,
    *,
    context: str | None = None,
    namespace: str | None = None,
    source: str,
    use_env_proxy: bool = False,
    interactive: bool = False,
) -> ClusterAccess:
    """Pick a context from merged kubeconfigs and resolve its cluster and credentials."""
    name = context or merged.current_context
    if not name:
        raise ConfigError(f"{source}: no current-context set; pass --context")
    ctx = merged.contexts.get(name)
    if ctx is None:
        raise ConfigError(f"{source}: context {name!r} not found")
    cluster_name = str(ctx.get("cluster") or "")
    if cluster_name not in merged.clusters:
        raise ConfigError(f"{source}: context {name!r} names cluster {cluster_name!r}, which is not defined")
    user_name = ctx.get("user")
    if user_name and str(user_name) not in merged.users:
        raise ConfigError(f"{source}: context {name!r} names user {user_name!r}, which is not defined")
    cluster, cluster_dir = merged.clusters[cluster_name]
    try:
        tls = TlsSettings.from_cluster(cluster, cluster_dir)
        if user_name:
            user, user_dir = merged.users[str(user_name)]
            credentials = source_for_user(
                user, base=user_dir, cluster_info=tls.cluster_info(), interactive=interactive
            )
        else:
            credentials = source_for_user({})
    except CredentialError as error:
        raise ConfigError(f"{source}, context {name!r}: {error}") from error
    ns = namespace or str(ctx.get("namespace") or "") or DEFAULT_NAMESPACE
    return ClusterAccess(_lightkube_config(tls.server, name, ns), source, tls, credentials, ns, use_env_proxy)


def load_access(
    *,
    kubeconfig: Path | None,
    in_cluster: bool,
    context: str | None = None,
    use_env_proxy: bool = False,
) -> ClusterAccess:
    """The operator's rules: exactly the kubeconfig given, or the pod's service account when asked."""
    if kubeconfig is not None and in_cluster:
        raise ConfigError("--kubeconfig and --in-cluster exclude each other")
    if in_cluster:
        return _in_cluster(use_env_proxy)
    if kubeconfig is None:
        raise ConfigError(
            "no cluster given: pass --kubeconfig PATH, or --in-cluster when running inside Kubernetes"
        )
    if not kubeconfig.is_file():
        raise ConfigError(f"kubeconfig {kubeconfig} does not exist")
    return select_access(
        merge_kubeconfigs([kubeconfig]),
        context=context,
        source=f"kubeconfig {kubeconfig}",
        use_env_proxy=use_env_proxy,
    )


def resolve_access(
    *,
    kubeconfig: Path | None = None,
    context: str | None = None,
    namespace: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ClusterAccess:
    """The CLI's rules, kubectl's: see the module docstring. `env` defaults to the process environment."""
    environ = os.environ if env is None else env
    files = kubectl_kubeconfig_files(kubeconfig, environ)
    if not files:
        raise ConfigError("no kubeconfig found: pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config")
    return select_access(
        merge_kubeconfigs(files),
        context=context,
        namespace=namespace,
        source="kubeconfig " + os.pathsep.join(str(f) for f in files),
        interactive=stdin_is_terminal(),
    )


def _in_cluster(use_env_proxy: bool) -> ClusterAccess:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ConfigError("--in-cluster: KUBERNETES_SERVICE_HOST/PORT are not set (not in a pod?)")
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    namespace_file = SERVICE_ACCOUNT / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.is_file() else DEFAULT_NAMESPACE
    merged = MergedKubeconfig(
        clusters={"in-cluster": ({"server": server, "certificate-authority": "ca.crt"}, SERVICE_ACCOUNT)},
        # The kubelet rotates the token file in place: re-read it (every minute and on a 401).
        users={"in-cluster": ({"tokenFile": "token"}, SERVICE_ACCOUNT)},
        contexts={"in-cluster": {"cluster": "in-cluster", "user": "in-cluster", "namespace": namespace}},
        current_context="in-cluster",
    )
    return select_access(merged, source="in-cluster service account", use_env_proxy=use_env_proxy)
