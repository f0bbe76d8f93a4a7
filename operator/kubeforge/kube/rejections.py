"""Which API errors mean "the object is invalid" rather than "try again"."""

from __future__ import annotations

from lightkube import ApiError


def invalid_message(error: BaseException) -> str | None:
    """The API server's message when it refused a write as invalid (HTTP 422 Unprocessable Entity), for
    example a pod template whose `env[].valueFrom.fieldRef.fieldPath` it does not support; None for any
    other error. The same write will be refused again until the owner's spec changes."""
    if isinstance(error, ApiError) and error.status.code == 422:
        return str(error.status.message or "the API server refused the object as invalid")
    return None
