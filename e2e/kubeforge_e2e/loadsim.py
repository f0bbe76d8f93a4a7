"""A load simulator that plays an InferenceFleet's model servers for Prometheus.

For every fleet it is told about (`POST /fleets {"namespace", "name", "rps"}` or `set_load()`), it reads
the fleet's *ready* pods from the local cluster's API (the harness's own credentials, never an ambient
kubeconfig) and exposes, on `/metrics`, the series those pods would: per pod, labelled `namespace`,
`kubeforge_dev_inferencefleet`, `kubeforge_dev_revision` and `pod` (the label convention
the operator's default queries select on):

- vLLM's engine metrics (labels `engine`, `model_name`): the `vllm:e2e_request_latency_seconds` and
  `vllm:time_to_first_token_seconds` histograms, the `vllm:num_requests_waiting` and
  `vllm:num_requests_running` gauges, `vllm:request_success_total{finished_reason}`;
- vLLM's HTTP layer (prometheus-fastapi-instrumentator): `http_requests_total{handler,method,status}`
  with status codes grouped as `2xx`/`5xx`, `http_request_duration_seconds{handler,method}`; and an
  `http_requests_in_flight` gauge;
- `DCGM_FI_DEV_GPU_UTIL` (percent), one series per GPU (`gpus` per replica) with dcgm-exporter's labels:
  the `namespace` and `pod` it measures, no fleet label,

plus fleet-level `kubeforge_loadsim_offered_rps` (what a gateway in front would see, usable as a
scale-to-zero activation query).

The model: each ready replica has `slots` concurrent request slots, each serving a request in
`service_seconds` (so `slots / service_seconds` requests per second per replica); the offered load is
split evenly over ready replicas. Below saturation the waiting time is M/M/c (Erlang C); above it a
backlog builds up at (offered - capacity) per second and every request waits for it, so latency climbs
for as long as the fleet is too small and drains once it is large enough. A backlog beyond
`max_queue_seconds` of capacity is shed as errors (HTTP 503). Histograms accumulate expected counts
(fractional, deterministic) every tick, as a real server's would.

Run alone: `python -m kubeforge_e2e.loadsim --port 9400 --kubeconfig .cluster/kubeconfig` (only the
project's own kubeconfig is accepted), then `POST /fleets` to offer load.

Fixture pages (`tests/fixtures/exposition/*.prom`: vLLM, prometheus-fastapi-instrumentator,
starlette_exporter, Go promhttp, dcgm-exporter) are served beside the simulated fleets with `replay()` or
`POST /replays {"key", "file" | "text", "labels"}`, their counters growing at the fixture's rates.

Per-revision knobs (`POST /faults {"namespace", "name", "revision", "errorRate", "extraLatency"}`) inject
errors or latency into one revision, for rollout tests.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

LATENCY_BUCKETS = (
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.6,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    20.0,
    40.0,
    60.0,
)
FLEET_LABEL = "kubeforge.dev/inferencefleet"
REVISION_LABEL = "kubeforge.dev/revision"


@dataclass(frozen=True)
class PodInfo:
    name: str
    revision: str
    ready: bool


Lister = Callable[[str, str], Sequence[PodInfo]]
"""(namespace, fleet name) -> the fleet's pods."""


def erlang_c(servers: int, offered: float) -> float:
    """Probability that an arriving request waits in an M/M/c queue (c servers, offered load a = λ/μ)."""
    if servers <= 0:
        return 1.0
    rho = offered / servers
    if rho >= 1.0:
        return 1.0
    # Numerically stable: build a^k/k! iteratively.
    term, total = 1.0, 1.0
    for k in range(1, servers):
        term *= offered / k
        total += term
    top = term * offered / servers / (1.0 - rho)
    return top / (total + top)


@dataclass
class Fault:
    error_rate: float = 0.0
    extra_latency: float = 0.0


@dataclass
class PodSeries:
    """Cumulative series of one pod; never reset while the pod lives (Prometheus counters)."""

    revision: str
    buckets: list[float] = field(default_factory=lambda: [0.0] * len(LATENCY_BUCKETS))
    count: float = 0.0
    total: float = 0.0
    ttft_buckets: list[float] = field(default_factory=lambda: [0.0] * len(LATENCY_BUCKETS))
    ttft_count: float = 0.0
    ttft_total: float = 0.0
    ok: float = 0.0
    errors: float = 0.0
    waiting: float = 0.0
    running: float = 0.0
    utilization: float = 0.0


