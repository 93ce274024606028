"""Outbox throughput: durable results per second through ``Outbox.put`` against raw SQLite.

``python -m bench.bench_outbox`` (from the repository root, with the dev virtualenv) puts ~400-byte
encoded ``InferenceResult`` messages from many concurrent asyncio producers, each put awaited until
it is committed, with ``synchronous`` FULL and NORMAL. In the same run, on the same disk, with the
same schema and WAL settings, it writes the same rows with raw ``sqlite3`` ``executemany``: in
transactions as large as the outbox's groups were (its closest peer), in 1,000-row transactions
(the ceiling), and one row per transaction (what group commit saves). A last line repeats FULL
with random UUID4 ids to show what the time-ordered UUIDv7 ids of ``protocol.messages.new_id``
save the unique index.
Target: at least 20,000 durable results/s. It always exits 0: it reports; the tests assert."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from sqlite_utils import Database

from agent.outbox import Outbox, Row
from agent.outbox_store import MIGRATIONS, WAL_AUTOCHECKPOINT_PAGES
from protocol.messages import ClassScore, InferenceResult, encode

TARGET = 20_000
Sync = Literal["FULL", "NORMAL"]


def make_rows(n: int) -> list[Row]:
    """Realistic results: a digits classifier's top-3 answer with model name, version and hash."""
    rows: list[Row] = []
    for i in range(n):
        result = InferenceResult(
            model="digits-edge",
            model_version="1.0.0",
            artifact_sha256="3f" * 32,
            backend="litert",
            latency_ms=0.8 + (i % 7) / 10,
            request_id=f"req-{i}",
            classes=[ClassScore(index=k, label=str(k), score=0.9 / (k + 1)) for k in range(3)],
        )
        rows.append((result.result_id, result.created_at, encode(result)))
    return rows


async def outbox_rate(
    path: Path, rows: Sequence[Row], producers: int, sync: Sync
) -> tuple[float, int]:
    """Results/s through Outbox.put from `producers` concurrent tasks, and the commits it took."""
    async with Outbox(path, synchronous=sync, max_rows=len(rows) + 1) as box:

        async def produce(first: int) -> None:
            for result_id, created_at, payload in rows[first::producers]:
                await box.put(result_id, created_at, payload)

        start = time.perf_counter()
        await asyncio.gather(*(produce(p) for p in range(producers)))
        elapsed = time.perf_counter() - start
        assert box.stats().depth == len(rows), "every put must be stored"
        return len(rows) / elapsed, box.commits


def raw_rate(path: Path, rows: Sequence[Row], sync: str, per_commit: int) -> float:
    """Results/s through raw sqlite3 executemany, `per_commit` rows a transaction.

    Same schema and the same WAL settings as the outbox (journal mode, synchronous, checkpoint
    interval), so the difference is the outbox's own cost: asyncio, the thread, its bookkeeping.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {sync}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        MIGRATIONS[0](Database(conn, execute_plugins=False))
        sql = "INSERT OR IGNORE INTO outbox (result_id, created_at, payload) VALUES (?, ?, ?)"
        start = time.perf_counter()
        for i in range(0, len(rows), per_commit):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, rows[i : i + per_commit])
            conn.execute("COMMIT")
        return len(rows) / (time.perf_counter() - start)
    finally:
        conn.close()


def random_ids(rows: Sequence[Row]) -> list[Row]:
    """The same rows with random UUID4 ids: each index insert lands on a random page."""
    return [(uuid.uuid4().hex, at, payload) for _, at, payload in rows]


COLUMNS = (
    "synchronous",
    "ids    ",
    "Outbox.put/s",
    "rows/commit",
    "raw same/commit/s",
    "raw 1000/commit/s",
    "put/raw1000",
    "raw 1/commit/s",
)


def measure(args: argparse.Namespace, rows: Sequence[Row], sync: Sync, ids: str) -> float:
    """One line of the table; returns Outbox.put/s."""
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        put_rate, commits = asyncio.run(
            outbox_rate(Path(tmp) / "outbox.db", rows, args.producers, sync)
        )
        group = max(1, round(len(rows) / commits))
        same = raw_rate(Path(tmp) / "same.db", rows, sync, group)
        raw = raw_rate(Path(tmp) / "raw.db", rows, sync, 1000)
        single = raw_rate(Path(tmp) / "single.db", rows[: args.single], sync, 1)
    cells = (
        sync,
        ids,
        f"{put_rate:,.0f}",
        f"{group}",
        f"{same:,.0f}",
        f"{raw:,.0f}",
        f"{put_rate / raw:.2f}",
        f"{single:,.0f}",
    )
    print("  ".join(f"{c:>{len(h)}}" for c, h in zip(cells, COLUMNS, strict=True)))
    return put_rate


def run(args: argparse.Namespace) -> None:
    rows = make_rows(args.results)
    size = sum(len(r[2]) for r in rows) / len(rows)
    where = args.dir or tempfile.gettempdir()
    print(
        f"outbox benchmark: {len(rows):,} results of {size:.0f} bytes on average, "
        f"{args.producers} producers; SQLite {sqlite3.sqlite_version}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, files in {where}"
    )
    print("  ".join(COLUMNS))
    full = measure(args, rows, "FULL", "uuid7")
    measure(args, rows, "NORMAL", "uuid7")
    measure(args, random_ids(rows), "FULL", "uuid4")
    verdict = "met" if full >= TARGET else "MISSED"
    print(
        f"target: >= {TARGET:,} durable results/s through Outbox.put (FULL, uuid7 ids): {verdict}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_outbox", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--results", type=int, default=100_000, help="results per run")
    parser.add_argument("--producers", type=int, default=64, help="concurrent asyncio producers")
    parser.add_argument(
        "--single", type=int, default=3000, help="rows for the 1-row-per-commit run"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (a real disk)")
    args = parser.parse_args(argv)
    try:
        run(args)
    except Exception as exc:  # the benchmark reports; it never fails a build
        print(f"bench_outbox failed: {exc!r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
