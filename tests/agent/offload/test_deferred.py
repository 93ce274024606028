"""The deferred queue: persistence across a restart, per-model bounds, TTL, counters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.errors import OutboxError
from agent.offload.deferred import DeferredQueue, pack_inputs, unpack_inputs


async def put(
    q: DeferredQueue, rid: str, model: str = "m", at: float = 100.0, cap: int = 10
) -> int:
    return await q.put(rid, model, at, pack_inputs({"x": np.ones((1, 2), np.float32)}), b"{}", cap)


async def test_cases_survive_a_restart(tmp_path: Path) -> None:
    x = np.arange(64, dtype=np.float32).reshape(1, 8, 8, 1)
    q = DeferredQueue(tmp_path / "deferred.db")
    await q.open()
    await q.put("r1", "digits", 100.0, pack_inputs({"input": x}), b'{"result_id":"r1"}', 10)
    await q.close()

    q = DeferredQueue(tmp_path / "deferred.db")
    await q.open()
    try:
        (case,) = await q.due(now=100.0, limit=10)
        assert (case.result_id, case.model, case.created_at) == ("r1", "digits", 100.0)
        assert case.result == b'{"result_id":"r1"}'
        np.testing.assert_array_equal(unpack_inputs(case.inputs)["input"], x)
        assert (await q.stats()).depth == 1
    finally:
        await q.close()


async def test_a_put_of_a_waiting_id_is_ignored(tmp_path: Path) -> None:
    q = DeferredQueue(tmp_path / "d.db")
    await q.open()
    try:
        await put(q, "r1")
        await put(q, "r1")
        assert (await q.stats()).depth == 1
    finally:
        await q.close()


async def test_the_bound_drops_the_models_oldest_and_counts_them(tmp_path: Path) -> None:
    q = DeferredQueue(tmp_path / "d.db")
    await q.open()
    try:
        await put(q, "other", model="n", cap=2)
        for i in range(5):
            await put(q, f"r{i}", cap=3)
        due = await q.due(now=1e9, limit=100)
        assert [c.result_id for c in due] == ["other", "r2", "r3", "r4"]  # other model untouched
        stats = await q.stats()
        assert (stats.depth, stats.dropped_total) == (4, 2)
    finally:
        await q.close()


async def test_ttl_expires_only_that_models_old_cases(tmp_path: Path) -> None:
    q = DeferredQueue(tmp_path / "d.db")
    await q.open()
    try:
        await put(q, "old", at=10.0)
        await put(q, "new", at=50.0)
        await put(q, "other", model="n", at=10.0)
        assert await q.expire("m", before=20.0) == 1
        assert [c.result_id for c in await q.due(1e9, 10)] == ["other", "new"]
        assert (await q.stats()).expired_total == 1
    finally:
        await q.close()


async def test_retry_at_postpones_and_done_removes(tmp_path: Path) -> None:
    q = DeferredQueue(tmp_path / "d.db")
    await q.open()
    try:
        await put(q, "a", at=100.0)
        await put(q, "b", at=100.0)
        a, b = await q.due(100.0, 10)
        await q.retry_at(a.rowid, 200.0)
        assert [c.result_id for c in await q.due(150.0, 10)] == ["b"]
        assert await q.next_due() == 100.0
        await q.done(b.rowid)
        await q.done(a.rowid, "failed_total")
        stats = await q.stats()
        assert (stats.depth, stats.failed_total, stats.dropped_total) == (0, 1, 0)
        assert await q.next_due() is None
    finally:
        await q.close()
    q = DeferredQueue(tmp_path / "d.db")
    await q.open()
    try:
        assert (await q.stats()).failed_total == 1  # counters persist
    finally:
        await q.close()


async def test_a_closed_queue_says_so(tmp_path: Path) -> None:
    q = DeferredQueue(tmp_path / "d.db")
    with pytest.raises(OutboxError, match="not open"):
        await q.stats()


async def test_a_newer_file_is_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "d.db"
    sqlite3.connect(path).execute("PRAGMA user_version = 99").connection.close()
    q = DeferredQueue(path)
    with pytest.raises(OutboxError, match="newer agent"):
        await q.open()


def test_inputs_load_without_pickle() -> None:
    packed = pack_inputs({"a": np.zeros(3, np.uint8), "b": np.ones((2, 2), np.float32)})
    got = unpack_inputs(packed)
    assert got["a"].dtype == np.uint8 and got["b"].shape == (2, 2)
