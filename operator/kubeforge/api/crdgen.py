"""Turn the pydantic models into CustomResourceDefinitions with structural OpenAPI v3 schemas.

pydantic emits JSON Schema 2020-12; the API server wants a *structural* OpenAPI v3 subset: no `$ref`,
no `anyOf` for optionals, `exclusiveMinimum` as a boolean, no `title`. This module does that rewrite
and nothing else, so every rule a user sees is written once, on the model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from kubeforge.api import GROUP, VERSION

# Keys an apiextensions.k8s.io/v1 JSONSchemaProps understands; everything else pydantic adds is dropped.
_KEPT_KEYS = {
    "type",
    "format",
    "description",
    "default",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "items",
    "properties",
    "required",
    "additionalProperties",
    "nullable",
    "x-kubernetes-validations",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
}


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0

    def to_wire(self) -> dict[str, Any]:
        col: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            col["description"] = self.description
        if self.priority:
            col["priority"] = self.priority
        return col


@dataclass(frozen=True)
class ScaleSubresource:
    spec_replicas_path: str = ".spec.replicas"
    status_replicas_path: str = ".status.replicas"
    label_selector_path: str = ".status.selector"


@dataclass(frozen=True)
class KindInfo:
    """Everything about one kind that is not in its spec and status models."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    description: str
    printer_columns: tuple[PrinterColumn, ...] = ()
    scale: ScaleSubresource | None = None
    categories: tuple[str, ...] = ("kubeforge",)
    spec_validations: tuple[dict[str, str], ...] = field(default=())
    # CEL rules on the whole object: the only place a rule can see `metadata.name`.
    root_validations: tuple[dict[str, str], ...] = field(default=())


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline every `$ref`; the CRD schema language has no references."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        merged = copy.deepcopy(defs[name])
        # Keys beside a $ref (a field's description, default) override the referenced model's.
        merged.update({k: v for k, v in node.items() if k != "$ref"})
        return _resolve(merged, defs)
    return {key: _resolve(value, defs) for key, value in node.items()}


def _collapse_optional(node: dict[str, Any]) -> dict[str, Any]:
    """`X | None` arrives as anyOf[X, null]: an optional field is simply not required."""
    any_of = node.get("anyOf")
    if not isinstance(any_of, list):
        return node
    branches = [b for b in any_of if b.get("type") != "null"]
    if len(branches) != 1:
        raise ValueError(f"unions other than Optional[X] are not structural: {any_of}")
    merged = dict(branches[0])
    for key, value in node.items():
        if key != "anyOf" and not (key == "default" and value is None):
            merged[key] = value
    return merged


def _merge_validations(node: dict[str, Any]) -> dict[str, Any]:
    rules = node.get("x-kubernetes-validations")
    if rules is not None and not rules:
        del node["x-kubernetes-validations"]
    return node


def _structural(node: Any) -> Any:
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = _collapse_optional(node)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _KEPT_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _structural(prop) for name, prop in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value)
        elif key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"], out["exclusiveMaximum"] = value, True
        else:
            out[key] = value
    if out.get("x-kubernetes-int-or-string"):
        # int-or-string forbids a `type`; the pattern still applies to the string form.
        out.pop("type", None)
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("required") == []:
        del out["required"]
    return _merge_validations(out)


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a model, as the API server takes it."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _structural(_resolve(raw, defs))
    return schema


def build_crd(info: KindInfo) -> dict[str, Any]:
    spec_schema = openapi_schema(info.spec_model)
    if info.spec_validations:
        spec_schema["x-kubernetes-validations"] = [
            *spec_schema.get("x-kubernetes-validations", []),
            *info.spec_validations,
        ]
    status_schema = openapi_schema(info.status_model)
    subresources: dict[str, Any] = {"status": {}}
    if info.scale is not None:
        subresources["scale"] = {
            "specReplicasPath": info.scale.spec_replicas_path,
            "statusReplicasPath": info.scale.status_replicas_path,
            "labelSelectorPath": info.scale.label_selector_path,
        }
    root_schema: dict[str, Any] = {
        "type": "object",
        "description": info.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    if info.root_validations:
        root_schema["x-kubernetes-validations"] = list(info.root_validations)
    columns = [*(c.to_wire() for c in info.printer_columns)]
    columns.append({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "kubeforge", "app.kubernetes.io/part-of": "kubeforge"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": list(info.categories),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root_schema},
                }
            ],
        },
    }
