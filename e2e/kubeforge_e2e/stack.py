"""The whole serving stack for scripts outside pytest (the benchmarks): the local cluster, the CRDs, a
namespace, the load simulator, Prometheus scraping it, and the operator scoped to that namespace."""

from __future__ import annotations

import secrets
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kubeforge_e2e.api import Api
from kubeforge_e2e.cluster import LocalCluster
from kubeforge_e2e.loadsim import LoadSimulator, api_lister
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.prometheus import PrometheusProcess
from kubeforge_e2e.tools import wait_for
from kubeforge_e2e.workloads import install_crds


@dataclass(frozen=True)
class ServingStack:
    cluster: LocalCluster
    api: Api
    namespace: str
    loadsim: LoadSimulator
    prometheus: PrometheusProcess
    operator: OperatorProcess


@contextmanager
def serving_stack(prefix: str, operator_args: Sequence[str] = ()) -> Iterator[ServingStack]:
    """Start everything (reusing a running cluster), yield it, and stop what was started; `operator_args`
    are added to the operator's command line."""
    cluster = LocalCluster()
    cluster.acquire()
    namespace = f"{prefix}-{secrets.token_hex(3)}"
    api = cluster.api()
    workdir = Path(tempfile.mkdtemp(prefix=f"kubeforge-{prefix}-"))
    sim = LoadSimulator(api_lister(api))
    prom: PrometheusProcess | None = None
    operator: OperatorProcess | None = None
    try:
        install_crds(cluster.kubectl)
        api.post(
            "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        )
        sim.start()
        prom = PrometheusProcess(workdir / "prometheus", [sim.address])
        prom.start()
        wait_for(prom.targets_up, timeout=30, description="Prometheus scraping the simulator")
        operator = OperatorProcess(
            cluster.kubeconfig,
            workdir / "operator.log",
            extra_args=["--namespace", namespace, "--prometheus-url", prom.url, *operator_args],
            env=cluster.env(),
        )
        operator.start()
        yield ServingStack(cluster, api, namespace, sim, prom, operator)
    finally:
        if operator is not None:
            operator.stop()
        if prom is not None:
            prom.stop()
        sim.stop()
        try:
            api.delete(f"/api/v1/namespaces/{namespace}")
        except Exception as error:  # the namespace may not exist if setup failed early
            print(f"(could not delete {namespace}: {error})", file=sys.stderr)
        api.close()
        cluster.release()
