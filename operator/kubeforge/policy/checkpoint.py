"""Checkpoints: what a trainer reports, what a preemption waits for, and the work it throws away.

The operator cannot look inside a checkpoint volume or send a process a signal of its choosing, so the
protocol goes through the pod, which both sides can reach:

- **Report.** After writing a checkpoint, the trainer's side sets the annotation
  `kubeforge.dev/checkpoint` on a worker's pod to `{"step": 1200, "path": "s3://bucket/run/1200"}`
  (optionally `"time"`, RFC 3339; else the operator takes the time it saw the report). Workers run
  without a ServiceAccount token, so that takes a sidecar or tool with a token allowed to patch the pod.
  A worker on its own writes the same JSON as its termination message (`/dev/termination-log`) as it
  stops, which needs no API permission at all.
- **Ask.** Before taking a job's GPUs, the operator sets `kubeforge.dev/checkpoint-request` on the
  workers to the request time; the trainer sees it through a downward-API volume (the kubelet
  refreshes annotations there), checkpoints, and reports. A trainer that reports nothing is asked by
  its stop signal instead (`SIGTERM`, or `checkpoint.signal` as the container's stop signal), with
  `checkpoint.gracePeriodSeconds` as the pod's termination grace period.
- **Wait.** A preemption stops the workers once a report newer than the request arrives, or when the
  grace period ends. It is recorded once the stopped workers are gone, with the latest checkpoint then
  (one they left as termination messages included), and the work lost: GPU-seconds from that
  checkpoint (or from the workers' start, when that is later or there was none) to the stop.
- **Resume.** The job's next workers get the checkpoint in `KUBEFORGE_CHECKPOINT_PATH` and
  `KUBEFORGE_CHECKPOINT_STEP`.

Reports are tenant input that ends up in status, Events and logs: parsing is bounded, never raises, and
refuses control characters, so a report cannot forge log lines or blow up the status.

Pure: no Kubernetes, no clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from kubeforge.policy.conditions import parse_time

REPORT_ANNOTATION = "kubeforge.dev/checkpoint"
REQUEST_ANNOTATION = "kubeforge.dev/checkpoint-request"
PATH_ENV = "KUBEFORGE_CHECKPOINT_PATH"
STEP_ENV = "KUBEFORGE_CHECKPOINT_STEP"

MAX_REPORT_BYTES = 4096
MAX_PATH_CHARS = 1024


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: str
    time: datetime


def _clean(path: object) -> str | None:
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_CHARS:
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return None
    return path


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = parse_time(value)
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.tzinfo is not None else None


def parse_report(text: str | None, *, seen: datetime) -> Checkpoint | None:
    """A checkpoint report (annotation or termination message); None when absent or malformed.
    `seen`: when the operator saw it, the report's time when it gives none."""
    if not text or len(text) > MAX_REPORT_BYTES:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    step, path = data.get("step"), _clean(data.get("path"))
    if isinstance(step, bool) or not isinstance(step, int) or step < 0 or path is None:
        return None
    parsed = _time(data.get("time"))
    # A clock in the future (a skewed node, or a trainer claiming a checkpoint it has not written yet)
    # must not make an old report look like the answer to a new request.
    time = parsed if parsed is not None and parsed <= seen else seen
    return Checkpoint(step, path, time)


def latest(reports: Iterable[Checkpoint | None]) -> Checkpoint | None:
    """The most advanced checkpoint reported by any worker (by step, then time)."""
    found = [r for r in reports if r is not None]
    return max(found, key=lambda r: (r.step, r.time)) if found else None


@dataclass(frozen=True)
class Progress:
    state: Literal["waiting", "checkpointed", "timedOut"]
    checkpoint: Checkpoint | None
    """The checkpoint to resume from: the answer to the request, or the last one before it."""
    seconds_left: float = 0.0
    """While waiting: until the grace period ends (when to look again)."""


def progress(
    *, requested: datetime, reports: Iterable[Checkpoint | None], now: datetime, grace_seconds: float
) -> Progress:
    """Where a checkpoint request stands."""
    best = latest(reports)
    # Strictly after: times in status have second precision, so a report seen in the same second as the
    # request (or before it, recorded without a time) must not pass for its answer.
    if best is not None and best.time > requested:
        return Progress("checkpointed", best)
    left = grace_seconds - (now - requested).total_seconds()
    if left > 0:
        return Progress("waiting", best, left)
    return Progress("timedOut", best)


def remember(stored: Checkpoint | None, reports: Iterable[Checkpoint | None]) -> Checkpoint | None:
    """The checkpoint to keep in status: the latest of the stored one and the reports seen now. A report
    of the stored checkpoint (same step and path) is the stored one: a report without a time is given the
    time it was first seen, not a new one on every pass (which would rewrite the status each time)."""
    same = (stored.step, stored.path) if stored is not None else None
    return latest([stored, *(stored if r is not None and (r.step, r.path) == same else r for r in reports)])


def lost_gpu_seconds(
    *, gpus: int, stopped: datetime, started: datetime | None, last: Checkpoint | None
) -> float:
    """GPU-seconds of work a stop at `stopped` throws away: since the last checkpoint or since the workers
    started, whichever is later (a checkpoint older than the attempt was resumed from: the work before the
    attempt was counted when that attempt stopped); 0 when neither is known."""
    times = [t for t in (last.time if last is not None else None, started) if t is not None]
    since = max(times) if times else None
    if since is None:
        return 0.0
    return max(0.0, (stopped - since).total_seconds()) * max(0, gpus)


def resume_env(checkpoint: Checkpoint | None) -> dict[str, str]:
    """The environment a resumed worker gets."""
    if checkpoint is None:
        return {}
    return {PATH_ENV: checkpoint.path, STEP_ENV: str(checkpoint.step)}
