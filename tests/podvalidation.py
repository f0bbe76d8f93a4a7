"""The part of the API server's pod-template validation the controller tests need: what a CRD cannot
check, so only the server refuses it (HTTP 422), with a message shaped as the server's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx2
from lightkube import ApiError

# What kube-apiserver accepts in `env[].valueFrom.fieldRef.fieldPath` of a pod template.
SUPPORTED_FIELD_PATHS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
)


SUBSCRIPTED = ("metadata.labels[", "metadata.annotations[")


def _template(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    spec = obj.get("spec")
    return spec.get("template") if isinstance(spec, Mapping) else None


def refuse_unsupported_field_refs(obj: Mapping[str, Any]) -> None:
    """Raise the API server's 422 for a pod template whose env names a field a pod does not have."""
    template = _template(obj)
    if template is None:
        return
    for c, container in enumerate(template["spec"]["containers"]):
        for e, var in enumerate(container.get("env") or []):
            path = ((var.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
            if path is None or path in SUPPORTED_FIELD_PATHS or path.startswith(SUBSCRIPTED):
                continue
            field = f"spec.template.spec.containers[{c}].env[{e}].valueFrom.fieldRef.fieldPath"
            # Word for word what kube-apiserver v1.36 answers (seen in e2e/test_crd_validation.py).
            group = obj["apiVersion"].split("/")[0]
            message = (
                f'{obj["kind"]}.{group} "{obj["metadata"]["name"]}" is invalid: {field}: Invalid value: '
                f'"{path}": error converting fieldPath: field label not supported: {path}'
            )
            raise unprocessable(message)


def unprocessable(message: str) -> ApiError:
    """The error lightkube raises for a 422 answer with this message."""
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 422}
    status.update(message=message, reason="Invalid")
    request = httpx2.Request("PATCH", "https://127.0.0.1/apis")
    return ApiError(request=request, response=httpx2.Response(422, json=status, request=request))
