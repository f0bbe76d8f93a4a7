"""The operator refuses to guess which cluster to manage; the CLI finds it as kubectl does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kubeforge.cli import main
from kubeforge.kube.config import ClusterAccess, ConfigError, load_access, resolve_access


def test_no_cluster_given_is_an_error() -> None:
    with pytest.raises(ConfigError, match="--kubeconfig"):
        load_access(kubeconfig=None, in_cluster=False)


def test_both_sources_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exclude"):
        load_access(kubeconfig=tmp_path / "k", in_cluster=True)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_access(kubeconfig=tmp_path / "absent", in_cluster=False)


def test_ambient_kubeconfig_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ambient = tmp_path / "config"
    ambient.write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setenv("KUBECONFIG", str(ambient))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConfigError):
        load_access(kubeconfig=None, in_cluster=False)


def test_run_without_cluster_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2
    assert "--kubeconfig" in capsys.readouterr().err


def _kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    return path


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--leader-elect"], "--leader-election-namespace"),
        (
            [
                "--leader-elect",
                "--leader-election-namespace",
                "ops",
                "--leader-election-renew-deadline",
                "20",
            ],
            "lease duration (15.0s) must be greater than the renew deadline",
        ),
        (["--max-concurrent-reconciles", "0"], "at least 1"),
    ],
    ids=["leader-elect-without-namespace", "renew-deadline-over-lease", "no-workers"],
)
def test_run_refuses_unusable_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    assert main(["run", "--kubeconfig", str(_kubeconfig(tmp_path)), *flags]) == 2
    assert message in capsys.readouterr().err


# -- the CLI resolves its cluster as kubectl does -------------------------------------------------------


def _entry_file(path: Path, doc: dict[str, object]) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", **doc}))
    return path


def _cluster(name: str, server: str, **extra: object) -> dict[str, object]:
    return {"name": name, "cluster": {"server": server, **extra}}


def _context(name: str, cluster: str, user: str, namespace: str | None = None) -> dict[str, object]:
    ctx: dict[str, object] = {"cluster": cluster, "user": user}
    if namespace:
        ctx["namespace"] = namespace
    return {"name": name, "context": ctx}


@pytest.fixture
def two_files(tmp_path: Path) -> tuple[Path, Path]:
    """Two kubeconfigs that disagree: same-named cluster, user and context, two current-contexts."""
    first = _entry_file(
        tmp_path / "a" / "config",
        {
            "clusters": [_cluster("shared", "https://first.example:6443")],
            "users": [{"name": "shared", "user": {"token": "first-token"}}],
            "contexts": [_context("shared", "shared", "shared", "from-first")],
        },
    )
    second = _entry_file(
        tmp_path / "b" / "config",
        {
            "current-context": "only-second",
            "clusters": [
                _cluster("shared", "https://second.example:6443"),
                _cluster("own", "https://own.example:6443"),
            ],
            "users": [
                {"name": "shared", "user": {"token": "second-token"}},
                {"name": "own", "user": {"tokenFile": "token"}},  # relative: to b/, its own file's folder
            ],
            "contexts": [
                _context("shared", "own", "own", "from-second"),
                _context("only-second", "own", "shared", "team"),
            ],
        },
    )
    (tmp_path / "b" / "token").write_text("own-token")
    return first, second


def _env(tmp_path: Path, *files: Path, home: Path | None = None) -> dict[str, str]:
    env = {"HOME": str(home or tmp_path / "home")}
    if files:
        env["KUBECONFIG"] = os.pathsep.join(str(f) for f in files)
    return env


async def _authorization(access: ClusterAccess) -> str | None:
    return (await access.credentials.current()).authorization


async def test_kubeconfig_list_first_file_wins(tmp_path: Path, two_files: tuple[Path, Path]) -> None:
    first, second = two_files
    missing = tmp_path / "absent"  # kubectl skips files of the list that do not exist
    access = resolve_access(env=_env(tmp_path, missing, first, second, first))
    # current-context comes from the only file that sets it; its user "shared" from the first file
    assert access.config.current_context == "only-second"
    assert access.server == "https://own.example:6443"
    assert access.namespace == "team"
    assert await _authorization(access) == "Bearer first-token"
    # the context "shared" is the first file's whole entry, not a field-by-field mix
    shared = resolve_access(env=_env(tmp_path, first, second), context="shared")
    assert (shared.server, shared.namespace) == ("https://first.example:6443", "from-first")
    # the other order: the second file's entries win
    swapped = resolve_access(env=_env(tmp_path, second, first), context="shared")
    assert (swapped.server, swapped.namespace) == ("https://own.example:6443", "from-second")
    assert await _authorization(swapped) == "Bearer own-token"  # tokenFile relative to b/


async def test_flags_override_the_environment(tmp_path: Path, two_files: tuple[Path, Path]) -> None:
    first, second = two_files
    access = resolve_access(kubeconfig=first, context="shared", namespace="mine", env=_env(tmp_path, second))
    assert (access.server, access.namespace) == ("https://first.example:6443", "mine")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_access(kubeconfig=tmp_path / "absent", env=_env(tmp_path, first))


def test_home_kube_config_when_kubeconfig_is_unset(tmp_path: Path, two_files: tuple[Path, Path]) -> None:
    _, second = two_files
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text(second.read_text().replace("tokenFile: token", "token: t"))
    access = resolve_access(env=_env(tmp_path, home=home))
    assert access.config.current_context == "only-second"
    with pytest.raises(ConfigError, match="no kubeconfig found"):
        resolve_access(env=_env(tmp_path, home=tmp_path / "nobody"))


@pytest.mark.parametrize(
    ("doc", "context", "message"),
    [
        ({"contexts": [], "clusters": []}, None, "no current-context"),
        ({"current-context": "x", "contexts": []}, None, "context 'x' not found"),
        ({"current-context": "c", "contexts": [_context("c", "gone", "u")]}, None, "cluster 'gone'"),
        (
            {"clusters": [_cluster("k", "https://k")], "contexts": [_context("c", "k", "nobody")]},
            "c",
            "user 'nobody'",
        ),
    ],
    ids=["no-current-context", "unknown-context", "unknown-cluster", "unknown-user"],
)
def test_broken_kubeconfigs_say_what_is_wrong(
    tmp_path: Path, doc: dict[str, object], context: str | None, message: str
) -> None:
    path = _entry_file(tmp_path / "config", doc)
    with pytest.raises(ConfigError, match=message):
        resolve_access(kubeconfig=path, context=context, env={})


def test_the_default_namespace(tmp_path: Path) -> None:
    path = _entry_file(
        tmp_path / "config",
        {
            "current-context": "c",
            "clusters": [_cluster("k", "https://k:6443")],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [_context("c", "k", "u")],
        },
    )
    assert resolve_access(kubeconfig=path, env={}).namespace == "default"


def test_the_operator_ignores_kubeconfig_lists(
    two_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run --kubeconfig` reads exactly that file, even with KUBECONFIG set."""
    first, second = two_files
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(second), str(first)]))
    access = load_access(kubeconfig=first, in_cluster=False, context="shared")
    assert access.server == "https://first.example:6443"


