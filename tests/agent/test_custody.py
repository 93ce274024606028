"""Kept inputs at rest on the device, on real SQLite files: sealed on disk (a marker never appears
in the files), files of before encryption sealed when opened, an altered or swapped row refused
and dropped, key rotation (both keys read, then the old one retired), retention purging exactly
what is due, and ``edgefleet-agent rotate-key`` as a real process."""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from agent.custody import Custody, hold_lock, retention_cutoff, rotation_due
from agent.errors import AgentError
from agent.offload.deferred import DeferredQueue, pack_inputs, unpack_inputs
from agent.samples.store import KeptInput, SampleSpool
from agent.sealing import keyring_path
from protocol.keyring import KeyringFile
from protocol.sealed import is_sealed

DAY = 86_400.0
MARKER = b"MARKER-personal-data-7f3a"
ROOT = Path(__file__).resolve().parents[2]


def on_disk(db: Path) -> bytes:
    """Every byte SQLite keeps of a file: the database and its WAL."""
    wal = db.with_name(db.name + "-wal")
    return db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def item(n: int, at: float = 1000.0) -> KeptInput:
    data = b"\x89PNG\r\n\x1a\n" + MARKER + bytes([n]) * 32
    return KeptInput(f"r{n}", "digits-edge", "1", "sampled", "image/png", at, data)


def tensors(n: int) -> bytes:
    return pack_inputs({"x": np.frombuffer(MARKER * (n + 1), dtype=np.uint8)})


@dataclass
class Files:
    keys: KeyringFile
    spool: SampleSpool
    queue: DeferredQueue
    custody: Custody


@pytest.fixture
async def files(tmp_path: Path) -> AsyncIterator[Files]:
    keys = KeyringFile(keyring_path(tmp_path))
    spool = SampleSpool(tmp_path / "samples.db", max_rows=100, max_bytes=10**6, keys=keys)
    queue = DeferredQueue(tmp_path / "deferred.db", keys=keys)
    custody = Custody(keys, [spool, queue], retention_days=1)
    await custody.open()
    await spool.open()
    await queue.open()
    try:
        yield Files(keys, spool, queue, custody)
    finally:
        await spool.close()
        await queue.close()
        await custody.close()


# -- decisions (pure) ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "days", "cutoff"),
    [(10 * DAY, 1, 9 * DAY), (10 * DAY, 0.5, 9.5 * DAY), (10 * DAY, 0, None), (DAY, 30, -29 * DAY)],
)
def test_retention_cutoff(now: float, days: float, cutoff: float | None) -> None:
    assert retention_cutoff(now, days) == cutoff


@pytest.mark.parametrize(
    ("created", "now", "days", "due"),
    [
        (0.0, 90 * DAY, 90, True),
        (0.0, 90 * DAY - 1, 90, False),
        (0.0, 10**9, 0, False),  # 0: never
        (5 * DAY, 6 * DAY, 1, True),
    ],
)
def test_rotation_due(created: float, now: float, days: float, due: bool) -> None:
    assert rotation_due(created, now, days) is due


# -- sealed on disk --------------------------------------------------------------------------------


async def test_inputs_are_sealed_on_disk_and_read_back(files: Files, tmp_path: Path) -> None:
    for n in range(3):
        await files.spool.put(item(n))
        await files.queue.put(f"d{n}", "m", 100.0, tensors(n), b"{}", 10)
    assert MARKER not in on_disk(tmp_path / "samples.db")
    assert MARKER not in on_disk(tmp_path / "deferred.db")
    got = await files.spool.oldest(10)
    assert [s.item for s in got] == [item(n) for n in range(3)]
    cases = await files.queue.due(now=200.0, limit=10)
    assert [unpack_inputs(c.inputs)["x"].tobytes() for c in cases] == [
        MARKER * (n + 1) for n in range(3)
    ]
    assert (await files.spool.stats()).bytes == sum(len(item(n).data) for n in range(3))


