"""Account actions on the control plane's host, through its data directory, not its API.

Before the first admin exists nobody can authenticate, so the first admin is made here:
``edgefleet users create NAME --admin --data-dir DIR`` opens the store's SQLite file directly
(beside a running control plane too: SQLite's locking and WAL let both write) and adds the user.
Whoever can write that directory holds the release-signing key and the whole store anyway, so it
grants nothing new; it is also the way back in when every admin password is lost
(``users passwd NAME --data-dir DIR``). Each action is written to the audit log as ``via:
local`` with the operating-system user and the host name, since no request records it.
"""

from __future__ import annotations

import getpass
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from controlplane.audit import log as audit_log
from controlplane.auth import accounts
from controlplane.auth.credentials import Passwords, check_password, new_token, token_digest
from controlplane.auth.roles import Role, token_scope
from controlplane.db import connect_writer
from controlplane.errors import BadRequest

T = TypeVar("T")
STORE_FILE = "controlplane.db"  # as Settings.store_path names it


def store_path(data_dir: Path) -> Path:
    return data_dir / STORE_FILE


@contextmanager
def connect(data_dir: Path) -> Iterator[sqlite3.Connection]:
    """The store's file, migrated, as a writer (StoreError when it cannot be opened)."""
    conn = connect_writer(store_path(data_dir), "FULL")
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def transaction(data_dir: Path, work: Callable[[sqlite3.Connection], T]) -> T:
    with connect(data_dir) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            value = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return value


def actor() -> str:
    """Who acts locally: ``local:`` and the operating-system user."""
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a container)
        return "local:unknown"


def _record(conn: sqlite3.Connection, action: str, now: float, **detail: Any) -> None:
    audit_log.append(
        conn,
        audit_log.Record(
            at=now, request_id=uuid.uuid4().hex, actor=actor(), via="local",
            action=f"local {action}", method="LOCAL", outcome=0, target={},
            address=socket.gethostname(), detail=detail,
        ),
    )  # fmt: skip


def _checked(password: str) -> str:
    try:
        return check_password(password)
    except ValueError as exc:
        raise BadRequest("password", str(exc)) from None


def create_user(
    data_dir: Path, name: str, role: Role, password: str | None,
    passwords: Passwords | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Add a user (``password`` None: tokens only); recorded as ``local users create``."""
    accounts.check_user_name(name)
    hashed = (passwords or Passwords()).hash(_checked(password)) if password is not None else None
    now = time.time()

    def work(conn: sqlite3.Connection) -> dict[str, Any]:
        user = accounts.add_user(conn, name, role, hashed, now=now, created_by=actor())
        _record(conn, "users create", now, user=name, role=role)
        return user

    return transaction(data_dir, work)


def set_password(
    data_dir: Path, name: str, password: str, passwords: Passwords | None = None
) -> dict[str, Any]:
    hashed = (passwords or Passwords()).hash(_checked(password))
    now = time.time()

    def work(conn: sqlite3.Connection) -> dict[str, Any]:
        user = accounts.change_user(conn, name, now=now, password_hash=hashed)
        _record(conn, "users passwd", now, user=name)
        return user

    return transaction(data_dir, work)


def create_token(
    data_dir: Path, user: str, role: Role | None = None, name: str | None = None,
    expires_in_s: float | None = None,
) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """A token for ``user`` (as an admin would make it): ``(token, its view)``."""
    token_id, token = new_token()
    now = time.time()

    def work(conn: sqlite3.Connection) -> dict[str, Any]:
        row = accounts.get_user(conn, user)
        if row["disabled"]:
            raise BadRequest("user", f"user {user!r} is disabled")
        scope = token_scope("admin", row["role"], role, for_self=False)
        view = accounts.add_token(
            conn, token_id=token_id, secret_digest=token_digest(token), user_id=row["id"],
            name=accounts.check_token_name(name or f"{user}-{token_id[:4]}"), role=scope,
            now=now, created_by=actor(),
            expires_at=now + expires_in_s if expires_in_s is not None else None,
        )  # fmt: skip
        _record(conn, "tokens create", now, token_id=token_id, user=user, role=scope)
        return view

    return token, transaction(data_dir, work)


def list_users(data_dir: Path) -> list[dict[str, Any]]:
    with connect(data_dir) as conn:
        return accounts.list_users(conn)


def audit_pages(data_dir: Path, query: audit_log.AuditQuery) -> Iterator[dict[str, Any]]:
    """Every record that ``query`` selects, page after page (for ``audit export --data-dir``)."""
    with connect(data_dir) as conn:
        cursor = query.cursor
        while True:
            page = audit_log.query_audit(conn, replace(query, cursor=cursor))
            yield from page["records"]
            if page["next_cursor"] is None:
                return
            cursor = page["records"][-1]["id"]
