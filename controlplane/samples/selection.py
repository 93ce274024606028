"""Which kept inputs go: a deletion on demand (by device and time range) and the retention purge.

The decisions are pure: :func:`parse_selection` turns the query of ``DELETE /api/v1/data`` into
a :class:`Selection` (or a 400 naming the parameter; a selection of everything is refused unless
``all=true`` says so), :func:`retention_cutoff` and :func:`is_due` say what the retention period
has made due. The SQL below applies them in the store's writer transactions, a batch at a time
(so that a large deletion never holds the writer for long), and returns what the caller must
remove from disk once the transaction is committed (:class:`Removed`).

What goes: the input's row in ``samples`` and its file. What stays: the result (the model's
answer, its scores; not an input) and an operator's feedback on it; the result loses its
``sample_url``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.api import parse_device_id, parse_since
from controlplane.errors import BadRequest

DAY_S = 86_400.0
BATCH = 500


# -- decisions (pure) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Inputs of ``device_id`` (any when None) of results made in ``[since, until)``; with
    ``everything`` and nothing else, every input."""

    device_id: str | None = None
    since: float | None = None
    until: float | None = None
    everything: bool = False

    def where(self) -> tuple[str, list[Any]]:
        """The SQL condition on ``samples`` and its parameters."""
        terms: list[str] = []
        params: list[Any] = []
        if self.device_id is not None:
            terms.append("device_id = ?")
            params.append(self.device_id)
        if self.since is not None:
            terms.append("created_at >= ?")
            params.append(self.since)
        if self.until is not None:
            terms.append("created_at < ?")
            params.append(self.until)
        return (" AND ".join(terms) or "1"), params

    def describe(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "since": self.since, "until": self.until,
                "all": self.everything}  # fmt: skip


PARAMETERS = {"device_id", "since", "until", "all"}


def parse_selection(query: Mapping[str, str]) -> Selection:
    """``device_id``, ``since`` (inclusive), ``until`` (exclusive; both Unix seconds or ISO 8601,
    the result's time on the device) and ``all``: BadRequest naming what is wrong."""
    raw_all = query.get("all")
    if raw_all not in (None, "true", "false"):
        raise BadRequest("all", f"expected true or false, got {raw_all!r}")
    everything = raw_all == "true"
    device = query.get("device_id")
    selection = Selection(
        device_id=parse_device_id(device) if device is not None else None,
        since=_time(query.get("since"), "since"),
        until=_time(query.get("until"), "until"),
        everything=everything,
    )
    bounded = (selection.device_id, selection.since, selection.until) != (None, None, None)
    if everything and bounded:
        raise BadRequest("all", "all=true selects every input: give it alone, or drop it")
    if not everything and not bounded:
        raise BadRequest(
            "device_id",
            "no selection: name a device_id and/or a since/until range, or pass all=true to "
            "delete every kept input",
        )
    if selection.since is not None and selection.until is not None:
        if selection.since >= selection.until:
            raise BadRequest("until", "must be after since")
    return selection


def _time(raw: str | None, name: str) -> float | None:
    try:
        return parse_since(raw)
    except BadRequest as exc:
        raise BadRequest(name, str(exc).split(": ", 1)[-1]) from None


def retention_cutoff(now: float, retention_days: float) -> float | None:
    """Inputs made or received before this are due; None keeps every input (0 days)."""
    if retention_days <= 0:
        return None
    return now - retention_days * DAY_S


def is_due(created_at: float, received_at: float, cutoff: float | None) -> bool:
    """Whether an input is past the retention period. Either time counts: the result's time on
    the device (a capture 30 days old is 30 days old however late it arrived) and the time it
    arrived (a device whose clock runs ahead cannot keep its inputs here for ever)."""
    return cutoff is not None and (created_at < cutoff or received_at < cutoff)


def due_where(cutoff: float) -> tuple[str, list[Any]]:
    """:func:`is_due` in SQL."""
    return "(created_at < ? OR received_at < ?)", [cutoff, cutoff]


# -- SQL (in the writer's transactions) -----------------------------------------------------------


@dataclass
class Removed:
    """What a deletion took out of the store, and what the caller unlinks after the commit."""

    count: int = 0
    bytes: int = 0
    files: list[str] = field(default_factory=list)  # sealed files (samples.blob)
    legacy: list[str] = field(default_factory=list)  # plaintext files of before schema 8

    def add(self, other: Removed) -> None:
        self.count += other.count
        self.bytes += other.bytes
        self.files += other.files
        self.legacy += other.legacy


def delete_batch(
    conn: sqlite3.Connection, where: str, params: list[Any], limit: int = BATCH
) -> Removed:
    """Delete up to ``limit`` inputs matching ``where``; :attr:`Removed.count` under ``limit``
    means none is left."""
    rows = conn.execute(
        f"DELETE FROM samples WHERE id IN (SELECT id FROM samples WHERE {where} LIMIT ?)"
        " RETURNING blob, sha256, size",
        [*params, limit],
    ).fetchall()
    removed = Removed(count=len(rows))
    legacy: set[str] = set()
    for blob, sha256, size in rows:
        removed.bytes += int(size)
        if blob is not None:
            removed.files.append(str(blob))
        else:
            legacy.add(str(sha256))
    removed.legacy = [sha for sha in sorted(legacy) if not legacy_needed(conn, sha)]
    return removed


def legacy_needed(conn: sqlite3.Connection, sha256: str) -> bool:
    """Whether a row still reads the plaintext file of ``sha256`` (one not sealed yet)."""
    row = conn.execute(
        "SELECT 1 FROM samples WHERE sha256 = ? AND blob IS NULL LIMIT 1", [sha256]
    ).fetchone()
    return row is not None


def count_selected(conn: sqlite3.Connection, selection: Selection) -> tuple[int, int]:
    """(inputs, bytes) the selection holds."""
    where, params = selection.where()
    count, size = conn.execute(
        f"SELECT count(*), coalesce(sum(size), 0) FROM samples WHERE {where}", params
    ).fetchone()
    return int(count), int(size)
