"""The sample spool on a real SQLite file: bounds by rows and bytes, oldest dropped and counted,
duplicates ignored, counters and rows kept across a reopen."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.samples.store import KeptInput, SampleSpool, plan_drop


def item(n: int, size: int = 10) -> KeptInput:
    return KeptInput(f"r{n}", "digits-edge", "1", "sampled", "image/png", float(n), b"x" * size)


@pytest.mark.parametrize(
    ("sizes", "rows", "total", "max_rows", "max_bytes", "drop"),
    [
        ([10, 10, 10], 3, 30, 3, 30, 0),
        ([10, 10, 10], 3, 30, 2, 30, 1),
        ([10, 10, 10], 3, 30, 3, 15, 2),
        ([50, 1, 1], 3, 52, 3, 10, 1),  # one big old input makes room at once
        ([10, 10, 100], 3, 120, 3, 50, 3),  # the new one alone is too large: it goes too
    ],
)
def test_plan_drop(
    sizes: list[int], rows: int, total: int, max_rows: int, max_bytes: int, drop: int
) -> None:
    assert plan_drop(sizes, rows, total, max_rows, max_bytes) == drop


async def test_bounds_drop_the_oldest_and_count_them(tmp_path: Path) -> None:
    spool = SampleSpool(tmp_path / "samples.db", max_rows=3, max_bytes=45)
    await spool.open()
    try:
        for n in range(5):
            await spool.put(item(n))
        assert [s.item.result_id for s in await spool.oldest(10)] == ["r2", "r3", "r4"]
        assert await spool.put(item(9, size=30)) == 2  # bytes: 10 + 10 + 30 > 45
        assert [s.item.result_id for s in await spool.oldest(10)] == ["r4", "r9"]
        stats = await spool.stats()
        assert (stats.depth, stats.bytes, stats.dropped_total) == (2, 40, 4)
    finally:
        await spool.close()


async def test_a_result_is_kept_once_and_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "samples.db"
    spool = SampleSpool(path, max_rows=10, max_bytes=1000)
    await spool.open()
    await spool.put(item(1))
    await spool.put(item(1))
    await spool.put(item(2))
    first = (await spool.oldest(1))[0]
    await spool.done(first.rowid, "uploaded_total")
    await spool.close()
    spool = SampleSpool(path, max_rows=10, max_bytes=1000)
    await spool.open()
    try:
        rows = await spool.oldest(10)
        assert [r.item for r in rows] == [item(2)]
        await spool.done(rows[0].rowid, "rejected_total")
        await spool.done(rows[0].rowid, "rejected_total")  # gone already: not counted twice
        stats = await spool.stats()
        assert (stats.depth, stats.uploaded_total, stats.rejected_total) == (0, 1, 1)
    finally:
        await spool.close()
