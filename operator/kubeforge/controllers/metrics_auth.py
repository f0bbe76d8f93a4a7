"""/metrics behind Kubernetes authentication and authorization, as kube-rbac-proxy and
controller-runtime's secure metrics serve it.

The operator's metrics name every tenant's objects (their namespaces, names and conditions), so with
`--metrics-auth` a scraper must present a bearer token: a TokenReview says whose it is, and a
SubjectAccessReview whether RBAC lets that identity `get` the non-resource URL `/metrics` (the chart's
`<fullname>-metrics-reader` ClusterRole grants exactly that). Answers are kept for a minute per token,
so a scrape every few seconds costs the API server two requests a minute, not two per scrape.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kubeforge.metrics import exposition

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
CACHE_SECONDS = 60.0
CACHE_MAX = 1024
"""Tokens remembered at once; a flood of distinct tokens only clears the cache, never grows it."""


class Reviewer(Protocol):
    async def review_token(self, token: str) -> dict[str, Any]: ...

    async def review_access(self, user: Mapping[str, Any], *, path: str, verb: str) -> bool: ...


class MetricsGate:
    """Decides a scrape: 200 (allowed), 401 (no valid token) or 403 (a valid token RBAC refuses)."""

    def __init__(self, reviewer: Reviewer, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._reviewer = reviewer
        self._clock = clock
        self._decided: dict[str, tuple[int, float]] = {}

    async def decide(self, authorization: str | None) -> int:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return 401
        key = hashlib.sha256(token.strip().encode()).hexdigest()
        now = self._clock()
        cached = self._decided.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        code = await self._review(token.strip())
        if len(self._decided) >= CACHE_MAX:
            self._decided.clear()
        self._decided[key] = (code, now + CACHE_SECONDS)
        return code

    async def _review(self, token: str) -> int:
        status = await self._reviewer.review_token(token)
        if not status.get("authenticated"):
            return 401
        user = status.get("user") or {}
        if not await self._reviewer.review_access(user, path=METRICS_PATH, verb="get"):
            log.info("refused a /metrics scrape by %s (RBAC)", user.get("username"))
            return 403
        return 200


def tls_context(cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext | None:
    """A server TLS context from PEM files, or None to serve plain HTTP."""
    if cert_file is None and key_file is None:
        return None
    if cert_file is None or key_file is None:
        raise ValueError("--metrics-cert-file and --metrics-key-file go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


async def serve(gate: MetricsGate, host: str, port: int, tls: ssl.SSLContext | None = None) -> web.AppRunner:
    """The metrics endpoint with every scrape checked by `gate`."""

    async def metrics(request: web.Request) -> web.Response:
        code = await gate.decide(request.headers.get("Authorization"))
        if code == 401:
            return web.Response(status=401, text="Unauthorized", headers={"WWW-Authenticate": "Bearer"})
        if code != 200:
            return web.Response(status=403, text="Forbidden")
        return web.Response(
            body=generate_latest(exposition.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get(METRICS_PATH, metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host=host, port=port, ssl_context=tls).start()
    return runner
