"""A real Prometheus (Debian's `prometheus` package) for the tests, run on loopback by the harness.

`make system-deps` installs it (and disables the distribution's own service: we run our own, with our
own configuration, port and data folder). The configuration scrapes the given targets every second
with `honor_labels: true`, so the series keep the `namespace` label their exporter (the load simulator)
gives them, as a Kubernetes service-discovery relabelling would for real pods.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

CANDIDATES = ("/usr/bin/prometheus", "/usr/local/bin/prometheus")


class PrometheusUnavailableError(RuntimeError):
    """No prometheus binary: run `make system-deps`."""


def find_binary() -> Path:
    found = shutil.which("prometheus")
    if found:
        return Path(found)
    for candidate in CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    raise PrometheusUnavailableError(
        "no `prometheus` binary found: run `make system-deps` (apt-get install prometheus)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape_config(targets: Sequence[str], interval: str = "1s") -> dict[str, Any]:
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "scrape_configs": [
            {
                "job_name": "loadsim",
                "honor_labels": True,
                "static_configs": [{"targets": list(targets)}],
            }
        ],
    }


def write_config(workdir: Path, targets: Sequence[str], scrape_interval: str = "1s") -> Path:
    """Write `prometheus.yml` scraping `targets` into `workdir`; returns its path."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(targets, scrape_interval)))
    return config


def command(config: Path, *, port: int, data_dir: Path, binary: Path | None = None) -> list[str]:
    """The command line of a loopback-only Prometheus with its own data folder."""
    return [
        str(binary or find_binary()),
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=2h",
        "--log.level=warn",
    ]


def healthy(url: str) -> bool:
    """Prometheus at `url` answers /-/ready."""
    try:
        return httpx.get(f"{url}/-/ready", timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


class PrometheusProcess:
    """One Prometheus server: `start()`, `stop()` (data kept), `start()` again; `query()` its API."""

    def __init__(self, workdir: Path, targets: Sequence[str], *, scrape_interval: str = "1s") -> None:
        self.workdir = workdir
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.port = _free_port()
        self.binary = find_binary()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        config = write_config(self.workdir, self.targets, self.scrape_interval)
        cmd = command(config, port=self.port, data_dir=self.workdir / "data", binary=self.binary)
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited early:\n{self.tail()}")
            if healthy(self.url):
                return
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready after {timeout}s:\n{self.tail()}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def query(self, promql: str) -> float | None:
        """One number from an instant query; None when the result is empty or not finite."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5, trust_env=False)
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"query failed: {body}")
        result = body["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return value if value == value and abs(value) != float("inf") else None

    def targets_up(self) -> bool:
        body = httpx.get(f"{self.url}/api/v1/targets", timeout=5, trust_env=False).json()
        active = body.get("data", {}).get("activeTargets", [])
        return bool(active) and all(t.get("health") == "up" for t in active)
