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


def _unbounded(node: dict[str, Any], path: str) -> Iterator[str]:
    """Every string, list, map or integer of a schema without a maximum, by path."""
    kind = node.get("type")
    is_string = kind == "string" or node.get("x-kubernetes-int-or-string")
    if is_string and "enum" not in node and "maxLength" not in node:
        yield f"{path}: string without maxLength"
    if kind == "array" and "maxItems" not in node:
        yield f"{path}: list without maxItems"
    if kind == "object" and "additionalProperties" in node and "maxProperties" not in node:
        yield f"{path}: map without maxProperties"
    if kind == "object" and node.get("x-kubernetes-preserve-unknown-fields"):
        yield f"{path}: object of unknown fields"
    if kind == "integer" and "maximum" not in node:
        yield f"{path}: integer without maximum"
    for name, prop in (node.get("properties") or {}).items():
        yield from _unbounded(prop, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _unbounded(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _unbounded(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("info", ALL_KINDS, ids=lambda i: i.kind)
def test_every_spec_field_of_the_generated_crds_is_bounded(info: KindInfo) -> None:
    """What a tenant writes is bounded: strings, lists and maps (so the API server's CEL cost estimate
    and the children built from them stay small) and integers (durations feed date arithmetic)."""
    root = build_crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert list(_unbounded(root["properties"]["spec"], "spec")) == []
    # Status is written by the operator alone (tenants hold no write on `*/status`) and carries no CEL
    # rule, so its sizes cost the API server nothing to estimate.
    assert not any("x-kubernetes-validations" in node for node in _walk(root["properties"]["status"]))


def test_the_walker_finds_what_is_unbounded() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string"},
            "b": {"type": "array", "items": {"type": "string", "maxLength": 3}},
            "c": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 1}},
            "d": {"type": "integer", "minimum": 0},
            "e": {"x-kubernetes-int-or-string": True},
            "f": {"type": "string", "enum": ["x"]},
        },
    }
    assert sorted(_unbounded(schema, "spec")) == [
        "spec.a: string without maxLength",
        "spec.b: list without maxItems",
        "spec.c: map without maxProperties",
        "spec.d: integer without maximum",
        "spec.e: string without maxLength",
    ]
