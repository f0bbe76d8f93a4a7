"""Benchmark: kubeforge at scale, side by side with plain Deployments on one local cluster.

One cluster with a large simulated topology (default 170 nodes of 8 GPUs, one GPU type), in one run:

1. baseline: N Deployments (1 replica, 1 GPU, pods like a fleet's) created with bounded concurrency;
   time until all are available (the built-in Deployment controller), then until their pods are gone
   after a delete;
2. kubeforge: the operator started, N InferenceFleets (1 replica, 1 GPU, no autoscaling, no analysis) and
   M TrainingJobs (1 worker, 1 GPU, 1 s run) created the same way; time until every fleet is Ready and
   every job Succeeded, and its ratio to the baseline;
3. steady state: API requests per second while nothing changes, from the API server's
   ``apiserver_request_total`` over a window with the operator running minus a window without it (the
   control plane's own background), and from the operator's own request counter when it has one;
4. one fleet's image change: the operator's API writes until that fleet is Ready on the new revision;
5. failover (when the operator has ``--leader-elect``): two operators, the leader SIGKILLed, then the
   new leader SIGTERMed; each time from the signal until a fleet created right after it has
   ``status.observedGeneration``;
6. operator peak RSS (VmHWM, and VmRSS sampled every second), reconcile latency p50/p99 from the
   operator's histogram.

It prints progress while waiting, a table with the targets next to the figures, and writes JSON
(``--out``, default ``build/bench-results/scale.json``, git-ignored), with the time-to-ready curves
(available Deployments, Ready fleets and Succeeded TrainingJobs counted at each poll) that
bench/plots.py draws. It asserts nothing about speed;
it exits non-zero only when something breaks (e.g. no convergence within ``--timeout``).

Run: ``make bench`` (every bench/*.py, this one at its defaults), or
``PYTHONPATH=e2e .venv/bin/python bench/scale.py --fleets 30 --jobs 10 --nodes 10 --idle-seconds 20``.
It reuses a running local cluster (adding its nodes, and deleting them afterwards) or starts one with
only its own nodes, and stops what it started, on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO / "e2e", REPO / "operator"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from _timeline import utc_now  # noqa: E402

import kubeforge  # noqa: E402
import kubeforge_e2e.promtext as promtext  # noqa: E402
from kubeforge_e2e import LocalCluster, read_versions, wait_for  # noqa: E402
from kubeforge_e2e.api import Api, ApiError  # noqa: E402
from kubeforge_e2e.operator import OperatorProcess  # noqa: E402
from kubeforge_e2e.topology import GPU_RESOURCE, Topology, parse_topology  # noqa: E402
from kubeforge_e2e.workloads import IMAGE, fleet, install_crds, is_true  # noqa: E402

Obj = dict[str, Any]
# (VERB, ...labels) -> requests counted so far.
RequestCounts = dict[tuple[str, ...], float]

KF = "/apis/kubeforge.dev/v1alpha1"
BENCH_LABEL = "bench.kubeforge.dev/scale"
# A GPU type the default e2e topology does not have: on a reused cluster the benchmark's pods can only
# land on the benchmark's own nodes, and the other nodes' pods never compete with them.
GPU_TYPE = "A100"
GPU_PRODUCT = "NVIDIA-A100-SXM4-80GB"
POOL = "bench-a100"
LEASE_ID = "kubeforge-bench"
RUN_SECONDS = "1"
READ_VERBS = frozenset({"GET", "LIST", "WATCH"})

BULK_TIMEOUT = 180.0
"""Seconds one API request may take: a collection delete of a thousand objects answers only when done."""
OPERATOR_REQUEST_METRICS = ("kubeforge_api_requests_total", "rest_client_requests_total")
RECONCILE_HISTOGRAMS = ("kubeforge_reconcile_duration_seconds", "controller_runtime_reconcile_time_seconds")
RECONCILE_COUNTERS = ("kubeforge_reconcile_total", "controller_runtime_reconcile_total")
LEADER_METRIC = "leader_election_master_status"

# The targets the operator rewrite aims at; printed next to the figures, never asserted.
TARGET_RATIO = 1.5
TARGET_TOTAL_SECONDS = 60.0
TARGET_RSS_MIB = 150.0
TARGET_IDLE_RPS = 1.0
TARGET_IMAGE_WRITES = 12
TARGET_KILL_SECONDS = 17.0
TARGET_TERM_SECONDS = 3.0


class BenchError(RuntimeError):
    """Something broke (not: something was slow)."""


class Say:
    """Progress lines with the seconds since the benchmark started."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.t0:7.1f}s] {message}", flush=True)


say = Say()


# ------------------------------------------------------------------------------------------ manifests
def bench_topology(nodes: int, gpus: int) -> Topology:
    return parse_topology(
        {
            "pools": [
                {
                    "name": POOL,
                    "count": nodes,
                    "zone": "zone-a",
                    "instanceType": "p4de.24xlarge",
                    "cpu": "96",
                    "memory": "1152Gi",
                    "pods": 110,
                    "gpu": {"product": GPU_PRODUCT, "count": gpus, "memoryMiB": 81920, "family": "ampere"},
                }
            ]
        }
    )


def deployment(name: str) -> Obj:
    """A Deployment whose pod asks what a fleet's pod asks: one GPU of the benchmark's type (required
    node affinity), the GPU toleration, no service account token, no service links."""
    labels = {BENCH_LABEL: "baseline", "app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {BENCH_LABEL: "baseline"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": IMAGE,
                            "ports": [{"name": "http", "containerPort": 8000}],
                            "resources": {
                                "requests": {GPU_RESOURCE: "1"},
                                "limits": {GPU_RESOURCE: "1"},
                            },
                        }
                    ],
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {
                                                "key": "nvidia.com/gpu.product",
                                                "operator": "In",
                                                "values": [GPU_PRODUCT],
                                            }
                                        ]
                                    }
                                ]
                            }
                        }
                    },
                    "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                },
            },
        },
    }


def fleet_manifest(name: str, role: str, image: str = IMAGE) -> Obj:
    # No spreading: the baseline's pods have none either, and spread scoring over hundreds of nodes
    # would be a scheduler cost only one side pays.
    body = fleet(
        name,
        image=image,
        replicas=1,
        resources={"gpus": 1, "gpuType": GPU_TYPE},
        placement={"spreadZones": False, "spreadNodes": False},
    )
    body["metadata"]["labels"] = {BENCH_LABEL: role}
    return body


def trainingjob(name: str) -> Obj:
    return {
        "apiVersion": "kubeforge.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "labels": {BENCH_LABEL: "job"}},
        "spec": {
            "image": IMAGE,
            "workers": 1,
            "resources": {"gpus": 1, "gpuType": GPU_TYPE},
            "podMetadata": {"annotations": {"e2e.kubeforge.dev/run-seconds": RUN_SECONDS}},
        },
    }


def fleets_path(namespace: str, name: str = "") -> str:
    return f"{KF}/namespaces/{namespace}/inferencefleets" + (f"/{name}" if name else "")


def jobs_path(namespace: str) -> str:
    return f"{KF}/namespaces/{namespace}/trainingjobs"


def deployments_path(namespace: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments"


def fleet_equivalent(namespace: str, name: str, label: str) -> list[tuple[str, Obj]]:
    """What a one-replica fleet is made of, written by hand: the Deployment, a Service in front of it
    and a ControllerRevision keeping its template (no PodDisruptionBudget: a one-replica fleet's default
    budget could refuse no eviction, so the operator makes none). The second baseline, so the control
    plane's work for these objects is not counted as the operator's."""
    dep = deployment(name)
    dep["metadata"]["labels"][BENCH_LABEL] = label
    dep["spec"]["template"]["metadata"]["labels"][BENCH_LABEL] = label
    meta = {"name": name, "labels": {BENCH_LABEL: label}}
    selector = {"app": name}
    return [
        (
            f"/api/v1/namespaces/{namespace}/services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": meta,
                "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": 8000}]},
            },
        ),
        (
            f"/apis/apps/v1/namespaces/{namespace}/controllerrevisions",
            {
                "apiVersion": "apps/v1",
                "kind": "ControllerRevision",
                "metadata": meta,
                "revision": 1,
                "data": {"spec": dep["spec"]["template"]},
            },
        ),
        (deployments_path(namespace), dep),
    ]


