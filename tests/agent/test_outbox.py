"""The outbox against real SQLite files in tmp_path, plus its pure eviction decisions."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.errors import OutboxError
from agent.outbox import SCHEMA_VERSION, Outbox, file_ceiling_bytes
from agent.outbox_store import Eviction, plan_eviction

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Outbox]:
    async with Outbox(tmp_path / "outbox.db") as outbox:
        yield outbox


async def opened(path: Path) -> Outbox:
    outbox = Outbox(path)
    await outbox.open()
    return outbox


async def all_ids(outbox: Outbox) -> list[str]:
    return [row.result_id for row in await outbox.peek(10**9)]


# -- put, peek, delete ------------------------------------------------------------------------


async def test_peek_returns_the_oldest_first_and_delete_removes(box: Outbox) -> None:
    for n in range(5):
        await box.put(f"r{n}", 1000.0 + n, f"payload {n}".encode())

    first = await box.peek(2)
    assert [(r.result_id, r.created_at, r.payload) for r in first] == [
        ("r0", 1000.0, b"payload 0"),
        ("r1", 1001.0, b"payload 1"),
    ]
    assert await box.peek(2) == first, "peek must not remove"

    await box.delete([r.rowid for r in first])
    assert await all_ids(box) == ["r2", "r3", "r4"]
    stats = box.stats()
    assert (stats.depth, stats.oldest_created_at, stats.size_bytes) == (3, 1002.0, 27)


async def test_delete_of_unknown_or_repeated_ids_is_harmless(box: Outbox) -> None:
    await box.put_many([("a", 1.0, b"1"), ("b", 2.0, b"22")])
    (a, b) = await box.peek(2)
    await box.delete([a.rowid, a.rowid, 999_999])
    await box.delete([a.rowid])
    assert await all_ids(box) == ["b"]
    assert (box.stats().depth, box.stats().size_bytes) == (1, 2)


async def test_a_result_id_already_waiting_is_ignored(box: Outbox) -> None:
    await box.put("same", 1.0, b"first")
    await box.put("same", 2.0, b"second")
    await box.put_many([("new", 3.0, b"n"), ("same", 4.0, b"third"), ("new", 5.0, b"again")])
    rows = await box.peek(10)
    assert [(r.result_id, r.payload) for r in rows] == [("same", b"first"), ("new", b"n")]
    assert (box.stats().depth, box.stats().size_bytes) == (2, 6)


async def test_ids_are_never_reused_after_the_outbox_empties(box: Outbox) -> None:
    await box.put("a", 1.0, b"x")
    (old,) = await box.peek(1)
    await box.delete([old.rowid])
    assert box.stats().depth == 0 and box.stats().oldest_created_at is None
    await box.put("b", 2.0, b"y")
    (new,) = await box.peek(1)
    assert new.rowid > old.rowid  # a late delete of the old id can never remove the new row


async def test_concurrent_puts_all_land_in_fewer_commits(box: Outbox) -> None:
    before = box.commits
    await asyncio.gather(*(box.put(f"c{n}", float(n), b"p" * 100) for n in range(500)))
    assert sorted(await all_ids(box)) == sorted(f"c{n}" for n in range(500))
    commits = box.commits - before
    assert 0 < commits < 500 / 4, f"{commits} commits for 500 concurrent puts: no group commit"
    assert box.stats().depth == 500


async def test_close_commits_what_was_put_before_it(tmp_path: Path) -> None:
    outbox = await opened(tmp_path / "o.db")
    puts = [asyncio.create_task(outbox.put(f"p{n}", float(n), b"x")) for n in range(200)]
    await asyncio.sleep(0)  # every put is queued, none is committed yet
    await outbox.close()
    assert all(task.done() and task.exception() is None for task in puts)

    outbox = await opened(tmp_path / "o.db")
    try:
        assert len(await all_ids(outbox)) == 200
    finally:
        await outbox.close()


async def test_using_an_outbox_that_is_not_open_is_a_clear_error(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    with pytest.raises(OutboxError, match="not open"):
        await outbox.put("a", 1.0, b"x")
    await outbox.open()
    await outbox.close()
    await outbox.close()  # twice is fine
    with pytest.raises(OutboxError, match="not open"):
        await outbox.peek(1)


def test_the_constructor_does_no_io_and_checks_its_arguments(tmp_path: Path) -> None:
    Outbox(tmp_path / "missing" / "o.db")
    assert not (tmp_path / "missing").exists()
    with pytest.raises(ValueError, match="max_rows"):
        Outbox(tmp_path / "o.db", max_rows=0)
    with pytest.raises(ValueError, match="synchronous"):
        Outbox(tmp_path / "o.db", synchronous="OFF")  # type: ignore[arg-type]


# -- stats and reopening ----------------------------------------------------------------------


async def test_stats_are_rebuilt_from_the_file_on_open(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "o.db"  # the directory is created on open
    async with Outbox(path) as outbox:
        await outbox.put_many([(f"s{n}", 500.0 + n, b"y" * 10) for n in range(7)])
        (first,) = await outbox.peek(1)
        await outbox.delete([first.rowid])
        before = outbox.stats()
    assert (before.depth, before.oldest_created_at, before.size_bytes) == (6, 501.0, 60)

    async with Outbox(path) as outbox:
        assert outbox.stats() == before


# -- the size bound ---------------------------------------------------------------------------


async def test_the_oldest_rows_are_evicted_by_count_and_the_count_persists(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.db"
    caplog.set_level(logging.WARNING, logger="agent.outbox_store")
    async with Outbox(path, max_rows=5) as outbox:
        for n in range(8):
            await outbox.put(f"e{n}", float(n), b"z")
        assert await all_ids(outbox) == [f"e{n}" for n in range(3, 8)]
        assert (outbox.stats().depth, outbox.stats().evicted_total) == (5, 3)
        assert outbox.stats().oldest_created_at == 3.0
    warnings = [r for r in caplog.records if "evicted" in r.getMessage()]
    assert len(warnings) == 1, "the eviction warning is rate-limited"
    assert "evicted the 1 oldest" in warnings[0].getMessage()

    async with Outbox(path, max_rows=5) as outbox:
        assert (outbox.stats().depth, outbox.stats().evicted_total) == (5, 3)
        await outbox.put("e8", 8.0, b"z")
        assert outbox.stats().evicted_total == 4


async def test_the_oldest_rows_are_evicted_by_bytes(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    async with Outbox(path, max_bytes=1000) as outbox:
        for n in range(5):
            await outbox.put(f"b{n}", float(n), b"b" * 300)
        await outbox.put("small", 5.0, b"s" * 50)
        assert await all_ids(outbox) == ["b2", "b3", "b4", "small"]
        assert (outbox.stats().size_bytes, outbox.stats().evicted_total) == (950, 2)
    async with Outbox(path, max_bytes=1000) as outbox:
        assert (outbox.stats().size_bytes, outbox.stats().evicted_total) == (950, 2)


async def test_a_group_larger_than_the_bound_keeps_its_newest_rows(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.db", max_rows=4) as small:
        await small.put("old", 0.0, b"o")
        await small.put_many([(f"g{n}", float(n), b"g") for n in range(10)])
        assert await all_ids(small) == ["g6", "g7", "g8", "g9"]
        assert small.stats().evicted_total == 7


async def test_a_payload_larger_than_the_whole_bound_is_refused(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.db", max_bytes=100) as outbox:
        with pytest.raises(OutboxError, match="larger than the outbox's max_bytes"):
            await outbox.put("big", 1.0, b"x" * 101)
        assert outbox.stats().depth == 0


async def test_the_file_ceiling_fails_the_put_and_keeps_what_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    async with Outbox(path, max_file_bytes=256 * 1024) as outbox:
        stored = 0
        with pytest.raises(OutboxError, match="is full") as excinfo:
            for n in range(1000):
                await outbox.put(f"f{n}", float(n), bytes(8000))
                stored += 1
        assert str(path) in str(excinfo.value)
        assert stored > 5
        assert outbox.stats().depth == stored
        rows = await outbox.peek(stored)
        await outbox.delete([r.rowid for r in rows[: stored // 2]])
        await outbox.put("after", 1.0, bytes(8000))  # freed pages are reused
    async with Outbox(path) as outbox:
        assert outbox.stats().depth == stored - stored // 2 + 1


def test_the_file_ceiling_is_above_what_the_bounds_allow() -> None:
    assert file_ceiling_bytes(1_000_000, 512 * 2**20) > 512 * 2**20 + 1_000_000 * 100
    assert file_ceiling_bytes(10, 1000) > 10 * 4096  # room for SQLite's own pages


@pytest.mark.parametrize(
    ("stored", "incoming", "depth", "size", "max_rows", "max_bytes", "expected"),
    [
        ([(1, 10), (2, 10)], [10], 2, 20, 3, 100, Eviction()),
        ([(1, 10), (2, 10)], [10], 2, 20, 2, 100, Eviction(1, 10, 1, 0)),
        ([(1, 10), (2, 10)], [10, 10], 2, 20, 2, 100, Eviction(2, 20, 2, 0)),
        ([(1, 10), (2, 10)], [10, 10, 10], 2, 20, 2, 100, Eviction(2, 20, 2, 1)),
        ([(4, 50), (7, 5), (9, 5)], [30], 3, 60, 100, 80, Eviction(1, 50, 4, 0)),
        ([(4, 5), (7, 5), (9, 50)], [30], 3, 60, 100, 80, Eviction(2, 10, 7, 0)),
        ([(4, 5), (7, 5), (9, 50)], [30], 3, 60, 100, 40, Eviction(3, 60, 9, 0)),
        ([], [30, 30, 30], 0, 0, 100, 70, Eviction(0, 0, None, 1)),
    ],
)
def test_plan_eviction(
    stored: list[tuple[int, int]],
    incoming: list[int],
    depth: int,
    size: int,
    max_rows: int,
    max_bytes: int,
    expected: Eviction,
) -> None:
    plan = plan_eviction(
        iter(stored), incoming, depth=depth, size_bytes=size, max_rows=max_rows, max_bytes=max_bytes
    )
    assert plan == expected


# -- schema versions and bad files ------------------------------------------------------------


def _user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


async def test_an_empty_v0_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.touch()
    async with Outbox(path) as outbox:
        await outbox.put("m", 1.0, b"x")
    assert _user_version(path) == SCHEMA_VERSION >= 1
    async with Outbox(path) as outbox:  # opening a current file changes nothing
        assert await all_ids(outbox) == ["m"]
    assert _user_version(path) == SCHEMA_VERSION


async def test_a_file_from_a_newer_agent_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE outbox_v9 (x)")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = path.read_bytes()

    with pytest.raises(OutboxError, match="newer agent") as excinfo:
        await Outbox(path).open()
    assert str(path) in str(excinfo.value)
    assert path.read_bytes() == before, "a newer agent's file must not be altered"
    assert not path.with_name("o.db-wal").exists()


async def test_a_corrupt_file_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not a database " * 200)
    outbox = Outbox(path)
    with pytest.raises(OutboxError, match="not a readable outbox database") as excinfo:
        await outbox.open()
    assert str(path) in str(excinfo.value)
    await outbox.close()  # closing after a failed open is fine


async def test_a_path_that_cannot_be_a_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutboxError, match="cannot open the outbox"):
        await Outbox(tmp_path / "file" / "o.db").open()


# -- crash safety -----------------------------------------------------------------------------


def _put_until_killed(path: Path, synchronous: str, at_least: int) -> list[str]:
    """Run the child, SIGKILL it once it has printed `at_least` ids; return every id it printed."""
    argv = [sys.executable, "-m", "tests.agent.outbox_child", str(path), synchronous]
    with subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
        assert child.stdout is not None and child.stderr is not None
        output = b""
        while output.count(b"\n") < at_least:
            chunk = os.read(child.stdout.fileno(), 65536)
            assert chunk, f"the child stopped early: {child.stderr.read().decode()}"
            output += chunk
        child.send_signal(signal.SIGKILL)  # mid-stream: its producers are still putting
        child.wait()
        output += child.stdout.read()  # what it printed before it died
    assert child.returncode == -signal.SIGKILL
    return output.decode().split("\n")[:-1]  # a cut-off last line was no acknowledgement


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
async def test_every_acknowledged_put_survives_sigkill(tmp_path: Path, synchronous: str) -> None:
    path = tmp_path / "o.db"
    acknowledged = _put_until_killed(path, synchronous, at_least=3000)
    assert len(acknowledged) >= 3000

    async with Outbox(path) as outbox:
        stored = set(await all_ids(outbox))
        assert outbox.stats().depth == len(stored)
    missing = [i for i in acknowledged if i not in stored]
    assert not missing, (
        f"{len(missing)} of {len(acknowledged)} acknowledged results lost: {missing[:3]}"
    )
