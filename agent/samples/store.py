"""The spool: kept inputs waiting for upload, in SQLite beside the outbox (``samples.db``).

A row is the input's bytes with what the control plane needs to file them: the result id, the
model and version, why it was kept, its content type and when the result was made. Bounded by
``max_rows`` and ``max_bytes``: a put past either drops the oldest rows (counted in
``dropped_total``) so a device that stays offline keeps the newest inputs and never fills its disk.
The counters persist. One worker thread owns the connection (:class:`agent.spool.Spool`, as
the deferred queue's does), so the event loop never waits for a commit; traffic is a share of
requests plus the hard cases, so there is no group commit. ``synchronous=NORMAL``: a kept input
lost to a power cut is a sample less, not a result lost.

The bytes are sealed (AES-256-GCM, :mod:`agent.sealing`) under the agent's keyring on the worker
thread: ``data`` holds the sealed blob, ``size`` the input's own size (what the bounds count).
Reads open them again, so the uploader sees the input as it was given. Schema 2 is the sealed
one; a file of schema 1 (plaintext, before encryption) is sealed row by row when it is opened.
Rows made before a retention cutoff are deleted by :meth:`SampleSpool.purge` (``purged_total``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agent.sealing import SealedColumn, default_keys, load_keys, upgrade_meta
from agent.spool import Spool, count, transaction
from protocol.keyring import KeyringFile
from protocol.sealed import SealedError

Counter = Literal["dropped_total", "uploaded_total", "rejected_total"]
SEALED = SealedColumn("samples", "data", "sample")

_SCHEMA = """
CREATE TABLE samples (
  id INTEGER PRIMARY KEY AUTOINCREMENT, result_id TEXT NOT NULL UNIQUE, model TEXT NOT NULL,
  model_version TEXT NOT NULL, reason TEXT NOT NULL, content_type TEXT NOT NULL,
  created_at REAL NOT NULL, size INTEGER NOT NULL, data BLOB NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta VALUES ('dropped_total', 0), ('uploaded_total', 0), ('rejected_total', 0),
  ('purged_total', 0), ('unreadable_total', 0);
"""
_COUNT = "SELECT count(*), coalesce(sum(size), 0) FROM samples"


@dataclass(frozen=True)
class KeptInput:
    result_id: str
    model: str
    model_version: str
    reason: str
    content_type: str
    created_at: float
    data: bytes


@dataclass(frozen=True)
class SpooledInput:
    rowid: int
    item: KeptInput


@dataclass(frozen=True)
class SpoolStats:
    depth: int
    bytes: int
    dropped_total: int
    uploaded_total: int
    rejected_total: int
    purged_total: int = 0
    unreadable_total: int = 0


def plan_drop(sizes: list[int], rows: int, total: int, max_rows: int, max_bytes: int) -> int:
    """How many of the oldest rows (``sizes``, oldest first) to drop so that ``rows`` rows of
    ``total`` bytes fit in ``max_rows`` and ``max_bytes``."""
    drop = 0
    while drop < len(sizes) and (rows - drop > max_rows or total > max_bytes):
        total -= sizes[drop]
        drop += 1
    return drop


class SampleSpool(Spool):
    """See the module docstring. ``open()`` before use, ``close()`` after."""

    kind = "sample spool"
    schema = _SCHEMA
    schema_version = 2

    def __init__(
        self, path: Path, *, max_rows: int, max_bytes: int, keys: KeyringFile | None = None
    ) -> None:
        super().__init__(path, synchronous="NORMAL")
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.keys = keys if keys is not None else default_keys(self.path)

    async def open(self) -> None:
        await load_keys(self.keys)
        await super().open()

    async def put(self, item: KeptInput) -> int:
        """Keep an input (a result id already here is left as it is); drop the oldest past the
        bounds. Returns how many were dropped (the new one too, when it alone is too large)."""
        return await self._run(self._put, item)

    async def oldest(self, limit: int) -> list[SpooledInput]:
        return await self._run(self._oldest, limit)

    async def done(self, rowid: int, counter: Counter) -> None:
        """Remove an input: uploaded, or refused for good by the control plane."""
        await self._run(self._done, rowid, counter)

    async def stats(self) -> SpoolStats:
        return await self._run(self._stats)

    async def purge(self, before: float) -> int:
        """Delete the inputs of results made before ``before`` (retention); return how many."""
        return await self._run(self._in_transaction, SEALED.purge, before)

    async def reseal(self, limit: int) -> tuple[int, int]:
        """Seal again under the current key up to ``limit`` inputs sealed under an older one
        (key rotation); (resealed, deleted as unreadable)."""
        return await self._run(self._in_transaction, SEALED.reseal, self.keys, limit)

    async def key_ids(self) -> set[str]:
        """The keys the inputs here are sealed under."""
        return await self._run(lambda: SEALED.key_ids(self._db()))

    # --- on the worker thread ---------------------------------------------------------------

    def _upgrade(self, conn: sqlite3.Connection, version: int) -> None:
        upgrade_meta(conn)
        SEALED.seal_all(conn, self.keys)

    def _put(self, item: KeptInput) -> int:
        conn = self._db()
        sealed = SEALED.seal(self.keys, item.result_id, item.data)
        with transaction(conn):
            inserted = conn.execute(
                "INSERT OR IGNORE INTO samples (result_id, model, model_version, reason,"
                " content_type, created_at, size, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    item.result_id, item.model, item.model_version, item.reason,
                    item.content_type, item.created_at, len(item.data), sealed,
                ),
            ).rowcount  # fmt: skip
            return self._trim(conn) if inserted else 0

    def _trim(self, conn: sqlite3.Connection) -> int:
        rows, total = conn.execute(_COUNT).fetchone()
        if rows <= self.max_rows and total <= self.max_bytes:
            return 0
        oldest = conn.execute("SELECT id, size FROM samples ORDER BY id").fetchall()
        drop = plan_drop([s for _, s in oldest], rows, total, self.max_rows, self.max_bytes)
        if drop:
            conn.execute("DELETE FROM samples WHERE id <= ?", (oldest[drop - 1][0],))
            count(conn, "dropped_total", drop)
        return drop

    def _oldest(self, limit: int) -> list[SpooledInput]:
        conn = self._db()
        rows = conn.execute(
            "SELECT id, result_id, model, model_version, reason, content_type, created_at, data"
            " FROM samples ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()
        out = []
        for rowid, result_id, model, version, reason, kind, created_at, sealed in rows:
            try:
                data = SEALED.open(self.keys, result_id, bytes(sealed))
            except SealedError as exc:
                with transaction(conn):
                    SEALED.drop_unreadable(conn, rowid, result_id, exc)
                continue
            item = KeptInput(result_id, model, version, reason, kind, created_at, data)
            out.append(SpooledInput(rowid, item))
        return out

    def _done(self, rowid: int, counter: Counter) -> None:
        conn = self._db()
        with transaction(conn):
            if conn.execute("DELETE FROM samples WHERE id = ?", (rowid,)).rowcount:
                count(conn, counter, 1)

    def _stats(self) -> SpoolStats:
        depth, size = self._db().execute(_COUNT).fetchone()
        counters = self._counters()
        return SpoolStats(
            depth, size, counters["dropped_total"], counters["uploaded_total"],
            counters["rejected_total"], counters["purged_total"], counters["unreadable_total"],
        )  # fmt: skip
