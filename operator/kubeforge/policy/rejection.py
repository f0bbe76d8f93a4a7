"""A child the API server refused as invalid (HTTP 422): what its owner's status says.

The CRD cannot check everything the API server checks on the children (a `fieldRef` path a pod does not
support, an admission policy of the cluster). A refused child means the spec is wrong, not the cluster,
so writing it again is pointless: the owner reports `InvalidSpec` with the server's own message until
its spec changes (a new `metadata.generation`), and nothing is retried in between.
"""

from __future__ import annotations

from datetime import datetime

from kubeforge.api.common import Condition
from kubeforge.api.trainingjob import TrainingJobStatus
from kubeforge.policy.conditions import ConditionUpdate, merge_conditions

REASON = "InvalidSpec"
MAX_MESSAGE_LENGTH = 1024
"""Status messages stay short; the server's message names the field first."""


def rejection_message(server_message: str) -> str:
    """The condition message for a refused child: the server's words, which name the object and field."""
    text = f"the API server refused a child object: {server_message}"
    return text if len(text) <= MAX_MESSAGE_LENGTH else text[: MAX_MESSAGE_LENGTH - 3] + "..."


def rejected_trainingjob_status(
    status: TrainingJobStatus, message: str, *, generation: int | None, now: datetime
) -> TrainingJobStatus:
    """Not ready, stalled, and not admitted (so no GPUs are counted as held for it); the phase, restarts
    and accounting are kept for when the spec is fixed."""
    updates = [
        ConditionUpdate("Ready", "False", REASON, message),
        ConditionUpdate("Stalled", "True", REASON, message),
        ConditionUpdate("Reconciling", "False", REASON, ""),
        ConditionUpdate("Admitted", "False", REASON, message),
    ]
    conditions = merge_conditions(
        [c.to_wire() for c in status.conditions], updates, now=now, generation=generation
    )
    return status.model_copy(
        update={
            "message": message,
            "observed_generation": generation,
            "conditions": [Condition.model_validate(c) for c in conditions],
        }
    )
