"""The keeper of the kept inputs on the control plane: retention, deletion, sealing, key rotation.

A task of ``edgefleet serve`` (started by the app's lifespan) that, when it starts and every
``data_purge_interval_s`` after:

1. **purges** the inputs past ``data_retention_days`` (:func:`~controlplane.samples.selection.
   is_due`): their rows, then their files;
2. **seals** what is not sealed under the current key: inputs stored before schema version 8
   (plaintext files, named by their SHA-256), and inputs sealed under an older key after a
   rotation. Each is read, sealed into a new file, and its row switched to the new file in one
   transaction that checks the row did not change meanwhile; then the old file is removed;
3. **retires** the keys that seal nothing any more (removes them from the keyring).

Before the first pass it removes the files that no row names (a crash between a file's write and
its row's commit, or between a row's deletion and its file's). ``DELETE /api/v1/data`` deletes
through :meth:`Keeper.delete`, ``POST /api/v1/data/keys/rotate`` rotates through
:meth:`Keeper.rotate`, which wakes the task (or, in an app without it, seals in a task of its own).

Why files go after their rows: a row without its file answers a clear error; a file without its
row is swept. Why the row switch checks a key is still held, in the writer's transaction, as
retirement does: a key is never retired while an input sealed under it is being filed.
Log lines and metrics carry counts, ids and key ids; never an input's bytes, never a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controlplane.metrics import Metrics
from controlplane.samples import selection as sel
from controlplane.samples.vault import KeyRetired, SealedFile, Unreadable, Vault
from controlplane.settings import Settings
from controlplane.store import Store
from protocol.sealed import DataKey
from protocol.wakeup import wait_event

log = logging.getLogger(__name__)

SEAL_BATCH = 100


@dataclass
class Sealing:
    legacy: int = 0  # plaintext inputs of before schema 8, sealed now
    rotated: int = 0  # inputs sealed again under the current key
    unreadable: int = 0  # inputs that could not be read: their rows were deleted
    skipped: int = 0  # inputs not sealed this time (a transient error): tried again next pass


@dataclass(frozen=True)
class _Pending:
    rowid: int
    device_id: str
    result_id: str
    sha256: str
    blob: str | None
    key_id: str | None


class Keeper:
    """See the module docstring. ``run()`` as a task; the other methods from handlers."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        vault: Vault,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.vault = vault
        self.metrics = metrics
        self._clock = clock
        self._wake = asyncio.Event()
        self._running = False
        self._sealing = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None

    # -- the task --

    async def run(self) -> None:
        self._running = True
        try:
            started = self._clock()
            await self._guarded("sweeping orphan files", self.sweep(started))
            while True:
                await self._guarded("purging and sealing", self.pass_once())
                self._wake.clear()
                await wait_event(self._wake, self.settings.data_purge_interval_s)
        finally:
            self._running = False

    def wake(self) -> None:
        """Seal and retire now (after a rotation): the task if it runs, else a task of its own."""
        if self._running:
            self._wake.set()
        elif self._background is None or self._background.done():
            self._background = asyncio.create_task(
                self._guarded("finishing the rotation", self.finish_rotation()),
                name="data-rotation",
            )

    async def stop(self) -> None:
        if self._background is not None:
            self._background.cancel()
            await asyncio.gather(self._background, return_exceptions=True)

    async def pass_once(self) -> None:
        await self.purge(self._clock())
        await self.finish_rotation()

    async def _guarded(self, what: str, work: Any) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the next pass tries again; the service goes on
            log.error("data: %s failed: %s", what, exc, exc_info=exc)

    # -- retention and deletion --

    async def purge(self, now: float) -> sel.Removed:
        """Delete the inputs past the retention period (nothing with 0 days)."""
        cutoff = sel.retention_cutoff(now, self.settings.data_retention_days)
        if cutoff is None:
            return sel.Removed()
        where, params = sel.due_where(cutoff)
        removed = await self._delete(where, params)
        if removed.count:
            self.metrics.data_purged.inc(removed.count)
            log.info(
                "data: deleted %d kept inputs (%d bytes) past %g days of retention",
                removed.count, removed.bytes, self.settings.data_retention_days,
            )  # fmt: skip
        return removed

    async def delete(self, selection: sel.Selection) -> sel.Removed:
        """Delete the selected inputs (on demand); what was deleted."""
        where, params = selection.where()
        removed = await self._delete(where, params)
        self.metrics.data_deleted.inc(removed.count)
        log.info("data: deleted %d kept inputs (%d bytes) on demand: %s",
                 removed.count, removed.bytes, selection.describe())  # fmt: skip
        return removed

    async def _delete(self, where: str, params: list[Any]) -> sel.Removed:
        total = sel.Removed()
        while True:
            batch = await self.store.transact(sel.delete_batch, where, params, sel.BATCH)
            await self._unlink(batch.files, batch.legacy)
            total.add(batch)
            if batch.count < sel.BATCH:
                return total

    async def _unlink(self, files: list[str], legacy: list[str]) -> None:
        if files:
            await asyncio.to_thread(self.vault.remove, files)
        if legacy:
            await asyncio.to_thread(self.vault.remove_legacy, legacy)

    # -- sealing and rotation --

    async def rotate(self) -> DataKey:
        """A new current key; the inputs sealed under older ones are sealed again in the
        background (:meth:`wake`), then the older keys retired."""
        key = await asyncio.to_thread(self.vault.keys.rotate)
        log.info("data: key %s is current; sealing the kept inputs again under it", key.id)
        self.wake()
        return key

    async def finish_rotation(self) -> tuple[Sealing, list[str]]:
        """Seal what is not under the current key, then retire the keys that seal nothing."""
        async with self._sealing:
            done = await self._seal_pending()
            retired = await self.retire()
        return done, retired

    async def _seal_pending(self) -> Sealing:
        done = Sealing()
        after = 0
        while True:
            current = self.vault.keys.ring.current_id
            rows = await self.store.read(_pending_page, current, after, SEAL_BATCH)
            for row in rows:
                after = row.rowid
                await self._seal_one(row, done)
            if len(rows) < SEAL_BATCH:
                break
        if done.legacy or done.rotated:
            log.info(
                "data: sealed %d inputs stored before encryption and %d sealed under an older key",
                done.legacy, done.rotated,
            )  # fmt: skip
        return done

    async def _seal_one(self, row: _Pending, done: Sealing) -> None:
        try:
            if row.blob is None:
                data = await asyncio.to_thread(
                    self.vault.read_legacy, row.device_id, row.result_id, row.sha256
                )
            else:
                data = await asyncio.to_thread(
                    self.vault.read, row.device_id, row.result_id, row.blob
                )
        except Unreadable as exc:
            if not exc.lost:
                done.skipped += 1
                log.error("data: %s; tried again at the next pass", exc)
                return
            removed = await self.store.transact(sel.delete_batch, "id = ?", [row.rowid], 1)
            await self._unlink(removed.files, removed.legacy)
            done.unreadable += removed.count
            self.metrics.data_unreadable.inc(removed.count)
            log.warning("data: %s: its row is deleted", exc)
            return
        sealed = await asyncio.to_thread(self.vault.write, row.device_id, row.result_id, data)
        try:
            switched, legacy_free = await self.store.transact(
                _switch, row, sealed, self.vault.keys.holds
            )
        except KeyRetired:  # rotated twice meanwhile: the next pass seals it again
            switched, legacy_free = False, False
        if not switched:  # deleted or changed meanwhile
            await self._unlink([sealed.name], [])
            done.skipped += 1
            return
        if row.blob is not None:
            await self._unlink([row.blob], [])
            done.rotated += 1
            self.metrics.data_sealed.inc(1, "rotation")
        else:
            await self._unlink([], [row.sha256] if legacy_free else [])
            done.legacy += 1
            self.metrics.data_sealed.inc(1, "legacy")

    async def retire(self) -> list[str]:
        """Remove from the keyring the old keys that seal no input (in the writer's
        transaction: no input sealed under one can be filed meanwhile)."""
        keys = self.vault.keys

        def work(conn: sqlite3.Connection) -> list[str]:
            ring = keys.ring
            unused = [
                k for k in ring.ids
                if k != ring.current_id and conn.execute(
                    "SELECT 1 FROM samples WHERE key_id = ? LIMIT 1", [k]
                ).fetchone() is None
            ]  # fmt: skip
            return keys.retire(unused)

        retired = await self.store.transact(work)
        for key_id in retired:
            log.info("data: retired key %s (no kept input is sealed under it any more)", key_id)
        return retired

    async def status(self) -> dict[str, Any]:
        """The keyring's keys (ids and times, never the keys) and the inputs under each."""
        counts: dict[str | None, int] = await self.store.read(
            lambda conn: {
                row[0]: int(row[1])
                for row in conn.execute("SELECT key_id, count(*) FROM samples GROUP BY key_id")
            }
        )
        ring = self.vault.keys.ring
        return {
            "current": ring.current_id,
            "keys": [
                {
                    "id": k.id,
                    "created_at": k.created_at,
                    "current": k.id == ring.current_id,
                    "inputs": counts.get(k.id, 0),
                }
                for k in ring.keys
            ],  # fmt: skip
            "unsealed": counts.get(None, 0),
            "pending": sum(n for key_id, n in counts.items() if key_id != ring.current_id),
        }

    # -- after a crash --

    async def sweep(self, older_than: float) -> int:
        """Remove the files no row names, last changed before ``older_than``."""
        named, legacy = await self.store.read(_named_files)
        orphans = await asyncio.to_thread(
            lambda: list(self.vault.orphans(named, legacy, older_than))
        )
        removed = 0
        for path in orphans:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(path.unlink)
                removed += 1
        if removed:
            log.info("data: removed %d files that no kept input names (left by a crash)", removed)
        return removed


