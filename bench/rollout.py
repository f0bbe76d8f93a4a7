"""Benchmark: how fast an InferenceFleet rollout rolls a bad revision back, and how long a good one takes.

On the local cluster, with a real Prometheus scraping the load simulator every second, a fleet of four
replicas serving 20 requests/s gets a new image. Canary steps 25% and 50% (3 s pause each), analysis every
2 s over a 4 s window (maxErrorRate 5%, maxLatencyP95 1 s, failureLimit 2). Printed per round:

- good rollout: from the apply of the new image to the new revision promoted (stable), and to the old
  revision's Deployment gone;
- bad rollout (the simulator fails 30% of the new revision's requests): breach-to-rollback, from the first
  moment Prometheus shows the canary's error rate above the limit to the canary's Deployment at zero
  replicas and the stable one at four (the fleet's status says RolledBack).

While a rollout runs it samples, every half second, the fleet's rollout status (canary weight, phase,
step, the latest analysis verdict) and Prometheus (the error rate of the new and the old revision over
the analysis window), and writes them with the figures to `--out` (default
`build/bench-results/rollout.json`), which bench/plots.py draws.

Run: `make bench`, or `PYTHONPATH=e2e .venv/bin/python bench/rollout.py [--rounds N]`.
It reuses a running local cluster (`make cluster-up`) or starts one, and stops what it started.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO / "e2e", REPO / "operator"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from _timeline import RESULTS_DIR, Sample, Timeline, Value, recording, utc_now  # noqa: E402

from kubeforge.api.inferencefleet import InferenceFleetSpec  # noqa: E402
from kubeforge.api.rollout import AnalysisSpec  # noqa: E402
from kubeforge.builders.inferencefleet import revision  # noqa: E402
from kubeforge.metrics.promql import revision_queries  # noqa: E402
from kubeforge_e2e import LocalCluster, wait_for  # noqa: E402
from kubeforge_e2e.api import Api  # noqa: E402
from kubeforge_e2e.loadsim import LoadSimulator  # noqa: E402
from kubeforge_e2e.prometheus import PrometheusProcess  # noqa: E402
from kubeforge_e2e.stack import serving_stack  # noqa: E402

INTERVAL = 2
ANALYSIS: dict[str, Any] = {
    "intervalSeconds": INTERVAL,
    "windowSeconds": 4,
    "maxErrorRate": 0.05,
    "maxLatencyP95": 1.0,
    "failureLimit": 2,
    "inconclusiveLimit": 15,
}
STEPS = [{"weight": 25, "pauseSeconds": 3}, {"weight": 50, "pauseSeconds": 3}]
MODEL = {"service_seconds": 0.2, "slots": 4}
BAD_ERROR_RATE = 0.3
IMAGE = "registry.invalid/vllm:bench"
SAMPLE_SECONDS = 0.5
LEAD_SECONDS = 2.0
"""Sampled before the new image is applied, so the plot starts from the steady fleet."""
TAIL_SECONDS = 3.0
"""Sampled after the measured end (old revision gone, or rolled back)."""


def manifest(name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubeforge.dev/v1alpha1",
        "kind": "InferenceFleet",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "bench-model"},
            "image": image,
            "replicas": 4,
            "resources": {"cpu": "100m"},
            "placement": {"spreadZones": False, "spreadNodes": False},
            "rollout": {"steps": STEPS, "analysis": ANALYSIS},
        },
    }


def rev_of(name: str, image: str) -> str:
    return revision(InferenceFleetSpec.model_validate(manifest(name, image)["spec"]))


def fleet_status(api: Api, namespace: str, name: str) -> dict[str, Any]:
    path = f"/apis/kubeforge.dev/v1alpha1/namespaces/{namespace}/inferencefleets/{name}"
    return dict(api.get(path).get("status") or {})


def replicas(api: Api, namespace: str, name: str) -> dict[str, int]:
    items = api.get(
        f"/apis/apps/v1/namespaces/{namespace}/deployments",
        params={"labelSelector": f"kubeforge.dev/inferencefleet={name}"},
    ).get("items", [])
    return {d["metadata"]["labels"]["kubeforge.dev/revision"]: int(d["spec"]["replicas"]) for d in items}


def steady(api: Api, cluster: LocalCluster, namespace: str, name: str, image: str) -> str:
    cluster.kubectl.apply(manifest(name, image), namespace)
    stable = rev_of(name, image)
    wait_for(
        lambda: (
            (fleet_status(api, namespace, name).get("rollout") or {}).get("stableRevision") == stable
            and replicas(api, namespace, name) == {stable: 4}
            and fleet_status(api, namespace, name).get("readyReplicas") == 4
        ),
        timeout=120,
        interval=0.2,
        description=f"{name} steady on {stable}",
    )
    return stable


def rollout_probe(
    api: Api, prom: PrometheusProcess, namespace: str, name: str, old: str, new: str
) -> Callable[[], Sample]:
    """One sample of a rollout: what the fleet's status says and what Prometheus measures."""
    spec = AnalysisSpec.model_validate(ANALYSIS)
    new_errors = revision_queries(spec, namespace, name, new).error_rate
    old_errors = revision_queries(spec, namespace, name, old).error_rate
    assert new_errors is not None
    assert old_errors is not None

    def probe() -> Sample:
        rollout = fleet_status(api, namespace, name).get("rollout") or {}
        analysis = rollout.get("lastAnalysis") or {}
        return {
            "canary_weight": rollout.get("canaryWeight"),
            "phase": rollout.get("phase"),
            "step": rollout.get("currentStep"),
            "stable_revision": rollout.get("stableRevision"),
            "canary_revision": rollout.get("canaryRevision"),
            "stable_ready": rollout.get("stableReadyReplicas"),
            "canary_ready": rollout.get("canaryReadyReplicas"),
            "analysis_time": analysis.get("time"),
            "analysis_revision": analysis.get("revision"),
            "analysis_verdict": analysis.get("verdict"),
            "analysis_error_rate": analysis.get("errorRate"),
            "new_error_rate": prom.query(new_errors),
            "old_error_rate": prom.query(old_errors),
        }

    return probe


