"""Fixtures for end-to-end tests against the project's local cluster (see e2e/README.md).

- ``cluster`` (session): a :class:`kubeforge_e2e.LocalCluster`; reuses the cluster from
  ``make cluster-up`` or starts one and stops it when the last test session using it ends.
- ``namespace`` (function): a fresh namespace name, deleted after the test.
- ``kubectl`` / ``helm`` (session): :class:`kubeforge_e2e.Kubectl` / :class:`kubeforge_e2e.Helm`.
- ``wait_for`` (session): :func:`kubeforge_e2e.wait_for`.
- ``operator`` (function): the operator on the test's namespace, reading ``prometheus``;
  ``fleet_operator`` and ``training_operator``: the operator alone (no Prometheus), which modules that
  need none make their ``operator``.
- ``spare_nodes`` (function): three 4-GPU nodes with a GPU product of their own.

Every test collected from this folder gets the ``e2e`` marker.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubeforge_e2e import GpuSpec, Helm, Kubectl, LocalCluster, NodeSpec
from kubeforge_e2e import wait_for as _wait_for
from kubeforge_e2e.loadsim import LoadSimulator, api_lister
from kubeforge_e2e.operator import OperatorProcess, running_operator
from kubeforge_e2e.prometheus import PrometheusProcess
from kubeforge_e2e.safety import verify_kubeconfig
from kubeforge_e2e.workloads import install_crds, start_operator

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    local = LocalCluster()
    local.acquire()
    verify_kubeconfig(local.paths)  # refuses anything but <repo>/.cluster/kubeconfig on loopback, our CA
    try:
        yield local
    finally:
        local.release()


@pytest.fixture(scope="session")
def kubectl(cluster: LocalCluster) -> Kubectl:
    return cluster.kubectl


@pytest.fixture(scope="session")
def helm(cluster: LocalCluster) -> Helm:
    return cluster.helm


@pytest.fixture(scope="session")
def wait_for() -> Callable[..., Any]:
    return _wait_for


def _namespace_name(request: pytest.FixtureRequest) -> str:
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower()).strip("-")
    return f"e2e-{base[:40].strip('-')}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(cluster: LocalCluster, kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace (labelled ``kubeforge.dev/e2e=true``) whose ``default`` ServiceAccount exists;
    deleted, without waiting, after the test."""
    name = _namespace_name(request)
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubeforge.dev/e2e": "true"}},
        }
    )
    _wait_for(
        lambda: kubectl.get("serviceaccount", "default", name),
        timeout=30,
        description=f"default ServiceAccount in {name}",
    )
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture(scope="session")
def crds(cluster: LocalCluster, kubectl: Kubectl) -> None:
    """The kubeforge CRDs, installed once per session as the models generate them now."""
    install_crds(kubectl)


@pytest.fixture(scope="module")
def loadsim(cluster: LocalCluster) -> Iterator[LoadSimulator]:
    """The load simulator playing the fleets' model servers (reads ready pods from the API)."""
    api = cluster.api()
    sim = LoadSimulator(api_lister(api))
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()
        api.close()


@pytest.fixture(scope="module")
def prometheus(
    loadsim: LoadSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusProcess]:
    """A real Prometheus (Debian's package, `make system-deps`) scraping the simulator every second.
    A missing binary is an error, not a skip: the autoscaling and rollout tests must run in CI."""
    prom = PrometheusProcess(tmp_path_factory.mktemp("prometheus"), [loadsim.address])
    prom.start()
    try:
        _wait_for(prom.targets_up, timeout=30, description="Prometheus scraping the load simulator")
        yield prom
    finally:
        prom.stop()


@pytest.fixture
def operator(
    cluster: LocalCluster,
    crds: None,
    namespace: str,
    prometheus: PrometheusProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """The operator, scoped to the test's namespace and reading `prometheus`. Modules that need no
    Prometheus (test_fleet.py, test_trainingjob.py) define their own `operator`, which overrides this."""
    proc = start_operator(
        cluster, namespace, tmp_path_factory.mktemp("operator"), ["--prometheus-url", prometheus.url]
    )
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def fleet_operator(
    cluster: LocalCluster, crds: None, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator alone (no Prometheus: no autoscaling readings, no analysis), on the test's namespace."""
    proc = start_operator(cluster, namespace, tmp_path_factory.mktemp("fleet-operator"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def training_operator(
    cluster: LocalCluster, crds: None, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator alone on the test's namespace, resyncing every 2 s; its log's tail is printed after
    the test (pytest shows it when the test failed)."""
    extra = ["--namespace", namespace, "--resync-seconds", "2"]
    with running_operator(cluster.kubeconfig, tmp_path / "operator.log", extra, tail=120) as proc:
        yield proc


@pytest.fixture
def spare_nodes(cluster: LocalCluster) -> Iterator[tuple[str, list[str]]]:
    """Three 4-GPU nodes with a GPU product of their own, so the test shares no GPUs with others:
    (product, node names)."""
    product = f"KF-E2E-{secrets.token_hex(3).upper()}"
    names = [f"tj-e2e-{product[-6:].lower()}-{i}" for i in range(3)]
    for node in names:
        cluster.add_node(
            NodeSpec(name=node, zone="zone-c", gpu=GpuSpec(product=product, count=4, memory_mib=1024))
        )
    try:
        yield product, names
    finally:
        for node in names:
            if cluster.get_node(node) is not None:
                cluster.delete_node(node)
