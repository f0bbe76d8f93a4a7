"""Assemble and run the operator: credentials, caches, leader election, one Runtime per kind, health and
metrics.

Start-up order, and why:

1. The informers list and watch every kind the controllers read. Until each has a complete list,
   `/readyz` answers 503 and nothing is written: a decision on a partial cache could, for instance,
   admit a gang into GPUs whose pods have not been listed yet.
2. With `--leader-elect`, the replica campaigns for the Lease. A standby keeps its caches warm (it
   watches like the leader) and is ready, but runs no reconcile and writes nothing except its campaign.
3. The leader starts the workers. Losing the Lease ends the process (as controller-runtime does): its
   in-memory state may be stale by then, and a restart resumes from the cluster. SIGTERM stops the
   workers, then releases the Lease so a standby takes over at its next retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from aiohttp import web

from kubeforge.api.names import INFERENCEFLEET_LABEL, MANAGED_BY, MANAGED_BY_VALUE, TRAININGJOB_LABEL
from kubeforge.controllers import lending, metrics_auth
from kubeforge.controllers.runtime import Controller, OperatorConfig, Runtime
from kubeforge.kube import projections
from kubeforge.kube.client import Kube
from kubeforge.kube.config import ClusterAccess
from kubeforge.kube.informer import Caches, Informer, Source
from kubeforge.kube.kinds import (
    CONTROLLER_REVISION,
    DEPLOYMENT,
    INFERENCEFLEET,
    JOB,
    KUEUE_WORKLOAD,
    NETWORK_POLICY,
    NODE,
    PDB,
    POD,
    PRIORITY_CLASS,
    REPLICASET,
    RESOURCE_QUOTA,
    SERVICE,
    TRAININGJOB,
    Kind,
)
from kubeforge.kube.leader import LeaderElectionConfig, LeaderElector
from kubeforge.metrics import exposition

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoints:
    metrics_port: int = 8080
    health_port: int = 8081
    bind_address: str = "0.0.0.0"
    """Where /healthz and /readyz listen (the kubelet probes them on the pod's IP)."""
    metrics_bind_address: str | None = None
    """Where /metrics listens; None: `bind_address`. 127.0.0.1 keeps it inside the pod (for an
    authenticating proxy beside the operator)."""
    metrics_auth: bool = False
    """Check every scrape's bearer token with a TokenReview and a SubjectAccessReview."""
    metrics_cert_file: Path | None = None
    metrics_key_file: Path | None = None
    """Serve the authenticated /metrics over TLS with this certificate and key (PEM)."""

    @property
    def metrics_address(self) -> str:
        return self.bind_address if self.metrics_bind_address is None else self.metrics_bind_address


async def _pods_clusterwide(http: httpx2.AsyncClient) -> bool:
    """GPUs are shared by the whole cluster, so pods are watched in every namespace when RBAC allows;
    an operator limited to some namespaces (a Role, no ClusterRole) then sees only those."""
    response = await http.get("/api/v1/pods", params={"limit": 1})
    exposition.count_api_request("list", "pods", response.status_code)
    if response.status_code == 403:
        return False
    response.raise_for_status()
    return True


async def _serves(http: httpx2.AsyncClient, kind: Kind) -> bool:
    """The API server serves `kind` (an optional API: Kueue's Workloads exist only where Kueue runs).
    Read once at start: installing Kueue later needs an operator restart for fleets to ask it."""
    response = await http.get(f"/apis/{kind.api_version}")
    exposition.count_api_request("get", kind.group, response.status_code)
    if response.status_code == 404:
        return False
    response.raise_for_status()
    return any(r.get("name") == kind.plural for r in response.json().get("resources") or [])


async def build_caches(http: httpx2.AsyncClient, config: OperatorConfig) -> Caches:
    namespaces = config.namespaces
    ours = f"{MANAGED_BY}={MANAGED_BY_VALUE}"
    pod_namespaces: tuple[str, ...] = ()
    if namespaces and not await _pods_clusterwide(http):
        log.warning(
            "pods of other namespaces are not readable: GPU capacity used outside %s is unknown, so "
            "gangs are not admitted by kubeforge (use Kueue) and fleet rollouts swap pods in place",
            ", ".join(namespaces),
        )
        pod_namespaces = namespaces
    sources: tuple[Source, ...] = (
        Source(TRAININGJOB, projections.owned_resource, namespaces=namespaces),
        Source(INFERENCEFLEET, projections.owned_resource, namespaces=namespaces, marks=(lending.BORROWING,)),
        Source(JOB, projections.child, ours, namespaces, (TRAININGJOB_LABEL,)),
        Source(DEPLOYMENT, projections.child, ours, namespaces, (INFERENCEFLEET_LABEL,)),
        # Only to link a fleet's pods to its Deployments by owner UID (pod -> ReplicaSet -> Deployment).
        Source(REPLICASET, projections.owner_link, ours, namespaces),
        Source(SERVICE, projections.child, ours, namespaces),
        Source(PDB, projections.child, ours, namespaces),
        # Fleets under `objective: privacy` own one.
        Source(NETWORK_POLICY, projections.child, ours, namespaces),
        Source(CONTROLLER_REVISION, projections.child, ours, namespaces, (INFERENCEFLEET_LABEL,)),
        Source(POD, projections.pod, None, pod_namespaces, (TRAININGJOB_LABEL, INFERENCEFLEET_LABEL)),
        Source(NODE, projections.node),
        Source(PRIORITY_CLASS, projections.priority_class),
        Source(RESOURCE_QUOTA, projections.resource_quota, None, namespaces),
    )
    if await _serves(http, KUEUE_WORKLOAD):
        # Only the fleets' claims on Kueue (`policy.kueue_claims`), never Kueue's own Workloads.
        sources += (Source(KUEUE_WORKLOAD, projections.child, ours, namespaces, (INFERENCEFLEET_LABEL,)),)
    caches = Caches(Informer(http, source) for source in sources)
    # Gang admission says capacity is unknown rather than admitting into GPUs it cannot see are used.
    caches.capacity().scope = pod_namespaces
    return caches


def build_controllers(kube: Kube, caches: Caches, config: OperatorConfig) -> list[Controller]:
    # Imported here: each kind's controller is optional wiring on top of the shared runtime.
    from kubeforge.controllers.inferencefleet import InferenceFleetController
    from kubeforge.controllers.trainingjob import TrainingJobController
    from kubeforge.metrics.promql import PrometheusSource

    # One Prometheus client for both: fleets read their autoscaling, analysis and usage metrics, jobs
    # what their GPUs drew.
    source = PrometheusSource(config.prometheus_url) if config.prometheus_url else None
    return [
        TrainingJobController(kube, caches, config, source=source),
        InferenceFleetController(kube, caches, config, source=source),
    ]


async def _health_server(endpoints: Endpoints, caches: Caches) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        if caches.synced:
            return web.Response(text="ready")
        waiting = [i.kind.plural for i in caches.informers.values() if not i.synced.is_set()]
        return web.Response(status=503, text=f"caches not synced: {', '.join(waiting)}")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host=endpoints.bind_address, port=endpoints.health_port).start()
    return runner