def recorded(timeline: Timeline, old: str, new: str) -> dict[str, Any]:
    """The timeline as JSON, with each analysis of the new revision once (when first seen) and each
    phase the rollout went through."""
    data = timeline.as_json()
    analyses: list[dict[str, Value]] = []
    phases: list[dict[str, Value]] = []
    seen: set[Value] = set()
    for sample in data["samples"]:
        when = sample.get("analysis_time")
        if sample.get("analysis_revision") == new and when not in seen:
            seen.add(when)
            analyses.append(
                {
                    "t": sample["t"],
                    "time": when,
                    "verdict": sample.get("analysis_verdict"),
                    "error_rate": sample.get("analysis_error_rate"),
                }
            )
        if sample.get("phase") is not None and (not phases or phases[-1]["phase"] != sample["phase"]):
            phases.append({"t": sample["t"], "phase": sample["phase"]})
    data["analyses"] = analyses
    data["phases"] = phases
    data["old_revision"], data["new_revision"] = old, new
    return data


@dataclass(frozen=True)
class Rig:
    """What a round works with; `sampling_api` is the timeline thread's own client."""

    api: Api
    sampling_api: Api
    cluster: LocalCluster
    sim: LoadSimulator
    prom: PrometheusProcess
    namespace: str


def good_round(rig: Rig, name: str) -> dict[str, Any]:
    api, cluster, namespace = rig.api, rig.cluster, rig.namespace
    rig.sim.set_load(namespace, name, 20, **MODEL)
    old = steady(api, cluster, namespace, name, IMAGE)
    new = rev_of(name, IMAGE + "-v2")
    probe = rollout_probe(rig.sampling_api, rig.prom, namespace, name, old, new)
    with recording(probe, SAMPLE_SECONDS) as timeline:
        figures = good_rollout(api, cluster, namespace, name, new, timeline)
        time.sleep(TAIL_SECONDS)
    return {**figures, "timeline": recorded(timeline, old, new)}


def good_rollout(
    api: Api, cluster: LocalCluster, namespace: str, name: str, new: str, timeline: Timeline
) -> dict[str, float]:
    time.sleep(LEAD_SECONDS)
    started = time.monotonic()
    timeline.mark("apply", timeline.at(started), image=IMAGE + "-v2")
    cluster.kubectl.apply(manifest(name, IMAGE + "-v2"), namespace)
    promoted = wait_for(
        lambda: (
            time.monotonic()
            if (fleet_status(api, namespace, name).get("rollout") or {}).get("stableRevision") == new
            else None
        ),
        timeout=180,
        interval=0.1,
        description="promoted",
    )
    drained = wait_for(
        lambda: time.monotonic() if replicas(api, namespace, name) == {new: 4} else None,
        timeout=120,
        interval=0.1,
        description="old revision gone",
    )
    timeline.mark("promoted", timeline.at(promoted))
    timeline.mark("old revision gone", timeline.at(drained))
    return {"promoted": promoted - started, "drained": drained - started}


