"""Exceptions of the offload client, all :class:`agent.errors.AgentError`.

OffloadError
 ├── CloudUnavailable   no answer within the deadline: connection errors, timeouts, 5xx, 429
 │    └── BreakerOpen   the endpoint's circuit breaker is open: not even tried
 └── CloudRejected      the server refused the request (400, 404, 422, ...): retrying cannot help
"""

from __future__ import annotations

from agent.errors import AgentError


class OffloadError(AgentError):
    pass


class CloudUnavailable(OffloadError):
    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class BreakerOpen(CloudUnavailable):
    pass


class CloudRejected(OffloadError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
