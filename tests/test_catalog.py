"""The GPU catalog: parsing, lookups, and the chart's copy of the built-in default."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubeforge.api.catalog import (
    DEFAULT_CATALOG,
    CatalogError,
    GpuCatalog,
    parse_catalog,
    render_catalog,
)
from kubeforge.api.common import GPU_ALIASES
from kubeforge.cli import CHART_CATALOG, main, render_chart_catalog

REPO = Path(__file__).resolve().parents[1]

ONE_GPU = """
currency: EUR
gpus:
  - name: X1
    products: [VENDOR-X1]
    memoryGiB: 40
    pricePerHour: {onDemand: 2.0}
    power: {tdpWatts: 300, idleWatts: 30}
    throughput: {training: 0.5, inference: 0.6}
"""


def test_the_default_catalog_round_trips_through_its_yaml() -> None:
    assert parse_catalog(render_catalog(DEFAULT_CATALOG)) == DEFAULT_CATALOG


def test_the_default_catalog_knows_every_gpu_alias_users_may_write() -> None:
    assert {g.name for g in DEFAULT_CATALOG.gpus} == set(GPU_ALIASES)


def test_the_chart_ships_the_built_in_catalog() -> None:
    shipped = (REPO / CHART_CATALOG).read_text()
    assert shipped == render_chart_catalog()
    assert parse_catalog(shipped) == DEFAULT_CATALOG


@pytest.mark.parametrize(
    ("gpu_type", "expected"),
    [
        ("H100", "H100"),
        ("h100", "H100"),
        ("NVIDIA-H100-80GB-HBM3", "H100"),
        ("NVIDIA-L4", "L4"),
        ("Z9", None),
    ],
)
def test_a_gpu_type_resolves_by_short_name_or_product(gpu_type: str, expected: str | None) -> None:
    offering = DEFAULT_CATALOG.for_gpu_type(gpu_type)
    assert (offering.name if offering else None) == expected


def test_spot_price_falls_back_to_on_demand_when_the_product_has_none() -> None:
    catalog = parse_catalog(ONE_GPU)
    x1 = catalog.gpus[0]
    assert catalog.currency == "EUR"
    assert catalog.hourly_price(x1, spot=True) == catalog.hourly_price(x1, spot=False) == 2.0
    h100 = DEFAULT_CATALOG.for_gpu_type("H100")
    assert h100 is not None
    assert DEFAULT_CATALOG.hourly_price(h100, spot=True) < DEFAULT_CATALOG.hourly_price(h100, spot=False)


def test_a_catalog_without_a_spot_section_uses_the_kubeforge_label() -> None:
    assert parse_catalog(ONE_GPU).spot.node_selector == {"kubeforge.dev/capacity-type": "spot"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a list", "expected a mapping"),
        ("gpus: [", "not YAML"),
        ("currency: USD", "gpus"),
        (ONE_GPU + ONE_GPU.split("gpus:\n", 1)[1], "each name may appear once"),
        (ONE_GPU.replace("onDemand: 2.0", "onDemand: -1"), "greater than or equal to 0"),
        (ONE_GPU.replace("tdpWatts: 300", "tdpWatts: 0"), "greater than 0"),
    ],
)
def test_a_bad_catalog_is_refused_with_a_message_that_says_what(text: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        parse_catalog(text)


def test_one_product_cannot_belong_to_two_gpus() -> None:
    twin = ONE_GPU + ONE_GPU.split("gpus:\n", 1)[1].replace("name: X1", "name: X2")
    with pytest.raises(CatalogError, match="one GPU only"):
        parse_catalog(twin)


def test_run_refuses_a_bad_catalog_file_before_touching_any_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "catalog.yaml"
    bad.write_text("currency: USD\n")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "current-context: x\n"
    )
    code = main(["run", "--kubeconfig", str(kubeconfig), "--gpu-catalog", str(bad)])
    assert code == 2
    assert "--gpu-catalog" in capsys.readouterr().err


def test_the_operator_config_defaults_to_the_built_in_catalog() -> None:
    from kubeforge.controllers.runtime import OperatorConfig

    assert isinstance(OperatorConfig().catalog, GpuCatalog)
    assert OperatorConfig().catalog == DEFAULT_CATALOG
