"""The CRD generator emits structural schemas the API server accepts, and the committed CRDs are fresh."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import Field

from kubeforge.api.common import KubeModel, Resources
from kubeforge.api.crdgen import KindInfo, PrinterColumn, ScaleSubresource, build_crd, openapi_schema
from kubeforge.api.kinds import ALL_KINDS
from kubeforge.cli import DEFAULT_CRD_DIRS, render_crds

REPO = Path(__file__).resolve().parents[1]


class _Inner(KubeModel):
    count: int = Field(default=1, ge=1, le=10)
    """How many."""


class _Spec(KubeModel):
    image: str = Field(min_length=1)
    """Container image."""
    inner: _Inner = Field(default_factory=_Inner)
    maybe: _Inner | None = None
    ratio: float = Field(default=0.5, gt=0)
    resources: Resources = Field(default_factory=Resources)


class _Status(KubeModel):
    phase: str | None = None


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def test_schema_is_structural() -> None:
    schema = openapi_schema(_Spec)
    for node in _walk(schema):
        assert "$ref" not in node
        assert "anyOf" not in node
        assert "title" not in node
        assert "$defs" not in node
    props = schema["properties"]
    assert schema["required"] == ["image"]
    assert props["image"] == {"type": "string", "minLength": 1, "description": "Container image."}
    assert props["inner"]["properties"]["count"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 10,
        "default": 1,
        "description": "How many.",
    }
    assert props["maybe"]["type"] == "object"
    assert "default" not in props["maybe"]
    assert props["ratio"]["exclusiveMinimum"] is True
    assert props["ratio"]["minimum"] == 0


def test_quantities_are_int_or_string_and_cel_rules_survive() -> None:
    resources = openapi_schema(Resources)
    assert resources["properties"]["cpu"]["x-kubernetes-int-or-string"] is True
    assert "type" not in resources["properties"]["cpu"]
    assert resources["x-kubernetes-validations"][0]["fieldPath"] == ".gpuType"


def test_crd_shape() -> None:
    info = KindInfo(
        kind="Widget",
        plural="widgets",
        singular="widget",
        short_names=("wd",),
        spec_model=_Spec,
        status_model=_Status,
        description="A test kind.",
        printer_columns=(PrinterColumn("Phase", ".status.phase"),),
        scale=ScaleSubresource(),
    )
    crd = build_crd(info)
    assert crd["metadata"]["name"] == "widgets.kubeforge.dev"
    names = crd["spec"]["names"]
    assert names["categories"] == ["kubeforge"]
    assert names["shortNames"] == ["wd"]
    [version] = crd["spec"]["versions"]
    assert version["subresources"]["scale"]["labelSelectorPath"] == ".status.selector"
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Phase", "Age"]


@pytest.mark.parametrize("info", ALL_KINDS, ids=lambda i: i.kind)
def test_every_kind_is_in_the_kubeforge_category_with_status(info: KindInfo) -> None:
    crd = build_crd(info)
    assert "kubeforge" in crd["spec"]["names"]["categories"]
    assert "status" in crd["spec"]["versions"][0]["subresources"]
    for node in _walk(crd):
        assert "$ref" not in node
        assert "anyOf" not in node


@pytest.mark.parametrize("directory", DEFAULT_CRD_DIRS, ids=str)
def test_committed_crds_are_fresh(directory: Path) -> None:
    """Fails when a model changed without `make crds`: the CRDs users apply must match the code."""
    for name, text in render_crds().items():
        path = REPO / directory / name
        assert path.exists(), f"{path} missing: run `make crds`"
        assert path.read_text() == text, f"{path} is stale: run `make crds`"
        assert yaml.safe_load(text)["kind"] == "CustomResourceDefinition"