# -- SQL -------------------------------------------------------------------------------------------


def _pending_page(conn: sqlite3.Connection, current: str, after: int, limit: int) -> list[_Pending]:
    rows = conn.execute(
        "SELECT id, device_id, result_id, sha256, blob, key_id FROM samples"
        " WHERE id > ? AND (blob IS NULL OR key_id != ?) ORDER BY id LIMIT ?",
        [after, current, limit],
    ).fetchall()
    return [_Pending(*row) for row in rows]


def _switch(
    conn: sqlite3.Connection, row: _Pending, sealed: SealedFile, holds: Callable[[str], bool]
) -> tuple[bool, bool]:
    """Point the row at its new file if it still has the old one; (switched, the old plaintext
    file is needed by no row any more)."""
    if not holds(sealed.key_id):
        raise KeyRetired(sealed.key_id)
    switched = conn.execute(
        "UPDATE samples SET blob = ?, key_id = ? WHERE id = ? AND blob IS ?",
        [sealed.name, sealed.key_id, row.rowid, row.blob],
    ).rowcount
    if not switched:
        return False, False
    return True, row.blob is None and not sel.legacy_needed(conn, row.sha256)


def _named_files(conn: sqlite3.Connection) -> tuple[set[str], set[str]]:
    named, legacy = set(), set()
    for blob, sha256 in conn.execute("SELECT blob, sha256 FROM samples"):
        if blob is None:
            legacy.add(str(sha256))
        else:
            named.add(str(blob))
    return named, legacy
