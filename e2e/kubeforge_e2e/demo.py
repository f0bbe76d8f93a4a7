"""`make demo`: the local cluster, the CRDs, the operator and the samples, with live progress.

`python -m kubeforge_e2e.demo up` leaves everything running so you can look around;
`python -m kubeforge_e2e.demo down` (`make demo-down`) stops what it started, then the cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import urllib.request
from typing import Any

from kubeforge_e2e import procs
from kubeforge_e2e.cluster import ClusterError, LocalCluster
from kubeforge_e2e.operator import REPO, OperatorProcess, free_port
from kubeforge_e2e.tools import Kubectl, wait_for

NAMESPACE = "kubeforge-demo"
# The load ramp played against the autoscaled sample: (seconds after the samples start, requests/s).
RAMP_FLEET = "chat-autoscaled"
# Each replica of the simulated server serves ~20 requests/s; 45 requests/s needs 3 to 4 of them.
RAMP = ((0, 4.0), (30, 45.0), (120, 6.0))
BACKGROUND_LOAD = {"batch-summarizer": 2.0, "chat": 10.0}
RAMP_SECONDS = 180
SAMPLES = REPO / "samples"
FINISHED = {"Succeeded", "Failed"}


def _say(message: str) -> None:
    print(f"\033[1m==> {message}\033[0m", flush=True)


class Demo:
    def __init__(self) -> None:
        self.cluster = LocalCluster()
        self.loadsim_url = ""
        self.run_dir = self.cluster.paths.root / "demo"
        self.log_dir = self.cluster.paths.logs

    @property
    def kubectl(self) -> Kubectl:
        return self.cluster.kubectl

    # -- processes the demo owns (the operator, Prometheus, the load simulator) -----------------------

    def _start(self, name: str, argv: list[str]) -> int:
        return procs.start(
            name, argv, run_dir=self.run_dir, log_dir=self.log_dir, cwd=REPO, env=self.cluster.env()
        )

    def stop_processes(self) -> None:
        pids = procs.recorded(self.run_dir)
        if pids:
            left = procs.stop(list(pids.values()), marker=str(REPO))
            for name in pids:
                (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
            if left:
                print(f"warning: still running: {left}", file=sys.stderr)

    # -- steps --------------------------------------------------------------------------------------

    def install_crds(self) -> None:
        _say("installing the CRDs (kubectl apply --server-side -f crds/)")
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        for crd in ("trainingjobs.kubeforge.dev", "inferencefleets.kubeforge.dev"):
            self.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        # A namespace left Terminating by an earlier `demo-down` would swallow the samples.
        wait_for(
            lambda: (
                (self.kubectl.get("namespace", NAMESPACE) or {}).get("status", {}).get("phase")
                != "Terminating"
            ),
            timeout=120,
            description=f"namespace {NAMESPACE} to finish terminating",
        )
        self.kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})

    def start_metrics_stack(self) -> str | None:
        """Prometheus (Debian's package) scraping the load simulator that plays the fleets' model servers."""
        from kubeforge_e2e import prometheus

        try:
            binary = prometheus.find_binary()
        except prometheus.PrometheusUnavailableError:
            print("    no prometheus binary (run `make system-deps`): fleets will run without autoscaling")
            return None
        _say("starting Prometheus and the load simulator")
        sim_port, prom_port = free_port(), free_port()
        self.loadsim_url = f"http://127.0.0.1:{sim_port}"
        argv = [sys.executable, "-m", "kubeforge_e2e.loadsim", "--port", str(sim_port)]
        self._start("loadsim", [*argv, "--kubeconfig", str(self.cluster.kubeconfig)])
        config = prometheus.write_config(self.run_dir / "prometheus", targets=[f"127.0.0.1:{sim_port}"])
        data = self.run_dir / "prometheus" / "data"
        self._start("prometheus", prometheus.command(config, port=prom_port, data_dir=data, binary=binary))
        url = f"http://127.0.0.1:{prom_port}"
        wait_for(lambda: prometheus.healthy(url), timeout=60, description="Prometheus ready")
        return url

    def offer_load(self, rps: float, fleet: str = RAMP_FLEET) -> None:
        body = json.dumps({"namespace": NAMESPACE, "name": fleet, "rps": rps}).encode()
        request = urllib.request.Request(
            f"{self.loadsim_url}/fleets", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5):
            pass
        print(f"    load on {fleet}: {rps:g} requests/s", flush=True)

    def start_operator(self, prometheus_url: str | None) -> None:
        _say("starting the operator (log: .cluster/logs/operator.log)")
        # The same command line the tests and benchmarks run (OperatorProcess), kept running after the
        # demo script returns: scoped to the demo's namespace, so tests on the same cluster keep theirs.
        operator = OperatorProcess(
            self.cluster.kubeconfig,
            self.log_dir / "operator.log",
            extra_args=["--namespace", NAMESPACE]
            + (["--prometheus-url", prometheus_url] if prometheus_url else []),
            resync_seconds=None,
        )
        self._start("operator", operator.command())
        health = operator.health_port

        def ready() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=2) as response:
                return bool(response.status == 200)

        wait_for(ready, timeout=60, description="operator /readyz")

    def apply_samples(self) -> None:
        _say(f"applying samples/ into namespace {NAMESPACE}")
        wait_for(
            lambda: self.kubectl.get("serviceaccount", "default", NAMESPACE),
            timeout=30,
            description="default ServiceAccount",
        )
        for sample in sorted(SAMPLES.glob("*.yaml")):
            self.kubectl("apply", "--server-side", "-n", NAMESPACE, "-f", str(sample))
            print(f"    applied {sample.relative_to(REPO)}")

    def _objects(self, kind: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.kubectl.json("get", kind, "-n", NAMESPACE)["items"]
        return items

    def _table(self) -> tuple[list[str], bool]:
        jobs = self._objects("trainingjobs")
        lines = [f"{'KIND':<15}{'NAME':<26}{'STATE':<12}DETAIL"]
        for job in jobs:
            st = job.get("status", {})
            workers = st.get("workers", {})
            detail = (
                f"workers {workers.get('ready', 0)}/{job['spec'].get('workers')} ready, "
                f"restarts {st.get('restarts', 0)}, GPU-hours {st.get('gpuHours', 0)}"
            )
            lines.append(
                f"{'TrainingJob':<15}{job['metadata']['name']:<26}{st.get('phase', '-'):<12}{detail}"
            )
        for fleet in self._objects("inferencefleets"):
            st = fleet.get("status", {})
            ready = {c["type"]: c["status"] for c in st.get("conditions", [])}.get("Ready", "-")
            detail = f"replicas {st.get('readyReplicas', 0)} ready / {st.get('desiredReplicas', '-')} desired"
            auto = st.get("autoscaler") or {}
            if auto:
                value = auto.get("metricValue")
                shown = f"{value:.3g}" if isinstance(value, int | float) else "-"
                detail += f"; metric {shown} vs target {auto.get('target')}: {auto.get('reason')}"
            rollout = st.get("rollout") or {}
            if rollout.get("phase") and rollout.get("canaryRevision"):
                detail += (
                    f"; rollout {rollout['phase']} step {rollout.get('currentStep', 0)}"
                    f" ({rollout.get('canaryWeight', 0)}% on {rollout['canaryRevision']})"
                )
            flags = [c["type"] for c in st.get("conditions", []) if c["status"] == "True"]
            flags = [f for f in flags if f in ("CapacityLimited", "MetricsUnavailable", "Degraded")]
            if flags:
                detail += f" [{', '.join(flags)}]"
            lines.append(
                f"{'InferenceFleet':<15}{fleet['metadata']['name']:<26}{'Ready=' + ready:<12}{detail}"
            )
        finished = bool(jobs) and all(j.get("status", {}).get("phase") in FINISHED for j in jobs)
        return lines, finished

    def show_progress(self, timeout: float, ramp: bool) -> None:
        """Redraw a small table every two seconds, playing the load ramp, until the jobs have finished
        and the ramp is over."""
        started = time.monotonic()
        steps = list(RAMP) if ramp else []
        if ramp:
            for fleet, rps in BACKGROUND_LOAD.items():
                self.offer_load(rps, fleet)
        previous: list[str] = []
        while True:
            elapsed = time.monotonic() - started
            while steps and steps[0][0] <= elapsed:
                self.offer_load(steps.pop(0)[1])
            lines, finished = self._table()
            if lines != previous:  # redraw only what changed, so the log reads as a story
                print("\n".join(["", time.strftime("%H:%M:%S"), *lines]), flush=True)
                previous = lines
            ramp_over = not ramp or elapsed >= RAMP_SECONDS
            if (finished and ramp_over) or elapsed > timeout:
                return
            time.sleep(2)

    def up(self) -> int:
        started = time.monotonic()
        _say("starting the local cluster (first run builds the pinned binaries: ~7 min)")
        self.cluster.up(started_by="demo")
        self.install_crds()
        self.stop_processes()  # a previous demo's operator would otherwise race this one
        url = self.start_metrics_stack()
        self.start_operator(url)
        self.apply_samples()
        _say("watching the samples (Ctrl-C stops watching; everything keeps running)")
        with contextlib.suppress(KeyboardInterrupt):
            self.show_progress(timeout=600, ramp=url is not None)
        _say(f"demo ran in {time.monotonic() - started:.0f}s. Look around:")
        print(
            f"""
    export KUBECONFIG={self.cluster.kubeconfig} PATH={self.cluster.bin_dir}:$PATH
    kubectl get kubeforge -n {NAMESPACE}            # every kubeforge object
    kubectl describe tj -n {NAMESPACE}              # conditions and Events of the TrainingJobs
    kubectl get pods -n {NAMESPACE} -o wide         # workers on their simulated GPU nodes
    kubectl get nodes -L nvidia.com/gpu.product,topology.kubernetes.io/zone
    tail -f .cluster/logs/operator.log

Tear down with: make demo-down
"""
        )
        return 0

    def down(self) -> int:
        self.stop_processes()
        self.cluster.down()
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubeforge_e2e.demo")
    parser.add_argument("command", choices=("up", "down"), nargs="?", default="up")
    args = parser.parse_args(argv)
    demo = Demo()
    try:
        return demo.up() if args.command == "up" else demo.down()
    except (ClusterError, TimeoutError) as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