def interleave(first: list[tuple[str, Obj]], second: list[tuple[str, Obj]]) -> list[tuple[str, Obj]]:
    """Both lists evenly mixed, so neither kind waits behind all of the other's creations."""
    tagged = [(i / max(1, len(first)), 0, item) for i, item in enumerate(first)]
    tagged += [(i / max(1, len(second)), 1, item) for i, item in enumerate(second)]
    return [item for _, _, item in sorted(tagged, key=lambda t: (t[0], t[1]))]


# ------------------------------------------------------------------------------------ bulk creation
@dataclass
class CreateStats:
    seconds: float = 0.0
    retries: int = 0
    retry_codes: dict[str, int] = field(default_factory=dict)


def create_all(cluster: LocalCluster, items: Sequence[tuple[str, Obj]], threads: int) -> CreateStats:
    """POST every (path, body) with ``threads`` clients at once. 409 counts as created (a retried POST
    may have landed); 429 and 5xx (the API server's in-flight limit, etcd hiccups) are retried."""
    stats = CreateStats()
    local = threading.local()
    clients: list[Api] = []
    lock = threading.Lock()

    def client() -> Api:
        api: Api | None = getattr(local, "api", None)
        if api is None:
            api = cluster.api(timeout=BULK_TIMEOUT)
            local.api = api
            with lock:
                clients.append(api)
        return api

    def retry(reason: str, attempt: int) -> None:
        with lock:
            stats.retries += 1
            stats.retry_codes[reason] = stats.retry_codes.get(reason, 0) + 1
        time.sleep(min(2.0, 0.1 * 2**attempt))

    def create(path: str, body: Obj) -> None:
        for attempt in range(8):
            try:
                client().post(path, body)
                return
            except ApiError as error:
                if error.status == 409:
                    return
                if error.status != 429 and error.status < 500:
                    raise
                retry(str(error.status), attempt)
            except httpx.TransportError as error:
                retry(type(error).__name__, attempt)
        raise BenchError(f"could not create {path}/{body['metadata']['name']} after 8 attempts")

    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="create")
    try:
        futures: list[Future[None]] = [pool.submit(create, path, body) for path, body in items]
        for future in futures:
            future.result()
    finally:
        # On an error or Ctrl-C, queued creations are dropped rather than waited for.
        pool.shutdown(wait=True, cancel_futures=True)
        for api in clients:
            api.close()
    stats.seconds = time.monotonic() - started
    return stats


# ----------------------------------------------------------------------------------------- waiting
def wait_until(
    description: str,
    check: Callable[[], tuple[int, int, str]],
    *,
    since: float,
    timeout: float,
    interval: float = 1.0,
    every: float = 5.0,
    detail: Callable[[], str] | None = None,
) -> float:
    """Poll ``check`` -> (done, total, text) until done >= total; seconds since ``since``. Prints the
    text every ``every`` seconds; raises BenchError after ``timeout``. A failing poll (the API server
    busy) counts as "not yet"."""
    last_print = time.monotonic()
    text = "not polled yet"
    while True:
        try:
            done, total, text = check()
        except (ApiError, httpx.HTTPError) as error:
            done, total, text = 0, 1, f"poll failed: {error}"
        now = time.monotonic()
        if done >= total:
            elapsed = now - since
            say(f"{description}: {text} after {elapsed:.1f}s")
            return elapsed
        if now - since > timeout:
            raise BenchError(f"{description}: {text} after {timeout:.0f}s (--timeout)")
        if now - last_print >= every:
            more = f" ({detail()})" if detail is not None else ""
            say(f"{description}: {text}{more}")
            last_print = now
        time.sleep(interval)


def items(api: Api, path: str, selector: str) -> list[Obj]:
    found: list[Obj] = api.get(path, params={"labelSelector": selector}).get("items") or []
    return found


class Tally:
    """How many objects of one collection are in each state (``state(obj)``), kept current by a watch:
    one LIST, then its events. Counting them at each poll costs the API server nothing, where listing a
    thousand custom resources every second took a tenth of its CPU, on the machine whose speed is being
    measured. Its own client, so `stop()` ends it at once by closing it (the thread, a daemon, may stay
    blocked in a read until its short server-side timeout; it reads nothing more). `error`: the last
    failure, until a LIST succeeds again."""

    def __init__(self, cluster: LocalCluster, path: str, selector: str, state: Callable[[Obj], str]) -> None:
        self.path, self.selector, self.state = path, selector, state
        self._api = cluster.api(timeout=60.0)
        self._states: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._synced = threading.Event()
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"tally {path}", daemon=True)
        self._thread.start()

    def counts(self) -> dict[str, int]:
        """Objects by state; empty until the first LIST has arrived."""
        if not self._synced.is_set():
            return {}
        with self._lock:
            found: dict[str, int] = {}
            for value in self._states.values():
                found[value] = found.get(value, 0) + 1
            return found

    def stop(self) -> None:
        self._stopped.set()
        self._api.close()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                listed = self._api.get(self.path, params={"labelSelector": self.selector})
                with self._lock:
                    self._states = {i["metadata"]["name"]: self.state(i) for i in listed.get("items") or []}
                self._synced.set()
                self.error = None
                version = str(listed["metadata"]["resourceVersion"])
                params = {"labelSelector": self.selector, "allowWatchBookmarks": "true"}
                watch = self._api.watch(self.path, {**params, "resourceVersion": version}, timeout_seconds=60)
                for event in watch:
                    if event.get("type") == "ERROR":
                        break  # expired (410): list again
                    obj = event["object"]
                    if event["type"] == "BOOKMARK":
                        continue
                    name = obj["metadata"]["name"]
                    with self._lock:
                        if event["type"] == "DELETED":
                            self._states.pop(name, None)
                        else:
                            self._states[name] = self.state(obj)
            except Exception as error:  # any failure: say it, list again
                if self._stopped.is_set():
                    return
                self.error = f"{type(error).__name__}: {error}"
                time.sleep(0.5)


class Curve:
    """Counts over time, one point per poll of a convergence wait (no extra API requests): `t` is the
    seconds since the first creation (when every count is 0), each other column a count (available
    Deployments, Ready fleets). The first poll comes once every object is created."""

    def __init__(self, since: float, *columns: str) -> None:
        self.since = since
        self.columns = columns
        self.points: list[tuple[float, tuple[int, ...]]] = [(0.0, tuple(0 for _ in columns))]

    def add(self, *counts: int) -> None:
        self.points.append((round(time.monotonic() - self.since, 2), counts))

    def as_json(self) -> Obj:
        data: Obj = {"t": [t for t, _ in self.points]}
        for index, column in enumerate(self.columns):
            data[column] = [counts[index] for _, counts in self.points]
        return data


# ------------------------------------------------------------------------------------- process RSS
def proc_status_kib(pid: int, key: str) -> int | None:
    """A ``/proc/<pid>/status`` field in KiB (VmRSS, VmHWM), None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_seconds(pid: int | None) -> float | None:
    """User plus system CPU time of a process so far, None when it is gone."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def cpu_delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else round(after - before, 2)


def machine_cpu(ctx: Context) -> dict[str, float]:
    """CPU seconds so far of every process on the machine's side of the benchmark: the control plane's,
    the running operators' and this script's own (its watches and creations), by label."""
    out: dict[str, float] = {}
    for name, (pid, alive) in ctx.cluster.processes().items():
        seconds = cpu_seconds(pid) if alive else None
        if seconds is not None:
            out[name] = seconds
    for op in ctx.operators:
        seconds = cpu_seconds(op.pid) if op.running else None
        if seconds is not None:
            out[op.label] = seconds
    own = cpu_seconds(os.getpid())
    if own is not None:
        out["benchmark"] = own
    return out


