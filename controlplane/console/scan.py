"""Bounded reads of the large append-only tables (``telemetry``, ``results``) for fleet charts.

Both tables grow in commit order: ``id`` is the rowid and ``received_at`` (the control plane's
clock at receipt) grows with it. So the rows of a time range are an id range, found by a binary
search on the rowid (about 25 point lookups, no index on time needed), and a chart over a range
with millions of rows reads an evenly spaced sample of at most :data:`MAX_ROWS` of them (point
lookups by rowid) and scales its sums by the spacing: the cost of a chart is bounded whatever
the fleet's size, and exact for ranges of up to ``MAX_ROWS`` rows. Pages say when a chart is
estimated from a sample.

Counts that an index serves (edge-cloud agreement has a covering partial index) are exact at any
size: :func:`id_buckets` cuts the id range into equal slices instead of equal times, so a query
groups by ``(id - lo) / step`` over the index and each bucket's time is its first row's.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from typing import Any

MAX_ROWS = 20_000
TABLES = frozenset({"telemetry", "results"})


def _table(name: str) -> str:
    if name not in TABLES:
        raise ValueError(f"not a scannable table: {name}")
    return name


def first_id_at(conn: sqlite3.Connection, table: str, t: float) -> int | None:
    """The smallest id of ``table`` received at or after ``t``; None when none is."""
    table = _table(table)
    # two statements: SQLite answers a lone min() or max() from the rowid b-tree's ends, but
    # scans the whole table for both in one SELECT
    (lo,) = conn.execute(f"SELECT min(id) FROM {table}").fetchone()
    (hi,) = conn.execute(f"SELECT max(id) FROM {table}").fetchone()
    if lo is None or hi is None:
        return None

    def received(position: int) -> float | None:
        row = conn.execute(
            f"SELECT received_at FROM {table} WHERE id >= ? ORDER BY id LIMIT 1", [position]
        ).fetchone()
        return None if row is None else float(row[0])

    last = received(hi)
    if last is None or last < t:
        return None
    while lo < hi:  # the first position whose next row was received at or after t
        mid = (lo + hi) // 2
        value = received(mid)
        if value is not None and value >= t:
            hi = mid
        else:
            lo = mid + 1
    row = conn.execute(f"SELECT id FROM {table} WHERE id >= ? ORDER BY id LIMIT 1", [lo]).fetchone()
    return None if row is None else int(row[0])


@dataclass(frozen=True)
class Window:
    """The rows ``lo..hi`` of a table, every ``step``-th one: sums over it times ``step``
    estimate the sums over the whole range."""

    table: str
    lo: int
    hi: int
    step: int

    @property
    def sampled(self) -> bool:
        return self.step > 1

    @property
    def rows(self) -> int:
        """Rows read (at most MAX_ROWS)."""
        return (self.hi - self.lo) // self.step + 1

    def source(self) -> tuple[str, str, list[Any]]:
        """``(with_clause, from_clause, params)``: ``{with} SELECT ... FROM {from} WHERE ...``,
        the table aliased ``t``."""
        if self.step == 1:
            return "", f"{self.table} t", []  # the caller adds the id range (see where())
        with_clause = (
            "WITH RECURSIVE pick(i) AS"
            " (SELECT ? UNION ALL SELECT i + ? FROM pick WHERE i + ? <= ?) "
        )
        return (
            with_clause,
            f"pick JOIN {self.table} t ON t.id = pick.i",
            [self.lo, self.step, self.step, self.hi],
        )

    def where(self) -> tuple[str, list[Any]]:
        return "t.id BETWEEN ? AND ?", [self.lo, self.hi]


def window(
    conn: sqlite3.Connection, table: str, since: float, max_rows: int = MAX_ROWS
) -> Window | None:
    """The rows of ``table`` received since ``since``, sampled down to ``max_rows``; None when
    there are none."""
    table = _table(table)
    lo = first_id_at(conn, table, since)
    if lo is None:
        return None
    (hi,) = conn.execute(f"SELECT max(id) FROM {table}").fetchone()
    step = max(1, math.ceil((hi - lo + 1) / max_rows))
    return Window(table, lo, int(hi), step)


@dataclass(frozen=True)
class IdBuckets:
    """Ids ``lo .. hi`` in ``len(xs)`` slices of ``step`` ids; ``xs[k]``: when the first row of
    slice ``k`` was received (ascending, Unix seconds)."""

    lo: int
    hi: int
    step: int
    xs: list[float]


def id_buckets(
    conn: sqlite3.Connection, table: str, since: float, max_points: int
) -> IdBuckets | None:
    """The rows received since ``since`` in at most ``max_points`` equal id slices."""
    table = _table(table)
    lo = first_id_at(conn, table, since)
    if lo is None:
        return None
    (hi,) = conn.execute(f"SELECT max(id) FROM {table}").fetchone()
    step = max(1, math.ceil((hi - lo + 1) / max_points))
    rows = conn.execute(
        "WITH RECURSIVE k(i) AS (SELECT ? UNION ALL SELECT i + ? FROM k WHERE i + ? <= ?) "
        f"SELECT (SELECT received_at FROM {table} WHERE id >= k.i ORDER BY id LIMIT 1) FROM k",
        [lo, step, step, hi],
    ).fetchall()
    xs: list[float] = []
    for (x,) in rows:  # ascending even if two ingestion workers committed slightly out of order
        xs.append(max(float(x), xs[-1]) if xs else float(x))
    return IdBuckets(lo, int(hi), step, xs)