async def test_an_altered_or_swapped_row_is_dropped_and_counted(
    files: Files, tmp_path: Path
) -> None:
    for n in range(4):
        await files.spool.put(item(n))
    db = sqlite3.connect(tmp_path / "samples.db")
    with db:
        (blob,) = db.execute("SELECT data FROM samples WHERE result_id = 'r0'").fetchone()
        altered = blob[:-1] + bytes([blob[-1] ^ 1])
        db.execute("UPDATE samples SET data = ? WHERE result_id = 'r0'", (altered,))
        # r1's sealed bytes copied onto r2: a valid blob, but of another input
        db.execute(
            "UPDATE samples SET data = (SELECT data FROM samples WHERE result_id = 'r1')"
            " WHERE result_id = 'r2'"
        )
    db.close()
    got = await files.spool.oldest(10)
    assert [s.item.result_id for s in got] == ["r1", "r3"]
    stats = await files.spool.stats()
    assert (stats.depth, stats.unreadable_total) == (2, 2)


LEGACY_SAMPLES = """
CREATE TABLE samples (
  id INTEGER PRIMARY KEY AUTOINCREMENT, result_id TEXT NOT NULL UNIQUE, model TEXT NOT NULL,
  model_version TEXT NOT NULL, reason TEXT NOT NULL, content_type TEXT NOT NULL,
  created_at REAL NOT NULL, size INTEGER NOT NULL, data BLOB NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta VALUES ('dropped_total', 0), ('uploaded_total', 0), ('rejected_total', 7);
PRAGMA user_version = 1;
"""
LEGACY_DEFERRED = """
CREATE TABLE deferred (
  id INTEGER PRIMARY KEY AUTOINCREMENT, result_id TEXT NOT NULL UNIQUE, model TEXT NOT NULL,
  created_at REAL NOT NULL, next_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  inputs BLOB NOT NULL, result BLOB NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta VALUES ('dropped_total', 0), ('expired_total', 0), ('failed_total', 0);
PRAGMA user_version = 1;
"""


async def test_files_of_before_encryption_are_sealed_when_opened(tmp_path: Path) -> None:
    samples, deferred = tmp_path / "samples.db", tmp_path / "deferred.db"
    for path, schema in ((samples, LEGACY_SAMPLES), (deferred, LEGACY_DEFERRED)):
        db = sqlite3.connect(path)
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(schema)
        db.close()
    db = sqlite3.connect(samples)
    with db:
        for n in range(5):
            i = item(n)
            db.execute(
                "INSERT INTO samples (result_id, model, model_version, reason, content_type,"
                " created_at, size, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (i.result_id, i.model, i.model_version, i.reason, i.content_type, i.created_at,
                 len(i.data), i.data),
            )  # fmt: skip
    db.close()
    db = sqlite3.connect(deferred)
    with db:
        db.execute(
            "INSERT INTO deferred (result_id, model, created_at, next_at, inputs, result)"
            " VALUES ('d1', 'm', 1, 1, ?, '{}')",
            (tensors(1),),
        )
    db.close()
    assert MARKER in on_disk(samples) and MARKER in on_disk(deferred)

    keys = KeyringFile(keyring_path(tmp_path))
    spool = SampleSpool(samples, max_rows=100, max_bytes=10**6, keys=keys)
    queue = DeferredQueue(deferred, keys=keys)
    await spool.open()
    await queue.open()
    try:
        assert MARKER not in on_disk(samples), "the plaintext pages are overwritten"
        assert MARKER not in on_disk(deferred)
        assert [s.item for s in await spool.oldest(10)] == [item(n) for n in range(5)]
        (case,) = await queue.due(now=10.0, limit=10)
        assert unpack_inputs(case.inputs)["x"].tobytes() == MARKER * 2
        stats = await spool.stats()
        assert (stats.rejected_total, stats.purged_total) == (7, 0)  # counters kept, added
    finally:
        await spool.close()
        await queue.close()
    # opened again: schema 2 now, nothing sealed twice
    spool = SampleSpool(samples, max_rows=100, max_bytes=10**6, keys=KeyringFile(keys.path))
    await spool.open()
    try:
        assert [s.item for s in await spool.oldest(10)] == [item(n) for n in range(5)]
    finally:
        await spool.close()


