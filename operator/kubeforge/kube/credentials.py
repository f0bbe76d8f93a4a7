"""Who the operator and the CLI are to the API server: every user entry kubectl accepts in a kubeconfig.

A kubeconfig user is turned into one `CredentialSource`, shared by every HTTP client of the process (the
API client and the watch streams), so a credential is fetched once however many clients use it:

- `token` and `username`/`password`: fixed for the life of the process;
- `tokenFile`: read again every minute and after a 401, as client-go does (kubelet and CSI drivers
  rotate such files in place);
- `client-certificate[-data]` / `client-key[-data]`: a fixed TLS client certificate;
- `exec`: a credential plugin (`client.authentication.k8s.io/v1` and `v1beta1`), the way EKS, GKE, AKS
  and OIDC helpers log in. Its `ExecCredential` may carry a token or a client certificate; it is run
  again when its `expirationTimestamp` has passed and when the API server answers 401 (the transport in
  `kube.transport` reports that), and never twice at once.

Why not the official `kubernetes` client's loader: it is synchronous (an exec plugin would block the
operator's event loop), it brings requests, urllib3, google-auth, oauthlib and websocket-client into an
operator that speaks HTTP through httpx2 already, and its credentials live in its own `Configuration`,
so our clients would still have to copy them out and could not hand a 401 back to it. What it does for
exec plugins fits in this module: spec, environment, stdin/interactive rules, output validation and
caching, each pinned by a test in tests/test_credentials.py."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
INTERACTIVE_MODES = ("Never", "IfAvailable", "Always")
TOKEN_FILE_REREAD_SECONDS = 60.0


class CredentialError(Exception):
    """The kubeconfig user cannot be turned into credentials (bad entry, failing or lying plugin)."""


@dataclass(frozen=True)
class ClientCertificate:
    """A TLS client certificate and its key, as PEM text."""

    cert_pem: str
    key_pem: str


@dataclass(frozen=True)
class Credential:
    """What goes with one request: an Authorization header and/or a TLS client certificate."""

    authorization: str | None = None
    certificate: ClientCertificate | None = None
    expires_at: float | None = None
    """Unix time after which the source fetches a new credential; None: valid until a 401."""


class CredentialSource(Protocol):
    async def current(self) -> Credential:
        """The credential to send now (fetched or refreshed if needed)."""
        ...

    async def rejected(self, stale: Credential) -> bool:
        """The API server answered 401 to `stale`: refresh. True when a retry may succeed."""
        ...


class FixedCredential:
    """A token, basic auth or a client certificate written into the kubeconfig: nothing to refresh."""

    def __init__(self, credential: Credential) -> None:
        self._credential = credential

    async def current(self) -> Credential:
        return self._credential

    async def rejected(self, stale: Credential) -> bool:
        return False


class TokenFile:
    """A bearer token read from a file, again every minute and after a 401."""

    def __init__(
        self,
        path: Path,
        certificate: ClientCertificate | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = path
        self._certificate = certificate
        self._clock = clock
        self._cached: Credential | None = None

    def _read(self) -> Credential:
        try:
            token = self._path.read_text().strip()
        except OSError as error:
            raise CredentialError(f"cannot read tokenFile {self._path}: {error}") from error
        return Credential(f"Bearer {token}", self._certificate, self._clock() + TOKEN_FILE_REREAD_SECONDS)

    async def current(self) -> Credential:
        cached = self._cached
        if cached is None or (cached.expires_at is not None and self._clock() >= cached.expires_at):
            cached = self._cached = self._read()
        return cached

    async def rejected(self, stale: Credential) -> bool:
        fresh = self._cached = self._read()
        return fresh.authorization != stale.authorization


@dataclass(frozen=True)
class ExecSpec:
    """A kubeconfig `user.exec` entry, validated the way client-go validates it."""

    api_version: str
    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    interactive_mode: str = "IfAvailable"
    provide_cluster_info: bool = False
    install_hint: str = ""

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> ExecSpec:
        api_version = str(raw.get("apiVersion") or "")
        if api_version not in EXEC_API_VERSIONS:
            raise CredentialError(
                f"exec plugin apiVersion {api_version or '(none)'!r} is not supported; use one of "
                + ", ".join(EXEC_API_VERSIONS)
            )
        command = str(raw.get("command") or "")
        if not command:
            raise CredentialError("exec plugin has no command")
        mode = raw.get("interactiveMode")
        if mode is None:
            # client-go: v1 must say it; v1beta1 defaults to IfAvailable.
            if api_version.endswith("/v1"):
                raise CredentialError("exec plugin: interactiveMode must be set for apiVersion v1")
            mode = "IfAvailable"
        if mode not in INTERACTIVE_MODES:
            raise CredentialError(f"exec plugin: interactiveMode {mode!r} is not one of {INTERACTIVE_MODES}")
        env = tuple((str(e["name"]), str(e["value"])) for e in raw.get("env") or [])
        return cls(
            api_version=api_version,
            command=command,
            args=tuple(str(a) for a in raw.get("args") or []),
            env=env,
            interactive_mode=str(mode),
            provide_cluster_info=bool(raw.get("provideClusterInfo")),
            install_hint=str(raw.get("installHint") or ""),
        )


def stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


class ExecPlugin:
    """Runs a credential plugin and caches what it prints until it expires or is rejected.

    `interactive` says whether the process may hand the plugin its terminal (the CLI may, the
    operator never); the plugin's stderr always reaches the user, as kubectl does."""

    def __init__(
        self,
        spec: ExecSpec,
        *,
        cluster_info: Mapping[str, Any] | None = None,
        interactive: bool = False,
        fixed_certificate: ClientCertificate | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self._cluster_info = dict(cluster_info or {})
        self._fixed_certificate = fixed_certificate
        self._clock = clock
        self._cached: Credential | None = None
        self._lock = asyncio.Lock()
        self.runs = 0
        """How often the plugin was run (for logs and tests)."""
        self.interactive = self._decide_interactive(interactive)

    def _decide_interactive(self, terminal: bool) -> bool:
        mode = self.spec.interactive_mode
        if mode == "Never":
            return False
        if mode == "Always" and not terminal:
            raise CredentialError(
                f"exec plugin {self.spec.command} needs a terminal (interactiveMode: Always), "
                "but standard input is not one"
            )
        return terminal

    def exec_info(self) -> dict[str, Any]:
        """The ExecCredential handed to the plugin in KUBERNETES_EXEC_INFO."""
        spec: dict[str, Any] = {"interactive": self.interactive}
        if self.spec.provide_cluster_info:
            spec["cluster"] = self._cluster_info
        return {"apiVersion": self.spec.api_version, "kind": "ExecCredential", "spec": spec}

    async def current(self) -> Credential:
        cached = self._cached
        if cached is not None and not self._expired(cached):
            return cached
        async with self._lock:
            # Another request may have refreshed it while this one waited.
            cached = self._cached
            if cached is not None and not self._expired(cached):
                return cached
            cached = self._cached = await self._run()
            return cached

    async def rejected(self, stale: Credential) -> bool:
        async with self._lock:
            if self._cached is not None and self._cached != stale:
                return True  # someone refreshed already; retry with theirs
            self._cached = await self._run()
            return True

    def _expired(self, credential: Credential) -> bool:
        return credential.expires_at is not None and self._clock() >= credential.expires_at

    async def _run(self) -> Credential:
        env = dict(os.environ)
        env.update(self.spec.env)
        env["KUBERNETES_EXEC_INFO"] = json.dumps(self.exec_info())
        stdin = None if self.interactive else asyncio.subprocess.DEVNULL
        try:
            proc = await asyncio.create_subprocess_exec(
                self.spec.command,
                *self.spec.args,
                env=env,
                stdin=stdin,
                stdout=asyncio.subprocess.PIPE,
                stderr=None,  # the plugin talks to the user on stderr (prompts, errors)
            )
        except OSError as error:
            hint = f"; {self.spec.install_hint}" if self.spec.install_hint else ""
            raise CredentialError(f"exec plugin {self.spec.command}: {error}{hint}") from error
        stdout, _ = await proc.communicate()
        self.runs += 1
        if proc.returncode != 0:
            raise CredentialError(f"exec plugin {self.spec.command} exited with {proc.returncode}")
        return parse_exec_credential(
            stdout, self.spec.api_version, self._fixed_certificate, command=self.spec.command
        )


def parse_exec_credential(
    output: bytes,
    api_version: str,
    fixed_certificate: ClientCertificate | None = None,
    *,
    command: str = "exec plugin",
) -> Credential:
    """Validate what a plugin printed, as client-go does: same apiVersion, kind ExecCredential, a token or
    a whole certificate/key pair; `expirationTimestamp` (RFC 3339) when the credential expires."""
    try:
        doc = json.loads(output)
    except ValueError as error:
        raise CredentialError(f"{command} printed no ExecCredential JSON: {error}") from error
    if not isinstance(doc, dict) or doc.get("kind") != "ExecCredential":
        raise CredentialError(f"{command} printed something that is not an ExecCredential")
    if doc.get("apiVersion") != api_version:
        raise CredentialError(
            f"{command} printed apiVersion {doc.get('apiVersion')!r}; "
            f"the kubeconfig asked for {api_version!r}"
        )
    status = doc.get("status")
    if not isinstance(status, dict):
        raise CredentialError(f"{command} printed an ExecCredential without status")
    token = status.get("token") or None
    cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
    if bool(cert) != bool(key):
        raise CredentialError(f"{command}: clientCertificateData and clientKeyData go together")
    if not token and not cert:
        raise CredentialError(f"{command} printed neither a token nor a client certificate")
    certificate = ClientCertificate(str(cert), str(key)) if cert else fixed_certificate
    expires_at = None
    if status.get("expirationTimestamp"):
        expires_at = parse_timestamp(str(status["expirationTimestamp"]), command)
    return Credential(f"Bearer {token}" if token else None, certificate, expires_at)


def parse_timestamp(text: str, what: str = "timestamp") -> float:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise CredentialError(f"{what}: expirationTimestamp {text!r} is not RFC 3339") from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _pem(user: Mapping[str, Any], data_key: str, file_key: str, base: Path | None) -> str | None:
    if user.get(data_key):
        try:
            return base64.b64decode(str(user[data_key])).decode()
        except ValueError as error:
            raise CredentialError(f"user {data_key} is not base64: {error}") from error
    if user.get(file_key):
        path = resolve_path(str(user[file_key]), base)
        try:
            return path.read_text()
        except OSError as error:
            raise CredentialError(f"cannot read {file_key} {path}: {error}") from error
    return None


def resolve_path(value: str, base: Path | None) -> Path:
    path = Path(value).expanduser()
    if path.is_absolute() or base is None:
        return path
    return base / path


def source_for_user(
    user: Mapping[str, Any],
    *,
    base: Path | None = None,
    cluster_info: Mapping[str, Any] | None = None,
    interactive: bool = False,
) -> CredentialSource:
    """The credential source for one kubeconfig `user` entry (relative paths resolve against `base`).

    Precedence follows client-go: a client certificate goes with whatever else is given; for the
    Authorization header a token beats a tokenFile, which beats an exec plugin, which beats basic auth."""
    cert_pem = _pem(user, "client-certificate-data", "client-certificate", base)
    key_pem = _pem(user, "client-key-data", "client-key", base)
    if bool(cert_pem) != bool(key_pem):
        raise CredentialError("a client certificate needs its key (client-key or client-key-data)")
    certificate = ClientCertificate(cert_pem, key_pem) if cert_pem and key_pem else None
    if user.get("auth-provider"):
        name = (user["auth-provider"] or {}).get("name", "?")
        raise CredentialError(
            f"auth-provider {name!r} is not supported (kubectl dropped the built-in ones too); "
            "use an exec credential plugin"
        )
    if user.get("token"):
        return FixedCredential(Credential(f"Bearer {user['token']}", certificate))
    if user.get("tokenFile"):
        return TokenFile(resolve_path(str(user["tokenFile"]), base), certificate)
    if user.get("exec"):
        spec = ExecSpec.parse(user["exec"])
        if "/" in spec.command and not Path(spec.command).is_absolute() and base is not None:
            # client-go: a relative command with a path separator is relative to its kubeconfig.
            spec = replace(spec, command=str(base / spec.command))
        return ExecPlugin(
            spec, cluster_info=cluster_info, interactive=interactive, fixed_certificate=certificate
        )
    if user.get("username") and user.get("password"):
        basic = base64.b64encode(f"{user['username']}:{user['password']}".encode()).decode()
        return FixedCredential(Credential(f"Basic {basic}", certificate))
    return FixedCredential(Credential(None, certificate))
