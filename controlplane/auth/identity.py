"""Who a request comes from: :class:`Identity`, and the pure checks that make one from a stored
token or session.

The middleware puts the identity on ``request.state.identity`` for every request (an anonymous
one on open routes and when ``auth`` is off); handlers use it to say who did something (a
command's sender, a token's creator) and never parse credentials themselves.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Literal

from controlplane.auth.credentials import same_digest
from controlplane.auth.roles import Role, lowest, parse_role

Via = Literal["token", "session", "password", "local", "device", "none"]


@dataclass(frozen=True)
class Identity:
    """``user`` None: no operator authenticated (an open route, ``auth`` off, or a device:
    ``via`` ``device`` with its ``device_id``, controlplane/auth/devices.py)."""

    user: str | None
    role: Role | None  # what this request may do: for a token, the lower of its and its owner's
    via: Via
    user_id: int | None = None
    token_id: str | None = None
    csrf_token: str | None = None  # the session's synchronizer token (via == "session")
    session_digest: str | None = None
    device_id: str | None = None  # the device that signed the request (via == "device")

    @property
    def name(self) -> str:
        """For logs and records: the user, ``device:ID``, or ``anonymous``."""
        if self.user is None and self.device_id is not None:
            return f"device:{self.device_id}"
        return self.user or "anonymous"


ANONYMOUS = Identity(None, None, "none")
UNCHECKED = Identity(None, "admin", "none")
"""Every request's identity while ``auth`` is off: nobody, allowed everything."""


def from_token(row: sqlite3.Row | None, secret: str, now: float) -> Identity | str:
    """The identity a token grants, or why it grants none."""
    if row is None or not same_digest(secret, row["secret_digest"]):
        return "invalid token"
    if row["revoked_at"] is not None:
        return f"token {row['id']} was revoked"
    if row["expires_at"] is not None and row["expires_at"] <= now:
        return f"token {row['id']} has expired"
    if row["user_disabled"]:
        return f"user {row['user']!r} is disabled"
    role = lowest(parse_role(row["role"]), parse_role(row["user_role"]))
    return Identity(row["user"], role, "token", user_id=row["user_id"], token_id=row["id"])


def from_session(row: sqlite3.Row | None, id_digest: str, now: float) -> Identity | str:
    """The identity a console session grants, or why it grants none."""
    if row is None:
        return "not logged in"
    if row["expires_at"] <= now:
        return "the session has expired: log in again"
    if row["user_disabled"]:
        return f"user {row['user']!r} is disabled"
    return Identity(
        row["user"], parse_role(row["user_role"]), "session", user_id=row["user_id"],
        csrf_token=row["csrf_token"], session_digest=id_digest,
    )  # fmt: skip


def from_user(row: sqlite3.Row, via: Via) -> Identity | str:
    """The identity of a user who proved their password (``via`` ``password``), or why not."""
    if row["disabled"]:
        return f"user {row['name']!r} is disabled"
    return Identity(row["name"], parse_role(row["role"]), via, user_id=row["id"])
