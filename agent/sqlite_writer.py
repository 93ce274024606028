"""One thread that owns a SQLite connection and commits queued writes in groups (group commit).

Why a thread: a SQLite commit with ``synchronous=FULL`` waits for an fsync, and the event loop must
never wait for one. Why one: SQLite allows one writer at a time anyway, and a single owner of the
connection needs no locks. Why groups: the fsync is paid per commit, not per row, so the writer
takes everything that queued up while it was busy with the previous commit (up to ``max_group``
rows), writes it in one transaction, commits once, and only then resolves every waiting future.
The busier the agent, the larger the groups; at low load a request is committed alone and at once.

The writer knows nothing about the schema: a :class:`Handler` (the outbox) opens the connection and
runs the SQL. Requests that write (``writes=True``) are grouped; a read request first commits the
writes queued before it, so it sees them, then runs on its own outside any transaction.
Futures are resolved through ``loop.call_soon_threadsafe``, one call per loop per group.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

log = logging.getLogger(__name__)

_Outcome = tuple["asyncio.Future[Any]", object, BaseException | None]


@dataclass(eq=False)
class Request:
    """One unit of work for the writer thread; subclasses carry the data."""

    future: asyncio.Future[Any]

    @property
    def weight(self) -> int:
        """How many rows it writes (a group holds at most ``max_group`` of them)."""
        return 1

    @property
    def writes(self) -> bool:
        return True


@dataclass(eq=False)
class _Stop(Request):
    @property
    def writes(self) -> bool:
        return False


class Handler(Protocol):
    """The SQL side, called on the writer thread only."""

    def connect(self) -> sqlite3.Connection:
        """Open (create, migrate) the database; raise the owner's error on failure."""

    def write(self, conn: sqlite3.Connection, group: Sequence[Request]) -> Callable[[], None]:
        """Apply a group inside an open transaction; return what to do once it is committed."""

    def read(self, conn: sqlite3.Connection, request: Request) -> object:
        """Answer a read request (outside a transaction)."""

    def error(self, exc: BaseException, doing: str) -> Exception:
        """Translate an exception raised by SQLite (or a bug) into the owner's error."""


class SQLiteWriter:
    """The thread, its queue and its lifecycle: ``start``, ``submit`` (any thread), ``stop``."""

    def __init__(self, handler: Handler, *, max_group: int, name: str) -> None:
        self._handler = handler
        self._max_group = max_group
        self._name = name
        self._queue: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._state: Literal["new", "starting", "running", "stopping", "stopped"] = "new"
        self._thread: threading.Thread | None = None
        self.commits = 0
        """Write transactions committed so far (fewer than the writes: group commit at work)."""

    async def start(self) -> None:
        """Start the thread and wait until the handler has opened the database (or failed to)."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError(f"{self._name} was started already")
            self._state = "starting"
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._thread = threading.Thread(
            target=self._run, args=(opened,), name=self._name, daemon=True
        )
        self._thread.start()
        try:
            await opened
        except BaseException:
            with self._lock:
                self._state = "stopping"
                self._queue.put(_Stop(asyncio.get_running_loop().create_future()))
            raise
        with self._lock:
            if self._state == "starting":
                self._state = "running"

    def submit(self, request: Request, closed_error: Callable[[], Exception]) -> None:
        """Queue a request; raise ``closed_error()`` when the writer is not running."""
        with self._lock:
            if self._state != "running":
                raise closed_error()
            self._queue.put(request)

    async def stop(self) -> None:
        """Finish every request queued before this call, close the connection, end the thread."""
        done: asyncio.Future[None] | None = None
        with self._lock:
            if self._state == "running":
                done = asyncio.get_running_loop().create_future()
                self._queue.put(_Stop(done))
            if self._state != "new":
                self._state = "stopping"
        if done is not None:
            await done
        if self._thread is not None:
            self._thread.join()  # the thread's last act was to resolve `done`: this is immediate
        with self._lock:
            self._state = "stopped"

    def _run(self, opened: asyncio.Future[None]) -> None:
        try:
            conn = self._handler.connect()
        except BaseException as exc:
            _settle([(opened, None, exc)])
            return
        _settle([(opened, None, None)])
        stop: Request | None = None
        try:
            stop = self._serve(conn)
        except BaseException as exc:  # a bug in the loop itself: refuse further work, loudly
            log.exception("%s stopped on an unexpected error", self._name)
            with self._lock:
                self._state = "stopping"
            self._fail_queued(self._handler.error(exc, "serving requests"))
        finally:
            conn.close()
            if stop is not None:
                _settle([(stop.future, None, None)])

    def _serve(self, conn: sqlite3.Connection) -> Request:
        while True:
            writes: list[Request] = []
            for request in self._take():
                if request.writes:
                    writes.append(request)
                    continue
                self._commit(conn, writes)
                writes = []
                if isinstance(request, _Stop):
                    return request
                self._read(conn, request)
            self._commit(conn, writes)

    def _take(self) -> list[Request]:
        """Block for one request, then take whatever else is queued, up to max_group rows."""
        request = self._queue.get()
        group, rows = [request], request.weight
        while rows < self._max_group and not isinstance(request, _Stop):
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            group.append(request)
            rows += request.weight
        return group

    def _commit(self, conn: sqlite3.Connection, group: list[Request]) -> None:
        if not group:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                after_commit = self._handler.write(conn, group)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                    conn.execute("ROLLBACK")
                raise
        except Exception as exc:
            error = self._handler.error(exc, "committing")
            _settle([(r.future, None, _copy(error)) for r in group])
            return
        self.commits += 1
        try:
            after_commit()
        except Exception:  # bookkeeping only: the data is committed, so the waiters succeed
            log.exception("%s: bookkeeping after a commit failed", self._name)
        _settle([(r.future, None, None) for r in group])

    def _read(self, conn: sqlite3.Connection, request: Request) -> None:
        try:
            outcome: _Outcome = (request.future, self._handler.read(conn, request), None)
        except Exception as exc:
            outcome = (request.future, None, self._handler.error(exc, "reading"))
        _settle([outcome])

    def _fail_queued(self, error: Exception) -> None:
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return
            _settle([(request.future, None, None if isinstance(request, _Stop) else _copy(error))])


def _copy(error: Exception) -> Exception:
    """A fresh instance per waiter, so that tracebacks do not pile up on one shared object."""
    return type(error)(*error.args)


def _settle(outcomes: Sequence[_Outcome]) -> None:
    """Resolve futures from the writer thread: one call_soon_threadsafe per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, items)
        except RuntimeError:  # that loop is closed: nobody is waiting any more
            pass


def _resolve(outcomes: list[_Outcome]) -> None:
    for future, value, exc in outcomes:
        if future.done():  # the waiter was cancelled; the work was done regardless
            continue
        if exc is None:
            future.set_result(value)
        else:
            future.set_exception(exc)
