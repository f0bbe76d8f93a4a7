"""Run the kubeforge operator as a real process against the local cluster, as a user would."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class OperatorProcess:
    """`kubeforge run` in a subprocess, its log in a file; can be SIGKILLed and started again."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        *,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        resync_seconds: float | None = 5,
        ready_path: str = "/readyz",
    ) -> None:
        """`resync_seconds`: the tests' quick safety-net resync; None keeps the operator's default (what
        a benchmark should measure). `ready_path`: what `start()` waits for (`/healthz` for a process
        that need not be ready)."""
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.env = env
        self.resync_seconds = resync_seconds
        self.ready_path = ready_path
        self.metrics_port = free_port()
        self.health_port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "kubeforge.cli",
            "run",
            "--kubeconfig",
            str(self.kubeconfig),
            "--metrics-port",
            str(self.metrics_port),
            "--health-port",
            str(self.health_port),
            *(["--resync-seconds", f"{self.resync_seconds:g}"] if self.resync_seconds is not None else []),
            "--bind-address",
            "127.0.0.1",
            *self.extra_args,
        ]

    def start(self, timeout: float = 60.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(self.env if self.env is not None else os.environ)
        # The operator must use only the kubeconfig it is given; make any ambient one unusable.
        env["KUBECONFIG"] = os.devnull
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        log.close()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.health_port}{self.ready_path}"
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError(f"operator exited early; see {self.log_path}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        raise TimeoutError(f"operator not ready after {timeout}s; see {self.log_path}:\n{self.tail()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)
            self._proc.wait(timeout=30)
        self._proc = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def send(self, sig: int) -> None:
        """Send a signal without waiting for the exit (a failover clock starts at the signal)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)

    def reap(self, timeout: float = 30.0) -> None:
        """Wait for the exit after `send`; SIGKILL when it takes longer than `timeout`."""
        if self._proc is None:
            return
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=15)
        self._proc = None

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=15)
        self._proc = None

    def restart(self, timeout: float = 60.0) -> None:
        self.stop()
        self.start(timeout)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text: str = response.read().decode()
            return text

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


@contextlib.contextmanager
def running_operator(
    kubeconfig: Path, log_path: Path, extra_args: Sequence[str], *, tail: int = 80
) -> Iterator[OperatorProcess]:
    """An operator started for a test, stopped after it, its log's last `tail` lines printed (pytest
    shows them when the test failed)."""
    proc = OperatorProcess(kubeconfig, log_path, extra_args=extra_args)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        print(f"--- operator log ({proc.log_path}) ---\n{proc.tail(tail)}")
