"""Where the harness keeps things: the repository's ``.cluster/`` folder and the binary cache."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

E2E_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = E2E_DIR.parent
VERSIONS_FILE = E2E_DIR / "versions.env"
BUILD_SCRIPT = E2E_DIR / "tools" / "build.sh"
DEFAULT_TOPOLOGY = E2E_DIR / "topology.yaml"
STAGES_DIR = E2E_DIR / "kwok"


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """The pinned versions, ``KEY=VALUE`` lines of ``e2e/versions.env``."""
    versions: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        versions[key.strip()] = value.strip().strip('"')
    return versions


def cache_dir() -> Path:
    """The build cache: ``$KUBEFORGE_CACHE``, else ``$XDG_CACHE_HOME/kubeforge``, else
    ``~/.cache/kubeforge`` (the same rule as e2e/tools/build.sh)."""
    explicit = os.environ.get("KUBEFORGE_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "kubeforge"


@dataclass(frozen=True)
class Paths:
    """Every file the harness writes, all under ``<repo>/.cluster/`` (git-ignored)."""

    root: Path

    @classmethod
    def default(cls) -> Paths:
        return cls(REPO_ROOT / ".cluster")

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        """Pid files, one per process the harness started."""
        return self.root / "run"

    @property
    def users(self) -> Path:
        """One file per test session using the cluster (named by its pid)."""
        return self.root / "users"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def helm_home(self) -> Path:
        return self.root / "helm"

    @property
    def kube_cache(self) -> Path:
        return self.root / "kube-cache"

    @property
    def ca_cert(self) -> Path:
        return self.pki / "ca.crt"
