"""Which API errors mean "the object is invalid" rather than "try again"."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from lightkube import ApiError


class ChildRejectedError(Exception):
    """The API server refused a child object as invalid (HTTP 422 Unprocessable Entity), for example a
    pod template whose `env[].valueFrom.fieldRef.fieldPath` it does not support. The same write will be
    refused again until the owner's spec changes; `message` is the server's."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def invalid_message(error: BaseException) -> str | None:
    """The API server's message when it refused a write as invalid (422); None for any other error."""
    if isinstance(error, ApiError) and error.status.code == 422:
        return str(error.status.message or "the API server refused the object as invalid")
    return None


@contextmanager
def child_write() -> Iterator[None]:
    """Around the write of a child: a 422 becomes ChildRejectedError; other errors pass unchanged (a
    refused status patch, say, is the operator's bug, retried with backoff like any failed pass)."""
    try:
        yield
    except ApiError as error:
        message = invalid_message(error)
        if message is None:
            raise
        raise ChildRejectedError(message) from error
