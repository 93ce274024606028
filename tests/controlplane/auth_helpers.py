"""One way for every test to get past authentication: an admin and an API token in the store.

Tests talk to a control plane in three ways, and each gets its credentials here:

- in process (``create_app(...)`` and ``httpx.ASGITransport``): ``authorize(client, store)``
  sets the client's ``Authorization`` header;
- over HTTP to a live server (``tests/live.py``, ``edgefleet serve`` subprocesses):
  ``auth_headers(data_dir)`` for ``httpx`` calls, ``token_env(data_dir)`` or
  ``use_token(monkeypatch, data_dir)`` for the CLI (``EDGEFLEET_TOKEN``).

The user is made without a password (tokens only: no Argon2 hashing, so it costs nothing) straight
in the store's SQLite file, beside a store or server that may have it open. ``where`` is an open
:class:`Store`, the store's file, or a data directory (its ``controlplane.db``). With ``auth`` off
the header is simply ignored, so applying these changes nothing.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from controlplane.auth import accounts
from controlplane.auth.credentials import new_token, token_digest
from controlplane.auth.roles import Role
from controlplane.db import connect_writer
from controlplane.store import Store

ADMIN = "test-admin"
C = TypeVar("C", httpx.AsyncClient, httpx.Client)


def store_file(where: Store | Path) -> Path:
    if isinstance(where, Store):
        return where.path
    return where / "controlplane.db" if where.suffix != ".db" else where


def make_token(where: Store | Path, user: str = ADMIN, role: Role = "admin") -> str:
    """A new token of ``user``, who is made first (with ``role``, no password) if missing."""
    token_id, token = new_token()
    conn = connect_writer(store_file(where), "FULL")
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("BEGIN IMMEDIATE")
        now = time.time()
        row = accounts.user_row(conn, user)
        if row is None:
            accounts.add_user(conn, user, role, None, now=now, created_by="tests")
            row = accounts.get_user(conn, user)
        accounts.add_token(
            conn, token_id=token_id, secret_digest=token_digest(token), user_id=row["id"],
            name=f"tests-{token_id[:4]}", role=role, now=now, created_by="tests", expires_at=None,
        )  # fmt: skip
        conn.execute("COMMIT")
    finally:
        conn.close()
    return token


def auth_headers(where: Store | Path, user: str = ADMIN, role: Role = "admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(where, user, role)}"}


def authorize(client: C, where: Store | Path, user: str = ADMIN, role: Role = "admin") -> C:
    """``client`` with an admin's bearer token on every request."""
    client.headers.update(auth_headers(where, user, role))
    return client


def token_env(where: Store | Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for CLI subprocesses: ``base`` (default: this one) with EDGEFLEET_TOKEN."""
    return {**(os.environ if base is None else base), "EDGEFLEET_TOKEN": make_token(where)}


def use_token(monkeypatch: pytest.MonkeyPatch, where: Store | Path) -> str:
    """Set EDGEFLEET_TOKEN for in-process CLI calls (``tests.live.run_cli``)."""
    token = make_token(where)
    monkeypatch.setenv("EDGEFLEET_TOKEN", token)
    return token
