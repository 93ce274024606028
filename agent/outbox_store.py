"""The SQL of the outbox, run on its writer thread: schema and migrations, groups of puts and
deletes with eviction, peeks, and the translation of sqlite3 errors. :mod:`agent.outbox` is the
public face and says what the policies are and why; the decisions themselves (what to evict, how
big the file may grow) are pure functions here, tested without a database.
"""

from __future__ import annotations

import itertools
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database

from agent.errors import OutboxError
from agent.sqlite_writer import Request

log = logging.getLogger(__name__)

Row = tuple[str, float, bytes]
"""What a put takes: (result_id, created_at, payload)."""

EVICTION_LOG_INTERVAL_S = 60.0
JOURNAL_SIZE_LIMIT = 64 * 2**20  # the WAL is truncated back to this after a checkpoint
WAL_AUTOCHECKPOINT_PAGES = 10_000
"""Checkpoint every ~40 MiB of WAL instead of SQLite's 4 MiB: a hot index page is then copied into
the database once per checkpoint rather than ten times, which measured 15-25 % more puts/s and
means fewer writes to a device's flash. The cost is a WAL file of up to ~40 MiB."""


@dataclass(frozen=True)
class OutboxRow:
    rowid: int
    result_id: str
    created_at: float  # unix seconds
    payload: bytes  # the encoded protocol.messages.InferenceResult (opaque to the outbox)


@dataclass(frozen=True)
class OutboxStats:
    depth: int  # rows waiting
    oldest_created_at: float | None  # created_at of the oldest row (the next one to be sent)
    evicted_total: int  # rows dropped by the size bound, ever (persisted)
    size_bytes: int  # payload bytes waiting


# -- decisions (pure) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Eviction:
    """What to drop: stored rows up to ``last_id`` and the first ``incoming`` of the new rows."""

    stored: int = 0
    stored_bytes: int = 0
    last_id: int | None = None
    incoming: int = 0


def plan_eviction(
    stored_oldest_first: Iterable[tuple[int, int]],
    incoming_sizes: Sequence[int],
    *,
    depth: int,
    size_bytes: int,
    max_rows: int,
    max_bytes: int,
) -> Eviction:
    """Drop the oldest rows, stored ones (``(id, size)``) first, until the incoming ones fit.

    The incoming rows are newer than every stored row, so only when a group of them alone passes a
    bound are the oldest of them dropped too (they count as evicted: their put still succeeded).
    """
    rows_over = depth + len(incoming_sizes) - max_rows
    bytes_over = size_bytes + sum(incoming_sizes) - max_bytes
    if rows_over <= 0 and bytes_over <= 0:
        return Eviction()
    stored = stored_bytes = incoming = freed = 0
    last_id: int | None = None
    candidates = itertools.chain(stored_oldest_first, ((None, s) for s in incoming_sizes))
    for row_id, size in candidates:
        if stored + incoming >= rows_over and freed >= bytes_over:
            break
        freed += size
        if row_id is None:
            incoming += 1
        else:
            stored, stored_bytes, last_id = stored + 1, stored_bytes + size, row_id
    return Eviction(stored, stored_bytes, last_id, incoming)


def file_ceiling_bytes(max_rows: int, max_bytes: int) -> int:
    """The hard limit on the database file, well past what the bounds allow in practice.

    Twice ``max_bytes`` because a payload just over a page's local limit (about 4 KiB) spills into
    an overflow page it barely fills; 256 bytes a row for the id, the index and the b-tree; 16 MiB
    for SQLite's own pages.
    """
    return 2 * max_bytes + 256 * max_rows + 16 * 2**20


