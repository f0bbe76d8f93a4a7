"""Starting and stopping the control plane's processes, tracked by pid files."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[0]


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_alive(pid: int, marker: str) -> bool:
    """True when ``pid`` runs and its command line mentions ``marker`` (so a recycled pid never counts)."""
    _reap(pid)
    if _state(pid) in ("", "Z", "X"):
        return False
    return any(marker in part for part in _cmdline(pid))


def has_exited(pid: int) -> bool:
    """True once ``pid`` (a process this one just started) is gone or a zombie. Unlike ``is_alive`` it
    does not read the command line, which a process can briefly lack while it execs (Kueue's manager
    starts through ``unshare`` and ``sh -c exec``): a poll in that moment took it for dead and stopped it."""
    _reap(pid)
    return _state(pid) in ("", "Z", "X")


def find_by_marker(marker: str) -> list[int]:
    """Pids of every live process whose executable path (argv[0]) lies under ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        argv = _cmdline(pid)
        if argv and argv[0].startswith(marker) and _state(pid) not in ("", "Z", "X"):
            found.append(pid)
    return found


def start(
    name: str, argv: Sequence[str], *, run_dir: Path, log_dir: Path, cwd: Path, env: Mapping[str, str]
) -> int:
    """Start ``argv`` detached (own session, survives the caller), log to ``<log_dir>/<name>.log`` and
    record its pid in ``<run_dir>/<name>.pid``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
    (run_dir / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def recorded(run_dir: Path) -> dict[str, int]:
    pids: dict[str, int] = {}
    for pid_file in sorted(run_dir.glob("*.pid")):
        with contextlib.suppress(ValueError, OSError):
            pids[pid_file.stem] = int(pid_file.read_text().strip())
    return pids


def stop(pids: Sequence[int], marker: str, timeout: float = 15.0) -> list[int]:
    """SIGTERM each live process, SIGKILL what is left after ``timeout``; returns pids still alive."""
    live = [p for p in pids if is_alive(p, marker)]
    for pid in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = [p for p in live if is_alive(p, marker)]
        if not live:
            return []
        time.sleep(0.1)
    for pid in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    return [p for p in live if is_alive(p, marker)]
