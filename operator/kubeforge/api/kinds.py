"""Every kind kubeforge serves, in the order their CRDs are written."""

from __future__ import annotations

from kubeforge.api.crdgen import KindInfo
from kubeforge.api.inferencefleet import INFO as INFERENCEFLEET
from kubeforge.api.trainingjob import INFO as TRAININGJOB

ALL_KINDS: tuple[KindInfo, ...] = (TRAININGJOB, INFERENCEFLEET)