def cpu_breakdown(after: dict[str, float], before: dict[str, float], wall: float) -> Obj:
    """Where a phase's CPU went: seconds by process (a process started during the phase counts from
    zero) against the seconds the machine had (wall time x cores). With the two close, the phase's
    time is its total work divided by the cores, and any process's share of it is what it cost."""
    spent = {k: round(v - before.get(k, 0.0), 1) for k, v in after.items()}
    by = dict(sorted(spent.items(), key=lambda kv: -kv[1]))
    return {
        "seconds_by_process": by,
        "seconds_total": round(sum(by.values()), 1),
        "seconds_available": round(wall * (os.cpu_count() or 1), 1),
    }


class RssSampler:
    """VmRSS of the operator processes every second (a background thread), and VmHWM read just before
    each process is stopped (after that /proc no longer has it)."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.peak_rss_kib: dict[str, int] = {}
        self.hwm_kib: dict[str, int] = {}
        self._pids: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def watch(self, label: str, pid: int | None) -> None:
        if pid is not None:
            with self._lock:
                self._pids[label] = pid

    def final(self, label: str) -> None:
        """Read VmHWM and stop watching (call before the process is signalled)."""
        with self._lock:
            pid = self._pids.pop(label, None)
        if pid is None:
            return
        self._sample(label, pid)
        hwm = proc_status_kib(pid, "VmHWM")
        if hwm is not None:
            self.hwm_kib[label] = max(hwm, self.hwm_kib.get(label, 0))

    def current_mib(self) -> dict[str, float]:
        with self._lock:
            pids = dict(self._pids)
        out: dict[str, float] = {}
        for label, pid in pids.items():
            rss = proc_status_kib(pid, "VmRSS")
            if rss is not None:
                out[label] = rss / 1024
        return out

    def _sample(self, label: str, pid: int) -> None:
        rss = proc_status_kib(pid, "VmRSS")
        if rss is not None:
            with self._lock:
                self.peak_rss_kib[label] = max(rss, self.peak_rss_kib.get(label, 0))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                pids = dict(self._pids)
            for label, pid in pids.items():
                self._sample(label, pid)


# -------------------------------------------------------------------------------------- the operator
class BenchOperator(OperatorProcess):
    """The operator as a user runs it: its own default resync (the tests' quick one would inflate the
    idle request rate), and a choice of health path to wait for (a standby need not be ready)."""

    def __init__(
        self, label: str, cluster: LocalCluster, log_dir: Path, extra_args: Sequence[str], ready_path: str
    ) -> None:
        super().__init__(
            cluster.kubeconfig,
            log_dir / f"{label}.log",
            extra_args=extra_args,
            env=cluster.env(),
            resync_seconds=None,
            ready_path=ready_path,
        )
        self.label = label

    def scrape(self) -> OperatorScrape:
        try:
            return OperatorScrape(httpx.get(self.metrics_url, timeout=10, trust_env=False).text)
        except httpx.HTTPError:
            return OperatorScrape("")


@dataclass(frozen=True)
class OperatorScrape:
    """One scrape of the operator's /metrics, read whichever metric names the operator has."""

    text: str

    def requests(self) -> RequestCounts | None:
        """(VERB, resource) -> requests so far; None when the operator counts no requests."""
        samples = promtext.parse(self.text, ["kubeforge_api_requests_total"])
        if samples:
            return {
                (verb.upper(), resource): v
                for (verb, resource), v in promtext.sum_by(samples, "verb", "resource").items()
            }
        samples = promtext.parse(self.text, ["rest_client_requests_total"])
        if samples:
            # client-go's counter has the HTTP method only (a LIST or WATCH is a GET).
            return {(m.upper(), ""): v for (m,), v in promtext.sum_by(samples, "method").items()}
        if any(promtext.has_metric(self.text, name) for name in OPERATOR_REQUEST_METRICS):
            return {}
        return None

    def reconcile_histogram(self) -> tuple[str, list[tuple[float, float]]] | None:
        for name in RECONCILE_HISTOGRAMS:
            samples = promtext.parse(self.text, [f"{name}_bucket"])
            if samples:
                return name, promtext.histogram_buckets(samples)
        return None

    def reconciles(self) -> float:
        return sum(s.value for s in promtext.parse(self.text, list(RECONCILE_COUNTERS)))

    def leader(self) -> bool | None:
        samples = promtext.parse(self.text, [LEADER_METRIC])
        if not samples:
            return None
        return any(s.value >= 1 for s in samples)


def operator_help() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "kubeforge.cli", "run", "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env={**os.environ, "KUBECONFIG": os.devnull},
        timeout=60,
    )
    return result.stdout + result.stderr


# --------------------------------------------------------------------------------- API server load
def apiserver_metrics(api: Api) -> str:
    text = api.request("GET", "/metrics")
    if not isinstance(text, str):
        raise BenchError("the API server's /metrics did not answer with text")
    return text


def apiserver_requests(api: Api) -> RequestCounts:
    """(VERB, group, resource, subresource) -> requests the API server has answered since it started."""
    samples = promtext.parse(apiserver_metrics(api), ["apiserver_request_total"])
    return promtext.sum_by(samples, "verb", "group", "resource", "subresource")


# Creations whose API latency the benchmark reports: a Service's ClusterIP is allocated under one lock
# in the API server (the allocator creates the address's IPAddress object while holding it), so under
# load Services are created one at a time however many clients ask, and a fleet's first pass waits on
# its Service; Deployments are the comparison.
LATENCY_OF = (("POST", "services"), ("POST", "ipaddresses"), ("POST", "deployments"))


def apiserver_latency(api: Api) -> dict[tuple[str, str], tuple[float, float]]:
    """(VERB, resource) -> (requests, seconds spent answering them) for LATENCY_OF, since the API
    server started (its ``apiserver_request_duration_seconds`` histogram, all subresources)."""
    names = ["apiserver_request_duration_seconds_count", "apiserver_request_duration_seconds_sum"]
    samples = promtext.parse(apiserver_metrics(api), names)
    out: dict[tuple[str, str], tuple[float, float]] = {}
    for key in LATENCY_OF:
        picked = [
            s
            for s in samples
            if s.label("verb") == key[0] and s.label("resource") == key[1] and not s.label("subresource")
        ]
        count = sum(s.value for s in picked if s.name.endswith("_count"))
        seconds = sum(s.value for s in picked if s.name.endswith("_sum"))
        out[key] = (count, seconds)
    return out


def latency_delta(
    after: dict[tuple[str, str], tuple[float, float]], before: dict[tuple[str, str], tuple[float, float]]
) -> Obj:
    """{"POST services": {"requests": n, "mean_seconds": s}, ...} between two readings."""
    out: Obj = {}
    for key, (count, seconds) in after.items():
        n = count - before.get(key, (0.0, 0.0))[0]
        spent = seconds - before.get(key, (0.0, 0.0))[1]
        if n > 0:
            out[" ".join(key)] = {"requests": int(n), "mean_seconds": round(spent / n, 4)}
    return out


def by_verb(counts: RequestCounts) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in counts.items():
        out[key[0]] = out.get(key[0], 0.0) + value
    return out


def writes(verbs: dict[str, float]) -> float:
    return sum(v for verb, v in verbs.items() if verb not in READ_VERBS)


def rates(verbs: dict[str, float], seconds: float) -> dict[str, float]:
    return {verb: round(v / seconds, 3) for verb, v in sorted(verbs.items()) if v}


def resource_name(key: tuple[str, ...]) -> str:
    _, group, resource, sub = key
    name = f"{resource}.{group}" if group else resource or "(non-resource)"
    return f"{name}/{sub}" if sub else name


def write_breakdown(counts: RequestCounts) -> dict[str, float]:
    """'VERB resource' -> writes, for the JSON (where the writes went)."""
    return {
        f"{key[0]} {resource_name(key)}": v
        for key, v in sorted(counts.items())
        if v and key[0] not in READ_VERBS
    }


# --------------------------------------------------------------------------------------- the phases
def other_namespace(namespace: str) -> str:
    """Another tenant's namespace: one fleet created there right after the burst."""
    return f"{namespace}-other"


