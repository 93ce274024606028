"""Errors of the offload server, each with the HTTP status it is answered with.

OffloadError (controlplane.errors.Refused)
 ├── InvalidRequest    400: a body, input, shape, datatype or parameter that is wrong
 ├── ModelNotFound     404: no such model, or no such version of it
 ├── Unavailable       503 + Retry-After: the queue is full, or the server is draining
 ├── DeadlineExceeded  504: the request's timeout passed before it could run
 └── InferenceFailed   500: ONNX Runtime failed on a valid request (a server-side fault)

ONNX Runtime's own exceptions are translated in :mod:`.runtime`; the server answers every one of
these as JSON ``{"error": "..."}``.
"""

from __future__ import annotations

from controlplane.errors import NotFound, Refused


class OffloadError(Refused):
    status = 500
    retry_after: int | None = None

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


class InvalidRequest(OffloadError):
    status = 400


class ModelNotFound(NotFound, OffloadError):
    """404 (``NotFound``'s status), answered as an offload error."""


class Unavailable(OffloadError):
    status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(OffloadError):
    status = 504


class InferenceFailed(OffloadError):
    status = 500