# -- rotation --------------------------------------------------------------------------------------


async def test_rotation_reads_both_keys_then_retires_the_old_one(files: Files) -> None:
    first = files.keys.load().current_id
    await files.spool.put(item(1))
    await files.queue.put("d1", "m", 100.0, tensors(1), b"{}", 10)
    second = files.keys.rotate().id
    await files.spool.put(item(2))  # under the new key
    assert await files.spool.key_ids() == {first, second}
    assert [s.item for s in await files.spool.oldest(10)] == [item(1), item(2)]
    assert len(await files.queue.due(now=200.0, limit=10)) == 1

    done = await files.custody.finish_rotation()
    assert done.resealed == {"sample spool": 1, "deferred queue": 1}
    assert done.retired == [first]
    assert files.keys.ring.ids == [second]
    assert await files.spool.key_ids() == await files.queue.key_ids() == {second}
    assert [s.item for s in await files.spool.oldest(10)] == [item(1), item(2)]
    (case,) = await files.queue.due(now=200.0, limit=10)
    assert unpack_inputs(case.inputs)["x"].tobytes() == MARKER * 2
    assert KeyringFile(files.keys.path).load().ids == [second]  # on disk too


async def test_a_rotation_seals_everything_again_in_batches(files: Files) -> None:
    for n in range(100):  # more than one batch (RESEAL_BATCH)
        await files.spool.put(item(n))
    done = await files.custody.rotate()
    assert done.key_id == files.keys.ring.current_id and len(done.retired) == 1
    assert done.resealed["sample spool"] == 100
    assert await files.spool.key_ids() == {done.key_id}
    assert len(await files.spool.oldest(200)) == 100


async def test_the_running_agent_rotates_when_its_key_is_old(tmp_path: Path) -> None:
    now = [1000.0]
    keys = KeyringFile(keyring_path(tmp_path), clock=lambda: now[0])
    spool = SampleSpool(tmp_path / "samples.db", max_rows=100, max_bytes=10**6, keys=keys)
    custody = Custody(keys, [spool], retention_days=0, rotation_days=30, clock=lambda: now[0])
    await custody.open()
    await spool.open()
    try:
        first = keys.ring.current_id
        await spool.put(item(1, at=now[0]))
        now[0] += 29 * DAY
        await custody.maintain()
        assert keys.ring.current_id == first  # not due yet
        now[0] += DAY
        await custody.maintain()
        assert keys.ring.current_id != first and keys.ring.ids == [keys.ring.current_id]
        assert [s.item for s in await spool.oldest(10)] == [item(1, at=1000.0)]
    finally:
        await spool.close()
        await custody.close()


# -- retention -------------------------------------------------------------------------------------


async def test_retention_purges_exactly_what_is_due(files: Files, tmp_path: Path) -> None:
    now = 100 * DAY
    ages_days = {0: 0.0, 1: 0.5, 2: 0.999, 3: 1.001, 4: 2.0, 5: 40.0}
    for n, age in ages_days.items():
        await files.spool.put(item(n, at=now - age * DAY))
        await files.queue.put(f"d{n}", "m", now - age * DAY, tensors(n), b"{}", 10)
    counts = await files.custody.purge(now)  # retention_days=1
    assert counts == {"sample spool": 3, "deferred queue": 3}
    assert [s.item.result_id for s in await files.spool.oldest(10)] == ["r0", "r1", "r2"]
    left = await files.queue.due(now=now, limit=10)
    assert sorted(c.result_id for c in left) == ["d0", "d1", "d2"]
    assert (await files.spool.stats()).purged_total == 3
    assert (await files.queue.stats()).purged_total == 3
    assert await files.custody.purge(now) == {"sample spool": 0, "deferred queue": 0}
    for db in ("samples.db", "deferred.db"):
        assert bytes([3]) * 32 not in on_disk(tmp_path / db)