@dataclass
class Context:
    args: argparse.Namespace
    cluster: LocalCluster
    api: Api
    namespace: str
    log_dir: Path
    sampler: RssSampler
    scope: list[str]
    extra: list[str]
    operators: list[BenchOperator] = field(default_factory=list)

    @property
    def other_namespace(self) -> str:
        return other_namespace(self.namespace)

    def operator(self, label: str, extra: Sequence[str] = (), ready_path: str = "/readyz") -> BenchOperator:
        op = BenchOperator(label, self.cluster, self.log_dir, [*self.scope, *self.extra, *extra], ready_path)
        self.operators.append(op)
        op.start(timeout=120)
        self.sampler.watch(label, op.pid)
        return op

    def stop(self, op: BenchOperator) -> None:
        self.sampler.final(op.label)
        op.stop()


def phase_baseline(ctx: Context, *, children: bool = False) -> Obj:
    """N Deployments (or, with `children`, each with the Service and ControllerRevision a fleet
    has) created directly: the built-in controllers' time for the same pods."""
    api, ns, n = ctx.api, ctx.namespace, ctx.args.fleets
    label = "baseline-children" if children else "baseline"
    what = "Deployments with a Service and ControllerRevision each" if children else "Deployments"
    say(f"{label}: creating {n} {what} ({ctx.args.threads} at a time)")
    writes_list: list[tuple[str, Obj]] = []
    for i in range(n):
        if children:
            writes_list.extend(fleet_equivalent(ns, f"basec-{i:05d}", label))
        else:
            writes_list.append((deployments_path(ns), deployment(f"base-{i:05d}")))
    before = apiserver_requests(api)
    latency_before = apiserver_latency(api)
    cpu_before = machine_cpu(ctx)
    started = time.monotonic()
    stats = create_all(ctx.cluster, writes_list, ctx.args.threads)
    say(f"{label}: {len(writes_list)} objects created in {stats.seconds:.1f}s ({stats.retries} retried)")

    curve = Curve(started, "available")

    def is_available(d: Obj) -> str:
        status = d.get("status") or {}
        done = status.get("availableReplicas", 0) >= 1
        return (
            "available"
            if done and status.get("observedGeneration", 0) >= d["metadata"].get("generation", 1)
            else ""
        )

    tally = Tally(ctx.cluster, deployments_path(ns), f"{BENCH_LABEL}={label}", is_available)

    def available() -> tuple[int, int, str]:
        ready = tally.counts().get("available", 0)
        curve.add(ready)
        return ready, n, f"{ready}/{n} available" + (f" (watch: {tally.error})" if tally.error else "")

    try:
        ready_s = wait_until(label, available, since=started, timeout=ctx.args.timeout)
        cpu = cpu_breakdown(machine_cpu(ctx), cpu_before, time.monotonic() - started)
        during = promtext.delta(apiserver_requests(api), before)
        latency = latency_delta(apiserver_latency(api), latency_before)
    finally:
        tally.stop()

    say(f"{label}: deleting what it created")
    deleted = time.monotonic()
    collections = [deployments_path(ns)]
    if children:
        collections += [
            f"/api/v1/namespaces/{ns}/services",
            f"/apis/apps/v1/namespaces/{ns}/controllerrevisions",
        ]
    for path in collections:
        if path.endswith("/services"):
            # Services have no collection delete: one by one.
            for svc in items(api, path, f"{BENCH_LABEL}={label}"):
                api.request("DELETE", f"{path}/{svc['metadata']['name']}")
            continue
        api.request(
            "DELETE",
            path,
            body={"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"},
            params={"labelSelector": f"{BENCH_LABEL}={label}"},
        )

    def pods_gone() -> tuple[int, int, str]:
        left = len(items(api, f"/api/v1/namespaces/{ns}/pods", f"{BENCH_LABEL}={label}"))
        return n - left, n, f"{left} pods left"

    gone_s = wait_until(f"{label} delete", pods_gone, since=deleted, timeout=ctx.args.timeout)
    verbs = by_verb(during)
    return {
        "deployments": n,
        "with_children": children,
        "create_seconds": round(stats.seconds, 2),
        "create_retries": stats.retries,
        "create_retry_codes": stats.retry_codes,
        "available_seconds": round(ready_s, 2),
        "delete_to_pods_gone_seconds": round(gone_s, 2),
        "apiserver_requests_until_available": {k: int(v) for k, v in sorted(verbs.items())},
        "apiserver_writes_until_available": int(writes(verbs)),
        "apiserver_writes_by_resource_until_available": write_breakdown(during),
        "available_curve": curve.as_json(),
        "cpu_until_available": cpu,
        "apiserver_latency_until_available": latency,
    }


def phase_converge(ctx: Context, op: BenchOperator) -> Obj:
    api, ns, n, m = ctx.api, ctx.namespace, ctx.args.fleets, ctx.args.jobs
    fleets = [(fleets_path(ns), fleet_manifest(f"fleet-{i:05d}", "fleet")) for i in range(n)]
    jobs = [(jobs_path(ns), trainingjob(f"job-{i:05d}")) for i in range(m)]
    say(f"kubeforge: creating {n} InferenceFleets and {m} TrainingJobs ({ctx.args.threads} at a time)")
    before = apiserver_requests(api)
    latency_before = apiserver_latency(api)
    op_before = op.scrape().requests()
    cpu_before = cpu_seconds(op.pid)
    machine_before = machine_cpu(ctx)
    started = time.monotonic()
    stats = create_all(ctx.cluster, interleave(fleets, jobs), ctx.args.threads)
    say(f"kubeforge: {n + m} objects created in {stats.seconds:.1f}s ({stats.retries} retried)")
    reached: dict[str, float] = {}
    curve = Curve(started, "fleets_ready", "jobs_succeeded")
    # Another tenant's fleet, created once the burst is queued: how long one namespace's thousand
    # objects keep another namespace waiting.
    other = fleet_manifest("other-tenant", "other")
    other_tally = Tally(
        ctx.cluster,
        fleets_path(ctx.other_namespace),
        f"{BENCH_LABEL}=other",
        lambda f: "Ready" if is_true(f, "Ready") else "",
    )
    api.post(fleets_path(ctx.other_namespace), other)
    other_created = time.monotonic()

    ready_fleets = Tally(
        ctx.cluster, fleets_path(ns), f"{BENCH_LABEL}=fleet", lambda f: "Ready" if is_true(f, "Ready") else ""
    )
    job_phases = Tally(
        ctx.cluster,
        jobs_path(ns),
        f"{BENCH_LABEL}=job",
        lambda j: str((j.get("status") or {}).get("phase") or "none"),
    )

    def converged() -> tuple[int, int, str]:
        ready = ready_fleets.counts().get("Ready", 0)
        phases = job_phases.counts()
        if phases.get("Failed"):
            raise BenchError(f"{phases['Failed']} TrainingJobs Failed; see {op.log_path}")
        done = phases.get("Succeeded", 0)
        curve.add(ready, done)
        now = time.monotonic() - started
        if ready >= n:
            reached.setdefault("fleets_ready_seconds", now)
        if done >= m:
            reached.setdefault("jobs_succeeded_seconds", now)
        if other_tally.counts().get("Ready", 0) and "other_namespace_fleet_ready_seconds" not in reached:
            reached["other_namespace_fleet_ready_seconds"] = time.monotonic() - other_created
        other = ", ".join(f"{k} {v}" for k, v in sorted(phases.items()) if k != "Succeeded")
        text = f"fleets Ready {ready}/{n}, jobs Succeeded {done}/{m}" + (f" ({other})" if other else "")
        problems = [t.error for t in (ready_fleets, job_phases) if t.error]
        return ready + done, n + m, text + (f" (watch: {'; '.join(problems)})" if problems else "")

    def progress() -> str:
        # Where the time goes: the operator's part (children applied, work queued) against the cluster's
        # (pods created, bound, ready), so a slow run says which side is slow.
        memory = ", ".join(f"{k} RSS {v:.0f} MiB" for k, v in ctx.sampler.current_mib().items())
        if not ctx.args.trace:
            return memory
        requests = op.scrape().requests() or {}
        applied = int(requests.get(("APPLY", "deployments"), 0) + requests.get(("CREATE", "deployments"), 0))
        pods = items(api, f"/api/v1/namespaces/{ns}/pods", "")
        bound = sum(1 for p in pods if (p.get("spec") or {}).get("nodeName"))
        ready_pods = sum(
            1
            for p in pods
            if any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (p.get("status") or {}).get("conditions") or []
            )
        )
        return (
            f"operator wrote {applied} Deployments; pods {len(pods)} created, {bound} bound,"
            f" {ready_pods} ready; {memory}"
        )

    try:
        total_s = wait_until("kubeforge", converged, since=started, timeout=ctx.args.timeout, detail=progress)
        cpu = cpu_delta(cpu_seconds(op.pid), cpu_before)
        machine = cpu_breakdown(machine_cpu(ctx), machine_before, time.monotonic() - started)
        during = promtext.delta(apiserver_requests(api), before)
        latency = latency_delta(apiserver_latency(api), latency_before)
    finally:
        ready_fleets.stop()
        job_phases.stop()
        other_tally.stop()
    scrape = op.scrape()
    op_after = scrape.requests()
    verbs = by_verb(during)
    result: Obj = {
        "fleets": n,
        "jobs": m,
        "create_seconds": round(stats.seconds, 2),
        "create_retries": stats.retries,
        "create_retry_codes": stats.retry_codes,
        "total_seconds": round(total_s, 2),
        **{k: round(v, 2) for k, v in reached.items()},
        "apiserver_requests_until_converged": {k: int(v) for k, v in sorted(verbs.items())},
        "apiserver_writes_until_converged": int(writes(verbs)),
        "apiserver_writes_by_resource_until_converged": write_breakdown(during),
        "operator_cpu_seconds_until_converged": cpu,
        "cpu_until_converged": machine,
        "apiserver_latency_until_converged": latency,
        "reconcile": reconcile_latency(scrape),
        "ready_curve": curve.as_json(),
    }
    if op_after is not None:
        op_verbs = by_verb(promtext.delta(op_after, op_before or {}))
        result["operator_requests_until_converged"] = {k: int(v) for k, v in sorted(op_verbs.items())}
    return result