def translate_error(exc: BaseException, path: Path, doing: str, ceiling: int) -> OutboxError:
    """An OutboxError that says what went wrong with which file, and what to do about it."""
    if isinstance(exc, OutboxError):
        return exc
    if not isinstance(exc, sqlite3.Error):
        return OutboxError(f"outbox {path}: unexpected error while {doing}: {exc!r}")
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    text = str(exc)
    if code == 13 or "is full" in text:  # SQLITE_FULL
        return OutboxError(
            f"outbox {path} is full while {doing}: the disk is full or the file reached its "
            f"ceiling of {ceiling} bytes; the results already stored are kept ({text})"
        )
    if code in (11, 26) or "not a database" in text or "malformed" in text:  # CORRUPT, NOTADB
        return OutboxError(
            f"{path} is not a readable outbox database ({text}); move it aside and the agent "
            "starts a new, empty outbox"
        )
    if code in (3, 8, 14, 23):  # PERM, READONLY, CANTOPEN, AUTH
        return OutboxError(
            f"cannot write the outbox {path} ({text}); check the path and its rights"
        )
    return OutboxError(f"outbox {path}: {text} while {doing}")


# -- schema -----------------------------------------------------------------------------------


def _v1_create_tables(db: Database) -> None:
    # sqlite-utils' create() has no AUTOINCREMENT, and it matters: ids must never be reused, even
    # when the table empties, so that a delete after a PUBACK can never hit a newer row.
    db.execute(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, result_id TEXT NOT NULL,"
        " created_at REAL NOT NULL, payload BLOB NOT NULL)"
    )
    db.table("outbox").create_index(["result_id"], index_name="outbox_result_id", unique=True)
    db.table("meta").create({"key": str, "value": int}, pk="key", not_null=["value"])
    db.table("meta").insert({"key": "evicted_total", "value": 0})


MIGRATIONS: tuple[Callable[[Database], None], ...] = (_v1_create_tables,)
"""MIGRATIONS[i] takes a database from schema version i to i + 1. Append; never edit."""
SCHEMA_VERSION = len(MIGRATIONS)


# -- requests ---------------------------------------------------------------------------------


@dataclass(eq=False)
class Put(Request):
    rows: Sequence[Row]

    @property
    def weight(self) -> int:
        return len(self.rows)


@dataclass(eq=False)
class Delete(Request):
    rowids: Sequence[int]


@dataclass(eq=False)
class Peek(Request):
    limit: int

    @property
    def writes(self) -> bool:
        return False


# -- the SQL side (runs on the writer thread) --------------------------------------------------


