"""Assemble and run the operator: credentials, kopf, one Runtime per kind, health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf
from aiohttp import web
from lightkube.config.models import User

from kubeforge.controllers import wiring
from kubeforge.controllers.runtime import Controller, OperatorConfig, Runtime
from kubeforge.kube.client import Kube
from kubeforge.kube.config import ClusterAccess
from kubeforge.metrics import exposition

log = logging.getLogger(__name__)


def _login(access: ClusterAccess) -> kopf.ConnectionInfo:
    """Hand kopf exactly the credentials we resolved, so it never looks for ambient ones."""
    # The selected context's cluster and user (lightkube's SingleConfig); KubeConfig itself has neither.
    config = access.config.get()
    if config is None:
        raise RuntimeError(f"{access.source} has no current context")
    cluster, user = config.cluster, config.user or User()
    ca_data = None
    ca_path = str(config.abs_file(cluster.certificate_auth)) if cluster.certificate_auth else None
    if cluster.certificate_auth_data:
        ca_data = cluster.certificate_auth_data.encode()
    token = user.token
    if user.token is None and user.token_file:  # in-cluster: projected, rotated token
        with open(user.token_file, encoding="ascii") as handle:
            token = handle.read().strip()
    return kopf.ConnectionInfo(
        server=str(cluster.server),
        ca_path=ca_path,
        ca_data=ca_data,
        insecure=bool(cluster.insecure),
        certificate_path=user.client_cert,
        certificate_data=user.client_cert_data.encode() if user.client_cert_data else None,
        private_key_path=user.client_key,
        private_key_data=user.client_key_data.encode() if user.client_key_data else None,
        token=token,
        scheme="Bearer" if token else None,
        default_namespace=None,
    )


def build_controllers(kube: Kube, config: OperatorConfig) -> list[Controller]:
    # Imported here: each kind's controller is optional wiring on top of the shared runtime.
    from kubeforge.controllers.inferencefleet import InferenceFleetController
    from kubeforge.controllers.trainingjob import TrainingJobController

    return [TrainingJobController(kube, config), InferenceFleetController(kube, config)]


async def _health_server(host: str, port: int, ready: asyncio.Event) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        if ready.is_set():
            return web.Response(text="ready")
        return web.Response(status=503, text="starting")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host=host, port=port).start()
    return runner


async def run_operator(
    access: ClusterAccess,
    config: OperatorConfig,
    *,
    metrics_port: int,
    health_port: int,
    bind_address: str = "0.0.0.0",
) -> None:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def _credentials(**_: Any) -> kopf.ConnectionInfo:
        return _login(access)

    @kopf.on.startup(registry=registry)
    def _settings(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # our own Events, with our own reasons
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.networking.request_timeout = 60
        settings.persistence.finalizer = "kubeforge.dev/finalizer"  # unused: no handler needs one
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubeforge.dev")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kubeforge.dev")

    kube = Kube(access)
    runtimes = [Runtime(kube, controller, config) for controller in build_controllers(kube, config)]
    for runtime in runtimes:
        wiring.register(registry, runtime)

    if metrics_port:
        exposition.serve(metrics_port, bind_address)
    ready = asyncio.Event()
    kopf_ready = asyncio.Event()
    health = await _health_server(bind_address, health_port, ready) if health_port else None

    async def mark_ready() -> None:
        await kopf_ready.wait()
        ready.set()
        log.info(
            "kubeforge is ready (cluster: %s, namespaces: %s)",
            access.source,
            ", ".join(config.namespaces) or "all",
        )

    tasks = [asyncio.create_task(r.resync_forever()) for r in runtimes]
    tasks.append(asyncio.create_task(mark_ready()))
    try:
        await kopf.operator(
            registry=registry,
            standalone=True,
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            ready_flag=kopf_ready,
        )
    finally:
        for task in tasks:
            task.cancel()
        for runtime in runtimes:
            await runtime.stop()
        with contextlib.suppress(Exception):
            await kube.close()
        if health is not None:
            await health.cleanup()
