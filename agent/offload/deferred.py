"""The deferred queue: cases the cloud should have answered but could not in time, kept in SQLite
beside the outbox (``deferred.db``) until a background task gets the cloud's answer for them.

A case is the request's input tensors (``.npz`` bytes, loaded without pickle), the result as the
outbox keeps it (encoded :class:`~protocol.messages.InferenceResult`), its model and the unix time
it was made. It survives a restart of the agent. Bounds, per model: at most ``max_rows`` cases
(putting past it drops the model's oldest, counted in ``dropped_total``) and a TTL (cases older
than it are dropped by :meth:`DeferredQueue.expire`, counted in ``expired_total``); a case the
cloud refuses for good is dropped and counted in ``failed_total``. All three counters persist.

One worker thread owns the connection (:class:`agent.spool.Spool`), so the event loop never waits
for a commit. Traffic here is the hard cases only, a few per second at most: no group commit.

The inputs are sealed (AES-256-GCM, :mod:`agent.sealing`) under the agent's keyring on the worker
thread and opened when a case is due; a case whose inputs do not open is deleted
(``unreadable_total``). Schema 2 is the sealed one: a file of schema 1 is sealed when opened.
:meth:`DeferredQueue.purge` deletes cases past the retention period (``purged_total``).
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agent.sealing import SealedColumn, default_keys, load_keys, upgrade_meta
from agent.spool import Spool, count, transaction
from protocol.keyring import KeyringFile
from protocol.sealed import SealedError

Counter = Literal["dropped_total", "expired_total", "failed_total"]
SEALED = SealedColumn("deferred", "inputs", "deferred")

_SCHEMA = """
CREATE TABLE deferred (
  id INTEGER PRIMARY KEY AUTOINCREMENT, result_id TEXT NOT NULL UNIQUE, model TEXT NOT NULL,
  created_at REAL NOT NULL, next_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  inputs BLOB NOT NULL, result BLOB NOT NULL
);
CREATE INDEX deferred_due ON deferred (next_at);
CREATE INDEX deferred_model ON deferred (model, id);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta VALUES ('dropped_total', 0), ('expired_total', 0), ('failed_total', 0),
  ('purged_total', 0), ('unreadable_total', 0);
