"""A minimal admin client for the harness itself (tests use kubectl, or their own client)."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def tls_context(ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None) -> ssl.SSLContext:
    """Trusts only our CA, never the system store."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    if cert_file is not None and key_file is not None:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


class Api:
    def __init__(
        self, server: str, ca_file: Path, cert_file: Path, key_file: Path, timeout: float = 10.0
    ) -> None:
        self._client = httpx.Client(
            base_url=server,
            verify=tls_context(ca_file, cert_file, key_file),
            timeout=timeout,
            trust_env=False,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        resp = self._client.request(method, path, json=body, headers=headers, params=params)
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, resp.text.strip()[:500])
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return resp.text

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body=body)

    def delete(self, path: str, body: Any = None) -> Any:
        return self.request("DELETE", path, body=body)

    def merge_patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body=body, content_type="application/merge-patch+json")

    def strategic_patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body=body, content_type="application/strategic-merge-patch+json")

    def watch(self, path: str, params: dict[str, str], timeout_seconds: int = 300) -> Iterator[Any]:
        """The events of one watch request (``{"type", "object"}``), until the server ends it."""
        query = {**params, "watch": "true", "timeoutSeconds": str(timeout_seconds)}
        timeout = httpx.Timeout(10.0, read=timeout_seconds + 30.0)
        with self._client.stream("GET", path, params=query, timeout=timeout) as resp:
            if resp.status_code >= 400:
                raise ApiError(resp.status_code, resp.read().decode(errors="replace").strip()[:500])
            for line in resp.iter_lines():
                if line.strip():
                    yield json.loads(line)

    def healthy(self) -> bool:
        try:
            return self._client.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False
