"""The operator refuses to guess which cluster to manage."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubeforge.cli import main
from kubeforge.kube.config import ConfigError, load_access


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