def reconcile_latency(scrape: OperatorScrape) -> Obj | None:
    found = scrape.reconcile_histogram()
    if found is None:
        return None
    name, buckets = found
    p50 = promtext.histogram_quantile(0.5, buckets)
    p99 = promtext.histogram_quantile(0.99, buckets)
    return {
        "metric": name,
        "count": int(buckets[-1][1]) if buckets else 0,
        "p50_seconds": None if p50 is None else round(p50, 4),
        "p99_seconds": None if p99 is None else round(p99, 4),
        # The estimate stops at the highest finite bucket bound: then the true quantile is above it.
        "p50_beyond_last_bucket": promtext.beyond_last_bucket(0.5, buckets),
        "p99_beyond_last_bucket": promtext.beyond_last_bucket(0.99, buckets),
        "buckets": [["+Inf" if math.isinf(le) else le, int(n)] for le, n in buckets],
    }


def idle_window(ctx: Context, label: str, op: BenchOperator | None) -> Obj:
    seconds = float(ctx.args.idle_seconds)
    say(f"idle ({label}): measuring for {seconds:.0f}s")
    api_before = apiserver_requests(ctx.api)
    op_before = op.scrape().requests() if op is not None else None
    cpu_before = cpu_seconds(op.pid) if op is not None else None
    started = time.monotonic()
    deadline = started + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(15.0, left))
        if deadline - time.monotonic() > 0.5:
            say(f"idle ({label}): {time.monotonic() - started:.0f}/{seconds:.0f}s")
    api_after = apiserver_requests(ctx.api)
    elapsed = time.monotonic() - started
    counts = promtext.delta(api_after, api_before)
    verbs = by_verb(counts)
    result: Obj = {
        "seconds": round(elapsed, 1),
        "apiserver_rps": round(sum(verbs.values()) / elapsed, 3),
        "apiserver_write_rps": round(writes(verbs) / elapsed, 3),
        "apiserver_rps_by_verb": rates(verbs, elapsed),
        "apiserver_writes": write_breakdown(counts),
        "_counts": counts,
    }
    if op is not None:
        cpu = cpu_delta(cpu_seconds(op.pid), cpu_before)
        result["operator_cpu_cores"] = None if cpu is None else round(cpu / elapsed, 3)
        op_after = op.scrape().requests()
        if op_after is not None:
            op_verbs = by_verb(promtext.delta(op_after, op_before or {}))
            result["operator_rps"] = round(sum(op_verbs.values()) / elapsed, 3)
            result["operator_write_rps"] = round(writes(op_verbs) / elapsed, 3)
            result["operator_rps_by_verb"] = rates(op_verbs, elapsed)
    say(
        f"idle ({label}): API server {result['apiserver_rps']:.1f} req/s "
        f"({result['apiserver_write_rps']:.1f} writes/s)"
    )
    return result


HEARTBEATS = frozenset({("PATCH", "", "nodes", "status"), ("PUT", "coordination.k8s.io", "leases", "")})
"""The simulated nodes' status and lease renewals: 35 writes/s here, varying by up to a write a second
from one minute to the next. The idle operator writes no Node and no Lease (it runs without leader
election; its own counter shows every request it makes), so they are left out of the difference."""


def idle_difference(with_op: Obj, without: Obj) -> Obj:
    """The API server's requests per second with the operator minus without it, by verb, the nodes'
    heartbeats left out."""

    def beyond_heartbeats(window: Obj) -> dict[str, float]:
        return by_verb({k: v for k, v in window["_counts"].items() if k not in HEARTBEATS})

    a, b = beyond_heartbeats(with_op), beyond_heartbeats(without)
    sa, sb = with_op["seconds"], without["seconds"]
    verbs = sorted(set(a) | set(b))
    by = {v: round(a.get(v, 0.0) / sa - b.get(v, 0.0) / sb, 3) for v in verbs}
    return {
        "rps": round(sum(by.values()), 3),
        "write_rps": round(sum(r for v, r in by.items() if v not in READ_VERBS), 3),
        "rps_by_verb": {v: r for v, r in by.items() if abs(r) >= 0.001},
    }


def fleet_revision(image: str) -> str | None:
    """The revision the operator will give the fleet after the change, from its own builder (None when
    the builder's interface changed: then any new revision counts)."""
    try:
        from kubeforge.api.inferencefleet import InferenceFleetSpec
        from kubeforge.builders.inferencefleet import revision

        spec = InferenceFleetSpec.model_validate(fleet_manifest("x", "fleet", image)["spec"])
        return str(revision(spec))
    except Exception:
        return None


# Writes in the API server's counts that only the operator makes here: server-side apply (no other
# component of this cluster uses it), anything on the kubeforge kinds, and deleting Deployments or
# Services (garbage collection deletes ReplicaSets and pods, never these, while no fleet is deleted).
# Events are left out: the built-in controllers post core/v1 Events too.
def operator_kind_writes(counts: RequestCounts) -> float:
    return sum(
        v
        for (verb, group, resource, _), v in counts.items()
        if verb not in READ_VERBS
        and (
            verb == "APPLY"
            or group == "kubeforge.dev"
            or (verb == "DELETE" and resource in ("deployments", "services", "controllerrevisions"))
        )
    )


