"""Reading a stored status into its typed model, and the one status diff both controllers write.

Both kinds build their whole status as a typed model (`TrainingJobStatus`, `InferenceFleetStatus`) and
compare it with the stored one, read into the same model: the operator writes `status` only when the two
differ, and then only what differs. A merge patch (RFC 7386) is what `patch_status` sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import ValidationError

from kubeforge.api.common import KubeModel

S = TypeVar("S", bound=KubeModel)


def parse_status(model: type[S], raw: Mapping[str, Any] | None) -> S:
    """The stored status as `model`. A field that does not read (written by hand, or by an operator of
    another version) is dropped rather than the whole status: it is recomputed anyway, and what reads
    (restart counts, rollout history, autoscaler memory) must survive."""
    try:
        return model.model_validate(raw or {})
    except ValidationError:
        pass
    readable: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        try:
            model.model_validate({key: value})
        except ValidationError:
            continue
        readable[key] = value
    return model.model_validate(readable)


def status_diff(old: S, new: S) -> dict[str, Any] | None:
    """The JSON merge patch that turns status `old` into `new`, or None when they are equal."""
    return merge_diff(old.to_wire(), new.to_wire()) or None


def merge_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The smallest JSON merge patch (RFC 7386) turning `old` into `new` (both without nulls, as the
    API server stores objects): changed keys with their new value, objects diffed key by key, lists
    replaced whole (a merge patch cannot edit a list), null for keys `new` no longer has."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_diff(before, value)
            if sub:
                patch[key] = sub
        elif key not in old or value != before:
            patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


def apply_merge_patch(old: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 applied, as the API server does: for tests and fakes of it."""
    out = dict(old)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping):
            base = out.get(key)
            out[key] = apply_merge_patch(base if isinstance(base, Mapping) else {}, value)
        else:
            out[key] = value
    return out
