"""The control plane's store: devices, telemetry and results in SQLite (see docs/controlplane.md).

Writes go through one writer thread with group commit (:mod:`controlplane.db`); callers on the
event loop only queue them. Reads run on a small pool of threads, each with its own read-only
connection: with WAL a reader sees the last commit without waiting for the writer, so an API
request never waits behind a group commit's fsync and never slows ingestion down, and the event loop
never runs SQL. Queries are plain functions over a connection; :class:`Store` is the facade.

Paging is by keyset on the results' ``id`` (the order of commits): a cursor names the last row
a page returned, so a client that follows ``next_cursor`` sees every row exactly once even while
new ones arrive.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from controlplane.agreement import with_cloud
from controlplane.db import Done, Writer, connect_reader
from controlplane.errors import BadRequest, StoreClosed, StoreError
from controlplane.metrics import Metrics
from controlplane.records import Incoming
from controlplane.samples.queries import attach as attach_samples

T = TypeVar("T")
State = Literal["online", "offline"]
Order = Literal["asc", "desc"]


# -- decisions (pure) ------------------------------------------------------------------------------


def device_state(reported: str, last_seen: float, now: float, offline_after_s: float) -> State:
    """A device is online when it said so (no will since) and was heard from recently."""
    return "online" if reported == "online" and now - last_seen <= offline_after_s else "offline"


def encode_cursor(row_id: int, order: Order) -> str:
    """An opaque cursor naming the last row of a page (and the order it was made for)."""
    return base64.urlsafe_b64encode(f"{order[0]}{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, order: Order) -> int:
    """The row id in a cursor made by :func:`encode_cursor`, or :class:`BadRequest`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.b64decode(padded, altchars=b"-_", validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if len(text) < 2 or text[0] not in "ad" or not text[1:].isdigit():
        raise BadRequest("cursor", "not a cursor this API returned (use next_cursor as is)")
    if text[0] != order[0]:
        raise BadRequest("cursor", f"this cursor was made for another order than {order!r}")
    return int(text[1:])


@dataclass(frozen=True)
class ResultQuery:
    device_id: str | None = None
    model: str | None = None
    since: float | None = None  # created_at >= since (unix seconds)
    limit: int = 100
    cursor: int | None = None  # the id of the last row of the previous page
    order: Order = "desc"


@dataclass(frozen=True)
class ResultPage:
    results: list[dict[str, Any]]
    next_cursor: str | None  # None: no more rows (for now)
    total: int  # rows matching the filters, all pages together


# -- queries (run on a reader thread) --------------------------------------------------------------

_DEVICE_COLUMNS = (
    "id, state, first_seen, last_seen, status_at, agent_version, hardware, accelerators, models, "
    "tags, api_url, backend, fallback_reason, telemetry, telemetry_at, tag_overrides, "
    "(SELECT revoked_at FROM revoked_devices r WHERE r.device_id = devices.id) AS revoked_at"
)  # revoked_devices: controlplane/identities/schema.py
_JSON_COLUMNS = ("hardware", "accelerators", "models", "tags", "telemetry", "tag_overrides")


def effective_tags(
    reported: dict[str, str], overrides: dict[str, str | None] | None
) -> dict[str, str]:
    """A device's tags: what it reports, overlaid with the operator's (a None hides a tag)."""
    merged: dict[str, str | None] = {**reported, **(overrides or {})}
    return {k: v for k, v in sorted(merged.items()) if v is not None}


def _device(row: sqlite3.Row, now: float, offline_after_s: float) -> dict[str, Any]:
    out = {k: row[k] for k in row.keys()}  # noqa: SIM118 (sqlite3.Row is not a mapping)
    for key in _JSON_COLUMNS:
        out[key] = json.loads(out[key]) if out[key] is not None else None
    out["reported_tags"] = out["tags"] or {}
    out["tag_overrides"] = out["tag_overrides"] or {}
    out["tags"] = effective_tags(out["reported_tags"], out["tag_overrides"])
    out["reported_state"] = out["state"]
    out["revoked"] = out["revoked_at"] is not None  # `edgefleet provision revoke`
    out["state"] = device_state(out["state"], out["last_seen"], now, offline_after_s)
    return out


def _state_filter(state: State | None, cutoff: float) -> tuple[str, list[Any]]:
    if state == "online":
        return "WHERE state = 'online' AND last_seen >= ?", [cutoff]
    if state == "offline":
        return "WHERE NOT (state = 'online' AND last_seen >= ?)", [cutoff]
    return "", []


def query_devices(
    conn: sqlite3.Connection, state: State | None, now: float, offline_after_s: float
) -> list[dict[str, Any]]:
    where, params = _state_filter(state, now - offline_after_s)
    rows = conn.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices {where} ORDER BY id", params)
    return [_device(r, now, offline_after_s) for r in rows]


def query_device(
    conn: sqlite3.Connection, device_id: str, now: float, offline_after_s: float
) -> dict[str, Any] | None:
    row = conn.execute(
        f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE id = ?", [device_id]
    ).fetchone()
    return None if row is None else _device(row, now, offline_after_s)


def count_devices(conn: sqlite3.Connection, now: float, offline_after_s: float) -> dict[str, int]:
    (total, online) = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE state = 'online' AND last_seen >= ?) FROM devices",
        [now - offline_after_s],
    ).fetchone()
    return {"online": online, "offline": total - online}


