"""A tenant in bad faith against the reserved pod labels: mesh switches the first list missed.

Istio's ambient mode enrols pods by namespace label, and a pod opts itself out with the label
`istio.io/dataplane-mode: none` (no ztunnel: no mTLS, no AuthorizationPolicy) or skips its waypoint (the
L7 policy point) with `istio.io/use-waypoint: none`. Both are how the mesh intercepts a pod's traffic,
the namespace owner's decision, like `istio.io/rev` which was already refused; so `istio.io/*` is
reserved whole. The same keys are refused by the CRD (its CEL rule uses the same pattern)."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from kubeforge.api.common import RESERVED_PREFIX_PATTERN, PodMetadata, is_reserved_key

MESH_OPT_OUTS = ["istio.io/dataplane-mode", "istio.io/use-waypoint", "istio.io/rev"]


@pytest.mark.parametrize("key", MESH_OPT_OUTS)
@pytest.mark.parametrize("field", ["labels", "annotations"])
def test_a_pod_cannot_opt_itself_out_of_the_mesh(field: str, key: str) -> None:
    assert is_reserved_key(key)
    with pytest.raises(ValidationError, match=re.escape(f"podMetadata.{field} may not set {key}")):
        PodMetadata.model_validate({field: {key: "none"}})


def test_the_crds_pattern_is_the_one_checked() -> None:
    # The CEL rule embeds RESERVED_PREFIX_PATTERN; a key it matches is refused by the API server too.
    assert re.match(RESERVED_PREFIX_PATTERN, "istio.io/dataplane-mode")
    assert not re.match(RESERVED_PREFIX_PATTERN, "service.istio.io.example.com/x")