def phase_image_change(ctx: Context, op: BenchOperator, idle: Obj) -> Obj:
    api, ns = ctx.api, ctx.namespace
    name = "fleet-00000"
    obj = api.get(fleets_path(ns, name))
    old_rev = (obj.get("status") or {}).get("revision")
    image = IMAGE.replace(":", ":bench-v2-", 1) if ":" in IMAGE else IMAGE + ":bench-v2"
    new_rev = fleet_revision(image)
    say(f"image change: {name} {old_rev} -> {new_rev or 'a new revision'}")
    api_before = apiserver_requests(api)
    op_before = op.scrape().requests()
    started = time.monotonic()
    patched = api.merge_patch(fleets_path(ns, name), {"spec": {"image": image}})
    generation = int(patched["metadata"]["generation"])

    def on_new_revision() -> tuple[int, int, str]:
        current = api.get(fleets_path(ns, name))
        status = current.get("status") or {}
        rev = status.get("revision")
        ok = (
            status.get("observedGeneration", 0) >= generation
            and rev != old_rev
            and (new_rev is None or rev == new_rev)
            and is_true(current, "Ready")
            and int(status.get("readyReplicas") or 0) >= 1
        )
        return int(ok), 1, f"revision {rev}, Ready {is_true(current, 'Ready')}"

    ready_s = wait_until("image change", on_new_revision, since=started, timeout=300, interval=0.2)
    api_ready = apiserver_requests(api)
    op_ready = op.scrape().requests()

    def old_gone() -> tuple[int, int, str]:
        deps = items(api, deployments_path(ns), f"kubeforge.dev/inferencefleet={name}")
        return int(len(deps) == 1), 1, f"{len(deps)} Deployments"

    settled_s = wait_until("image change cleanup", old_gone, since=started, timeout=300, interval=0.2)
    api_settled = apiserver_requests(api)
    op_settled = op.scrape().requests()
    idle_counts: RequestCounts = idle["_counts"]
    idle_kind_rate = operator_kind_writes(idle_counts) / idle["seconds"]

    def from_apiserver(after: RequestCounts, seconds: float) -> Obj:
        counts = promtext.delta(after, api_before)
        own = ("PATCH", "kubeforge.dev", "inferencefleets", "")
        counts[own] = counts.get(own, 0.0) - 1  # the benchmark's own image change
        verbs = by_verb(counts)
        return {
            "writes": int(writes(verbs)),
            "writes_by_verb": {k: int(v) for k, v in sorted(verbs.items()) if v and k not in READ_VERBS},
            "writes_by_resource": write_breakdown(counts),
            "operator_kind_writes": int(operator_kind_writes(counts)),
            # As many as an idle window of this length has (the other fleets' periodic passes): when
            # that is not small, operator_kind_writes says little about this one change.
            "operator_kind_writes_expected_idle": round(idle_kind_rate * seconds, 1),
        }

    result: Obj = {
        "fleet": name,
        "old_revision": old_rev,
        "new_revision": new_rev,
        "ready_seconds": round(ready_s, 2),
        "old_revision_gone_seconds": round(settled_s, 2),
        # Every client's writes (the Deployment, ReplicaSet and endpoint controllers', the scheduler's,
        # kwok's), since the API server does not count by client; operator_kind_writes is the part
        # only the operator makes.
        "apiserver_until_ready": from_apiserver(api_ready, ready_s),
        "apiserver_until_old_gone": from_apiserver(api_settled, settled_s),
    }
    idle_write_rps = idle.get("operator_write_rps")
    if op_before is not None and op_ready is not None and op_settled is not None:
        for key, after, seconds in (
            ("operator_until_ready", op_ready, ready_s),
            ("operator_until_old_gone", op_settled, settled_s),
        ):
            verbs = by_verb(promtext.delta(after, op_before))
            entry: Obj = {
                "writes_by_verb": {k: int(v) for k, v in sorted(verbs.items()) if v and k not in READ_VERBS},
                "writes": int(writes(verbs)),
            }
            if idle_write_rps is not None:
                # Writes the operator makes anyway in that time (periodic passes over the other fleets).
                entry["writes_minus_idle"] = round(writes(verbs) - idle_write_rps * seconds, 1)
            result[key] = entry
    say(
        f"image change: Ready on the new revision after {ready_s:.1f}s, "
        f"old revision gone after {settled_s:.1f}s"
    )
    return result


def find_leader(ctx: Context, ops: Sequence[BenchOperator]) -> BenchOperator | None:
    """The one process whose ``leader_election_master_status`` is 1; else the Lease holder when its
    identity names a pid of ours; else the only one that has reconciled anything."""
    running = [op for op in ops if op.running]
    scrapes = {op.label: op.scrape() for op in running}
    leaders = [op for op in running if scrapes[op.label].leader()]
    if leaders:
        return leaders[0] if len(leaders) == 1 else None
    with contextlib.suppress(ApiError):
        lease = ctx.api.get(f"/apis/coordination.k8s.io/v1/namespaces/{ctx.namespace}/leases/{LEASE_ID}")
        holder = str((lease.get("spec") or {}).get("holderIdentity") or "")
        named = [op for op in running if op.pid is not None and re.search(rf"(?<!\d){op.pid}(?!\d)", holder)]
        if len(named) == 1:
            return named[0]
    active = [op for op in running if scrapes[op.label].reconciles() > 0]
    return active[0] if len(active) == 1 else None


def lease_info(ctx: Context) -> Obj | None:
    try:
        lease = ctx.api.get(f"/apis/coordination.k8s.io/v1/namespaces/{ctx.namespace}/leases/{LEASE_ID}")
    except ApiError:
        return None
    spec = lease.get("spec") or {}
    return {k: spec.get(k) for k in ("holderIdentity", "leaseDurationSeconds", "leaseTransitions")}


def time_takeover(ctx: Context, victim: BenchOperator, sig: signal.Signals, fleet_name: str) -> float:
    """Signal the leader, create a fleet at once, and time until some operator has reconciled it."""
    ctx.sampler.final(victim.label)
    say(f"failover: {sig.name} to the leader {victim.label} (pid {victim.pid}), creating {fleet_name}")
    started = time.monotonic()
    victim.send(sig)
    ctx.api.post(fleets_path(ctx.namespace), fleet_manifest(fleet_name, "failover"))

    def reconciled() -> tuple[int, int, str]:
        status = ctx.api.get(fleets_path(ctx.namespace, fleet_name)).get("status") or {}
        seen = status.get("observedGeneration")
        return int(seen is not None), 1, f"observedGeneration {seen}"

    took = wait_until(
        f"failover ({sig.name})", reconciled, since=started, timeout=ctx.args.timeout, interval=0.1
    )
    victim.reap()
    return took


def phase_failover(ctx: Context) -> Obj:
    flags = ["--leader-elect", "--leader-election-namespace", ctx.namespace, "--leader-election-id", LEASE_ID]
    ops = [ctx.operator(label, flags, ready_path="/healthz") for label in ("operator-a", "operator-b")]
    leader = wait_for(lambda: find_leader(ctx, ops), timeout=120, interval=0.5, description="a leader")
    say(f"failover: {leader.label} leads ({lease_info(ctx)})")
    ctx.api.post(fleets_path(ctx.namespace), fleet_manifest("failover-warm", "failover"))
    wait_for(
        lambda: (ctx.api.get(fleets_path(ctx.namespace, "failover-warm")).get("status") or {}).get(
            "observedGeneration"
        ),
        timeout=ctx.args.timeout,
        interval=0.2,
        description="the leader reconciling a new fleet",
    )
    # The standby's caches must have synced before the kill is representative.
    time.sleep(ctx.args.standby_warmup)
    standby = next(op for op in ops if op is not leader)
    kill_s = time_takeover(ctx, leader, signal.SIGKILL, "failover-kill")
    after_kill = find_leader(ctx, ops)

    say(f"failover: restarting {leader.label} as the standby")
    leader.start(timeout=120)
    ctx.sampler.watch(leader.label, leader.pid)
    time.sleep(ctx.args.standby_warmup)
    current = wait_for(lambda: find_leader(ctx, ops), timeout=120, interval=0.5, description="a leader")
    term_s = time_takeover(ctx, current, signal.SIGTERM, "failover-term")
    result: Obj = {
        "sigkill_seconds": round(kill_s, 2),
        "sigterm_seconds": round(term_s, 2),
        "leader_after_sigkill": after_kill.label if after_kill else None,
        "expected_after_sigkill": standby.label,
        "lease": lease_info(ctx),
    }
    for op in ops:
        if op.running:
            ctx.stop(op)
    return result