def query_telemetry(
    conn: sqlite3.Connection, device_id: str, since: float | None, limit: int
) -> list[dict[str, Any]]:
    """The device's latest ``limit`` samples (sent at or after ``since``), newest first."""
    sql = "SELECT received_at, body FROM telemetry WHERE device_id = ?"
    params: list[Any] = [device_id]
    if since is not None:
        sql += " AND ts >= ?"
        params.append(since)
    sql += " ORDER BY ts DESC, id DESC LIMIT ?"
    params.append(limit)
    return [
        {**json.loads(r["body"]), "received_at": r["received_at"]}
        for r in conn.execute(sql, params)
    ]


def query_results(conn: sqlite3.Connection, q: ResultQuery) -> ResultPage:
    where: list[str] = []
    params: list[Any] = []
    for column, op, value in (
        ("device_id", "=", q.device_id), ("model", "=", q.model), ("created_at", ">=", q.since)
    ):  # fmt: skip
        if value is not None:
            where.append(f"{column} {op} ?")
            params.append(value)
    filters = " AND ".join(where)
    (total,) = conn.execute(
        "SELECT count(*) FROM results" + (f" WHERE {filters}" if filters else ""), params
    ).fetchone()
    if q.cursor is not None:
        where.append("id < ?" if q.order == "desc" else "id > ?")
        params.append(q.cursor)
    sql = (
        "SELECT id, device_id, received_at, top_label, top_score, body, cloud_body, agree"
        " FROM results"
    )
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY id {q.order.upper()} LIMIT ?"
    rows = conn.execute(sql, [*params, q.limit + 1]).fetchall()
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    results = [
        with_cloud({
            **json.loads(r["body"]), "device_id": r["device_id"], "received_at": r["received_at"],
            "top_label": r["top_label"], "top_score": r["top_score"],
        }, r["cloud_body"], r["agree"])
        for r in rows
    ]  # fmt: skip
    results = attach_samples(conn, results)  # sample_url and feedback (docs/data.md)
    next_cursor = encode_cursor(rows[-1]["id"], q.order) if more else None
    return ResultPage(results, next_cursor, total)


def _post(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed: nobody waits any more
        pass


# -- the facade ------------------------------------------------------------------------------------


class Store:
    """Open it, queue writes with :meth:`submit`, await reads; close it."""

    def __init__(
        self, path: Path, *, synchronous: str = "FULL", metrics: Metrics | None = None,
        readers: int = 2, max_group_rows: int = 5000,
    ) -> None:  # fmt: skip
        self.path = path
        self.metrics = metrics if metrics is not None else Metrics()
        self._writer = Writer(
            path, synchronous=synchronous, metrics=self.metrics, max_group_rows=max_group_rows
        )
        self._readers = readers
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._writer.running

    @property
    def queue_depth(self) -> int:
        return self._writer.depth

    @property
    def commits(self) -> int:
        return self._writer.commits

    def open(self) -> None:
        """Create or migrate the database and start the writer thread; StoreError on failure."""
        self._writer.start()
        self._pool = ThreadPoolExecutor(self._readers, thread_name_prefix="controlplane-store-read")

    def close(self) -> None:
        """Commit what is queued, then close every connection. Idempotent."""
        self._writer.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    # -- writes --

    def submit(self, incoming: Incoming, done: Done | None = None) -> None:
        """Queue a message for the writer; ``done`` runs on the writer thread after its commit."""
        self._writer.submit(incoming, done)

    async def write(self, *incoming: Incoming) -> None:
        """Queue messages and wait until they are committed."""
        for item in incoming:
            self.submit(item)
        await self.flush()

    async def flush(self) -> None:
        """Wait until everything queued before this call is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not future.done():
                future.set_result(None)

        def done() -> None:
            try:
                loop.call_soon_threadsafe(resolve)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

        self._writer.submit(None, done)
        await future

    async def transact(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in one transaction on the writer thread; return its value.

        For the registry's and the rollouts' writes: few, small, and each must be atomic (a
        rollout's state change with its devices' rows). An exception in ``fn`` rolls the
        transaction back and is raised here (``sqlite3.Error`` as :class:`StoreError`). It
        returns after the commit, so a read that follows sees what ``fn`` wrote.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(value: Any, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

        def work(conn: sqlite3.Connection) -> Any:
            conn.row_factory = sqlite3.Row
            try:
                return fn(conn, *args)
            finally:
                conn.row_factory = None

        def settled(value: Any, error: BaseException | None) -> None:  # after COMMIT or ROLLBACK
            if isinstance(error, sqlite3.Error):
                error = StoreError(f"writing the store failed: {error}")
            _post(loop, settle, value, error)

        self._writer.submit_work(work, settled)
        return await future

    # -- reads --

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on a reader thread (rows are :class:`sqlite3.Row`)."""
        return await self._read(fn, *args)

    async def devices(
        self, *, state: State | None = None, now: float, offline_after_s: float
    ) -> list[dict[str, Any]]:
        return await self._read(query_devices, state, now, offline_after_s)

    async def device(
        self, device_id: str, *, now: float, offline_after_s: float
    ) -> dict[str, Any] | None:
        return await self._read(query_device, device_id, now, offline_after_s)

    async def device_counts(self, *, now: float, offline_after_s: float) -> dict[str, int]:
        return await self._read(count_devices, now, offline_after_s)

    async def telemetry(
        self, device_id: str, *, since: float | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return await self._read(query_telemetry, device_id, since, limit)

    async def results(self, query: ResultQuery) -> ResultPage:
        return await self._read(query_results, query)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        pool = self._pool
        if pool is None or not self.is_open:
            raise StoreClosed("the store is closed")
        return await asyncio.get_running_loop().run_in_executor(pool, self._call, fn, args)

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect_reader(self.path)
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        try:
            return fn(conn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"reading the store failed: {exc}") from None
