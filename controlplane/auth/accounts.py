"""Users, API tokens and console sessions in SQLite: plain functions over a connection.

They run through the store (:meth:`Store.read` on a reader, :meth:`Store.transact` on the writer,
rows as :class:`sqlite3.Row`) or, for ``edgefleet users create --data-dir``, on a connection of
their own (:mod:`controlplane.auth.local`). Refusals are the control plane's own exceptions
(``Conflict``, ``NotFound``, ``BadRequest``), so the API answers them as they are.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from controlplane.auth.roles import Role
from controlplane.errors import BadRequest, Conflict, NotFound

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_TOKEN_NAME = re.compile(r"^[\x20-\x7e]{1,64}$")


def check_user_name(name: str) -> str:
    if not _NAME.match(name):
        raise BadRequest(
            "name", f"a user name is 1 to 64 of A-Z a-z 0-9 . _ @ - (not first), got {name!r}"
        )
    return name


def check_token_name(name: str) -> str:
    if not _TOKEN_NAME.match(name):
        raise BadRequest("name", "a token name is 1 to 64 printable ASCII characters")
    return name


# -- users -----------------------------------------------------------------------------------------


def user_view(row: sqlite3.Row) -> dict[str, Any]:
    """A user as the API shows it (never the password hash)."""
    return {
        "id": row["id"], "name": row["name"], "role": row["role"],
        "disabled": bool(row["disabled"]), "has_password": row["password_hash"] is not None,
        "created_at": row["created_at"], "created_by": row["created_by"],
        "changed_at": row["changed_at"],
    }  # fmt: skip


def user_row(conn: sqlite3.Connection, name: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute("SELECT * FROM users WHERE name = ?", [name]).fetchone()
    return row


def get_user(conn: sqlite3.Connection, name: str) -> sqlite3.Row:
    row = user_row(conn, name)
    if row is None:
        raise NotFound(f"no user named {name!r}")
    return row


def list_users(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [user_view(r) for r in conn.execute("SELECT * FROM users ORDER BY name")]


def has_admin(conn: sqlite3.Connection) -> bool:
    """Whether an enabled admin exists: until one does, every operator route is refused."""
    return _enabled_admins(conn) > 0


def _enabled_admins(conn: sqlite3.Connection) -> int:
    (count,) = conn.execute(
        "SELECT count(*) FROM users WHERE role = 'admin' AND disabled = 0"
    ).fetchone()
    return int(count)


def add_user(
    conn: sqlite3.Connection, name: str, role: Role, password_hash: str | None, *, now: float,
    created_by: str | None,
) -> dict[str, Any]:  # fmt: skip
    check_user_name(name)
    if user_row(conn, name) is not None:
        raise Conflict(f"a user named {name!r} exists already (names are never reused)")
    conn.execute(
        "INSERT INTO users (name, role, password_hash, created_at, created_by, changed_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [name, role, password_hash, now, created_by, now],
    )
    return user_view(get_user(conn, name))


def change_user(
    conn: sqlite3.Connection, name: str, *, now: float, role: Role | None = None,
    disabled: bool | None = None, password_hash: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Change a user's role, state or password. Refuses to leave the fleet without an enabled
    admin (nobody could manage users any more). Disabling a user ends their sessions at once (their
    tokens stop working too: a token is only good while its owner is enabled)."""
    row = get_user(conn, name)
    was_admin = row["role"] == "admin" and not row["disabled"]
    stays_admin = (role or row["role"]) == "admin" and not (
        disabled if disabled is not None else row["disabled"]
    )
    if was_admin and not stays_admin and _enabled_admins(conn) <= 1:
        raise Conflict(f"{name!r} is the last enabled admin: make another admin first")
    changes: dict[str, Any] = {}
    if role is not None:
        changes["role"] = role
    if disabled is not None:
        changes["disabled"] = int(disabled)
    if password_hash is not None:
        changes["password_hash"] = password_hash
    if changes:
        changes["changed_at"] = now
        columns = ", ".join(f"{k} = ?" for k in changes)
        conn.execute(f"UPDATE users SET {columns} WHERE id = ?", [*changes.values(), row["id"]])
    if disabled or password_hash is not None:
        conn.execute("DELETE FROM sessions WHERE user_id = ?", [row["id"]])
    return user_view(get_user(conn, name))


