"""Kept inputs sealed in SQLite rows: what the sample spool (``samples.db``) and the deferred queue
(``deferred.db``) share (docs/data.md, "Encryption at rest").

Each input is one column of one row, sealed (:mod:`protocol.sealed`) under the agent's keyring
(``DATA_DIR/keys/data-keyring.json``) and bound to its identity, ``(kind, result_id)``: a blob
copied onto another row does not open. The key id is bytes 6 to 13 of a blob, so SQL finds the
rows sealed under an old key (``substr``) without opening them. A row that cannot be opened any
more (altered on disk, its key lost) is deleted and counted (``unreadable_total``), never sent
on: it will not get better.

Files of schema 1 (before encryption) hold plaintext; :meth:`SealedColumn.seal_all` seals every
row when such a file is opened (the spool's upgrade to schema 2), with ``secure_delete`` on so
the plaintext pages are overwritten, then the WAL is truncated.

All of this runs on the spool's worker thread, inside its transactions.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from agent.errors import ConfigError
from protocol.keyring import KEYRING_FILE, KeyringFile, wrapping_key
from protocol.sealed import HEADER_BYTES, KEY_ID_BYTES, MAGIC, KeyringError, SealedError, identity

log = logging.getLogger(__name__)

KEY_DIR = "keys"
_KEY_AT = len(MAGIC) + 2  # substr() is 1-based: the key id follows the magic and the version


def keyring_path(data_dir: Path) -> Path:
    """Where the agent's keyring lives: ``DATA_DIR/keys/data-keyring.json``."""
    return Path(data_dir) / KEY_DIR / KEYRING_FILE


def keyring_of(data_dir: Path) -> KeyringFile:
    """The agent's keyring, wrapped by the key a systemd credential or the environment gives,
    if any (:func:`protocol.keyring.wrapping_key`)."""
    return KeyringFile(keyring_path(data_dir), wrap=wrapping_key)


def default_keys(db_path: Path) -> KeyringFile:
    """The keyring of the data directory holding ``db_path`` (for a spool opened on its own)."""
    return keyring_of(Path(db_path).parent)


@dataclass(frozen=True)
class SealedColumn:
    """The sealed ``column`` of ``table`` (rows with ``id``, ``result_id``, ``created_at``)."""

    table: str
    column: str
    kind: str  # the identity's kind: "sample", "deferred"

    def context(self, result_id: str) -> bytes:
        return identity(self.kind, result_id)

    def seal(self, keys: KeyringFile, result_id: str, plaintext: bytes) -> bytes:
        return keys.seal(plaintext, self.context(result_id))

    def open(self, keys: KeyringFile, result_id: str, blob: bytes) -> bytes:
        return keys.open(blob, self.context(result_id))

    def seal_all(self, conn: sqlite3.Connection, keys: KeyringFile) -> int:
        """Seal every row (they hold plaintext: schema 1). Inside the caller's transaction."""
        rows = conn.execute(f"SELECT id, result_id, {self.column} FROM {self.table}").fetchall()
        for rowid, result_id, plaintext in rows:
            conn.execute(
                f"UPDATE {self.table} SET {self.column} = ? WHERE id = ?",
                (self.seal(keys, result_id, bytes(plaintext)), rowid),
            )
        return len(rows)

    def reseal(self, conn: sqlite3.Connection, keys: KeyringFile, limit: int) -> tuple[int, int]:
        """Seal again under the current key up to ``limit`` rows sealed under another; delete the
        rows that do not open. Returns (resealed, deleted as unreadable)."""
        current = bytes.fromhex(keys.ring.current_id)
        rows = conn.execute(
            f"SELECT id, result_id, {self.column} FROM {self.table}"
            f" WHERE substr({self.column}, {_KEY_AT}, {KEY_ID_BYTES}) != ? ORDER BY id LIMIT ?",
            (current, limit),
        ).fetchall()
        resealed = unreadable = 0
        for rowid, result_id, blob in rows:
            try:
                plaintext = self.open(keys, result_id, bytes(blob))
            except SealedError as exc:
                self.drop_unreadable(conn, rowid, result_id, exc)
                unreadable += 1
                continue
            conn.execute(
                f"UPDATE {self.table} SET {self.column} = ? WHERE id = ?",
                (self.seal(keys, result_id, plaintext), rowid),
            )
            resealed += 1
        return resealed, unreadable

    def drop_unreadable(
        self, conn: sqlite3.Connection, rowid: int, result_id: str, exc: SealedError
    ) -> None:
        """Delete a row that does not open, counted; the log names the result, never bytes."""
        conn.execute(f"DELETE FROM {self.table} WHERE id = ?", (rowid,))
        conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'unreadable_total'")
        log.warning("%s of result %s cannot be opened, deleted: %s", self.kind, result_id, exc)

    def key_ids(self, conn: sqlite3.Connection) -> set[str]:
        """The ids of the keys the rows are sealed under."""
        rows = conn.execute(
            f"SELECT DISTINCT substr({self.column}, {_KEY_AT}, {KEY_ID_BYTES}) FROM {self.table}"
            f" WHERE length({self.column}) >= {HEADER_BYTES}"
        )
        return {bytes(row[0]).hex() for row in rows}

    def purge(self, conn: sqlite3.Connection, before: float) -> int:
        """Delete the rows made before ``before``, counted in ``purged_total``."""
        purged = conn.execute(f"DELETE FROM {self.table} WHERE created_at < ?", (before,)).rowcount
        if purged:
            conn.execute("UPDATE meta SET value = value + ? WHERE key = 'purged_total'", (purged,))
        return int(purged)


def upgrade_meta(conn: sqlite3.Connection) -> None:
    """The counters schema 2 adds to a file of schema 1."""
    conn.execute("INSERT OR IGNORE INTO meta VALUES ('purged_total', 0), ('unreadable_total', 0)")


async def load_keys(keys: KeyringFile) -> None:
    """Load (create) the keyring off the event loop; a keyring that cannot be used is a
    :class:`~agent.errors.ConfigError` naming the file and the fix."""
    try:
        await asyncio.to_thread(keys.load)
    except KeyringError as exc:
        raise ConfigError(str(exc)) from None
