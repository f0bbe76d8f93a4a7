"""Benchmark: how fast training lends GPUs to an InferenceFleet in a latency breach, and gives them back.

On the local cluster, three 4-GPU nodes of a product of their own are filled exactly by an autoscaling
fleet of one 2-GPU replica and an elastic TrainingJob at its maximum (5 workers of 2 GPUs, minimum 2). A
load step from 5 to 50 requests/s (20 per replica) makes the fleet want 3 replicas. Printed per round:

- breach-to-lent: from the fleet's status asking for more replicas than it has room for to the fleet
  recording what it borrowed (`status.borrowed`);
- lent-to-ready: from that record to the first borrowed replica Ready (the job shrank, the scheduler
  placed the fleet's pod);
- breach-to-all-ready: until all 3 replicas are Ready;
- calm-to-returned and returned-to-regrown: after the load drops back, from the fleet asking for 1
  replica again to the record being dropped (at least `--gpu-return-after-seconds`, 10 s here), and from
  then to the job back at its maximum.

Run: `PYTHONPATH=e2e .venv/bin/python bench/arbitration.py [--rounds N]` (or `make bench`). It reuses a
running local cluster (`make cluster-up`) or starts one, and stops what it started.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO / "e2e", REPO / "operator"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from _timeline import RESULTS_DIR, utc_now  # noqa: E402

from kubeforge_e2e import GpuSpec, NodeSpec, wait_for  # noqa: E402
from kubeforge_e2e.api import Api  # noqa: E402
from kubeforge_e2e.stack import serving_stack  # noqa: E402
from kubeforge_e2e.workloads import LENDING_AUTOSCALING as AUTOSCALING  # noqa: E402
from kubeforge_e2e.workloads import LENDING_MODEL as MODEL  # noqa: E402
from kubeforge_e2e.workloads import fleet, trainingjob_manifest  # noqa: E402

RETURN_AFTER = 10
LOAD_BEFORE, LOAD_AFTER = 5, 50


def _path(namespace: str, plural: str, name: str = "") -> str:
    base = f"/apis/kubeforge.dev/v1alpha1/namespaces/{namespace}/{plural}"
    return f"{base}/{name}" if name else base


def _status(api: Api, namespace: str, plural: str, name: str) -> dict[str, Any]:
    return dict(api.get(_path(namespace, plural, name)).get("status") or {})


def _at(predicate: Any, description: str, timeout: float = 150) -> float:
    """The monotonic time `predicate` first held (polled every 50 ms)."""
    found: float = wait_for(
        lambda: time.monotonic() if predicate() else None,
        timeout=timeout,
        interval=0.05,
        description=description,
    )
    return found


def one_round(api: Api, stack: Any, product: str, index: int) -> dict[str, float]:
    namespace, sim = stack.namespace, stack.loadsim
    name, job = f"chat-{index}", f"train-{index}"
    resources = {"gpus": 2, "gpuType": product}
    sim.set_load(namespace, name, LOAD_BEFORE, **MODEL)
    api.post(_path(namespace, "inferencefleets"), fleet(name, resources=resources, autoscaling=AUTOSCALING))
    _at(lambda: _status(api, namespace, "inferencefleets", name).get("readyReplicas") == 1, "fleet ready")
    manifest = trainingjob_manifest(
        job, run_seconds=3600, resources=resources, elastic={"minWorkers": 2, "maxWorkers": 5}
    )
    del manifest["spec"]["workers"]

    def workers() -> int:
        status = _status(api, namespace, "trainingjobs", job)
        return int((status.get("workers") or {}).get("current") or 0)

    api.post(_path(namespace, "trainingjobs"), manifest)
    _at(lambda: workers() == 5, "the job at 5 workers")
    _at(
        lambda: (
            (_status(api, namespace, "inferencefleets", name).get("autoscaler") or {}).get("metricValue")
            is not None
        ),
        "the fleet reading metrics",
    )

    def fleet_status() -> dict[str, Any]:
        return _status(api, namespace, "inferencefleets", name)

    sim.set_load(namespace, name, LOAD_AFTER, **MODEL)
    breach = _at(lambda: int(fleet_status().get("desiredReplicas") or 0) > 1, "a scale-up decision")
    lent = _at(lambda: bool(fleet_status().get("borrowed")), "the fleet borrowing")
    ready = _at(lambda: int(fleet_status().get("readyReplicas") or 0) >= 2, "a borrowed replica Ready")
    all_ready = _at(lambda: int(fleet_status().get("readyReplicas") or 0) >= 3, "3 replicas Ready")
    sim.set_load(namespace, name, 1, **MODEL)
    calm = _at(lambda: int(fleet_status().get("desiredReplicas") or 0) == 1, "the fleet back at 1")
    returned = _at(lambda: not fleet_status().get("borrowed"), "the GPUs given back")
    regrown = _at(lambda: workers() == 5, "the job back at 5")
    api.delete(_path(namespace, "inferencefleets", name))
    api.delete(_path(namespace, "trainingjobs", job))
    sim.remove(namespace, name)
    return {
        "breach_to_lent": lent - breach,
        "lent_to_ready": ready - lent,
        "breach_to_all_ready": all_ready - breach,
        "calm_to_returned": returned - calm,
        "returned_to_regrown": regrown - returned,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "arbitration.json")
    args = parser.parse_args()
    product = f"KF-BENCH-{secrets.token_hex(3).upper()}"
    results: list[dict[str, float]] = []
    with serving_stack("bench-arbitration", ["--gpu-return-after-seconds", str(RETURN_AFTER)]) as stack:
        nodes = [f"arb-{product[-6:].lower()}-{i}" for i in range(3)]
        for node in nodes:
            stack.cluster.add_node(
                NodeSpec(name=node, zone="zone-c", gpu=GpuSpec(product=product, count=4, memory_mib=1024))
            )
        try:
            print(
                "GPU arbitration: 12 GPUs full with a 1-replica fleet and an elastic job at 5 workers; "
                f"load {LOAD_BEFORE} -> {LOAD_AFTER} req/s, give-back after {RETURN_AFTER}s calm"
            )
            keys = (
                "breach_to_lent",
                "lent_to_ready",
                "breach_to_all_ready",
                "calm_to_returned",
                "returned_to_regrown",
            )
            print("round  " + "  ".join(f"{k:>19}" for k in keys))
            for index in range(args.rounds):
                result = one_round(stack.api, stack, product, index)
                results.append(result)
                print(f"{index + 1:>5}  " + "  ".join(f"{result[k]:>18.2f}s" for k in keys), flush=True)
                wait_for(
                    lambda: not stack.api.get(f"/api/v1/namespaces/{stack.namespace}/pods").get("items"),
                    timeout=90,
                    description="pods gone between rounds",
                )
            summary = {k: {"median": statistics.median(r[k] for r in results)} for k in keys}
            for k, v in summary.items():
                print(f"{k}: median {v['median']:.2f}s")
        finally:
            for node in nodes:
                if stack.cluster.get_node(node) is not None:
                    stack.cluster.delete_node(node)
    report = {"benchmark": "arbitration", "started_at": utc_now(), "rounds": results, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