@dataclass
class FleetModel:
    namespace: str
    name: str
    rps: float = 0.0
    service_seconds: float = 0.2
    slots: int = 4
    max_queue_seconds: float = 30.0
    model_name: str = "sim-model"
    gpus: int = 1
    """GPUs per replica: dcgm-exporter publishes one series per GPU."""
    backlog: float = 0.0
    pods: dict[str, PodSeries] = field(default_factory=dict)
    ready: list[PodInfo] = field(default_factory=list)
    faults: dict[str, Fault] = field(default_factory=dict)

    @property
    def replicas(self) -> int:
        return len(self.ready)

    def capacity(self) -> float:
        """Requests per second the ready replicas can serve."""
        return self.replicas * self.slots / self.service_seconds

    def wait_tail(self) -> tuple[float, float, float]:
        """(fixed delay, probability of waiting, decay rate): P(wait > D + t) = p * exp(-rate * t)."""
        servers = self.replicas * self.slots
        mu = 1.0 / self.service_seconds
        if servers == 0:
            return (self.max_queue_seconds, 1.0, 1.0)
        delay = self.backlog / (servers * mu)
        offered = self.rps * self.service_seconds
        if offered < servers:
            return (delay, erlang_c(servers, offered), servers * mu - self.rps)
        return (delay, 1.0, max(servers * mu * 0.05, 1e-3))

    @staticmethod
    def _cdf(x: float, base: float, tail: tuple[float, float, float]) -> float:
        delay, p_wait, rate = tail
        if x < base or (delay > 0 and x < base + delay):
            return 0.0
        return 1.0 - p_wait * math.exp(-rate * (x - base - delay))

    def latency_cdf(
        self, x: float, extra: float = 0.0, tail: tuple[float, float, float] | None = None
    ) -> float:
        """P(latency <= x): the service time, plus any extra, plus the wait."""
        return self._cdf(x, self.service_seconds + extra, tail or self.wait_tail())

    def ttft_cdf(self, x: float, extra: float = 0.0, tail: tuple[float, float, float] | None = None) -> float:
        """P(time to first token <= x): the wait plus a tenth of the service time (prefill)."""
        return self._cdf(x, 0.1 * self.service_seconds + extra, tail or self.wait_tail())

    def p95(self, extra: float = 0.0) -> float:
        """The model's 95th percentile latency now, in seconds."""
        lo, hi = 0.0, 3600.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if self.latency_cdf(mid, extra) >= 0.95:
                hi = mid
            else:
                lo = mid
        return hi

    def advance(self, dt: float) -> None:
        servers = self.replicas * self.slots
        mu = 1.0 / self.service_seconds
        capacity = servers * mu
        offered = self.rps * self.service_seconds
        self.backlog = (
            max(0.0, self.backlog + (self.rps - capacity) * dt) if offered >= servers or self.backlog else 0.0
        )
        limit = self.max_queue_seconds * max(capacity, 1.0)
        shed_rate = 0.0
        if self.backlog > limit:
            shed_rate = (self.backlog - limit) / dt
            self.backlog = limit
        n = self.replicas
        if n == 0:
            return
        per_pod = self.rps / n
        served_share = max(0.0, 1.0 - shed_rate / self.rps) if self.rps > 0 else 1.0
        tail = self.wait_tail()
        delay, p_wait, rate = tail
        queue_len = self.backlog + (
            p_wait * (offered / servers) / (1 - offered / servers) if offered < servers else 0
        )
        for pod in self.ready:
            series = self.pods[pod.name]
            fault = self.faults.get(pod.revision, Fault())
            arrivals = per_pod * dt
            failed = arrivals * (1 - served_share) + arrivals * served_share * fault.error_rate
            done = arrivals - failed
            series.errors += failed
            series.ok += done
            for i, bound in enumerate(LATENCY_BUCKETS):
                series.buckets[i] += done * self.latency_cdf(bound, fault.extra_latency, tail)
                series.ttft_buckets[i] += done * self.ttft_cdf(bound, fault.extra_latency, tail)
            series.count += done
            mean = self.service_seconds + fault.extra_latency + delay + (p_wait / rate if rate > 0 else 0.0)
            series.total += done * mean
            series.ttft_count += done
            series.ttft_total += done * (mean - 0.9 * self.service_seconds)
            series.waiting = queue_len / n
            series.running = min(float(self.slots), offered / n)
            series.utilization = min(100.0, 100.0 * offered / servers)

    def sync_pods(self, pods: Sequence[PodInfo]) -> None:
        self.ready = sorted((p for p in pods if p.ready), key=lambda p: p.name)
        names = {p.name for p in self.ready}
        for pod in self.ready:
            self.pods.setdefault(pod.name, PodSeries(revision=pod.revision))
        for gone in set(self.pods) - names:
            del self.pods[gone]


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf"
    return repr(float(value))


