"""A bounded SQLite file of the agent's that one worker thread owns: the base of the deferred
queue (``agent/offload/deferred.py``) and the sample spool (``agent/samples/store.py``).

Why a thread: a commit waits for an fsync and the event loop must never wait for one. Why one: a
single owner of the connection needs no locks. Traffic to these files is a few rows per second,
so, unlike the outbox (``agent/sqlite_writer.py``), there is no group commit: each call is one
transaction. The file keeps persistent counters in a ``meta`` table (``key``, ``value``) that the
subclass's schema creates; :func:`count` adds to them inside the caller's transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from agent.errors import OutboxError

T = TypeVar("T")


class Spool:
    """``open()`` before use, ``close()`` after; subclasses run their SQL through :meth:`_run`
    (on the worker thread) and :meth:`_db` (there, the connection)."""

    kind: ClassVar[str]  # what errors call it: "deferred queue"
    schema: ClassVar[str]  # the SQL that creates the file, a ``meta`` table of counters in it
    schema_version: ClassVar[int] = 1  # PRAGMA user_version: a newer file is refused

    def __init__(self, path: Path, *, synchronous: Literal["FULL", "NORMAL"]) -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=self.kind.replace(" ", "-"))
        try:
            await self._run(self._connect)
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._run(self._disconnect)
        self._executor.shutdown(wait=True)
        self._executor = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise OutboxError(f"the {self.kind} {self.path} is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.kind} {self.path}: {exc}") from None

    # --- on the worker thread ---------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise OutboxError(f"the {self.kind} {self.path} is not open")
        return self._conn

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > self.schema_version:
                raise OutboxError(
                    f"{self.path} was written by a newer agent ({self.kind} schema {version}); "
                    "upgrade the agent or move the file aside"
                )
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            # Both files hold inputs: a deleted row is overwritten, not left in a free page.
            conn.execute("PRAGMA secure_delete = ON")
            if version == 0:
                conn.executescript(
                    f"BEGIN; {self.schema} PRAGMA user_version = {self.schema_version}; COMMIT;"
                )
            elif version < self.schema_version:
                with transaction(conn):
                    self._upgrade(conn, version)
                    conn.execute(f"PRAGMA user_version = {self.schema_version}")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the old pages leave the WAL
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _in_transaction(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` in one transaction."""
        conn = self._db()
        with transaction(conn):
            return fn(conn, *args)

    def _upgrade(self, conn: sqlite3.Connection, version: int) -> None:
        """Bring a file of schema ``version`` up to :attr:`schema_version` (in a transaction)."""
        raise OutboxError(f"{self.path}: no upgrade from {self.kind} schema {version}")

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _counters(self) -> dict[str, int]:
        return dict(self._db().execute("SELECT key, value FROM meta").fetchall())


class transaction:
    """``with transaction(conn):`` one ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on error."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


def count(conn: sqlite3.Connection, counter: str, n: int) -> None:
    """Add ``n`` to a persistent counter (inside the caller's transaction)."""
    conn.execute("UPDATE meta SET value = value + ? WHERE key = ?", (n, counter))
