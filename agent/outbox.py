"""The outbox: every inference result the agent answered, kept in SQLite until the broker has it.

The daemon puts each result here and answers its caller once the put returned; the uplink peeks
the oldest rows, publishes them with QoS 1 and deletes them after the broker's PUBACK. Delivery is
therefore at least once: a crash between PUBACK and delete sends a batch twice, and the control
plane deduplicates on each result's id. Putting an id that is already waiting is a no-op.

**Durability.** ``put`` returns only once its row is committed; an answered result is never only in
memory. With ``synchronous="FULL"`` (the default) the commit waits for the WAL to be fsynced, so the
result survives a power cut. With ``"NORMAL"`` the commit reaches the operating system but is
fsynced only at checkpoints: the result survives the agent crashing or being SIGKILLed (the kernel
has the data), but a power cut can lose the last commits (never corrupt the database: that is WAL's
guarantee). The kill test in ``tests/agent/test_outbox.py`` SIGKILLs a process that is putting
as fast as it can, with each setting, and finds every acknowledged row; a power cut it cannot stage.

**Throughput.** One writer thread owns the connection and commits in groups
(:mod:`agent.sqlite_writer`): concurrent puts share one transaction and one fsync, so the outbox
keeps up with the inference path although a single-row commit costs about 0.25 ms with FULL
(figures in ``docs/benchmarks.md``). The event loop never waits for a commit; ``stats()`` reads
counters the writer keeps, without a query; ``commits`` counts the transactions.

**Reads.** ``peek`` goes through the same thread and connection, queued behind the writes before it.
A second, read-only connection would let peeks run beside a commit, but the uplink peeks a few
times a second at most, a peek of a batch takes microseconds, and the single connection keeps the
order of operations obvious (a peek after a ``delete`` never returns the deleted rows) and leaves
one file handle to close.

**Size bound (eviction).** At most ``max_rows`` rows and ``max_bytes`` payload bytes wait. When a
put would pass either bound, the **oldest** rows are deleted in the same transaction, counted in
``evicted_total`` (persisted in the ``meta`` table, reported in telemetry) and logged as a warning
at most once a minute. Fresh results matter more than stale ones after a device has been offline
for days, and inference must never stop because the uplink is down. A single payload larger than
``max_bytes`` is refused with :class:`~agent.errors.OutboxError`. As a last resort the file itself
has a hard ceiling (``PRAGMA max_page_count``, see :func:`file_ceiling_bytes`); reaching it fails
the put with OutboxError and leaves what is stored intact.

**Schema.** ``PRAGMA user_version`` is the schema version; :data:`MIGRATIONS` lists the functions
that bring a database from version *i* to *i + 1*, each run in its own transaction. Opening an older
file migrates it; a file written by a newer agent is refused (:class:`~agent.errors.OutboxError`)
before anything in it is touched. Every ``sqlite3`` error is translated into OutboxError, and a
corrupt or foreign file gets one that names its path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from agent.errors import OutboxError
from agent.outbox_store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Delete,
    OutboxRow,
    OutboxStats,
    Peek,
    Put,
    Row,
    Store,
    file_ceiling_bytes,
)
from agent.sqlite_writer import Request, SQLiteWriter

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Outbox",
    "OutboxError",
    "OutboxRow",
    "OutboxStats",
    "Row",
    "file_ceiling_bytes",
]


class Outbox:
    """A bounded, durable FIFO of encoded results in one SQLite file. See the module docstring."""

    def __init__(
        self,
        path: Path,
        *,
        max_rows: int = 1_000_000,
        max_bytes: int = 512 * 2**20,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        max_batch: int = 2000,
        max_file_bytes: int | None = None,
    ) -> None:
        """No I/O here; ``open()`` does it. ``max_file_bytes`` overrides the file's ceiling."""
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
        bounds = {"max_rows": max_rows, "max_bytes": max_bytes, "max_batch": max_batch}
        for name, value in bounds.items():
            if value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.synchronous = synchronous
        ceiling = max_file_bytes or file_ceiling_bytes(max_rows, max_bytes)
        self._store = Store(self.path, max_rows, max_bytes, synchronous, ceiling)
        self._writer = SQLiteWriter(self._store, max_group=max_batch, name=f"outbox {self.path}")

    async def open(self) -> None:
        """Create or migrate the database and start the writer thread."""
        await self._writer.start()

    async def close(self) -> None:
        """Commit every put and delete made before this call, then stop the thread."""
        await self._writer.stop()

    async def __aenter__(self) -> Outbox:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def put(self, result_id: str, created_at: float, payload: bytes) -> None:
        """Return once the row is committed (durable per ``synchronous``); raise OutboxError.

        Cancelling the caller does not withdraw the row: it may still be committed.
        """
        await self.put_many(((result_id, created_at, payload),))

    async def put_many(self, rows: Sequence[Row]) -> None:
        """Put several rows; they are committed together when this returns."""
        for result_id, _, payload in rows:
            if len(payload) > self.max_bytes:
                raise OutboxError(
                    f"result {result_id}: its payload of {len(payload)} bytes is larger than the "
                    f"outbox's max_bytes ({self.max_bytes}); raise outbox.max_bytes"
                )
        if rows:
            await self._run(Put(self._future(), rows))

    async def peek(self, limit: int) -> list[OutboxRow]:
        """Up to ``limit`` rows, oldest first, without removing them."""
        rows: list[OutboxRow] = await self._run(Peek(self._future(), limit))
        return rows

    async def delete(self, rowids: Sequence[int]) -> None:
        """Delete rows (after their PUBACK); committed on return. Unknown ids are ignored."""
        if rowids:
            await self._run(Delete(self._future(), list(rowids)))

    def stats(self) -> OutboxStats:
        """Counters as of the last commit, kept by the writer; no query."""
        return self._store.stats

    @property
    def commits(self) -> int:
        """Write transactions committed since open (telemetry; tests prove group commit with it)."""
        return self._writer.commits

    @staticmethod
    def _future() -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _run(self, request: Request) -> Any:
        self._writer.submit(request, self._closed_error)
        return await request.future

    def _closed_error(self) -> OutboxError:
        return OutboxError(
            f"the outbox {self.path} is not open (call open(); a closed one stays closed)"
        )