async def test_no_retention_keeps_everything(tmp_path: Path) -> None:
    keys = KeyringFile(keyring_path(tmp_path))
    spool = SampleSpool(tmp_path / "samples.db", max_rows=100, max_bytes=10**6, keys=keys)
    custody = Custody(keys, [spool], retention_days=0)
    await custody.open()
    await spool.open()
    try:
        await spool.put(item(1, at=0.0))
        assert await custody.purge(10**10) == {}
        assert len(await spool.oldest(10)) == 1
    finally:
        await spool.close()
        await custody.close()


# -- edgefleet-agent rotate-key --------------------------------------------------------------------


def rotate_key(data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "rotate-key", "--device-id", "cam-1",
         "--data-dir", str(data_dir)],
        capture_output=True, text=True, cwd=ROOT, timeout=120, env={**os.environ, **env},
    )  # fmt: skip


async def test_rotate_key_command(tmp_path: Path) -> None:
    keys = KeyringFile(keyring_path(tmp_path))
    spool = SampleSpool(tmp_path / "samples.db", max_rows=100, max_bytes=10**6, keys=keys)
    await spool.open()
    for n in range(3):
        await spool.put(item(n))
    first = keys.ring.current_id
    await spool.close()

    lock = hold_lock(keys.path.parent / "keyring.lock", exclusive=False)  # "an agent runs"
    try:
        refused = rotate_key(tmp_path)
    finally:
        os.close(lock)
    assert refused.returncode == 1
    assert "an agent is running" in refused.stderr and "Traceback" not in refused.stderr
    assert KeyringFile(keys.path).load().current_id == first

    done = rotate_key(tmp_path)
    assert done.returncode == 0, done.stderr
    ring = KeyringFile(keys.path).load()
    assert ring.current_id != first and ring.ids == [ring.current_id]
    assert f"new key {ring.current_id}" in done.stdout and f"retired {first}" in done.stdout
    assert "3 inputs sealed again in the sample spool" in done.stdout
    spool = SampleSpool(tmp_path / "samples.db", max_rows=100, max_bytes=10**6,
                        keys=KeyringFile(keys.path))  # fmt: skip
    await spool.open()
    try:
        assert [s.item for s in await spool.oldest(10)] == [item(n) for n in range(3)]
        assert await spool.key_ids() == {ring.current_id}
    finally:
        await spool.close()


def test_an_agent_will_not_start_during_a_rotation(tmp_path: Path) -> None:
    path = keyring_path(tmp_path).parent / "keyring.lock"
    path.parent.mkdir(parents=True)
    lock = hold_lock(path, exclusive=True)
    try:
        with pytest.raises(AgentError, match="rotate-key` is running"):
            hold_lock(path, exclusive=False)
    finally:
        os.close(lock)


async def test_a_wrapping_key_from_the_environment_wraps_the_agents_keyring(
    tmp_path: Path,
) -> None:
    wrap = bytes(range(32))
    keys = KeyringFile(keyring_path(tmp_path))
    spool = SampleSpool(tmp_path / "samples.db", max_rows=100, max_bytes=10**6, keys=keys)
    await spool.open()
    await spool.put(item(1))
    await spool.close()
    done = rotate_key(tmp_path, EDGEFLEET_DATA_KEY=base64.b64encode(wrap).decode())
    assert done.returncode == 0, done.stderr
    assert is_sealed(keys.path.read_bytes())  # wrapped in place
    refused = rotate_key(tmp_path)
    assert refused.returncode == 1 and "it is wrapped" in refused.stderr
    spool = SampleSpool(tmp_path / "samples.db", max_rows=100, max_bytes=10**6,
                        keys=KeyringFile(keys.path, wrap=wrap))  # fmt: skip
    await spool.open()
    try:
        assert [s.item for s in await spool.oldest(10)] == [item(1)]
    finally:
        await spool.close()
