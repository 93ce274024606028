"""The store on real SQLite: schema migrations, deduplication, device state, paging, filters."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from sqlite_utils import Database

from controlplane.db import MIGRATIONS, migrate
from controlplane.errors import BadRequest, StoreClosed, StoreError
from controlplane.records import Incoming, top_class
from controlplane.store import (
    ResultQuery,
    Store,
    decode_cursor,
    device_state,
    encode_cursor,
)
from protocol.messages import InferenceResult
from tests.controlplane import messages as m


def arrive(message: m.Status | m.Telemetry | m.ResultBatch, at: float | None = None) -> Incoming:
    return Incoming(message.device_id, time.time() if at is None else at, message)


# -- pure decisions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reported", "age", "expected"),
    [
        ("online", 0.0, "online"),
        ("online", 59.9, "online"),
        ("online", 60.0, "online"),
        ("online", 60.1, "offline"),  # silent too long, even without a will
        ("offline", 0.0, "offline"),  # the will
        ("offline", 1000.0, "offline"),
    ],
)
def test_device_state(reported: str, age: float, expected: str) -> None:
    assert device_state(reported, 1000.0 - age, 1000.0, 60.0) == expected


def test_cursor_round_trip_and_rejections() -> None:
    assert decode_cursor(encode_cursor(42, "desc"), "desc") == 42
    assert decode_cursor(encode_cursor(7, "asc"), "asc") == 7
    for bad in ["", "abc", "!!!", encode_cursor(3, "desc") + "!", "ZA", "YTE"]:
        with pytest.raises(BadRequest) as info:
            decode_cursor(bad, "desc")
        assert info.value.parameter == "cursor"
    with pytest.raises(BadRequest, match="another order"):
        decode_cursor(encode_cursor(3, "asc"), "desc")


def test_top_class_is_the_best_score_and_falls_back_to_the_index() -> None:
    assert top_class(m.result(label="3", score=0.8)) == ("3", 0.8)
    raw = InferenceResult(model="x", model_version="1", artifact_sha256=m.SHA, backend="litert",
                          latency_ms=1.0)  # fmt: skip
    assert top_class(raw) == (None, None)
    unlabelled = m.result().model_copy(update={"classes": [m.ClassScore(index=4, score=0.5)]})
    assert top_class(unlabelled) == ("4", 0.5)


# -- migrations -----------------------------------------------------------------------------------


def test_a_new_store_is_at_the_latest_version_and_reopening_keeps_the_data(tmp_path: Path) -> None:
    path = tmp_path / "cp.db"
    first = Store(path)
    first.open()
    first.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute(
        "INSERT INTO devices (id, state, first_seen, last_seen) VALUES ('d', 'online', 1, 1)"
    )
    conn.commit()
    conn.close()
    again = Store(path)
    again.open()  # no migration runs again (it would fail: the tables exist)
    again.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT id FROM devices").fetchall() == [("d",)]
    conn.close()


def test_migrate_applies_only_the_pending_migrations(tmp_path: Path) -> None:
    calls: list[str] = []

    def one(db: Database) -> None:
        calls.append("one")
        db["a"].create({"x": int})

    def two(db: Database) -> None:
        calls.append("two")
        db["b"].create({"y": int})

    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    assert migrate(conn, [one]) == 0
    assert migrate(conn, [one, two]) == 1
    assert migrate(conn, [one, two]) == 2
    assert calls == ["one", "two"]
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2


def test_a_failed_migration_is_rolled_back(tmp_path: Path) -> None:
    def broken(db: Database) -> None:
        db["c"].create({"z": int})
        raise RuntimeError("boom")

    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    with pytest.raises(RuntimeError):
        migrate(conn, [broken])
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'c'").fetchall() == []


def test_a_store_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cp.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        Store(path).open()


def test_an_unusable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreError, match="cannot open the store"):
        Store(tmp_path / "file" / "cp.db").open()


# -- results --------------------------------------------------------------------------------------


async def test_duplicates_are_stored_once_and_counted(store: Store) -> None:
    results = [m.result() for _ in range(5)]
    first = m.batch("dev-1", results)
    redelivered = m.batch("dev-1", results[2:] + [m.result()])  # 3 old, 1 new
    await store.write(arrive(first))
    await store.write(arrive(redelivered), arrive(redelivered))  # twice in one group too
    page = await store.results(ResultQuery(device_id="dev-1", limit=100))
    assert page.total == 6
    assert sorted(r["result_id"] for r in page.results) == sorted(
        [r.result_id for r in results] + [redelivered.results[-1].result_id]
    )
    assert store.metrics.results_ingested.value() == 6
    assert store.metrics.results_duplicate.value() == 3 + 4


async def test_the_same_result_id_from_two_devices_is_two_results(store: Store) -> None:
    r = m.result()
    await store.write(arrive(m.batch("a", [r])), arrive(m.batch("b", [r])))
    assert (await store.results(ResultQuery())).total == 2


async def test_a_result_keeps_what_produced_it(store: Store) -> None:
    r = m.result(label="7", score=0.875)
    await store.write(arrive(m.batch("dev-1", [r]), at=1234.5))
    (row,) = (await store.results(ResultQuery())).results
    assert row["result_id"] == r.result_id and row["device_id"] == "dev-1"
    assert (row["model"], row["model_version"], row["artifact_sha256"]) == (
        "digits-edge",
        "1",
        m.SHA,
    )
    assert (row["top_label"], row["top_score"], row["received_at"]) == ("7", 0.875, 1234.5)
    assert row["classes"][1] == {"index": 7, "label": "7", "score": 0.875}


async def test_paging_visits_every_row_exactly_once_while_rows_arrive(store: Store) -> None:
    for order in ("desc", "asc"):
        await store.write(arrive(m.batch(f"p-{order}", [m.result() for _ in range(25)])))
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = await store.results(
                ResultQuery(device_id=f"p-{order}", limit=10, cursor=cursor, order=order)
            )
            seen += [r["result_id"] for r in page.results]
            pages += 1
            if pages == 1:  # new rows arrive between pages
                await store.write(arrive(m.batch(f"p-{order}", [m.result() for _ in range(5)])))
            if page.next_cursor is None:
                break
            cursor = decode_cursor(page.next_cursor, order)
        assert len(seen) == len(set(seen))
        expected = 30 if order == "asc" else 25  # newest first cannot see rows newer than page 1
        assert len(seen) == expected, order


async def test_a_full_last_page_has_no_next_cursor(store: Store) -> None:
    await store.write(arrive(m.batch("d", [m.result() for _ in range(10)])))
    page = await store.results(ResultQuery(limit=10))
    assert len(page.results) == 10 and page.next_cursor is None


async def test_filters_by_device_model_and_time(store: Store) -> None:
    await store.write(
        arrive(m.batch("a", [m.result("m1", created_at=100.0), m.result("m2", created_at=200.0)])),
        arrive(m.batch("b", [m.result("m1", created_at=300.0)])),
    )

    async def ids(**query: object) -> list[tuple[str, str, float]]:
        page = await store.results(ResultQuery(**query))  # type: ignore[arg-type]
        assert page.total == len(page.results)
        return [(r["device_id"], r["model"], r["created_at"]) for r in page.results]

    assert await ids(device_id="a") == [("a", "m2", 200.0), ("a", "m1", 100.0)]
    assert await ids(model="m1") == [("b", "m1", 300.0), ("a", "m1", 100.0)]
    assert await ids(since=200.0) == [("b", "m1", 300.0), ("a", "m2", 200.0)]
    assert await ids(device_id="a", model="m1", since=50.0) == [("a", "m1", 100.0)]
    assert await ids(device_id="nobody") == []


async def test_writes_are_grouped_into_few_commits(store: Store) -> None:
    before = store.commits
    await store.write(*[arrive(m.batch("g", [m.result()])) for _ in range(200)])
    assert (await store.results(ResultQuery(device_id="g"))).total == 200
    assert store.commits - before < 50, "group commit: many messages share a commit"


# -- devices and telemetry -------------------------------------------------------------------------


async def test_birth_then_will_marks_offline_and_keeps_the_description(store: Store) -> None:
    now = time.time()
    await store.write(arrive(m.birth("dev-1", fallback="libedgetpu.so.1 not found"), at=now))
    view = await store.device("dev-1", now=now, offline_after_s=60)
    assert view is not None and view["state"] == "online"
    assert view["agent_version"] == "0.1.0" and view["tags"] == {"site": "test"}
    assert view["models"][0]["artifact_sha256"] == m.SHA
    assert view["accelerators"][0] == {"kind": "edgetpu", "present": False,
                                       "detail": "libedgetpu.so.1 missing"}  # fmt: skip
    assert (view["backend"], view["fallback_reason"]) == ("litert", "libedgetpu.so.1 not found")
    await store.write(arrive(m.will("dev-1"), at=now + 1))
    view = await store.device("dev-1", now=now + 1, offline_after_s=60)
    assert view is not None and view["state"] == "offline" and view["reported_state"] == "offline"
    assert view["agent_version"] == "0.1.0" and view["models"], "the will keeps the description"
    await store.write(arrive(m.birth("dev-1"), at=now + 2))
    view = await store.device("dev-1", now=now + 2, offline_after_s=60)
    assert view is not None and view["state"] == "online" and view["fallback_reason"] is None


async def test_a_silent_device_counts_offline(store: Store) -> None:
    await store.write(arrive(m.birth("quiet"), at=1000.0), arrive(m.birth("chatty"), at=1000.0))
    await store.write(arrive(m.telemetry("chatty"), at=1100.0))
    now, after = 1100.0, 60.0
    views = {d["id"]: d["state"] for d in await store.devices(now=now, offline_after_s=after)}
    assert views == {"chatty": "online", "quiet": "offline"}
    online = await store.devices(state="online", now=now, offline_after_s=after)
    offline = await store.devices(state="offline", now=now, offline_after_s=after)
    assert [d["id"] for d in online] == ["chatty"] and [d["id"] for d in offline] == ["quiet"]
    assert await store.device_counts(now=now, offline_after_s=after) == {"online": 1, "offline": 1}


async def test_results_and_telemetry_of_an_unknown_device_create_it_online(store: Store) -> None:
    now = time.time()
    await store.write(arrive(m.batch("r-only", [m.result()]), at=now))
    await store.write(arrive(m.telemetry("t-only"), at=now))
    for device in ("r-only", "t-only"):
        view = await store.device(device, now=now, offline_after_s=60)
        assert view is not None and view["state"] == "online" and view["first_seen"] == now
    assert await store.device("nobody", now=now, offline_after_s=60) is None


async def test_results_never_bring_a_device_back_online(store: Store) -> None:
    now = time.time()
    await store.write(arrive(m.birth("d"), at=now), arrive(m.will("d"), at=now + 1))
    await store.write(arrive(m.batch("d", [m.result()]), at=now + 2))  # a late, redelivered batch
    view = await store.device("d", now=now + 2, offline_after_s=60)
    assert view is not None and view["state"] == "offline" and view["last_seen"] == now + 2


async def test_the_latest_telemetry_by_sent_at_wins(store: Store) -> None:
    await store.write(arrive(m.telemetry("d", sent_at=200.0, p50=2.0)))
    await store.write(arrive(m.telemetry("d", sent_at=100.0, p50=1.0, backend="edgetpu")))  # late
    view = await store.device("d", now=time.time(), offline_after_s=60)
    assert view is not None
    assert view["telemetry"]["latency"]["p50_ms"] == 2.0 and view["telemetry_at"] == 200.0
    assert view["backend"] == "litert", "an older sample does not change the backend"


async def test_telemetry_newest_first_with_since_and_limit(store: Store) -> None:
    await store.write(
        *[arrive(m.telemetry("d", sent_at=float(t), p50=float(t))) for t in range(10)]
    )
    samples = await store.telemetry("d", limit=3)
    assert [s["sent_at"] for s in samples] == [9.0, 8.0, 7.0]
    assert samples[0]["latency"]["p50_ms"] == 9.0 and "received_at" in samples[0]
    assert [s["sent_at"] for s in await store.telemetry("d", since=8.0)] == [9.0, 8.0]
    assert await store.telemetry("other") == []


async def test_a_closed_store_refuses_reads_and_writes(tmp_path: Path) -> None:
    s = Store(tmp_path / "cp.db")
    s.open()
    await s.write(arrive(m.birth("d")))
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreClosed):
        s.submit(arrive(m.birth("d")))
    with pytest.raises(StoreClosed):
        await s.devices(now=time.time(), offline_after_s=60)


async def test_close_commits_what_was_queued(tmp_path: Path) -> None:
    s = Store(tmp_path / "cp.db")
    s.open()
    acked: list[str] = []
    for i in range(20):
        s.submit(arrive(m.batch("d", [m.result()])), done=lambda i=i: acked.append(str(i)))
    s.close()
    assert len(acked) == 20
    conn = sqlite3.connect(tmp_path / "cp.db")
    assert conn.execute("SELECT count(*) FROM results").fetchone()[0] == 20
    conn.close()


# -- transactions (the registry's and the rollouts' writes) ---------------------------------------


def _count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM scratch").fetchone()[0])


async def test_transact_commits_and_returns_the_value(store: Store) -> None:
    def create(conn: sqlite3.Connection) -> int:
        conn.execute("CREATE TABLE scratch (n INTEGER)")
        conn.executemany("INSERT INTO scratch VALUES (?)", [(1,), (2,)])
        return _count(conn)

    assert await store.transact(create) == 2
    assert await store.read(_count) == 2


async def test_a_refusal_inside_transact_rolls_back_and_reaches_the_caller(store: Store) -> None:
    await store.transact(lambda conn: conn.execute("CREATE TABLE scratch (n INTEGER)"))

    def insert_then_refuse(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO scratch VALUES (1)")
        raise BadRequest("n", "refused")

    with pytest.raises(BadRequest, match="refused"):
        await store.transact(insert_then_refuse)
    assert await store.read(_count) == 0


async def test_an_sql_error_inside_transact_is_a_store_error(store: Store) -> None:
    with pytest.raises(StoreError, match="no such table"):
        await store.transact(lambda conn: conn.execute("INSERT INTO nowhere VALUES (1)"))
    # the writer thread survives it
    await store.transact(lambda conn: conn.execute("CREATE TABLE scratch (n INTEGER)"))
    assert await store.read(_count) == 0


async def test_a_flush_after_transact_waits_for_it(store: Store) -> None:
    await store.transact(lambda conn: conn.execute("CREATE TABLE scratch (n INTEGER)"))
    pending = asyncio.ensure_future(
        store.transact(lambda conn: conn.execute("INSERT INTO scratch VALUES (7)"))
    )
    await asyncio.sleep(0)  # the transaction is queued before the barrier
    await store.flush()
    assert await store.read(_count) == 1
    await pending
