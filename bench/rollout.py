"""Benchmark: how fast an InferenceFleet rollout rolls a bad revision back, and how long a good one takes.

On the local cluster, with a real Prometheus scraping the load simulator every second, a fleet of four
replicas serving 20 requests/s gets a new image. Canary steps 25% and 50% (3 s pause each), analysis every
2 s over a 4 s window (maxErrorRate 5%, maxLatencyP95 1 s, failureLimit 2). Printed per round:

- good rollout: from the apply of the new image to the new revision promoted (stable), and to the old
  revision's Deployment gone;
- bad rollout (the simulator fails 30% of the new revision's requests): breach-to-rollback, from the first
  moment Prometheus shows the canary's error rate above the limit to the canary's Deployment at zero
  replicas and the stable one at four (the fleet's status says RolledBack).

Run: `make bench`, or `PYTHONPATH=e2e .venv/bin/python bench/rollout.py [--rounds N]`.
It reuses a running local cluster (`make cluster-up`) or starts one, and stops what it started.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO / "e2e", REPO / "operator"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

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
IMAGE = "registry.invalid/vllm:bench"


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


def good_round(
    api: Api, cluster: LocalCluster, sim: LoadSimulator, namespace: str, name: str
) -> dict[str, float]:
    sim.set_load(namespace, name, 20, **MODEL)
    steady(api, cluster, namespace, name, IMAGE)
    new = rev_of(name, IMAGE + "-v2")
    started = time.monotonic()
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
    return {"promoted": promoted - started, "drained": drained - started}


def bad_round(
    api: Api,
    cluster: LocalCluster,
    sim: LoadSimulator,
    prom: PrometheusProcess,
    namespace: str,
    name: str,
) -> dict[str, float]:
    sim.set_load(namespace, name, 20, **MODEL)
    stable = steady(api, cluster, namespace, name, IMAGE)
    bad = rev_of(name, IMAGE + "-broken")
    sim.set_fault(namespace, name, bad, error_rate=0.3)
    query = revision_queries(AnalysisSpec.model_validate(ANALYSIS), namespace, name, bad).error_rate
    assert query is not None
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
    return {"breach_to_rollback": back - breach}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    good: list[dict[str, float]] = []
    bad: list[dict[str, float]] = []
    with serving_stack("bench-rollout") as stack:
        api, sim, prom, namespace = stack.api, stack.loadsim, stack.prometheus, stack.namespace
        cluster = stack.cluster
        print(
            f"InferenceFleet rollout: 4 replicas, 20 req/s, steps {[s['weight'] for s in STEPS]}% "
            f"({STEPS[0]['pauseSeconds']}s pauses), analysis every {INTERVAL}s over "
            f"{ANALYSIS['windowSeconds']}s, failureLimit {ANALYSIS['failureLimit']}, Prometheus scrape 1s"
        )
        print(f"{'round':>5}  {'good: promoted':>14}  {'old gone':>9}  {'bad: breach->rollback':>21}")
        for index in range(args.rounds):
            g = good_round(api, cluster, sim, namespace, f"good-{index}")
            b = bad_round(api, cluster, sim, prom, namespace, f"bad-{index}")
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
        for label, values in (
            ("good rollout (apply -> promoted)", [g["promoted"] for g in good]),
            ("good rollout (apply -> old revision gone)", [g["drained"] for g in good]),
            ("breach-to-rollback", [b["breach_to_rollback"] for b in bad]),
        ):
            print(f"{label}: median {statistics.median(values):.2f}s, max {max(values):.2f}s")
        return 0


if __name__ == "__main__":
    sys.exit(main())
