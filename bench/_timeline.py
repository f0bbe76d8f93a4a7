"""Time series a benchmark records while it runs, for bench/plots.py to draw.

A `Timeline` calls a probe every `interval` seconds on a thread of its own, so the benchmark's own polling
(and the moments it measures) stays as it is. Each sample is a flat dict of numbers and strings with `t`,
the seconds since the timeline started; `mark()` adds a named event (a load step, an apply) at the same
clock. Everything is JSON as it is: `as_json()` goes straight into the benchmark's results file.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Value = float | int | str | None
Sample = dict[str, Value]
Probe = Callable[[], Sample]

RESULTS_DIR = Path(__file__).resolve().parents[1] / "build" / "bench-results"


def utc_now() -> str:
    """When a run started, as written into its results (the plots print it)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Timeline:
    def __init__(self, probe: Probe, interval: float = 0.5) -> None:
        self.probe = probe
        self.interval = interval
        self.samples: list[Sample] = []
        self.events: list[dict[str, Any]] = []
        self.errors = 0
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)
        self._lock = threading.Lock()

    def now(self) -> float:
        return round(time.monotonic() - self._t0, 3)

    def at(self, monotonic: float) -> float:
        """A `time.monotonic()` reading the benchmark took, on the timeline's clock."""
        return round(monotonic - self._t0, 3)

    def start(self) -> Timeline:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def mark(self, what: str, t: float | None = None, **data: Value) -> None:
        with self._lock:
            self.events.append({"t": self.now() if t is None else t, "what": what, **data})

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                sample = self.probe()
            except Exception:
                # A busy API server or Prometheus skips a sample; the benchmark itself decides what fails.
                self.errors += 1
            else:
                with self._lock:
                    self.samples.append({"t": self.at(began), **sample})
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def as_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "interval_seconds": self.interval,
                "samples": list(self.samples),
                "events": sorted(self.events, key=lambda e: float(e["t"])),
                "failed_samples": self.errors,
            }


@contextlib.contextmanager
def recording(probe: Probe, interval: float = 0.5) -> Iterator[Timeline]:
    """`with recording(probe) as timeline:` samples until the block ends, also when it raises."""
    timeline = Timeline(probe, interval).start()
    try:
        yield timeline
    finally:
        timeline.stop()


def changes(samples: list[Sample], key: str, *extra: str) -> list[dict[str, Value]]:
    """Each sample where `key` differs from the sample before (the first value is not a change), with
    the old and new value and the `extra` fields of that sample: e.g. the autoscaler's decisions as
    seen in status.desiredReplicas."""
    found: list[dict[str, Value]] = []
    previous: Value = None
    for sample in samples:
        value = sample.get(key)
        if value is None:
            continue
        if previous is not None and value != previous:
            found.append(
                {"t": sample["t"], "from": previous, "to": value, **{k: sample.get(k) for k in extra}}
            )
        previous = value
    return found