"""


def pack_inputs(inputs: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {name: np.asarray(array) for name, array in inputs.items()}
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def unpack_inputs(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def input_bytes(inputs: Mapping[str, np.ndarray]) -> int:
    return sum(int(np.asarray(a).nbytes) for a in inputs.values())


@dataclass(frozen=True)
class DeferredCase:
    rowid: int
    result_id: str
    model: str
    created_at: float
    attempts: int
    inputs: bytes  # pack_inputs(), opened (sealed on disk)
    result: bytes  # the encoded InferenceResult


@dataclass(frozen=True)
class DeferredStats:
    depth: int
    dropped_total: int
    expired_total: int
    failed_total: int
    purged_total: int = 0
    unreadable_total: int = 0


class DeferredQueue(Spool):
    """See the module docstring. ``open()`` before use, ``close()`` after."""

    kind = "deferred queue"
    schema = _SCHEMA
    schema_version = 2

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        keys: KeyringFile | None = None,
    ) -> None:
        super().__init__(path, synchronous=synchronous)
        self.keys = keys if keys is not None else default_keys(self.path)

    async def open(self) -> None:
        await load_keys(self.keys)
        await super().open()

    async def put(
        self, result_id: str, model: str, created_at: float, inputs: bytes, result: bytes,
        max_rows: int,
    ) -> int:  # fmt: skip
        """Keep a case (an id already waiting is left as it is); drop the model's oldest past
        ``max_rows``. Returns how many were dropped."""
        return await self._run(self._put, (result_id, model, created_at, inputs, result), max_rows)

    async def due(self, now: float, limit: int) -> list[DeferredCase]:
        """Up to ``limit`` cases whose next try is due at ``now``, oldest first."""
        return await self._run(self._due, now, limit)

    async def next_due(self) -> float | None:
        """When the earliest case is due (unix time), or None when none waits."""
        return await self._run(self._next_due)

    async def done(self, rowid: int, counter: Counter | None = None) -> None:
        """Remove a case: answered (no counter) or given up (counted)."""
        await self._run(self._done, rowid, counter)

    async def retry_at(self, rowid: int, when: float) -> None:
        await self._run(self._retry_at, rowid, when)

    async def expire(self, model: str, before: float) -> int:
        """Drop the model's cases made before ``before``; return how many."""
        return await self._run(self._expire, model, before)

    async def stats(self) -> DeferredStats:
        return await self._run(self._stats)

    async def purge(self, before: float) -> int:
        """Delete every case made before ``before`` (retention); return how many."""
        return await self._run(self._in_transaction, SEALED.purge, before)

    async def reseal(self, limit: int) -> tuple[int, int]:
        """Seal again under the current key up to ``limit`` cases sealed under an older one;
        (resealed, deleted as unreadable)."""
        return await self._run(self._in_transaction, SEALED.reseal, self.keys, limit)

    async def key_ids(self) -> set[str]:
        return await self._run(lambda: SEALED.key_ids(self._db()))

    # --- on the worker thread ---------------------------------------------------------------

    def _upgrade(self, conn: sqlite3.Connection, version: int) -> None:
        upgrade_meta(conn)
        SEALED.seal_all(conn, self.keys)

    def _put(self, row: tuple[str, str, float, bytes, bytes], max_rows: int) -> int:
        conn = self._db()
        result_id, model, created_at, inputs, result = row
        sealed = SEALED.seal(self.keys, result_id, inputs)
        with transaction(conn):
            inserted = conn.execute(
                "INSERT OR IGNORE INTO deferred (result_id, model, created_at, next_at, inputs,"
                " result) VALUES (?, ?, ?, ?, ?, ?)",
                (result_id, model, created_at, created_at, sealed, result),
            ).rowcount
            if not inserted:
                return 0
            (rows,) = conn.execute(
                "SELECT count(*) FROM deferred WHERE model = ?", (model,)
            ).fetchone()
            over = int(rows) - max_rows
            if over > 0:
                conn.execute(
                    "DELETE FROM deferred WHERE id IN (SELECT id FROM deferred WHERE model = ?"
                    " ORDER BY id LIMIT ?)",
                    (model, over),
                )
                count(conn, "dropped_total", over)
            return max(over, 0)

    def _due(self, now: float, limit: int) -> list[DeferredCase]:
        conn = self._db()
        rows = conn.execute(
            "SELECT id, result_id, model, created_at, attempts, inputs, result FROM deferred"
            " WHERE next_at <= ? ORDER BY next_at, id LIMIT ?",
            (now, limit),
        ).fetchall()
        cases = []
        for rowid, result_id, model, created_at, attempts, sealed, result in rows:
            try:
                inputs = SEALED.open(self.keys, result_id, bytes(sealed))
            except SealedError as exc:
                with transaction(conn):
                    SEALED.drop_unreadable(conn, rowid, result_id, exc)
                continue
            cases.append(
                DeferredCase(rowid, result_id, model, created_at, attempts, inputs, result)
            )
        return cases

    def _next_due(self) -> float | None:
        (when,) = self._db().execute("SELECT min(next_at) FROM deferred").fetchone()
        return None if when is None else float(when)

    def _done(self, rowid: int, counter: Counter | None) -> None:
        conn = self._db()
        with transaction(conn):
            deleted = conn.execute("DELETE FROM deferred WHERE id = ?", (rowid,)).rowcount
            if counter is not None and deleted:
                count(conn, counter, deleted)

    def _retry_at(self, rowid: int, when: float) -> None:
        self._db().execute(
            "UPDATE deferred SET next_at = ?, attempts = attempts + 1 WHERE id = ?", (when, rowid)
        )

    def _expire(self, model: str, before: float) -> int:
        conn = self._db()
        with transaction(conn):
            expired = conn.execute(
                "DELETE FROM deferred WHERE model = ? AND created_at < ?", (model, before)
            ).rowcount
            if expired:
                count(conn, "expired_total", expired)
        return int(expired)

    def _stats(self) -> DeferredStats:
        (depth,) = self._db().execute("SELECT count(*) FROM deferred").fetchone()
        counters = self._counters()
        return DeferredStats(
            depth, counters["dropped_total"], counters["expired_total"], counters["failed_total"],
            counters["purged_total"], counters["unreadable_total"],
        )  # fmt: skip