def _labels(pairs: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in pairs.items())
    return "{" + inner + "}"


def render(fleets: Sequence[FleetModel]) -> str:
    """The Prometheus text exposition of every fleet's ready pods."""
    out: list[str] = []

    def histogram(
        name: str, help_: str, rows: list[tuple[dict[str, str], list[float], float, float]]
    ) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} histogram")
        for labels, buckets, count, total in rows:
            for bound, value in zip(LATENCY_BUCKETS, buckets, strict=True):
                out.append(f"{name}_bucket{_labels({**labels, 'le': _fmt(bound)})} {_fmt(value)}")
            out.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {_fmt(count)}")
            out.append(f"{name}_sum{_labels(labels)} {_fmt(total)}")
            out.append(f"{name}_count{_labels(labels)} {_fmt(count)}")

    def simple(name: str, kind: str, help_: str, rows: list[tuple[dict[str, str], float]]) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in rows:
            out.append(f"{name}{_labels(labels)} {_fmt(value)}")

    per_pod: list[tuple[dict[str, str], PodSeries]] = []
    engine: list[tuple[dict[str, str], PodSeries]] = []
    gpu_rows: list[tuple[dict[str, str], float]] = []
    for fleet in fleets:
        for pod in fleet.ready:
            series = fleet.pods[pod.name]
            # The labels a Kubernetes pod scrape adds to what the server exports (see the module doc).
            target = {
                "namespace": fleet.namespace,
                "kubeforge_dev_inferencefleet": fleet.name,
                "kubeforge_dev_revision": series.revision,
                "pod": pod.name,
            }
            per_pod.append((target, series))
            engine.append(({**target, "engine": "0", "model_name": fleet.model_name}, series))
            gpu_rows += [
                (dcgm_labels(fleet.namespace, pod.name, i), series.utilization) for i in range(fleet.gpus)
            ]
    histogram(
        "vllm:e2e_request_latency_seconds",
        "Histogram of e2e request latency in seconds.",
        [(lab, s.buckets, s.count, s.total) for lab, s in engine],
    )
    histogram(
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        [(lab, s.ttft_buckets, s.ttft_count, s.ttft_total) for lab, s in engine],
    )
    simple(
        "vllm:num_requests_waiting",
        "gauge",
        "Number of requests waiting to be processed.",
        [(lab, s.waiting) for lab, s in engine],
    )
    simple(
        "vllm:num_requests_running",
        "gauge",
        "Number of requests in model execution batches.",
        [(lab, s.running) for lab, s in engine],
    )
    simple(
        "vllm:request_success_total",
        "counter",
        "Count of successfully processed requests.",
        [({**lab, "finished_reason": "stop"}, s.ok) for lab, s in engine],
    )
    # vLLM's HTTP layer: prometheus-fastapi-instrumentator, status codes grouped ("2xx", "5xx").
    handler = {"handler": "/v1/chat/completions", "method": "POST"}
    rows = [({**lab, **handler, "status": "2xx"}, s.ok) for lab, s in per_pod]
    rows += [({**lab, **handler, "status": "5xx"}, s.errors) for lab, s in per_pod]
    simple("http_requests_total", "counter", "Total number of requests by method, status and handler.", rows)
    histogram(
        "http_request_duration_seconds",
        "Latency with only few buckets by handler.",
        [({**lab, **handler}, s.buckets, s.count, s.total) for lab, s in per_pod],
    )
    simple(
        "http_requests_in_flight", "gauge", "Requests in flight.", [(lab, s.running) for lab, s in per_pod]
    )
    simple("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", gpu_rows)
    simple(
        "kubeforge_loadsim_offered_rps",
        "gauge",
        "Offered load per fleet, as a gateway would count it.",
        [({"namespace": f.namespace, "kubeforge_dev_inferencefleet": f.name}, f.rps) for f in fleets],
    )
    return "\n".join(out) + "\n"