# ------------------------------------------------------------------------------------------- report
def fmt_s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def fmt_ms(value: float | None, beyond: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"> {value:g} s" if beyond else f"{value * 1000:.0f} ms"


class Table:
    """Plain text, aligned: figure, value, target, whether the value meets it ("-" when no target)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = [("figure", "value", "target", "meets")]

    def add(self, figure: str, value: str, target: str = "", ok: bool | None = None) -> None:
        self.rows.append(
            (figure, value, target, "" if not target else "-" if ok is None else "yes" if ok else "NO")
        )

    def render(self) -> str:
        widths = [max(len(r[i]) for r in self.rows) for i in range(4)]
        lines = []
        for i, row in enumerate(self.rows):
            cells = (row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2]), row[3])
            lines.append("  ".join(cells).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)


def cpu_rows(t: Table, cpu: Obj | None) -> None:
    """Two rows: CPU seconds spent against those the machine had, and the three costliest processes."""
    if not cpu:
        return
    spent, available = cpu["seconds_total"], cpu["seconds_available"]
    t.add("  CPU s spent / available until then", f"{spent:.0f} / {available:.0f}")
    top = list(cpu["seconds_by_process"].items())[:3]
    t.add("    costliest", ", ".join(f"{k.removeprefix('kube-')} {v:.0f}" for k, v in top))


def latency_row(t: Table, latency: Obj | None) -> None:
    """One row: the API server's mean time to create a Service and a Deployment in the phase."""
    if not latency:
        return
    parts = [
        f"{what.removeprefix('POST ')} {fmt_ms(latency[what]['mean_seconds'])}"
        for what in ("POST services", "POST deployments")
        if what in latency
    ]
    t.add("  API server's mean create time", ", ".join(parts))


def table(results: Obj) -> str:
    t = Table()
    base: Obj = results.get("baseline") or {}
    kf: Obj = results.get("kubeforge") or {}
    base_s: float | None = base.get("available_seconds")
    if base:
        t.add(f"baseline: {base['deployments']} Deployments available", fmt_s(base_s))
        t.add("baseline: delete until pods gone", fmt_s(base["delete_to_pods_gone_seconds"]))
        same: Obj = results.get("baseline_children") or {}
        cpu_rows(t, base.get("cpu_until_available"))
        if same:
            t.add("baseline: same + Service, ControllerRevision each", fmt_s(same["available_seconds"]))
            cpu_rows(t, same.get("cpu_until_available"))
            latency_row(t, same.get("apiserver_latency_until_available"))
    else:
        t.add("baseline", "skipped" if results["config"]["skip_baseline"] else "not measured")
    limit = min(TARGET_TOTAL_SECONDS, TARGET_RATIO * base_s) if base_s else TARGET_TOTAL_SECONDS
    target = f"<= {TARGET_RATIO}x baseline and <= {TARGET_TOTAL_SECONDS:.0f} s"
    if kf:
        label = f"kubeforge: {kf['fleets']} fleets Ready + {kf['jobs']} jobs Succeeded"
        total = float(kf["total_seconds"])
        t.add(label, fmt_s(total), target, total <= limit)
        ready_s, done_s = kf.get("fleets_ready_seconds"), kf.get("jobs_succeeded_seconds")
        t.add("  fleets all Ready / jobs all Succeeded", f"{fmt_s(ready_s)} / {fmt_s(done_s)}")
        t.add(
            "  another namespace's fleet, created after them: Ready after",
            fmt_s(kf.get("other_namespace_fleet_ready_seconds")),
        )
        if base_s:
            ratio = total / base_s
            t.add("  ratio to baseline", f"{ratio:.2f}x", f"<= {TARGET_RATIO}x", ratio <= TARGET_RATIO)
        same_s = (results.get("baseline_children") or {}).get("available_seconds")
        if same_s:
            t.add("  ratio to the same objects created directly", f"{total / same_s:.2f}x")
        t.add("  operator CPU time until then", fmt_s(kf.get("operator_cpu_seconds_until_converged")))
        cpu_rows(t, kf.get("cpu_until_converged"))
        latency_row(t, kf.get("apiserver_latency_until_converged"))
    else:
        t.add("kubeforge: fleets Ready + jobs Succeeded", "not measured", target)
    peak = (results.get("rss_mib") or {}).get("operator_peak")
    t.add(
        "operator peak RSS (VmHWM, any operator)",
        "n/a" if peak is None else f"{peak:.0f} MiB",
        f"<= {TARGET_RSS_MIB:.0f} MiB",
        None if peak is None else peak <= TARGET_RSS_MIB,
    )
    rec = kf.get("reconcile")
    if rec:
        t.add(
            f"reconcile p50 / p99 ({rec['count']} passes)",
            f"{fmt_ms(rec['p50_seconds'], rec.get('p50_beyond_last_bucket', False))} / "
            f"{fmt_ms(rec['p99_seconds'], rec.get('p99_beyond_last_bucket', False))}",
        )
    idle = results.get("idle")
    if idle:
        net = idle["operator_net"]
        rps = net["rps"]
        t.add(
            "idle: operator req/s (API server, net of node heartbeats)",
            f"{rps:.2f}",
            f"<= {TARGET_IDLE_RPS:.0f}",
            rps <= TARGET_IDLE_RPS,
        )
        t.add("  of which writes/s", f"{net['write_rps']:.2f}")
        own, own_writes = (
            idle["with_operator"].get("operator_rps"),
            idle["with_operator"].get("operator_write_rps"),
        )
        t.add(
            "  operator's own counter: req/s, writes/s",
            "n/a" if own is None else f"{own:.2f}, {own_writes:.2f}",
        )
        t.add("  control plane without operator req/s", f"{idle['without_operator']['apiserver_rps']:.1f}")
        cores = idle["with_operator"].get("operator_cpu_cores")
        t.add("  operator CPU while idle", "n/a" if cores is None else f"{cores * 100:.0f}% of a core")
    image = results.get("image_change")
    if image:
        mine, seen = image.get("operator_until_ready"), image["apiserver_until_ready"]
        target = f"<= {TARGET_IMAGE_WRITES}"
        if mine is not None:
            value = str(mine["writes"])
            if "writes_minus_idle" in mine:
                value += f" ({mine['writes_minus_idle']:.0f} net of idle)"
            t.add("image change: operator writes", value, target, mine["writes"] <= TARGET_IMAGE_WRITES)
        else:
            t.add("image change: operator writes (own counter)", "n/a")
        kinds, noise = seen["operator_kind_writes"], seen["operator_kind_writes_expected_idle"]
        if noise < 1:
            ok = None if mine is not None else kinds <= TARGET_IMAGE_WRITES
            t.add("  API server: operator-only writes", str(kinds), "" if mine else target + " (est.)", ok)
        else:
            t.add("  API server: operator-only writes", f"{kinds} (~{noise:.0f} of them periodic)")
        t.add("  API server: writes by every client", str(seen["writes"]))
        t.add(
            "  Ready on new revision / old one gone",
            f"{fmt_s(image['ready_seconds'])} / {fmt_s(image['old_revision_gone_seconds'])}",
        )
    fail = results.get("failover")
    if isinstance(fail, dict):
        kill, term = fail["sigkill_seconds"], fail["sigterm_seconds"]
        t.add(
            "failover after SIGKILL",
            fmt_s(kill),
            f"<= {TARGET_KILL_SECONDS:.0f} s",
            kill <= TARGET_KILL_SECONDS,
        )
        t.add(
            "failover after SIGTERM",
            fmt_s(term),
            f"<= {TARGET_TERM_SECONDS:.0f} s",
            term <= TARGET_TERM_SECONDS,
        )
    else:
        why = fail or "not measured"
        t.add(f"failover: {why}", "-", f"<= {TARGET_KILL_SECONDS:.0f} s / {TARGET_TERM_SECONDS:.0f} s")
    return t.render()


def strip_private(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_private(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list):
        return [strip_private(v) for v in value]
    return value


def git_revision() -> str:
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, check=False)
        return result.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--", "operator"))
    return commit + ("+dirty operator/" if dirty else "")


# -------------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fleets", type=int, default=1000, help="InferenceFleets (and baseline Deployments)")
    parser.add_argument("--jobs", type=int, default=200, help="TrainingJobs")
    parser.add_argument("--nodes", type=int, default=170, help="simulated GPU nodes")
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="each steady-state window")
    parser.add_argument("--settle-seconds", type=float, default=10.0, help="wait before an idle window")
    parser.add_argument("--standby-warmup", type=float, default=5.0, help="failover: standby start to kill")
    parser.add_argument("--timeout", type=float, default=1200.0, help="for each convergence wait")
    parser.add_argument("--threads", type=int, default=16, help="concurrent creations")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench-results" / "scale.json")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-failover", action="store_true")
    parser.add_argument(
        "--skip-children-baseline",
        action="store_true",
        help="skip the second baseline (each Deployment with the Service and ControllerRevision a"
        " fleet has, created directly)",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="progress lines also count the operator's Deployment writes and the pods created, bound and"
        " ready (one extra LIST of the pods per line: a diagnostic, it adds load)",
    )
    parser.add_argument("--max-concurrent-reconciles", type=int, help="passed to the operator")
    parser.add_argument(
        "--all-namespaces",
        action="store_true",
        help="run the operator cluster-wide (default: scoped to the benchmark's namespace)",
    )
    parser.add_argument("--operator-arg", action="append", default=[], help="extra operator argument")
    args = parser.parse_args(argv)
    if min(args.fleets, args.nodes, args.gpus_per_node, args.threads) < 1 or args.jobs < 0:
        parser.error("--fleets, --nodes, --gpus-per-node and --threads must be positive, --jobs not negative")
    # Every fleet and job at once, plus one surge pod for the image change and three failover fleets.
    needed = args.fleets + args.jobs + 4
    if args.nodes * args.gpus_per_node < needed:
        parser.error(f"{args.nodes} nodes x {args.gpus_per_node} GPUs < the {needed} GPUs the run needs")
    return args


