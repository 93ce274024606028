"""Bounded reads of the large tables: the id range of a time range by binary search on the
rowid, and sums over an evenly spaced sample scaled back to the whole."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from controlplane.console.fleet import _bucketed
from controlplane.console.scan import first_id_at, id_buckets, window
from controlplane.console.series import timeline
from controlplane.db import migrate

ROWS = 2000


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    c = sqlite3.connect(tmp_path / "cp.db", isolation_level=None)
    c.execute("PRAGMA synchronous = OFF")
    migrate(c)
    c.execute("BEGIN")
    c.executemany(
        "INSERT INTO telemetry (id, device_id, ts, received_at, inferences, errors, body)"
        " VALUES (?, 'd', ?, ?, 10, ?, '{}')",
        [(i, 1000.0 + i, 1000.5 + i, i % 2) for i in range(1, ROWS + 1)],
    )
    c.execute("DELETE FROM telemetry WHERE id BETWEEN 500 AND 900")  # a gap in the ids
    c.execute("COMMIT")
    return c


@pytest.mark.parametrize(
    ("t", "expected"),
    [(0.0, 1), (1001.5, 1), (1001.6, 2), (1499.0, 499), (1500.0, 901), (1801.0, 901),
     (1902.0, 902), (3000.5, 2000), (3000.6, None)],
)  # fmt: skip
def test_the_first_row_received_at_or_after(
    conn: sqlite3.Connection, t: float, expected: int | None
) -> None:
    assert first_id_at(conn, "telemetry", t) == expected


def test_an_empty_table_has_no_range(tmp_path: Path) -> None:
    c = sqlite3.connect(tmp_path / "empty.db", isolation_level=None)
    migrate(c)
    assert first_id_at(c, "results", 0) is None and window(c, "results", 0) is None


def test_only_the_two_append_only_tables_are_scanned(conn: sqlite3.Connection) -> None:
    with pytest.raises(ValueError):
        first_id_at(conn, "devices", 0)


def test_a_sampled_window_estimates_the_sums(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN")
    conn.executemany(  # refill the gap: a sample needs evenly spaced rows to be exact
        "INSERT INTO telemetry (id, device_id, ts, received_at, inferences, errors, body)"
        " VALUES (?, 'd', ?, ?, 10, ?, '{}')",
        [(i, 1000.0 + i, 1000.5 + i, i % 2) for i in range(500, 901)],
    )
    conn.execute("COMMIT")
    line = timeline(3001.0, 2000.0, max_points=21)  # buckets of 100 s
    exact = window(conn, "telemetry", 0)
    sampled = window(conn, "telemetry", 0, max_rows=500)
    assert exact is not None and sampled is not None
    assert exact.step == 1 and not exact.sampled and exact.rows == ROWS
    assert sampled.step == 4 and sampled.rows == 500
    whole = {b: n for b, n in _bucketed(conn, exact, line, "ts", "sum(t.inferences)")}
    part = {
        b: n * sampled.step for b, n in _bucketed(conn, sampled, line, "ts", "sum(t.inferences)")
    }
    assert sum(whole.values()) == 10 * ROWS
    assert sum(part.values()) == 10 * ROWS
    for b, n in whole.items():
        assert abs(part.get(b, 0) - n) <= 10 * sampled.step, b


def test_id_buckets_slice_the_range_and_time_each_slice(conn: sqlite3.Connection) -> None:
    buckets = id_buckets(conn, "telemetry", 1500.0, max_points=10)
    assert buckets is not None
    assert (buckets.lo, buckets.hi) == (901, 2000) and buckets.step == 110
    assert len(buckets.xs) == 10 and buckets.xs == sorted(buckets.xs)
    assert buckets.xs[0] == 1901.5 and buckets.xs[1] == 1000.5 + 1011
    assert id_buckets(conn, "telemetry", 5000.0, 10) is None
