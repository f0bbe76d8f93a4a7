"""Every kind of kubeconfig user kubectl accepts, against a local HTTPS server that authenticates like an
API server: bearer tokens it knows, or a client certificate signed by its CA (401 otherwise).

Exec plugins are real scripts written by the tests; each run prints the next ExecCredential of its plan
and logs what it was given (arguments, environment, KUBERNETES_EXEC_INFO)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pty
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from kubeforge.kube.client import Kube
from kubeforge.kube.config import ConfigError, load_access
from kubeforge.kube.credentials import CredentialError, ExecPlugin, ExecSpec, parse_exec_credential
from kubeforge_e2e import pki

V1, V1BETA1 = "client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pki")
    pki.generate(path)  # a CA, a serving certificate for 127.0.0.1, client certificates (admin, ...)
    return path


@dataclass
class FakeApi:
    url: str
    tokens: set[str] = field(default_factory=set)
    """Bearer tokens accepted; client certificates signed by the CA are always accepted."""
    seen: list[tuple[str | None, str | None]] = field(default_factory=list)


@pytest_asyncio.fixture(loop_scope="function")
async def api(certs: Path) -> AsyncIterator[FakeApi]:
    fake = FakeApi("")

    async def handler(request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        cn = None
        if peer:
            cn = next(v for rdn in peer["subject"] for k, v in rdn if k == "commonName")
        fake.seen.append((auth, cn))
        token = auth.removeprefix("Bearer ") if auth and auth.startswith("Bearer ") else None
        if cn is None and token not in fake.tokens:
            return web.json_response({"kind": "Status", "code": 401, "reason": "Unauthorized"}, status=401)
        return web.json_response(
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "user": cn or token}
        )

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=certs / "ca.crt")
    ctx.load_cert_chain(certs / "apiserver.crt", certs / "apiserver.key")
    ctx.verify_mode = ssl.CERT_OPTIONAL
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    fake.url = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield fake
    finally:
        await runner.cleanup()


def write_kubeconfig(path: Path, server: str, ca: Path, user: dict[str, Any]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "k", "cluster": {"server": server, "certificate-authority": str(ca)}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            }
        )
    )
    return path


def exec_credential(api_version: str, expires_in: float | None = None, **status: str) -> dict[str, Any]:
    if expires_in is not None:
        moment = datetime.now(UTC) + timedelta(seconds=expires_in)
        status["expirationTimestamp"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"apiVersion": api_version, "kind": "ExecCredential", "status": status}


def admin_certificate(certs: Path, api_version: str, expires_in: float | None = None) -> dict[str, Any]:
    return exec_credential(
        api_version,
        expires_in,
        clientCertificateData=(certs / "admin.crt").read_text(),
        clientKeyData=(certs / "admin.key").read_text(),
    )


@dataclass
class Plugin:
    """An exec plugin script: run n prints plan[min(n, last)] and logs its inputs."""

    command: Path
    log: Path

    def runs(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


def write_plugin(directory: Path, plan: list[dict[str, Any]], name: str = "plugin") -> Plugin:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.plan.json").write_text(json.dumps(plan))
    log = directory / f"{name}.log"
    script = directory / name
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"plan = json.load(open({str(directory / f'{name}.plan.json')!r}))\n"
        f"log = {str(log)!r}\n"
        "n = sum(1 for _ in open(log)) if os.path.exists(log) else 0\n"
        "entry = {'argv': sys.argv[1:], 'info': json.loads(os.environ['KUBERNETES_EXEC_INFO']),\n"
        "         'env': {k: v for k, v in os.environ.items() if k.startswith('PLUGIN_')},\n"
        "         'stdin_tty': sys.stdin is not None and not sys.stdin.closed and sys.stdin.isatty()}\n"
        "open(log, 'a').write(json.dumps(entry) + '\\n')\n"
        "print(json.dumps(plan[min(n, len(plan) - 1)]))\n"
    )
    script.chmod(0o755)
    return Plugin(script, log)


async def whoami(kubeconfig: Path) -> Any:
    """One GET through the watch client and one through the API client, as the operator makes them."""
    kube = Kube(load_access(kubeconfig=kubeconfig, in_cluster=False))
    watch = kube.watch_client()
    try:
        response = await watch.get("/api/v1/namespaces/ns/services/x")
        response.raise_for_status()
        via_api = await kube.get("v1", "Service", "x", "ns")
        assert via_api is not None
        assert via_api["user"] == response.json()["user"]
        return response.json()["user"]
    finally:
        await watch.aclose()
        await kube.close()


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


# -- credentials written into the kubeconfig -------------------------------------------------------------


async def test_static_token(api: FakeApi, certs: Path, tmp_path: Path) -> None:
    api.tokens.add("static")
    assert await whoami(
        write_kubeconfig(tmp_path / "kc", api.url, certs / "ca.crt", {"token": "static"})
    ) == ("static")


async def test_token_file_is_read_again_after_a_401(api: FakeApi, certs: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("old\n")
    api.tokens.add("old")
    kubeconfig = write_kubeconfig(tmp_path / "kc", api.url, certs / "ca.crt", {"tokenFile": "token"})
    access = load_access(kubeconfig=kubeconfig, in_cluster=False)
    client = httpx2.AsyncClient(base_url=access.server, transport=access.transport())
    try:
        assert (await client.get("/a")).json()["user"] == "old"
        token_file.write_text("new\n")  # rotated in place, the old one revoked
        api.tokens = {"new"}
        assert (await client.get("/a")).json()["user"] == "new"
    finally:
        await client.aclose()


@pytest.mark.parametrize("form", ["files", "relative-files", "data"])
async def test_client_certificate(api: FakeApi, certs: Path, tmp_path: Path, form: str) -> None:
    if form == "files":
        user = {"client-certificate": str(certs / "admin.crt"), "client-key": str(certs / "admin.key")}
    elif form == "relative-files":  # relative to the kubeconfig's own directory, as kubectl resolves them
        (tmp_path / "creds").mkdir()
        for name in ("admin.crt", "admin.key"):
            (tmp_path / "creds" / name).write_bytes((certs / name).read_bytes())
        user = {"client-certificate": "creds/admin.crt", "client-key": "creds/admin.key"}
    else:
        user = {
            "client-certificate-data": _b64(certs / "admin.crt"),
            "client-key-data": _b64(certs / "admin.key"),
        }
    kubeconfig = write_kubeconfig(tmp_path / "kc", api.url, certs / "ca.crt", user)
    assert await whoami(kubeconfig) == "kubeforge-e2e-admin"


async def test_no_credentials_get_a_401(api: FakeApi, certs: Path, tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kc", api.url, certs / "ca.crt", {})
    with pytest.raises(httpx2.HTTPStatusError, match="401"):
        await whoami(kubeconfig)


def test_auth_provider_is_refused_with_a_way_out(tmp_path: Path, certs: Path) -> None:
    kubeconfig = write_kubeconfig(
        tmp_path / "kc", "https://127.0.0.1:1", certs / "ca.crt", {"auth-provider": {"name": "oidc"}}
    )
    with pytest.raises(ConfigError, match="exec credential plugin"):
        load_access(kubeconfig=kubeconfig, in_cluster=False)


# -- exec credential plugins ---------------------------------------------------------------------------------


@pytest.mark.parametrize("api_version", [V1, V1BETA1])
async def test_exec_plugin_token(api: FakeApi, certs: Path, tmp_path: Path, api_version: str) -> None:
    api.tokens.add("from-plugin")
    plugin = write_plugin(tmp_path, [exec_credential(api_version, token="from-plugin")])
    user = {
        "exec": {
            "apiVersion": api_version,
            "command": str(plugin.command),
            "args": ["--cluster", "demo"],
            "env": [{"name": "PLUGIN_REGION", "value": "eu-1"}],
            "interactiveMode": "Never",
        }
    }
    assert await whoami(write_kubeconfig(tmp_path / "kc", api.url, certs / "ca.crt", user)) == "from-plugin"
    runs = plugin.runs()
    assert len(runs) == 1, "both clients of the process share one credential"
    assert runs[0]["argv"] == ["--cluster", "demo"]
    assert runs[0]["env"] == {"PLUGIN_REGION": "eu-1"}
    assert runs[0]["info"] == {
        "apiVersion": api_version,
        "kind": "ExecCredential",
        "spec": {"interactive": False},
    }
    assert runs[0]["stdin_tty"] is False


@pytest.mark.parametrize("api_version", [V1, V1BETA1])
async def test_exec_plugin_client_certificate(
    api: FakeApi, certs: Path, tmp_path: Path, api_version: str
) -> None:
    plugin = write_plugin(tmp_path, [admin_certificate(certs, api_version)])
    user = {"exec": {"apiVersion": api_version, "command": str(plugin.command), "interactiveMode": "Never"}}
    kubeconfig = write_kubeconfig(tmp_path / "kc", api.url, certs / "ca.crt", user)
    assert await whoami(kubeconfig) == "kubeforge-e2e-admin"
    assert api.seen[-1] == (None, "kubeforge-e2e-admin")


async def test_exec_plugin_gets_cluster_info_when_asked(api: FakeApi, certs: Path, tmp_path: Path) -> None:
    api.tokens.add("t")
    plugin = write_plugin(tmp_path, [exec_credential(V1, token="t")])
    user = {
        "exec": {
            "apiVersion": V1,
            "command": str(plugin.command),
            "interactiveMode": "IfAvailable",
            "provideClusterInfo": True,
        }
    }
    await whoami(write_kubeconfig(tmp_path / "kc", api.url, certs / "ca.crt", user))
    spec = plugin.runs()[0]["info"]["spec"]
    assert spec["interactive"] is False  # pytest's stdin is no terminal
    assert spec["cluster"]["server"] == api.url
    assert base64.b64decode(spec["cluster"]["certificate-authority-data"]) == (certs / "ca.crt").read_bytes()


async def test_expired_credential_is_fetched_again(api: FakeApi, certs: Path, tmp_path: Path) -> None:
    api.tokens.update({"first", "second"})
    plugin = write_plugin(
        tmp_path,
        [
            exec_credential(V1, expires_in=-1, token="first"),
            exec_credential(V1, expires_in=3600, token="second"),
        ],
    )
    user = {"exec": {"apiVersion": V1, "command": str(plugin.command), "interactiveMode": "Never"}}
    access = load_access(
        kubeconfig=write_kubeconfig(tmp_path / "kc", api.url, certs / "ca.crt", user), in_cluster=False
    )
    client = httpx2.AsyncClient(base_url=access.server, transport=access.transport())
    try:
        assert (await client.get("/a")).json()["user"] == "first"
        assert (await client.get("/a")).json()["user"] == "second"  # the first had expired
        assert (await client.get("/a")).json()["user"] == "second"  # still valid: no new run
    finally:
        await client.aclose()
    assert len(plugin.runs()) == 2


async def test_a_401_runs_the_plugin_again_and_retries(api: FakeApi, certs: Path, tmp_path: Path) -> None:
    api.tokens.add("revoked-later")
    plugin = write_plugin(
        tmp_path, [exec_credential(V1, token="revoked-later"), exec_credential(V1, token="replacement")]
    )
    user = {"exec": {"apiVersion": V1, "command": str(plugin.command), "interactiveMode": "Never"}}
    kubeconfig = write_kubeconfig(tmp_path / "kc", api.url, certs / "ca.crt", user)
    kube = Kube(load_access(kubeconfig=kubeconfig, in_cluster=False))
    try:
        assert (await kube.get("v1", "Service", "x", "ns") or {})["user"] == "revoked-later"
        api.tokens = {"replacement"}  # no expiry announced: only the 401 tells
        assert (await kube.get("v1", "Service", "x", "ns") or {})["user"] == "replacement"
    finally:
        await kube.close()
    assert len(plugin.runs()) == 2
    assert [auth for auth, _ in api.seen] == [
        "Bearer revoked-later",
        "Bearer revoked-later",
        "Bearer replacement",
    ]


async def test_an_expired_certificate_is_replaced_by_a_token(
    api: FakeApi, certs: Path, tmp_path: Path
) -> None:
    """A plugin may switch from a certificate to a token: the new credential carries no old certificate."""
    api.tokens.add("later")
    plugin = write_plugin(
        tmp_path,
        [admin_certificate(certs, V1BETA1, expires_in=-1), exec_credential(V1BETA1, token="later")],
    )
    user = {"exec": {"apiVersion": V1BETA1, "command": str(plugin.command)}}
    access = load_access(
        kubeconfig=write_kubeconfig(tmp_path / "kc", api.url, certs / "ca.crt", user), in_cluster=False
    )
    client = httpx2.AsyncClient(base_url=access.server, transport=access.transport())
    try:
        assert (await client.get("/a")).json()["user"] == "kubeforge-e2e-admin"
        assert (await client.get("/a")).json()["user"] == "later"
    finally:
        await client.aclose()


async def test_a_failing_plugin_is_an_error_with_its_install_hint(tmp_path: Path) -> None:
    spec = ExecSpec.parse(
        {
            "apiVersion": V1,
            "command": str(tmp_path / "absent"),
            "interactiveMode": "Never",
            "installHint": "install it with: apt-get install absent",
        }
    )
    with pytest.raises(CredentialError, match="apt-get install absent"):
        await ExecPlugin(spec).current()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"}, "not supported"),
        ({"apiVersion": V1, "command": "x"}, "interactiveMode must be set"),
        ({"apiVersion": V1, "command": "x", "interactiveMode": "Sometimes"}, "not one of"),
        ({"apiVersion": V1, "interactiveMode": "Never"}, "no command"),
    ],
    ids=["v1alpha1", "v1-without-interactive-mode", "bad-mode", "no-command"],
)
def test_exec_entries_kubectl_refuses(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(CredentialError, match=message):
        ExecSpec.parse(raw)


def test_interactive_always_needs_a_terminal() -> None:
    spec = ExecSpec.parse({"apiVersion": V1, "command": "x", "interactiveMode": "Always"})
    with pytest.raises(CredentialError, match="needs a terminal"):
        ExecPlugin(spec, interactive=False)
    assert ExecPlugin(spec, interactive=True).exec_info()["spec"]["interactive"] is True


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"apiVersion": V1BETA1, "kind": "ExecCredential", "status": {"token": "t"}}, "asked for"),
        ({"apiVersion": V1, "kind": "Other", "status": {"token": "t"}}, "not an ExecCredential"),
        ({"apiVersion": V1, "kind": "ExecCredential", "status": {}}, "neither a token"),
        (
            {"apiVersion": V1, "kind": "ExecCredential", "status": {"clientCertificateData": "c"}},
            "go together",
        ),
        (
            {
                "apiVersion": V1,
                "kind": "ExecCredential",
                "status": {"token": "t", "expirationTimestamp": "soon"},
            },
            "RFC 3339",
        ),
    ],
    ids=["wrong-version", "wrong-kind", "empty", "cert-without-key", "bad-expiry"],
)
def test_exec_output_kubectl_refuses(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(CredentialError, match=message):
        parse_exec_credential(json.dumps(doc).encode(), V1)


def test_expiration_timestamp_is_read() -> None:
    credential = parse_exec_credential(
        json.dumps(
            {
                "apiVersion": V1,
                "kind": "ExecCredential",
                "status": {"token": "t", "expirationTimestamp": "2030-01-02T03:04:05Z"},
            }
        ).encode(),
        V1,
    )
    assert credential.expires_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert credential.authorization == "Bearer t"


async def test_concurrent_requests_share_one_plugin_run(api: FakeApi, certs: Path, tmp_path: Path) -> None:
    api.tokens.add("shared")
    plugin = write_plugin(tmp_path, [exec_credential(V1, token="shared")])
    user = {"exec": {"apiVersion": V1, "command": str(plugin.command), "interactiveMode": "Never"}}
    kubeconfig = write_kubeconfig(tmp_path / "kc", api.url, certs / "ca.crt", user)
    kube = Kube(load_access(kubeconfig=kubeconfig, in_cluster=False))
    try:
        found = await asyncio.gather(*(kube.get("v1", "Service", f"s{i}", "ns") for i in range(8)))
    finally:
        await kube.close()
    assert [f and f["user"] for f in found] == ["shared"] * 8
    assert len(plugin.runs()) == 1


@pytest.mark.parametrize(("mode", "interactive"), [("IfAvailable", True), ("Never", False)])
async def test_the_cli_hands_a_plugin_its_terminal(
    api: FakeApi, certs: Path, tmp_path: Path, mode: str, interactive: bool
) -> None:
    """`kubectl kubeforge` run from a terminal: a plugin that may prompt gets the terminal as stdin and
    `spec.interactive: true`; with interactiveMode Never it gets neither."""
    api.tokens.add("typed-in")
    plugin = write_plugin(tmp_path, [exec_credential(V1, token="typed-in")])
    user = {"exec": {"apiVersion": V1, "command": str(plugin.command), "interactiveMode": mode}}
    kubeconfig = write_kubeconfig(tmp_path / "kc", api.url, certs / "ca.crt", user)
    cli = Path(sys.executable).parent / "kubectl-kubeforge"
    controller, terminal = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            str(cli),
            "rollout",
            "status",
            "chat",
            "--kubeconfig",
            str(kubeconfig),
            stdin=terminal,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        )
        out, err = await proc.communicate()
    finally:
        os.close(terminal)
        os.close(controller)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out) == {}  # the fake's object has no status.rollout
    run = plugin.runs()[0]
    assert run["info"]["spec"]["interactive"] is interactive
    assert run["stdin_tty"] is interactive


async def test_a_relative_plugin_path_is_relative_to_its_kubeconfig(
    api: FakeApi, certs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.tokens.add("beside")
    write_plugin(tmp_path / "conf" / "bin", [exec_credential(V1, token="beside")])
    monkeypatch.chdir(tmp_path)  # not where the kubeconfig is: kubectl resolves against the file's folder
    user = {"exec": {"apiVersion": V1, "command": "bin/plugin", "interactiveMode": "Never"}}
    assert (
        await whoami(write_kubeconfig(tmp_path / "conf" / "kc", api.url, certs / "ca.crt", user)) == "beside"
    )