def run(args: argparse.Namespace) -> int:
    help_text = operator_help()
    extra = list(args.operator_arg)
    if args.max_concurrent_reconciles is not None:
        if "--max-concurrent-reconciles" not in help_text:
            raise BenchError("the operator has no --max-concurrent-reconciles")
        extra += ["--max-concurrent-reconciles", str(args.max_concurrent_reconciles)]
    topology = bench_topology(args.nodes, args.gpus_per_node)
    cluster = LocalCluster(topology=topology)
    results: Obj = {
        "benchmark": "scale",
        "started_at": utc_now(),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "operator": {"version": kubeforge.__version__, "commit": git_revision()},
        "cluster": {"versions": read_versions(), "nodes": args.nodes, "gpus_per_node": args.gpus_per_node},
        "targets": {
            "total_ratio_to_baseline": TARGET_RATIO,
            "total_seconds": TARGET_TOTAL_SECONDS,
            "rss_mib": TARGET_RSS_MIB,
            "idle_rps": TARGET_IDLE_RPS,
            "image_change_writes": TARGET_IMAGE_WRITES,
            "failover_sigkill_seconds": TARGET_KILL_SECONDS,
            "failover_sigterm_seconds": TARGET_TERM_SECONDS,
        },
    }
    say(
        f"scale: {args.fleets} fleets + {args.jobs} jobs on {args.nodes} nodes x {args.gpus_per_node} GPUs "
        f"(kubeforge {kubeforge.__version__} at {results['operator']['commit']})"
    )
    existing: set[str] = set()
    if cluster.is_up():
        with cluster.api(timeout=BULK_TIMEOUT) as api:
            existing = {n["metadata"]["name"] for n in api.get("/api/v1/nodes")["items"]}
    try:
        started_cluster = cluster.acquire(timeout=600)
    except BaseException:
        cluster.release()  # an interrupted start must not leave a half-started cluster behind
        raise
    results["cluster"]["reused"] = not started_cluster
    added_nodes = [name for name in topology.names() if name not in existing]
    namespace = f"bench-scale-{secrets.token_hex(3)}"
    log_dir = Path(tempfile.mkdtemp(prefix="kubeforge-bench-scale-"))
    sampler = RssSampler()
    api = cluster.api(timeout=BULK_TIMEOUT)
    scope = (
        [] if args.all_namespaces else ["--namespace", namespace, "--namespace", other_namespace(namespace)]
    )
    ctx = Context(args, cluster, api, namespace, log_dir, sampler, scope, extra)
    say(f"cluster {'started' if started_cluster else 'reused'}; namespace {namespace}; logs in {log_dir}")
    try:
        install_crds(cluster.kubectl)
        for ns in (namespace, ctx.other_namespace):
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
            api.post("/api/v1/namespaces", body)
            account = f"/api/v1/namespaces/{ns}/serviceaccounts/default"
            wait_for(
                partial(api.get, account), timeout=60, description=f"namespace {ns}'s default ServiceAccount"
            )
        sampler.start()
        if not args.skip_baseline:
            results["baseline"] = phase_baseline(ctx)
            time.sleep(args.settle_seconds)
            if not args.skip_children_baseline:
                results["baseline_children"] = phase_baseline(ctx, children=True)
                time.sleep(args.settle_seconds)

        op = ctx.operator("operator")
        say(f"operator started (pid {op.pid}): {' '.join(op.command()[3:])}")
        results["kubeforge"] = phase_converge(ctx, op)
        say(f"idle: settling {args.settle_seconds:.0f}s")
        time.sleep(args.settle_seconds)
        with_op = idle_window(ctx, "operator running", op)
        results["image_change"] = phase_image_change(ctx, op, with_op)
        ctx.stop(op)
        say("operator stopped")
        time.sleep(args.settle_seconds)
        without = idle_window(ctx, "no operator", None)
        results["idle"] = {
            "with_operator": with_op,
            "without_operator": without,
            "operator_net": idle_difference(with_op, without),
        }

        if args.skip_failover:
            results["failover"] = "skipped (--skip-failover)"
        elif "--leader-elect" not in help_text:
            results["failover"] = "skipped (operator has no --leader-elect)"
            print("failover: skipped (operator has no --leader-elect)", flush=True)
        else:
            results["failover"] = phase_failover(ctx)
    except BaseException as error:
        results["error"] = f"{type(error).__name__}: {error}"
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        cleanup(ctx, started_cluster, added_nodes)
        results["rss_mib"] = rss_summary(sampler)  # after clean-up: it reads VmHWM of what it stops
        # Whatever was measured before a failure is still worth having.
        print()
        print(table(results), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(strip_private(results), indent=2) + "\n")
        print(f"\nwrote {args.out}", flush=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return 0


def rss_summary(sampler: RssSampler) -> Obj:
    hwm = {k: round(v / 1024, 1) for k, v in sampler.hwm_kib.items()}
    peak = {k: round(v / 1024, 1) for k, v in sampler.peak_rss_kib.items()}
    # Every operator counts, the failover phase's too: they start with a thousand fleets to list, the
    # converging one with none.
    both = {**peak, **hwm}
    return {
        "operator_peak": max(both.values()) if both else None,
        "vmhwm": hwm,
        "sampled_vmrss_peak": peak,
    }


def cleanup(ctx: Context, started_cluster: bool, added_nodes: list[str]) -> None:
    say("cleaning up")
    for op in ctx.operators:
        if op.running:
            with contextlib.suppress(Exception):
                ctx.stop(op)
    ctx.sampler.stop()
    for ns in (ctx.namespace, ctx.other_namespace):
        try:
            ctx.api.delete(f"/api/v1/namespaces/{ns}")
        except Exception as error:
            print(f"(could not delete namespace {ns}: {error})", file=sys.stderr)
    if not started_cluster:
        # The cluster stays up: wait for the namespace's pods to go before taking the nodes away.
        with contextlib.suppress(TimeoutError):
            wait_for(
                lambda: not ctx.api.get(f"/api/v1/namespaces/{ctx.namespace}/pods").get("items"),
                timeout=300,
                interval=2,
                description="the benchmark's pods gone",
            )
        for name in added_nodes:
            with contextlib.suppress(Exception):
                ctx.cluster.delete_node(name, wait=False)
    ctx.api.close()
    ctx.cluster.release()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(args)
    except BenchError as error:
        print(f"scale: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("scale: interrupted; cleaned up", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
