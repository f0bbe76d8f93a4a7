"""The HTTP transport under every API client of the process: TLS to the API server, credentials on each
request, and one retry with fresh credentials after a 401.

Credentials are attached here, per request, rather than once when a client is built: a token or a client
certificate from an exec plugin expires while the operator runs, and the long-lived clients (the API
client, the watch streams, leader election) must pick up the new one without a restart. A token goes in
the Authorization header; a client certificate is part of the TLS handshake, so each certificate gets
its own connection pool, and pools of certificates that were replaced are closed."""

from __future__ import annotations

import base64
import logging
import os
import ssl
import tempfile
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from kubeforge.kube.credentials import ClientCertificate, Credential, CredentialError, CredentialSource

log = logging.getLogger(__name__)

RETIRED_POOLS_KEPT = 2
"""Pools of replaced certificates left open (a watch may still stream on one) before the oldest closes."""


@dataclass(frozen=True)
class TlsSettings:
    """How to trust the API server, from a kubeconfig `cluster` entry."""

    server: str
    ca_pem: str | None = None
    insecure: bool = False
    server_name: str | None = None
    proxy_url: str | None = None

    @classmethod
    def from_cluster(cls, cluster: Mapping[str, Any], base: Path | None) -> TlsSettings:
        server = str(cluster.get("server") or "")
        if not server:
            raise CredentialError("the kubeconfig cluster has no server")
        ca_pem: str | None = None
        if cluster.get("certificate-authority-data"):
            ca_pem = base64.b64decode(str(cluster["certificate-authority-data"])).decode()
        elif cluster.get("certificate-authority"):
            path = Path(str(cluster["certificate-authority"])).expanduser()
            if not path.is_absolute() and base is not None:
                path = base / path
            try:
                ca_pem = path.read_text()
            except OSError as error:
                raise CredentialError(f"cannot read certificate-authority {path}: {error}") from error
        return cls(
            server=server,
            ca_pem=ca_pem,
            insecure=bool(cluster.get("insecure-skip-tls-verify")),
            server_name=str(cluster["tls-server-name"]) if cluster.get("tls-server-name") else None,
            proxy_url=str(cluster["proxy-url"]) if cluster.get("proxy-url") else None,
        )

    def cluster_info(self) -> dict[str, Any]:
        """`spec.cluster` of the ExecCredential a plugin with provideClusterInfo receives."""
        info: dict[str, Any] = {"server": self.server}
        if self.ca_pem:
            info["certificate-authority-data"] = base64.b64encode(self.ca_pem.encode()).decode()
        if self.insecure:
            info["insecure-skip-tls-verify"] = True
        if self.server_name:
            info["tls-server-name"] = self.server_name
        if self.proxy_url:
            info["proxy-url"] = self.proxy_url
        return info


def ssl_context(
    tls: TlsSettings, certificate: ClientCertificate | None, *, trust_env: bool
) -> ssl.SSLContext:
    if tls.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif tls.ca_pem:
        ctx = ssl.create_default_context(cadata=tls.ca_pem)
    else:
        cafile = os.environ.get("SSL_CERT_FILE") if trust_env else None
        ctx = ssl.create_default_context(cafile=cafile)
    if certificate is not None:
        _load_certificate(ctx, certificate)
    return ctx


def _load_certificate(ctx: ssl.SSLContext, certificate: ClientCertificate) -> None:
    # ssl loads a certificate only from files: write both to a private directory for as long as it takes.
    with tempfile.TemporaryDirectory(prefix="kubeforge-cert-") as directory:
        cert, key = Path(directory) / "tls.crt", Path(directory) / "tls.key"
        for path, text in ((cert, certificate.cert_pem), (key, certificate.key_pem)):
            path.touch(mode=0o600)
            path.write_text(text)
        try:
            ctx.load_cert_chain(cert, key)
        except ssl.SSLError as error:
            raise CredentialError(f"the client certificate or its key is unusable: {error}") from error


def env_proxy(server: str) -> str | None:
    """The proxy HTTP(S)_PROXY/NO_PROXY choose for the API server, as an HTTP client honouring them would."""
    url = httpx2.URL(server)
    if urllib.request.proxy_bypass(url.host):
        return None
    proxies = urllib.request.getproxies_environment()
    return proxies.get(url.scheme) or proxies.get("all")


def _replayable(request: httpx2.Request) -> bool:
    # Bodies the API client sends are in memory; a streamed upload could not be sent twice.
    return isinstance(request.stream, httpx2.ByteStream)


class CredentialTransport(httpx2.AsyncBaseTransport):
    """Sends each request with the credential source's current credential, and once more after a 401."""

    def __init__(
        self,
        tls: TlsSettings,
        credentials: CredentialSource,
        *,
        use_env_proxy: bool = False,
        limits: httpx2.Limits | None = None,
    ) -> None:
        self._tls = tls
        self._credentials = credentials
        self._trust_env = use_env_proxy
        self._proxy = tls.proxy_url or (env_proxy(tls.server) if use_env_proxy else None)
        self._limits = limits or httpx2.Limits(max_connections=100, max_keepalive_connections=20)
        self._pools: dict[ClientCertificate | None, httpx2.AsyncHTTPTransport] = {}

    def _pool(self, certificate: ClientCertificate | None) -> httpx2.AsyncHTTPTransport:
        pool = self._pools.get(certificate)
        if pool is None:
            pool = httpx2.AsyncHTTPTransport(
                verify=ssl_context(self._tls, certificate, trust_env=self._trust_env),
                trust_env=False,
                proxy=self._proxy,
                limits=self._limits,
            )
            self._pools[certificate] = pool
        return pool

    async def _retire(self) -> None:
        while len(self._pools) > RETIRED_POOLS_KEPT + 1:
            oldest = next(iter(self._pools))
            await self._pools.pop(oldest).aclose()

    async def _send(self, request: httpx2.Request, credential: Credential) -> httpx2.Response:
        if credential.authorization is not None:
            request.headers["Authorization"] = credential.authorization
        elif "Authorization" in request.headers:
            del request.headers["Authorization"]
        if self._tls.server_name:
            request.extensions["sni_hostname"] = self._tls.server_name
        fresh = credential.certificate not in self._pools
        pool = self._pool(credential.certificate)
        if fresh:
            await self._retire()
        return await pool.handle_async_request(request)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        credential = await self._credentials.current()
        response = await self._send(request, credential)
        if response.status_code != 401 or not _replayable(request):
            return response
        if not await self._credentials.rejected(credential):
            return response  # nothing fresher to offer: the caller sees the 401
        await response.aclose()
        log.info("the API server refused the credential (401); retrying with a refreshed one")
        return await self._send(request, await self._credentials.current())

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
        self._pools.clear()