def dcgm_labels(namespace: str, pod: str, gpu: int) -> dict[str, str]:
    """One GPU's labels as dcgm-exporter writes them with Kubernetes mapping on: the device's, then the
    `namespace`, `pod` and `container` of the pod the kubelet gave the GPU to. No fleet label: the
    exporter knows pods, not their labels."""
    return {
        "gpu": str(gpu),
        "UUID": f"GPU-sim-{pod}-{gpu}",
        "device": f"nvidia{gpu}",
        "modelName": "NVIDIA A100-SXM4-80GB",
        "Hostname": "kwok-node",
        "container": "server",
        "namespace": namespace,
        "pod": pod,
    }


# -- replaying exposition fixtures --------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+\S+)?$")
_LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_GROWING = ("counter", "histogram", "summary")


@dataclass
class Replay:
    """A fixture page (`tests/fixtures/exposition/*.prom`) served as a live server would serve it.

    The fixture's counts are one second of traffic: every counter, histogram and summary count is
    multiplied by the seconds since the replay started, so `rate()` reads the fixture's numbers back;
    gauges and `_created` timestamps are served as written. `labels` are set on every sample (what a
    Kubernetes scrape adds to an application's series); a fixture whose series carry their own
    `namespace`/`pod` (dcgm-exporter) is replayed without them."""

    text: str
    labels: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def render(self, now: float | None = None) -> str:
        elapsed = max((now if now is not None else time.monotonic()) - self.started, 0.0)
        kinds: dict[str, str] = {}
        out: list[str] = []
        for line in self.text.splitlines():
            if line.startswith("# TYPE "):
                _, _, family, kind = line.split(maxsplit=3)
                kinds[family] = kind
                out.append(line)
                continue
            match = _SAMPLE.match(line)
            if line.startswith("#") or match is None:
                out.append(line)
                continue
            name, body, value = match.group(1), match.group(2) or "{}", float(match.group(3))
            labels = dict(_LABEL_PAIR.findall(body)) | self.labels
            if _growing(name, labels, kinds):
                value *= elapsed
            out.append(f"{name}{_labels(labels)} {_fmt(value)}")
        return "\n".join(out) + "\n"


def _growing(name: str, labels: dict[str, str], kinds: dict[str, str]) -> bool:
    """Is this sample a count that grows with traffic (not a gauge, a `_created` or a quantile)?"""
    if name.endswith("_created") or "quantile" in labels:
        return False
    families = [name] + [
        name.removesuffix(x) for x in ("_total", "_bucket", "_count", "_sum") if name.endswith(x)
    ]
    return any(kinds.get(family) in _GROWING for family in families)


def api_lister(api: Any) -> Lister:
    """Pods of a fleet read through the harness's admin client (`LocalCluster.api()`)."""

    def pods(namespace: str, name: str) -> list[PodInfo]:
        body = api.get(
            f"/api/v1/namespaces/{namespace}/pods", params={"labelSelector": f"{FLEET_LABEL}={name}"}
        )
        found = []
        for item in body.get("items", []):
            meta = item.get("metadata", {})
            if meta.get("deletionTimestamp"):
                continue
            conditions = item.get("status", {}).get("conditions", []) or []
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
            found.append(
                PodInfo(str(meta["name"]), str(meta.get("labels", {}).get(REVISION_LABEL, "")), ready)
            )
        return found

    return pods


