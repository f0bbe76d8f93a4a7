"""What GitOps tools conclude about an object, with the code they run.

- `kstatus(obj)`: kstatus, the library Flux's health checks use, through the project's small checker
  over sigs.k8s.io/cli-utils (e2e/tools/kstatus/main.go; built and cached by `e2e/tools/build.sh
  kstatus` at the version pinned in e2e/versions.env).
- `argocd_health(obj)`: the chart's Argo CD health check (charts/kubeforge/argocd/health.lua) run the
  way Argo CD runs it, with `obj` as a global, in a real Lua 5.1 interpreter (the dialect Argo CD
  embeds; the `lupa` wheel).
"""

from __future__ import annotations

import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

from lupa import lua51  # type: ignore[import-untyped]  # lupa ships no type hints

from kubeforge_e2e.paths import BUILD_SCRIPT, REPO_ROOT, cache_dir

HEALTH_LUA = REPO_ROOT / "charts" / "kubeforge" / "argocd" / "health.lua"


@cache
def kstatus_checker() -> Path:
    """The checker binary, built on first use (about 10 s) and cached by version and source."""
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "kstatus"], stdout=subprocess.PIPE, text=True, timeout=600, check=True
    )
    binary = Path(done.stdout.strip().splitlines()[-1]) / "kstatus-check"
    if not binary.is_file():
        binary = cache_dir() / "bin" / "kstatus-check"
    return binary


def kstatus(obj: dict[str, Any]) -> tuple[str, str]:
    """kstatus's (status, message) for `obj`: status is Current, InProgress, Failed, Terminating, ..."""
    done = subprocess.run(
        [str(kstatus_checker())],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    verdict = json.loads(done.stdout)
    return str(verdict["status"]), str(verdict["message"])


def argocd_health(obj: dict[str, Any]) -> tuple[str, str]:
    """Argo CD's (status, message) for `obj`: Healthy, Progressing, Degraded, Suspended."""
    lua = lua51.LuaRuntime()
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(HEALTH_LUA.read_text())
    return str(result["status"]), str(result["message"])
