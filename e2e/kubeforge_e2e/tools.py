"""kubectl and helm bound to the local cluster, and a polling helper."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kubeforge_e2e.paths import Paths

T = TypeVar("T")


def tool_env(paths: Paths, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for kubectl, helm or any process that must talk to our cluster only.

    ``KUBECONFIG`` points at the project's kubeconfig whatever the caller's environment says, and the
    kubectl/helm caches and config live under ``.cluster/`` so ``~/.kube`` and ``~/.config/helm`` are
    never read or written."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KUBECONFIG", "KUBECACHEDIR", "KUBERNETES_", "KUBECTL_", "HELM_"))
    }
    env.update(
        {
            "KUBECONFIG": str(paths.kubeconfig),
            "KUBECACHEDIR": str(paths.kube_cache),
            "HELM_CACHE_HOME": str(paths.helm_home / "cache"),
            "HELM_CONFIG_HOME": str(paths.helm_home / "config"),
            "HELM_DATA_HOME": str(paths.helm_home / "data"),
            "PATH": f"{paths.bin}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    if extra:
        env.update(extra)
    return env


class KubectlError(RuntimeError):
    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        args = " ".join(str(a) for a in result.args)
        super().__init__(
            f"`{args}` exited {result.returncode}: {result.stderr.strip() or result.stdout.strip()}"
        )
        self.result = result


class _Tool:
    binary = ""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths

    def _argv(self, args: Sequence[str]) -> list[str]:
        return [str(self.paths.bin / self.binary), "--kubeconfig", str(self.paths.kubeconfig), *args]

    def run(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the tool; with ``check`` (default) raise :class:`KubectlError` on a non-zero exit."""
        result = subprocess.run(
            self._argv(args),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=tool_env(self.paths, env),
            check=False,
            cwd=self.paths.root.parent,
        )
        if check and result.returncode != 0:
            raise KubectlError(result)
        return result

    def __call__(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self.run(*args, check=check, input=input, timeout=timeout)

    def json(self, *args: str, timeout: float = 120) -> Any:
        """Run with ``-o json`` and return the parsed output."""
        return json.loads(self.run(*args, "-o", "json", timeout=timeout).stdout)


class Kubectl(_Tool):
    """``kubectl`` from ``.cluster/bin`` with ``--kubeconfig .cluster/kubeconfig``.

    ``kubectl("get", "pods", "-n", ns)`` returns a CompletedProcess; ``kubectl.json("get", "pod", "x")``
    the parsed object; ``kubectl.apply(obj_or_yaml, namespace=ns)`` applies manifests."""

    binary = "kubectl"

    def apply(
        self,
        manifest: str | Mapping[str, Any] | Sequence[Mapping[str, Any]],
        namespace: str | None = None,
        *extra: str,
    ) -> subprocess.CompletedProcess[str]:
        if isinstance(manifest, str):
            text = manifest
        elif isinstance(manifest, Mapping):
            text = yaml.safe_dump(dict(manifest))
        else:
            text = yaml.safe_dump_all([dict(m) for m in manifest])
        args = ["apply", "-f", "-", *extra]
        if namespace:
            args += ["-n", namespace]
        return self.run(*args, input=text)

    def get(self, kind: str, name: str, namespace: str | None = None) -> Any:
        """The object as a dict, or None when it does not exist."""
        args = ["get", kind, name, "--ignore-not-found"]
        if namespace:
            args += ["-n", namespace]
        out = self.run(*args, "-o", "json").stdout.strip()
        return json.loads(out) if out else None


class Helm(_Tool):
    """``helm`` from ``.cluster/bin`` with ``--kubeconfig .cluster/kubeconfig`` and its own
    cache/config/data folders under ``.cluster/helm``."""

    binary = "helm"

    def json(self, *args: str, timeout: float = 120) -> Any:
        return json.loads(self.run(*args, "-o", "json", timeout=timeout).stdout)


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 60.0,
    interval: float = 0.5,
    description: str = "condition",
) -> T:
    """Call ``predicate`` until it returns something truthy and return that; raise ``TimeoutError``
    (naming ``description`` and the last value or exception) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except Exception as exc:  # the object may not exist yet
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {description} (last: {last!r})")
        time.sleep(interval)


def kubeconfig_text(server: str, ca_file: Path, cert_file: Path, key_file: Path, user: str) -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "kubeforge-e2e", "cluster": {"server": server, "certificate-authority": str(ca_file)}}
        ],
        "users": [
            {"name": user, "user": {"client-certificate": str(cert_file), "client-key": str(key_file)}}
        ],
        "contexts": [{"name": "kubeforge-e2e", "context": {"cluster": "kubeforge-e2e", "user": user}}],
        "current-context": "kubeforge-e2e",
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)
