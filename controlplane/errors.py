"""Exceptions raised by the control plane.

ControlPlaneError
 ├── ConfigError     a setting, flag or config file that is wrong (names the key and the fix)
 ├── StoreError      the SQLite store could not be opened, migrated, written or read
 │    └── StoreClosed  a request to a store that is not open (any more)
 ├── BadRequest      an API query parameter or path that is invalid: HTTP 400, names the parameter
 └── Refused         a request the API refuses with its own status (``status``) and a message
      │                (the offload server's errors are Refused too: controlplane/offload/errors.py)
      ├── NotFound             404: no such model, release or artifact
      ├── Conflict             409: it contradicts what is stored (an immutable release)
      ├── TooLarge             413: a body past a configured limit
      └── RangeNotSatisfiable  416: a Range outside the file (``size`` for Content-Range)

Foreign exceptions (``sqlite3``, pydantic, the MQTT client's) are translated into these where they
are raised, so the API and the CLI only ever handle this tree.
"""


class ControlPlaneError(Exception):
    """Base class of every error the control plane raises on purpose."""


class ConfigError(ControlPlaneError):
    pass


class StoreError(ControlPlaneError):
    pass


class StoreClosed(StoreError):
    pass


class BadRequest(ControlPlaneError, ValueError):
    """An invalid request; ``parameter`` names the query parameter or path segment at fault."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


class Refused(ControlPlaneError):
    """A request refused with HTTP ``status`` and ``{"error": message}``
    (:func:`controlplane.http_errors.refused`)."""

    status = 400

    def headers(self) -> dict[str, str]:
        """The headers the answer carries."""
        return {}


class NotFound(Refused):
    status = 404


class Conflict(Refused):
    status = 409


class TooLarge(Refused):
    status = 413


class RangeNotSatisfiable(Refused):
    status = 416

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size

    def headers(self) -> dict[str, str]:
        return {"Content-Range": f"bytes */{self.size}"}
