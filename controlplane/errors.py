"""Exceptions raised by the control plane.

ControlPlaneError
 ├── ConfigError     a setting, flag or config file that is wrong (names the key and the fix)
 ├── StoreError      the SQLite store could not be opened, migrated, written or read
 │    └── StoreClosed  a request to a store that is not open (any more)
 └── BadRequest      an API query parameter or path that is invalid: HTTP 400, names the parameter

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