class LoadSimulator:
    """The simulator as a background HTTP server on loopback; also driven directly from Python."""

    def __init__(
        self,
        lister: Lister,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tick: float = 0.25,
        pod_refresh: float = 1.0,
    ) -> None:
        self.lister = lister
        self.tick = tick
        self.pod_refresh = pod_refresh
        self._fleets: dict[tuple[str, str], FleetModel] = {}
        self._replays: dict[str, Replay] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="loadsim-http", daemon=True),
            threading.Thread(target=self._run, name="loadsim-model", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> LoadSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control ---------------------------------------------------------------------------------

    def set_load(self, namespace: str, name: str, rps: float, **model: Any) -> None:
        """Offer `rps` requests per second to a fleet; `service_seconds`, `slots`, `max_queue_seconds` and
        `model_name` tune the model."""
        with self._lock:
            fleet = self._fleets.setdefault((namespace, name), FleetModel(namespace, name))
            fleet.rps = float(rps)
            for key, value in model.items():
                if not hasattr(fleet, key):
                    raise ValueError(f"unknown model setting {key!r}")
                setattr(fleet, key, value)

    def set_fault(
        self, namespace: str, name: str, revision: str, *, error_rate: float = 0.0, extra_latency: float = 0.0
    ) -> None:
        with self._lock:
            fleet = self._fleets.setdefault((namespace, name), FleetModel(namespace, name))
            fleet.faults[revision] = Fault(error_rate, extra_latency)

    def remove(self, namespace: str, name: str) -> None:
        with self._lock:
            self._fleets.pop((namespace, name), None)

    def snapshot(self, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            fleet = self._fleets[(namespace, name)]
            return {
                "rps": fleet.rps,
                "ready": fleet.replicas,
                "capacity": fleet.capacity(),
                "backlog": fleet.backlog,
                "p95": fleet.p95(),
            }

    def replay(self, key: str, text: str, labels: dict[str, str] | None = None) -> None:
        """Serve a fixture page (see `Replay`) beside the simulated fleets until `stop_replay(key)`."""
        with self._lock:
            self._replays[key] = Replay(text, dict(labels or {}))

    def stop_replay(self, key: str) -> None:
        with self._lock:
            self._replays.pop(key, None)

    def metrics_text(self) -> str:
        with self._lock:
            replays = [r.render() for r in self._replays.values()]
            return render(list(self._fleets.values())) + "".join(replays)

    # -- the model loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        last = time.monotonic()
        next_refresh = 0.0
        while not self._stop.wait(self.tick):
            now = time.monotonic()
            if now >= next_refresh:
                self._refresh_pods()
                next_refresh = now + self.pod_refresh
            with self._lock:
                for fleet in self._fleets.values():
                    fleet.advance(now - last)
            last = now

    def _refresh_pods(self) -> None:
        with self._lock:
            keys = list(self._fleets)
        for key in keys:
            try:
                pods = self.lister(*key)
            except Exception:  # the API may hiccup; keep the last view
                continue
            with self._lock:
                if key in self._fleets:
                    self._fleets[key].sync_pods(pods)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sim = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _send(self, status: int, body: str, content_type: str = "application/json") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    self._send(200, sim.metrics_text(), "text/plain; version=0.0.4")
                elif self.path.startswith("/fleets"):
                    with sim._lock:
                        keys = list(sim._fleets)
                    self._send(
                        200, json.dumps([sim.snapshot(*k) | {"namespace": k[0], "name": k[1]} for k in keys])
                    )
                else:
                    self._send(404, '{"error": "not found"}')

            def do_POST(self) -> None:
                try:
                    length = int(self.headers.get("Content-Length", "0"))
                    body = json.loads(self.rfile.read(length) or b"{}")
                    if self.path.startswith("/fleets"):
                        sim.set_load(
                            str(body["namespace"]),
                            str(body["name"]),
                            float(body["rps"]),
                            **{k: v for k, v in body.items() if k in ("service_seconds", "slots", "gpus")},
                        )
                    elif self.path.startswith("/replays"):
                        text = Path(str(body["file"])).read_text() if "file" in body else str(body["text"])
                        labels = {str(k): str(v) for k, v in (body.get("labels") or {}).items()}
                        sim.replay(str(body["key"]), text, labels)
                    elif self.path.startswith("/faults"):
                        sim.set_fault(
                            str(body["namespace"]),
                            str(body["name"]),
                            str(body["revision"]),
                            error_rate=float(body.get("errorRate", 0.0)),
                            extra_latency=float(body.get("extraLatency", 0.0)),
                        )
                    else:
                        self._send(404, '{"error": "not found"}')
                        return
                except (KeyError, ValueError, TypeError) as error:
                    self._send(400, json.dumps({"error": str(error)}))
                    return
                self._send(200, '{"ok": true}')

        return Handler


def _kubeconfig_lister(kubeconfig: Path) -> tuple[Lister, Callable[[], None]]:
    """A pod lister for the project's own cluster; refuses any other kubeconfig."""
    from kubeforge_e2e.api import Api
    from kubeforge_e2e.paths import Paths
    from kubeforge_e2e.safety import verify_kubeconfig

    paths = Paths.default()
    server = verify_kubeconfig(paths, kubeconfig)
    config = yaml.safe_load(kubeconfig.read_text())
    user = config["users"][0]["user"]
    api = Api(server, paths.ca_cert, Path(user["client-certificate"]), Path(user["client-key"]))
    return api_lister(api), api.close


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kubeforge_e2e.loadsim", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9400)
    parser.add_argument("--kubeconfig", type=Path, required=True, help="the project's .cluster/kubeconfig")
    args = parser.parse_args(argv)
    lister, close = _kubeconfig_lister(args.kubeconfig)
    sim = LoadSimulator(lister, host=args.host, port=args.port)
    sim.start()
    print(f"load simulator on {sim.url} (POST /fleets, POST /faults, GET /metrics)", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
        close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