def bad_round(rig: Rig, name: str) -> dict[str, Any]:
    api, cluster, namespace = rig.api, rig.cluster, rig.namespace
    rig.sim.set_load(namespace, name, 20, **MODEL)
    stable = steady(api, cluster, namespace, name, IMAGE)
    bad = rev_of(name, IMAGE + "-broken")
    rig.sim.set_fault(namespace, name, bad, error_rate=BAD_ERROR_RATE)
    probe = rollout_probe(rig.sampling_api, rig.prom, namespace, name, stable, bad)
    with recording(probe, SAMPLE_SECONDS) as timeline:
        figures = bad_rollout(api, cluster, rig.prom, (namespace, name), (stable, bad), timeline)
        time.sleep(TAIL_SECONDS)
    return {**figures, "timeline": recorded(timeline, stable, bad)}


def bad_rollout(
    api: Api,
    cluster: LocalCluster,
    prom: PrometheusProcess,
    fleet: tuple[str, str],
    revisions: tuple[str, str],
    timeline: Timeline,
) -> dict[str, float]:
    (namespace, name), (stable, bad) = fleet, revisions
    query = revision_queries(AnalysisSpec.model_validate(ANALYSIS), namespace, name, bad).error_rate
    assert query is not None
    time.sleep(LEAD_SECONDS)
    timeline.mark("apply", image=IMAGE + "-broken")
    cluster.kubectl.apply(manifest(name, IMAGE + "-broken"), namespace)
    breach = back = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and back is None:
        now = time.monotonic()
        if breach is None:
            value = prom.query(query)
            if value is not None and value > ANALYSIS["maxErrorRate"]:
                breach = now
        reps = replicas(api, namespace, name)
        phase = (fleet_status(api, namespace, name).get("rollout") or {}).get("phase")
        if reps.get(bad, 0) == 0 and reps.get(stable) == 4 and phase == "RolledBack":
            back = now
        time.sleep(0.05)
    if breach is None or back is None:
        raise RuntimeError(f"round {name}: breach {breach}, rollback {back}")
    timeline.mark("breach", timeline.at(breach))
    timeline.mark("rolled back", timeline.at(back))
    return {"breach_to_rollback": back - breach}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "rollout.json")
    args = parser.parse_args()

    good: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    report: dict[str, Any] = {
        "benchmark": "rollout",
        "started_at": utc_now(),
        "config": {
            "replicas": 4,
            "load_rps": 20,
            "steps": STEPS,
            "analysis": ANALYSIS,
            "bad_error_rate": BAD_ERROR_RATE,
            "model": MODEL,
            "prometheus_scrape_seconds": 1,
            "sample_seconds": SAMPLE_SECONDS,
            "rounds": args.rounds,
        },
        "good": good,
        "bad": bad,
    }
    with serving_stack("bench-rollout") as stack, stack.cluster.api() as sampling_api:
        api, sim, prom, namespace = stack.api, stack.loadsim, stack.prometheus, stack.namespace
        cluster = stack.cluster
        print(
            f"InferenceFleet rollout: 4 replicas, 20 req/s, steps {[s['weight'] for s in STEPS]}% "
            f"({STEPS[0]['pauseSeconds']}s pauses), analysis every {INTERVAL}s over "
            f"{ANALYSIS['windowSeconds']}s, failureLimit {ANALYSIS['failureLimit']}, Prometheus scrape 1s"
        )
        print(f"{'round':>5}  {'good: promoted':>14}  {'old gone':>9}  {'bad: breach->rollback':>21}")
        for index in range(args.rounds):
            rig = Rig(api, sampling_api, cluster, sim, prom, namespace)
            g = good_round(rig, f"good-{index}")
            b = bad_round(rig, f"bad-{index}")
            good.append(g)
            bad.append(b)
            times = f"{g['promoted']:>13.2f}s  {g['drained']:>8.2f}s  {b['breach_to_rollback']:>20.2f}s"
            print(f"{index + 1:>5}  {times}", flush=True)
            for name in (f"good-{index}", f"bad-{index}"):
                api.delete(f"/apis/kubeforge.dev/v1alpha1/namespaces/{namespace}/inferencefleets/{name}")
                sim.remove(namespace, name)
            wait_for(
                lambda: not api.get(f"/api/v1/namespaces/{namespace}/pods").get("items"),
                timeout=60,
                description="pods gone between rounds",
            )
        for key, label, values in (
            ("promoted", "good rollout (apply -> promoted)", [g["promoted"] for g in good]),
            ("drained", "good rollout (apply -> old revision gone)", [g["drained"] for g in good]),
            ("breach_to_rollback", "breach-to-rollback", [b["breach_to_rollback"] for b in bad]),
        ):
            print(f"{label}: median {statistics.median(values):.2f}s, max {max(values):.2f}s")
            report.setdefault("summary", {})[key] = {"median": statistics.median(values), "max": max(values)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
