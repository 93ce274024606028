"""The ``commands`` table: every command sent to a device, with who sent it and what came back.

Schema version 6 (:func:`v6_commands`, in :data:`controlplane.db.MIGRATIONS`). A row is written
when a command is sent (``status`` ``pending``) and completed when it ends: ``ok`` or ``error``
with the device's answer, ``timeout`` when none came in time (a control plane that stopped
meanwhile leaves ``pending``). ``result`` is the device's answer, bounded by
:data:`MAX_RESULT_BYTES`. ``sender`` is the name the request gave (the ``X-Edgefleet-User``
header): the security issue's audit log will take these rows, with the authenticated identity in
place of that name.

Queries are plain functions over a connection, run by ``Store.transact`` (writes) and
``Store.read`` (reads).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from protocol.commands import MAX_REPLY_BYTES, result_size

MAX_RESULT_BYTES = MAX_REPLY_BYTES
"""The largest result stored; a larger one (a device that ignores the reply cap) is left out."""
STATUSES = ("pending", "ok", "error", "timeout")


def v6_commands(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE commands (
          id TEXT PRIMARY KEY, device_id TEXT NOT NULL, command TEXT NOT NULL,
          args TEXT NOT NULL, sender TEXT NOT NULL, instance TEXT NOT NULL,
          sent_at REAL NOT NULL, expires_at REAL NOT NULL, answered_at REAL,
          status TEXT NOT NULL, error TEXT, result TEXT, truncated INTEGER NOT NULL DEFAULT 0,
          clock_offset_s REAL, round_trip_s REAL
        )
        """
    )
    db.execute("CREATE INDEX commands_device ON commands (device_id, sent_at)")


@dataclass(frozen=True)
class Sent:
    id: str
    device_id: str
    command: str
    args: dict[str, Any]
    sender: str
    instance: str
    sent_at: float
    expires_at: float


@dataclass(frozen=True)
class Outcome:
    status: str  # ok, error, timeout
    answered_at: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    truncated: bool = False
    clock_offset_s: float | None = None
    round_trip_s: float | None = None


def bounded(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The result as stored: itself, or a note that it was left out for its size."""
    if result is None:
        return None
    size = result_size(result)
    if size > MAX_RESULT_BYTES:
        return {"omitted": f"{size} bytes, over the {MAX_RESULT_BYTES}-byte cap of a result"}
    return result


def insert(conn: sqlite3.Connection, sent: Sent) -> None:
    conn.execute(
        "INSERT INTO commands (id, device_id, command, args, sender, instance, sent_at,"
        " expires_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
        [sent.id, sent.device_id, sent.command, json.dumps(sent.args), sent.sender,
         sent.instance, sent.sent_at, sent.expires_at],
    )  # fmt: skip


def complete(conn: sqlite3.Connection, command_id: str, outcome: Outcome) -> dict[str, Any]:
    """Record how a command ended; returns the row as the API shows it."""
    result = bounded(outcome.result)
    conn.execute(
        "UPDATE commands SET status = ?, answered_at = ?, error = ?, result = ?, truncated = ?,"
        " clock_offset_s = ?, round_trip_s = ? WHERE id = ?",
        [outcome.status, outcome.answered_at, outcome.error,
         json.dumps(result) if result is not None else None, int(outcome.truncated),
         outcome.clock_offset_s, outcome.round_trip_s, command_id],
    )  # fmt: skip
    row = conn.execute(f"SELECT {_COLUMNS} FROM commands WHERE id = ?", [command_id]).fetchone()
    return _record(row)


_COLUMNS = (
    "id, device_id, command, args, sender, sent_at, expires_at, answered_at, status, error,"
    " result, truncated, clock_offset_s, round_trip_s"
)


def _record(row: sqlite3.Row) -> dict[str, Any]:
    out = {k: row[k] for k in row.keys()}  # noqa: SIM118 (sqlite3.Row is not a mapping)
    out["args"] = json.loads(out["args"])
    out["result"] = json.loads(out["result"]) if out["result"] is not None else None
    out["truncated"] = bool(out["truncated"])
    return out


def query_commands(
    conn: sqlite3.Connection, device_id: str, since: float | None, limit: int
) -> list[dict[str, Any]]:
    """A device's commands, newest first."""
    sql = f"SELECT {_COLUMNS} FROM commands WHERE device_id = ?"
    params: list[Any] = [device_id]
    if since is not None:
        sql += " AND sent_at >= ?"
        params.append(since)
    sql += " ORDER BY sent_at DESC, rowid DESC LIMIT ?"
    return [_record(r) for r in conn.execute(sql, [*params, limit])]