class Store:
    """Opens and migrates the file, applies groups of puts and deletes, answers peeks."""

    def __init__(
        self, path: Path, max_rows: int, max_bytes: int, synchronous: str, ceiling: int
    ) -> None:
        self.path = path
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.synchronous = synchronous
        self.ceiling = ceiling
        self.stats = OutboxStats(depth=0, oldest_created_at=None, evicted_total=0, size_bytes=0)
        self._unlogged_evictions = 0
        self._last_eviction_log = -math.inf

    def error(self, exc: BaseException, doing: str) -> Exception:
        return translate_error(exc, self.path, doing, self.ceiling)

    def connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None)  # we BEGIN and COMMIT ourselves
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"cannot open the outbox {self.path}: {exc}") from exc
        try:
            self._prepare(Database(conn, recursive_triggers=False, execute_plugins=False))
        except BaseException as exc:
            conn.close()
            raise self.error(exc, "opening") from exc
        return conn

    def _prepare(self, db: Database) -> None:
        conn = db.conn
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise OutboxError(
                f"{self.path} was written by a newer agent (outbox schema version {version}; this "
                f"agent knows up to {SCHEMA_VERSION}); upgrade the agent, or move the file aside"
            )
        db.enable_wal()
        if db.journal_mode != "wal":
            raise OutboxError(f"{self.path}: SQLite cannot use WAL mode on this file system")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with db.atomic():
                MIGRATIONS[target - 1](db)
                conn.execute(f"PRAGMA user_version = {target}")
            log.info("outbox %s migrated to schema version %d", self.path, target)
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        conn.execute(f"PRAGMA max_page_count = {max(1, self.ceiling // page_size)}")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        depth, size = conn.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox"
        ).fetchone()
        (evicted,) = conn.execute("SELECT value FROM meta WHERE key = 'evicted_total'").fetchone()
        self.stats = OutboxStats(depth, _oldest(conn), evicted, size)

    def write(self, conn: sqlite3.Connection, group: Sequence[Request]) -> Callable[[], None]:
        incoming: dict[str, Row] = {}  # first one wins, like a put of an id already stored
        deletes: list[int] = []
        for request in group:
            if isinstance(request, Put):
                for row in request.rows:
                    incoming.setdefault(row[0], row)
            elif isinstance(request, Delete):
                deletes.extend(request.rowids)
        depth, size = self.stats.depth, self.stats.size_bytes
        head_moved = depth == 0
        if deletes:
            count, freed = _delete(conn, deletes)
            depth, size, head_moved = depth - count, size - freed, head_moved or count > 0
        rows = list(incoming.values())
        evicted = 0
        if rows:
            sizes = [len(row[2]) for row in rows]
            # An incoming id that is stored already counts as new here: at a full outbox such a
            # duplicate costs one extra eviction, which is cheaper than looking every id up.
            stored = _oldest_first(conn)  # lazy: queried only when a bound is passed
            try:
                plan = plan_eviction(
                    stored, sizes, depth=depth, size_bytes=size,
                    max_rows=self.max_rows, max_bytes=self.max_bytes,
                )  # fmt: skip
            finally:
                stored.close()  # closes the cursor before the DELETE below
            if plan.stored:
                conn.execute("DELETE FROM outbox WHERE id <= ?", (plan.last_id,))
                depth, size, head_moved = depth - plan.stored, size - plan.stored_bytes, True
            evicted = plan.stored + plan.incoming
            if evicted:
                conn.execute(
                    "UPDATE meta SET value = value + ? WHERE key = 'evicted_total'", (evicted,)
                )
            rows, sizes = rows[plan.incoming :], sizes[plan.incoming :]
            (newest,) = conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()
            inserted = conn.executemany(
                "INSERT OR IGNORE INTO outbox (result_id, created_at, payload) VALUES (?, ?, ?)",
                rows,
            ).rowcount
            if inserted == len(rows):
                depth, size = depth + inserted, size + sum(sizes)
            else:  # some ids were stored already: count what went in (ids only grow)
                count, added = conn.execute(
                    "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox WHERE id > ?",
                    (newest,),
                ).fetchone()
                depth, size = depth + count, size + added
        oldest = self.stats.oldest_created_at
        if depth == 0:
            oldest = None
        elif head_moved:
            oldest = _oldest(conn)
        stats = OutboxStats(depth, oldest, self.stats.evicted_total + evicted, size)

        def after_commit() -> None:
            self.stats = stats
            if evicted:
                self._log_eviction(evicted, stats.evicted_total)

        return after_commit

    def read(self, conn: sqlite3.Connection, request: Request) -> object:
        assert isinstance(request, Peek)
        return [
            OutboxRow(*row)
            for row in conn.execute(
                "SELECT id, result_id, created_at, payload FROM outbox ORDER BY id LIMIT ?",
                (request.limit,),
            )
        ]

    def _log_eviction(self, count: int, total: int) -> None:
        self._unlogged_evictions += count
        now = time.monotonic()
        if now - self._last_eviction_log >= EVICTION_LOG_INTERVAL_S:
            log.warning(
                "outbox %s is full (max_rows %d, max_bytes %d): evicted the %d oldest results "
                "(%d in total since the file was created)",
                self.path, self.max_rows, self.max_bytes, self._unlogged_evictions, total,
            )  # fmt: skip
            self._unlogged_evictions, self._last_eviction_log = 0, now


def _oldest_first(conn: sqlite3.Connection) -> Generator[tuple[int, int], None, None]:
    cursor = conn.execute("SELECT id, length(payload) FROM outbox ORDER BY id")
    try:
        yield from cursor
    finally:
        cursor.close()


def _oldest(conn: sqlite3.Connection) -> float | None:
    row = conn.execute("SELECT created_at FROM outbox ORDER BY id LIMIT 1").fetchone()
    return None if row is None else float(row[0])


def _delete(conn: sqlite3.Connection, rowids: list[int]) -> tuple[int, int]:
    """Delete rows by id; return how many existed and their payload bytes."""
    count = freed = 0
    for start in range(0, len(rowids), 500):  # SQLite before 3.32 allows 999 parameters
        chunk = rowids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        n, b = conn.execute(
            f"SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox WHERE id IN ({marks})",
            chunk,
        ).fetchone()
        conn.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk)
        count, freed = count + n, freed + b
    return count, freed