def set_password_hash(conn: sqlite3.Connection, user_id: int, password_hash: str) -> None:
    """Store a rehashed password (newer parameters) without ending the user's sessions."""
    conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", [password_hash, user_id])


# -- tokens ----------------------------------------------------------------------------------------


def token_view(row: sqlite3.Row) -> dict[str, Any]:
    """A token as the API shows it: never its secret or digest."""
    return {
        "id": row["id"], "user": row["user"], "name": row["name"], "role": row["role"],
        "created_at": row["created_at"], "created_by": row["created_by"],
        "expires_at": row["expires_at"], "revoked_at": row["revoked_at"],
        "last_used_at": row["last_used_at"],
    }  # fmt: skip


_TOKEN_SELECT = (
    "SELECT t.*, u.name AS user, u.role AS user_role, u.disabled AS user_disabled"
    " FROM tokens t JOIN users u ON u.id = t.user_id"
)


def add_token(
    conn: sqlite3.Connection, *, token_id: str, secret_digest: str, user_id: int, name: str,
    role: Role, now: float, created_by: str | None, expires_at: float | None,
) -> dict[str, Any]:  # fmt: skip
    check_token_name(name)
    conn.execute(
        "INSERT INTO tokens (id, user_id, name, role, secret_digest, created_at, created_by,"
        " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [token_id, user_id, name, role, secret_digest, now, created_by, expires_at],
    )
    return token_view(get_token(conn, token_id))


def token_row(conn: sqlite3.Connection, token_id: str) -> sqlite3.Row | None:
    """The token with its owner's name, role and state (what a request is checked against)."""
    row: sqlite3.Row | None = conn.execute(f"{_TOKEN_SELECT} WHERE t.id = ?", [token_id]).fetchone()
    return row


def get_token(conn: sqlite3.Connection, token_id: str) -> sqlite3.Row:
    row = token_row(conn, token_id)
    if row is None:
        raise NotFound(f"no token with id {token_id!r}")
    return row


def list_tokens(conn: sqlite3.Connection, user_id: int | None) -> list[dict[str, Any]]:
    """Every token (``user_id`` None) or one user's, newest first, revoked ones included."""
    where, params = ("WHERE t.user_id = ?", [user_id]) if user_id is not None else ("", [])
    rows = conn.execute(f"{_TOKEN_SELECT} {where} ORDER BY t.created_at DESC, t.id", params)
    return [token_view(r) for r in rows]


def revoke_token(conn: sqlite3.Connection, token_id: str, now: float) -> dict[str, Any]:
    """Revoke a token (at once: every request looks its token up). Revoking twice is a no-op."""
    get_token(conn, token_id)
    conn.execute(
        "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", [now, token_id]
    )
    return token_view(get_token(conn, token_id))


def touch_token(conn: sqlite3.Connection, token_id: str, now: float) -> None:
    conn.execute("UPDATE tokens SET last_used_at = ? WHERE id = ?", [now, token_id])


# -- sessions --------------------------------------------------------------------------------------


def add_session(
    conn: sqlite3.Connection, *, id_digest: str, user_id: int, csrf_token: str, now: float,
    expires_at: float,
) -> None:  # fmt: skip
    """A new session (a login); expired ones are swept at the same time."""
    conn.execute("DELETE FROM sessions WHERE expires_at <= ?", [now])
    conn.execute(
        "INSERT INTO sessions (id_digest, user_id, csrf_token, created_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?)",
        [id_digest, user_id, csrf_token, now, expires_at],
    )


def session_row(conn: sqlite3.Connection, id_digest: str) -> sqlite3.Row | None:
    """The session with its user's id, name, role and state."""
    row: sqlite3.Row | None = conn.execute(
        "SELECT s.*, u.name AS user, u.role AS user_role, u.disabled AS user_disabled"
        " FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_digest = ?",
        [id_digest],
    ).fetchone()
    return row


def delete_session(conn: sqlite3.Connection, id_digest: str) -> None:
    conn.execute("DELETE FROM sessions WHERE id_digest = ?", [id_digest])
