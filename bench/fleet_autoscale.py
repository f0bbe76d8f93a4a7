"""Benchmark: how fast an InferenceFleet reacts to a latency breach.

On the local cluster, with a real Prometheus scraping the load simulator every second, a fleet of one L4
replica (20 requests/s of capacity), offered 5 requests/s once that replica is ready, is hit by a step
from 5 to 50 requests/s. Printed per round:

- breach-to-decision: from the first moment Prometheus shows the breach the autoscaler acts on
  (stable-window p95 above target * (1 + tolerance), or panic-window p95 at panicThreshold * target)
  to the fleet's status asking for more replicas;
- decision-to-ready: from that decision to all the replicas it asked for being ready;
- breach-to-ready, and the replica count latency settled at.

While a round runs it samples, every quarter second, the fleet's status (replicas desired and ready, the
autoscaler's reading and mode) and Prometheus (the stable- and panic-window p95 the autoscaler acts on),
and writes them with the figures to `--out` (default `build/bench-results/fleet_autoscale.json`), which
bench/plots.py draws (replicas and p95 over time, the target, the decisions).

Run: `make bench`, or `PYTHONPATH=e2e .venv/bin/python bench/fleet_autoscale.py [--rounds N]`.
It reuses a running local cluster (`make cluster-up`) or starts one, and stops what it started.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO / "e2e", REPO / "operator"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from _timeline import RESULTS_DIR, Sample, Timeline, changes, recording, utc_now  # noqa: E402

from kubeforge.api.inferencefleet import Autoscaling  # noqa: E402
from kubeforge.metrics.promql import FleetQueries, fleet_queries  # noqa: E402
from kubeforge_e2e import wait_for  # noqa: E402
from kubeforge_e2e.api import Api  # noqa: E402
from kubeforge_e2e.loadsim import LoadSimulator  # noqa: E402
from kubeforge_e2e.prometheus import PrometheusProcess  # noqa: E402
from kubeforge_e2e.stack import serving_stack  # noqa: E402

INTERVAL = 2
AUTOSCALING: dict[str, Any] = {
    "minReplicas": 1,
    "maxReplicas": 5,
    "metric": "latencyP95",
    "target": 0.5,
    "intervalSeconds": INTERVAL,
    "stableWindowSeconds": 10,
    "panicWindowSeconds": 4,
    "scaleDownStabilizationSeconds": 20,
}
MODEL = {"service_seconds": 0.2, "slots": 4}
LOAD_BEFORE, LOAD_AFTER = 5, 50
SAMPLE_SECONDS = 0.25
TAIL_SECONDS = 5.0
"""How long the timeline goes on after latency settled, so the plot shows the steady state."""


def fleet_path(namespace: str, name: str = "") -> str:
    base = f"/apis/kubeforge.dev/v1alpha1/namespaces/{namespace}/inferencefleets"
    return f"{base}/{name}" if name else base


def status(api: Api, namespace: str, name: str) -> dict[str, Any]:
    return dict(api.get(fleet_path(namespace, name)).get("status") or {})


def one_round(
    api: Api, sampling_api: Api, prom: PrometheusProcess, sim: LoadSimulator, namespace: str, name: str
) -> dict[str, Any]:
    spec = Autoscaling.model_validate(AUTOSCALING)
    queries = fleet_queries(spec, namespace, name)
    load = {"rps": float(LOAD_BEFORE)}

    def probe() -> Sample:
        st = status(sampling_api, namespace, name)
        auto = st.get("autoscaler") or {}
        return {
            "desired": st.get("desiredReplicas"),
            "ready": st.get("readyReplicas"),
            "metric_value": auto.get("metricValue"),
            "mode": auto.get("mode"),
            "reason": auto.get("reason"),
            "p95_stable": prom.query(queries.stable),
            "p95_panic": prom.query(queries.panic),
            "load_rps": load["rps"],
        }

    with recording(probe, SAMPLE_SECONDS) as timeline:
        figures = measure_round(api, prom, sim, (namespace, name), spec, queries, load, timeline)
        time.sleep(TAIL_SECONDS)
    api.delete(fleet_path(namespace, name))
    sim.remove(namespace, name)
    recorded = timeline.as_json()
    recorded["decisions"] = changes(recorded["samples"], "desired", "reason", "mode")
    return {**figures, "timeline": recorded}


def measure_round(
    api: Api,
    prom: PrometheusProcess,
    sim: LoadSimulator,
    fleet: tuple[str, str],
    spec: Autoscaling,
    queries: FleetQueries,
    load: dict[str, float],
    timeline: Timeline,
) -> dict[str, float]:
    namespace, name = fleet
    api.post(
        fleet_path(namespace),
        {
            "apiVersion": "kubeforge.dev/v1alpha1",
            "kind": "InferenceFleet",
            "metadata": {"name": name},
            "spec": {
                "model": {"name": "bench-model"},
                "image": "registry.invalid/vllm:bench",
                "resources": {"gpus": 1, "gpuType": "L4"},
                "autoscaling": AUTOSCALING,
            },
        },
    )
    # Traffic starts once the replica is ready: requests offered to a fleet with no ready replica queue
    # up in the simulator, and the latency of that backlog is a breach the autoscaler would learn from
    # (a low "target broken" rate per replica that then floors the fleet above one replica at 5 req/s).
    wait_for(
        lambda: status(api, namespace, name).get("readyReplicas") == 1,
        timeout=120,
        description="fleet's replica ready",
    )
    sim.set_load(namespace, name, LOAD_BEFORE, **MODEL)
    timeline.mark("load start", rps=LOAD_BEFORE)
    wait_for(
        lambda: (
            (status(api, namespace, name).get("autoscaler") or {}).get("metricValue") is not None
            and status(api, namespace, name).get("readyReplicas") == 1
        ),
        timeout=120,
        description="fleet serving and reading metrics",
    )

    sim.set_load(namespace, name, LOAD_AFTER, **MODEL)
    stepped = time.monotonic()
    load["rps"] = float(LOAD_AFTER)
    timeline.mark("load step", timeline.at(stepped), rps=LOAD_AFTER)
    breach = decision = None
    asked = 0
    while time.monotonic() - stepped < 90 and decision is None:
        now = time.monotonic()
        if breach is None:
            stable, panic = prom.query(queries.stable), prom.query(queries.panic)
            if (stable is not None and stable > spec.target * (1 + spec.tolerance)) or (
                panic is not None and panic >= spec.panic_threshold * spec.target
            ):
                breach = now
        asked = int(status(api, namespace, name).get("desiredReplicas") or 0)
        if asked > 1:
            decision = time.monotonic()
        time.sleep(0.05)
    if breach is None or decision is None:
        raise RuntimeError(f"round {name}: breach {breach}, decision {decision}")
    ready_at = wait_for(
        lambda: (
            time.monotonic() if int(status(api, namespace, name).get("readyReplicas") or 0) >= asked else None
        ),
        timeout=120,
        interval=0.05,
        description="replicas ready",
    )

    def settled() -> int | None:
        st = status(api, namespace, name)
        value = (st.get("autoscaler") or {}).get("metricValue")
        if value is None or value >= spec.target or st.get("readyReplicas") != st.get("desiredReplicas"):
            return None
        return int(st["desiredReplicas"])

    final = wait_for(settled, timeout=120, interval=0.5, description="latency under target")
    timeline.mark("breach", timeline.at(breach))
    timeline.mark("decision", timeline.at(decision), replicas=asked)
    timeline.mark("ready", timeline.at(ready_at), replicas=asked)
    timeline.mark("settled", replicas=final)
    return {
        "breach_to_decision": decision - breach,
        "decision_to_ready": ready_at - decision,
        "breach_to_ready": ready_at - breach,
        "asked": float(asked),
        "settled": float(final),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "fleet_autoscale.json")
    args = parser.parse_args()

    results: list[dict[str, Any]] = []
    report: dict[str, Any] = {
        "benchmark": "fleet_autoscale",
        "started_at": utc_now(),
        "config": {
            "autoscaling": AUTOSCALING,
            "model": MODEL,
            "gpu_type": "L4",
            "load_rps": [LOAD_BEFORE, LOAD_AFTER],
            "prometheus_scrape_seconds": 1,
            "sample_seconds": SAMPLE_SECONDS,
            "rounds": args.rounds,
        },
        "rounds": results,
    }
    with serving_stack("bench-fleet") as stack, stack.cluster.api() as sampling_api:
        api, sim, prom, namespace = stack.api, stack.loadsim, stack.prometheus, stack.namespace
        print(
            f"InferenceFleet autoscaling: 1 L4 replica (20 req/s), load 5 -> 50 req/s, latencyP95 target "
            f"{AUTOSCALING['target']}s, interval {INTERVAL}s, Prometheus scrape 1s"
        )
        header = ("round", "breach->decision", "decision->ready", "breach->ready", "replicas")
        print(f"{header[0]:>5}  {header[1]:>16}  {header[2]:>15}  {header[3]:>13}  {header[4]}")
        for index in range(args.rounds):
            result = one_round(api, sampling_api, prom, sim, namespace, f"bench-{index}")
            results.append(result)
            times = (result["breach_to_decision"], result["decision_to_ready"], result["breach_to_ready"])
            counts = f"asked {result['asked']:.0f}, settled {result['settled']:.0f}"
            print(
                f"{index + 1:>5}  {times[0]:>15.2f}s  {times[1]:>14.2f}s  {times[2]:>12.2f}s  {counts}",
                flush=True,
            )
            wait_for(
                lambda: not api.get(f"/api/v1/namespaces/{namespace}/pods").get("items"),
                timeout=60,
                description="pods gone between rounds",
            )
        for key, label in (
            ("breach_to_decision", "breach-to-decision"),
            ("decision_to_ready", "decision-to-ready"),
            ("breach_to_ready", "breach-to-ready"),
        ):
            values = [r[key] for r in results]
            print(f"{label}: median {statistics.median(values):.2f}s, max {max(values):.2f}s")
            report.setdefault("summary", {})[key] = {"median": statistics.median(values), "max": max(values)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