async def run_operator(
    access: ClusterAccess,
    config: OperatorConfig,
    endpoints: Endpoints,
    leader_election: LeaderElectionConfig | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (0) or until leadership is lost (1)."""
    kube = Kube(access)
    exposition.API_HOST[0] = access.server
    http = kube.watch_client()
    caches = await build_caches(http, config)
    kube.observer = caches.observe_write
    exposition.CACHES.source = lambda: [
        (i.kind.plural, len(i.store), i.synced.is_set()) for i in caches.informers.values()
    ]
    runtimes = [Runtime(caches, c, config) for c in build_controllers(kube, caches, config)]

    metrics_runner: web.AppRunner | None = None
    if endpoints.metrics_port and endpoints.metrics_auth:
        tls = metrics_auth.tls_context(endpoints.metrics_cert_file, endpoints.metrics_key_file)
        gate = metrics_auth.MetricsGate(kube)
        metrics_runner = await metrics_auth.serve(
            gate, endpoints.metrics_address, endpoints.metrics_port, tls
        )
    elif endpoints.metrics_port:
        exposition.serve(endpoints.metrics_port, endpoints.metrics_address)
    health = await _health_server(endpoints, caches) if endpoints.health_port else None

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    background: list[asyncio.Task[None]] = [loop.create_task(i.run()) for i in caches.informers.values()]
    elector: LeaderElector | None = None
    code = 0
    try:
        if not await _first(caches.wait_synced(), stop.wait()):
            return 0
        log.info("caches synced: %s", ", ".join(f"{k} {n}" for k, n in caches.sizes().items()))
        if leader_election is not None:
            name = leader_election.name
            elector = LeaderElector(
                kube,
                leader_election,
                on_change=lambda leading: exposition.LEADER.labels(name).set(1 if leading else 0),
            )
            exposition.LEADER.labels(name).set(0)
            background.append(loop.create_task(elector.run()))
            log.info("standing by for Lease %s/%s", leader_election.namespace, name)
            if not await _first(elector.wait_elected(), stop.wait()):
                return 0 if stop.is_set() else 1
        for runtime in runtimes:
            if leader_election is not None:
                # What happened since the old leader last renewed is recent, however long its Lease.
                recent = 2 * leader_election.lease_duration + leader_election.renew_deadline
                runtime.backlog_recent = max(runtime.backlog_recent, recent)
            runtime.start()
        log.info(
            "kubeforge is reconciling (cluster: %s, namespaces: %s)",
            access.source,
            ", ".join(config.namespaces) or "all",
        )
        waits: list[asyncio.Future[object]] = [asyncio.ensure_future(stop.wait())]
        if elector is not None:
            waits.append(asyncio.ensure_future(elector.wait_lost()))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waits:
            waiter.cancel()
        if not stop.is_set():
            log.error("lost the leader Lease; exiting so a fresh process resumes from the cluster")
            code = 1
    finally:
        for runtime in runtimes:
            await runtime.stop()
        if elector is not None:
            await elector.release()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        with contextlib.suppress(Exception):
            await http.aclose()
        with contextlib.suppress(Exception):
            await kube.close()
        if health is not None:
            await health.cleanup()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
    return code


async def _first(*awaitables: Awaitable[Any]) -> bool:
    """Wait for whichever finishes first; True when it was the first one (and did not return False)."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return tasks[0] in done and not tasks[0].cancelled() and tasks[0].result() is not False
