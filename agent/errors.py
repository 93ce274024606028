"""Exceptions raised by the agent.

AgentError
 ├── ConfigError          a configuration file or flag that is wrong (names the key and the fix)
 ├── ModelLoadError       a model file that cannot be loaded by any backend in the priority list
 ├── RuntimeBackendError  a backend that failed while running an inference: HTTP 503
 │    └── BackendUnavailable  its worker crashed, hung or is restarting, and no fallback answered:
 │                            HTTP 503 with Retry-After (agent/supervisor)
 ├── InputError           a request the model cannot take (bad image, shape, dtype): HTTP 400
 ├── UnknownModel         a request for a model the agent does not serve: HTTP 404
 ├── PayloadTooLarge      a request body over the configured limit: HTTP 413
 └── OutboxError          the outbox could not store or read results
"""


class AgentError(Exception):
    """Base class of every error the agent raises on purpose."""


class ConfigError(AgentError):
    pass


class ModelLoadError(AgentError):
    pass


class RuntimeBackendError(AgentError):
    pass


class BackendUnavailable(RuntimeBackendError):
    """No backend can answer now; ``retry_after_s`` says when one should again."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InputError(AgentError, ValueError):
    pass


class UnknownModel(AgentError, LookupError):
    pass


class PayloadTooLarge(AgentError):
    pass


class OutboxError(AgentError):
    pass