def test_the_plugin_needs_no_kubeconfig_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "nobody"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    from kubeforge.cli import build_parser

    args = build_parser("kubectl kubeforge").parse_args(["rollout", "status", "chat"])
    assert (args.kubeconfig, args.namespace, args.prog) == (None, None, "kubectl kubeforge")
    assert main(["rollout", "status", "chat"], prog="kubectl kubeforge") == 2
    assert "kubectl kubeforge: no kubeconfig found" in capsys.readouterr().err


async def test_in_cluster_uses_the_rotated_service_account_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kubeforge.kube.config as config_module
    from kubeforge_e2e import pki

    pki.generate(tmp_path)  # any CA will do: it is only loaded, not used
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "ca.crt").write_text((tmp_path / "ca.crt").read_text())
    (account / "token").write_text("first")
    (account / "namespace").write_text("ops\n")
    monkeypatch.setattr(config_module, "SERVICE_ACCOUNT", account)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    access = load_access(kubeconfig=None, in_cluster=True)
    assert (access.server, access.namespace) == ("https://10.96.0.1:443", "ops")
    assert access.tls.ca_pem == (tmp_path / "ca.crt").read_text()
    first = await access.credentials.current()
    assert first.authorization == "Bearer first"
    (account / "token").write_text("second")  # the kubelet rotated it
    assert await access.credentials.rejected(first)
    assert await _authorization(access) == "Bearer second"


def test_in_cluster_outside_a_pod_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="not in a pod"):
        load_access(kubeconfig=None, in_cluster=True)
