"""The store's SQLite file: schema migrations, connections, and the one writer thread.

Why one writer thread (as Datasette, aiosqlite and Frigate do): a commit waits for an fsync and the
event loop must never wait for one; SQLite admits one writer at a time anyway; and a thread that
owns the connection needs no locks. Group commit comes with it: the thread takes everything that
queued up while it was committing (up to ``max_group_rows`` rows), writes it with one
``executemany`` per statement and commits once. The busier ingestion is, the larger the groups.

Durability: WAL with ``synchronous=FULL`` by default. The control plane acknowledges a message to
the broker only after its commit, and the broker then forgets it, so a commit lost to a power cut
(possible with ``NORMAL``) would be a result lost for good. FULL costs one fsync per group, not per
message: at 200 results a message and several messages a group, that is a few dozen fsyncs a
second at the target rate, well within the disk's means. ``NORMAL`` is a setting for benchmarks.

Failures: an ``OperationalError`` (disk full, I/O error) rolls the group back and retries it with
a capped backoff, acknowledging nothing, so the broker keeps the messages; any other error
(a bug, a constraint) commits the group's messages one by one and drops, loudly, the ones that
still fail, so that one poison message cannot stop ingestion.

Schema versions live in ``PRAGMA user_version``: :data:`MIGRATIONS` ``[i]`` takes the database
from version ``i`` to ``i + 1``, each in its own transaction.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from controlplane import records
from controlplane.alerts.schema import v7_alerts
from controlplane.auth.schema import v10_operators
from controlplane.commands.records import v6_commands
from controlplane.errors import ControlPlaneError, StoreClosed, StoreError
from controlplane.identities.schema import v9_provisioning
from controlplane.metrics import Metrics
from controlplane.offload_schema import v4_offload
from controlplane.records import Incoming
from controlplane.registry.schema import v2_registry
from controlplane.rollouts.schema import v3_rollouts
from controlplane.samples.schema import v5_samples, v8_data_protection

log = logging.getLogger(__name__)

Migration = Callable[[Database], None]
Done = Callable[[], None]


def _v1_tables(db: Database) -> None:
    db.table("devices").create(
        {
            "id": str, "state": str, "first_seen": float, "last_seen": float,
            "status_at": float, "agent_version": str, "hardware": str, "accelerators": str,
            "models": str, "tags": str, "api_url": str, "backend": str, "fallback_reason": str,
            "telemetry": str, "telemetry_at": float,
        },
        pk="id",
        not_null=["state", "first_seen", "last_seen", "hardware", "accelerators", "models", "tags"],
        defaults={"hardware": "{}", "accelerators": "[]", "models": "[]", "tags": "{}"},
    )  # fmt: skip
    db.table("devices").create_index(["state", "last_seen"])
    db.table("telemetry").create(
        {
            "id": int, "device_id": str, "ts": float, "received_at": float, "inferences": int,
            "errors": int, "p50_ms": float, "p95_ms": float, "p99_ms": float,
            "outbox_depth": int, "body": str,
        },
        pk="id",
        not_null=["device_id", "ts", "received_at", "body"],
    )  # fmt: skip
    db.table("telemetry").create_index(["device_id", "ts"])
    db.table("results").create(
        {
            "id": int, "device_id": str, "result_id": str, "created_at": float,
            "received_at": float, "model": str, "model_version": str, "artifact_sha256": str,
            "backend": str, "latency_ms": float, "top_label": str, "top_score": float, "body": str,
        },
        pk="id",
        not_null=["device_id", "result_id", "created_at", "received_at", "model", "body"],
    )  # fmt: skip
    db.table("results").create_index(["device_id", "result_id"], unique=True)
    db.table("results").create_index(["device_id"])  # with the rowid: ?device_id= in id order
    db.table("results").create_index(["model"])
    db.table("results").create_index(["created_at"])


MIGRATIONS: list[Migration] = [
    _v1_tables, v2_registry, v3_rollouts, v4_offload, v5_samples, v6_commands, v7_alerts,
    v8_data_protection, v9_provisioning, v10_operators,
]  # fmt: skip


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the database up to ``len(migrations)``; return the version it was at."""
    db = Database(conn, execute_plugins=False)
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > len(migrations):
        raise StoreError(
            f"the store's schema version {version} is newer than this control plane knows "
            f"({len(migrations)}): upgrade edgefleet or point --data-dir elsewhere"
        )
    for number in range(version, len(migrations)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            migrations[number](db)
            conn.execute(f"PRAGMA user_version = {number + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        log.info("store migrated to schema version %d", number + 1)
    return int(version)


def connect_writer(path: Path, synchronous: str) -> sqlite3.Connection:
    """Open (create) the database for writing: WAL, the synchronous mode, migrations."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open the store {path}: {exc}") from None
    try:
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            raise StoreError(f"{path}: cannot switch to WAL (journal mode is {mode})")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        migrate(conn)
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot open the store {path}: {exc}") from None
    except BaseException:
        conn.close()
        raise
    return conn


def connect_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection (the writer must have created the file)."""
    try:
        uri = path.resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA query_only = ON")
        return conn
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the store {path} for reading: {exc}") from None


Work = Callable[[sqlite3.Connection], Any]
Settled = Callable[[Any, BaseException | None], None]


@dataclass(eq=False, slots=True)
class _Item:
    incoming: Incoming | None  # None: a barrier (flush) that only waits for what precedes it
    done: Done | None
    work: tuple[Work, Settled] | None = None  # a transaction of its own: see run_work


_STOP = _Item(None, None)


class Writer:
    """The writer thread: ``start``, ``submit`` (from any thread), ``stop``.

    ``done`` callbacks run on the writer thread after the commit that holds their message; they
    must be quick and thread-safe (ingestion's sends the MQTT acknowledgement, which
    :class:`protocol.mqtt.Message` makes safe from any thread).
    """

    RETRY_MIN_S = 0.05
    RETRY_MAX_S = 5.0

    def __init__(
        self, path: Path, *, synchronous: str = "FULL", metrics: Metrics,
        max_group_rows: int = 5000,
    ) -> None:  # fmt: skip
        self.path = path
        self.synchronous = synchronous
        self.metrics = metrics
        self.max_group_rows = max_group_rows
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = False
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        self.commits = 0

    @property
    def running(self) -> bool:
        return self._running

    @property
    def depth(self) -> int:
        """Items waiting (approximate)."""
        return self._queue.qsize()

    def start(self) -> None:
        """Open the database on the writer thread; return once it is open, or raise StoreError."""
        opened = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                conn = connect_writer(self.path, self.synchronous)
            except BaseException as exc:
                failure.append(exc)
                opened.set()
                return
            with self._lock:
                self._running = True
            opened.set()
            try:
                self._serve(conn)
            except BaseException:  # a bug in the loop itself: refuse further work, loudly
                log.exception("the store's writer thread stopped on an unexpected error")
                with self._lock:
                    self._running = False
            finally:
                conn.close()

        self._thread = threading.Thread(target=run, name="controlplane-store-writer", daemon=True)
        self._thread.start()
        opened.wait()
        if failure:
            self._thread.join()
            raise failure[0]

    def submit(self, incoming: Incoming | None, done: Done | None = None) -> None:
        """Queue a message (or, with None, a barrier); ``done`` runs once it is committed."""
        with self._lock:
            if not self._running:
                raise StoreClosed("the store is closed")
            self._queue.put(_Item(incoming, done))

    def submit_work(self, work: Work, settled: Settled) -> None:
        """Queue ``work(conn)``: it runs on the writer thread in a transaction of its own, after
        what was queued before it; ``settled`` hears the outcome (see :func:`run_work`)."""
        with self._lock:
            if not self._running:
                raise StoreClosed("the store is closed")
            self._queue.put(_Item(None, None, (work, settled)))

    def stop(self, timeout: float = 30.0) -> None:
        """Commit what is queued, close the connection, end the thread.

        A group that cannot be committed within ``timeout`` (a full disk) is abandoned: its
        messages are not acknowledged, so the broker delivers them again after a restart.
        """
        with self._lock:
            if not self._running:
                return
            self._running = False
            self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._abort.set()
                self._thread.join()

    # -- the thread ---------------------------------------------------------------------------

    def _serve(self, conn: sqlite3.Connection) -> None:
        while True:
            group = self._take()
            stop = group[-1] is _STOP
            if stop:
                group.pop()
            if group:
                self._commit(conn, group)
            if stop or self._abort.is_set():
                return

    def _take(self) -> list[_Item]:
        """Block for one item, then take whatever else is queued, up to max_group_rows rows."""
        item = self._queue.get()
        group, rows = [item], _weight(item)
        while item is not _STOP and rows < self.max_group_rows:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            group.append(item)
            rows += _weight(item)
        return group

    def _commit(self, conn: sqlite3.Connection, group: list[_Item]) -> None:
        if any(i.work is not None for i in group):  # keep the order: a flush waits for work too
            run: list[_Item] = []
            for item in group:
                if item.work is None:
                    run.append(item)
                    continue
                if run:
                    self._commit(conn, run)
                    run = []
                run_work(conn, *item.work)
            if run:
                self._commit(conn, run)
            return
        messages = [i.incoming for i in group if i.incoming is not None]
        delay = self.RETRY_MIN_S
        while True:
            try:
                self._transaction(conn, records.plan(messages))
                break
            except sqlite3.OperationalError as exc:
                self.metrics.store_commit_errors.inc()
                log.error("store commit failed (%s); retrying in %.2fs", exc, delay)
                if self._abort.wait(delay):
                    return  # abandoned: not acknowledged, so delivered again later
                delay = min(delay * 2, self.RETRY_MAX_S)
            except Exception:
                self.metrics.store_commit_errors.inc()
                log.exception("store commit failed; committing the group message by message")
                self._commit_each(conn, group)
                return
        self._finish(group, messages)

    def _commit_each(self, conn: sqlite3.Connection, group: list[_Item]) -> None:
        for item in group:
            if item.incoming is not None:
                try:
                    self._transaction(conn, records.plan([item.incoming]))
                except Exception:
                    log.exception(
                        "dropping a %s message from %s that cannot be stored",
                        type(item.incoming.message).__name__, item.incoming.device_id,
                    )  # fmt: skip
                    self.metrics.store_commit_errors.inc()
            self._finish([item], [item.incoming] if item.incoming else [])

    def _transaction(self, conn: sqlite3.Connection, plan: records.Plan) -> None:
        started = time.perf_counter()
        stored = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, rows in plan.statements():
                cursor = conn.executemany(sql, rows)
                if rows is plan.results:
                    stored = max(cursor.rowcount, 0)  # INSERT OR IGNORE: duplicates count 0
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.commits += 1
        self.metrics.store_commit.observe(time.perf_counter() - started)
        if plan.results:
            self.metrics.results_ingested.inc(stored)
            self.metrics.results_duplicate.inc(len(plan.results) - stored)

    def _finish(self, group: list[_Item], messages: list[Incoming]) -> None:
        now = time.time()
        for message in messages:
            self.metrics.ingest_latency.observe(max(0.0, now - message.received_at))
        for item in group:
            if item.done is not None:
                try:
                    item.done()
                except Exception:
                    log.exception("store: a commit callback failed")


def run_work(conn: sqlite3.Connection, work: Work, settled: Settled) -> None:
    """Run ``work`` in its own IMMEDIATE transaction, then call ``settled(value, error)``: with its
    return value once COMMIT has succeeded, or with the exception after the rollback."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            value = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except Exception as exc:
        if not isinstance(exc, ControlPlaneError):  # a refusal is the caller's to report
            log.exception("store: a transaction failed")
        settled(None, exc)
        return
    settled(value, None)


def _weight(item: _Item) -> int:
    return item.incoming.weight if item.incoming is not None else 0
