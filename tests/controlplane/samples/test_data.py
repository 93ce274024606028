"""Kept inputs at rest on the control plane, in process on a real store and real files: sealed on
disk, refused when altered or swapped, key rotation, the inputs of before encryption sealed by the
keeper, retention purging exactly what is due, deletion on demand by device and time range, and
the files a crash leaves behind swept."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from controlplane.app import create_app
from controlplane.db import MIGRATIONS, migrate
from controlplane.records import Incoming
from controlplane.samples import queries
from controlplane.samples.keeper import Keeper
from controlplane.samples.vault import KeyRetired
from controlplane.settings import Settings
from controlplane.store import Store
from protocol.keyring import KeyringFile
from tests.controlplane import messages as m
from tests.controlplane.auth_helpers import authorize

DAY = 86_400.0
NOW = 1_000 * DAY
MARKER = b"MARKER-a-face-in-a-picture"


def png(n: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + MARKER + str(n).encode() * 20


def settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings(broker="mqtt://127.0.0.1:1", data_dir=tmp_path / "data", **extra)


@pytest.fixture
def app(tmp_path: Path, store: Store) -> Starlette:
    app = create_app(settings(tmp_path, data_retention_days=30), store=store, mqtt=False)
    app.state.ctx.clock = lambda: NOW
    return app


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    http = httpx.AsyncClient(transport=transport, base_url="http://cp")
    async with authorize(http, app.state.ctx.store) as c:
        yield c


def keeper(app: Starlette) -> Keeper:
    k: Keeper = app.state.ctx.keeper
    return k


async def put(
    client: httpx.AsyncClient, rid: str, data: bytes, device: str = "cam-1", at: float = NOW
) -> httpx.Response:
    response = await client.put(
        f"/api/v1/samples/{device}/{rid}", content=data, headers={"Content-Type": "image/png"},
        params={"model": "digits-edge", "model_version": "1", "reason": "sampled",
                "created_at": str(at)},
    )  # fmt: skip
    assert response.status_code in (200, 201), response.text
    return response


async def get(client: httpx.AsyncClient, rid: str, device: str = "cam-1") -> httpx.Response:
    return await client.get(f"/api/v1/samples/{device}/{rid}")


def sealed_files(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "data" / "samples" / "sealed").rglob("*") if p.is_file())


def row(store_path: Path, rid: str) -> dict[str, Any]:
    db = sqlite3.connect(store_path)
    db.row_factory = sqlite3.Row
    found = db.execute("SELECT * FROM samples WHERE result_id = ?", [rid]).fetchone()
    db.close()
    return dict(found) if found else {}


# -- sealed on disk --------------------------------------------------------------------------------


async def test_an_input_is_sealed_on_disk_and_read_back(
    client: httpx.AsyncClient, app: Starlette, tmp_path: Path, store: Store
) -> None:
    answer = await put(client, "r1", png(1))
    assert answer.json()["sha256"] == hashlib.sha256(png(1)).hexdigest()
    (file,) = sealed_files(tmp_path)
    assert MARKER not in file.read_bytes()
    got = await get(client, "r1")
    assert got.status_code == 200 and got.content == png(1)
    assert got.headers["content-type"] == "image/png"
    filed = row(store.path, "r1")
    assert filed["key_id"] == keeper(app).vault.keys.ring.current_id
    assert filed["blob"] == file.relative_to(tmp_path / "data" / "samples").as_posix()
    keyring = tmp_path / "data" / "keys" / "data-keyring.json"
    assert keyring.stat().st_mode & 0o077 == 0


async def test_an_altered_swapped_or_missing_file_is_a_clear_error(
    client: httpx.AsyncClient, store: Store, tmp_path: Path
) -> None:
    for n in (1, 2, 3):
        await put(client, f"r{n}", png(n))
    root = tmp_path / "data" / "samples"
    one, two, three = (root / row(store.path, f"r{n}")["blob"] for n in (1, 2, 3))
    data = one.read_bytes()
    one.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    error = await get(client, "r1")
    assert error.status_code == 500
    assert "cannot be opened" in error.json()["error"] and "altered" in error.json()["error"]
    two.write_bytes(three.read_bytes())  # r3's sealed file in r2's place
    error = await get(client, "r2")
    assert error.status_code == 500 and "belongs to another input" in error.json()["error"]
    three.unlink()
    error = await get(client, "r3")
    assert error.status_code == 500 and "file is gone" in error.json()["error"]


async def test_a_retry_files_nothing_twice_and_other_bytes_conflict(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    assert (await put(client, "r1", png(1))).status_code == 201
    assert (await put(client, "r1", png(1))).status_code == 200
    other = await client.put(
        "/api/v1/samples/cam-1/r1", content=png(2),
        params={"model": "digits-edge", "model_version": "1", "reason": "sampled"},
    )  # fmt: skip
    assert other.status_code == 409
    assert len(sealed_files(tmp_path)) == 1


async def test_a_key_retired_while_an_input_is_filed_is_refused_in_the_transaction(
    store: Store,
) -> None:
    sample = queries.NewSample(
        "cam-1", "r1", "0" * 64, 1, "image/png", "m", "1", "sampled", 1.0, 1.0,
        blob="sealed/00/" + "0" * 32, key_id="0011223344556677",
    )  # fmt: skip
    with pytest.raises(KeyRetired):
        await store.transact(queries.insert_sample, sample, lambda key_id: False)
    assert await store.transact(queries.insert_sample, sample, lambda key_id: True)


# -- rotation --------------------------------------------------------------------------------------


async def test_rotation_reads_both_keys_then_retires_the_old_one(
    client: httpx.AsyncClient, app: Starlette, store: Store, tmp_path: Path
) -> None:
    keys = keeper(app).vault.keys
    first = keys.ring.current_id
    await put(client, "r1", png(1))
    second = keys.rotate().id  # a new current key, nothing sealed again yet
    await put(client, "r2", png(2))
    assert (row(store.path, "r1")["key_id"], row(store.path, "r2")["key_id"]) == (first, second)
    assert (await get(client, "r1")).content == png(1)
    assert (await get(client, "r2")).content == png(2)
    status = (await client.get("/api/v1/data/keys")).json()
    assert status["current"] == second and status["pending"] == 1
    assert {k["id"]: k["inputs"] for k in status["keys"]} == {first: 1, second: 1}
    assert all(set(k) == {"id", "created_at", "current", "inputs"} for k in status["keys"])

    sealing, retired = await keeper(app).finish_rotation()
    assert (sealing.rotated, retired) == (1, [first])
    assert row(store.path, "r1")["key_id"] == second
    assert (await get(client, "r1")).content == png(1)
    assert (await get(client, "r2")).content == png(2)
    assert len(sealed_files(tmp_path)) == 2  # the old file of r1 is gone
    assert KeyringFile(keys.path).load().ids == [second]
    assert keeper(app).metrics.data_sealed.value("rotation") == 1


async def test_rotation_through_the_api(
    client: httpx.AsyncClient, app: Starlette, store: Store
) -> None:
    for n in range(5):
        await put(client, f"r{n}", png(n))
    first = keeper(app).vault.keys.ring.current_id
    started = await client.post("/api/v1/data/keys/rotate")
    assert started.status_code == 202, started.text
    key_id = started.json()["key_id"]
    assert key_id != first and "secret" not in started.text
    for _ in range(500):  # the rotation runs in the background
        status = (await client.get("/api/v1/data/keys")).json()
        if status["pending"] == 0 and len(status["keys"]) == 1:
            break
        await asyncio.sleep(0.01)
    assert [k["id"] for k in status["keys"]] == [key_id]
    for n in range(5):
        assert (await get(client, f"r{n}")).content == png(n)
        assert row(store.path, f"r{n}")["key_id"] == key_id


# -- inputs stored before encryption ---------------------------------------------------------------


async def test_inputs_stored_before_encryption_are_sealed_by_the_keeper(tmp_path: Path) -> None:
    path = tmp_path / "cp.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, MIGRATIONS[:5])  # a control plane of schema 5: inputs in plaintext files
    plain = tmp_path / "data" / "samples"
    inputs = {"r1": png(1), "r2": png(2), "r3": png(1)}  # r3: the same bytes as r1 (one file)
    for rid, data in inputs.items():
        sha = hashlib.sha256(data).hexdigest()
        (plain / sha[:2]).mkdir(parents=True, exist_ok=True)
        (plain / sha[:2] / sha).write_bytes(data)
        conn.execute(
            "INSERT INTO samples (device_id, result_id, sha256, size, content_type, model,"
            " model_version, reason, created_at, received_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            ["cam-1", rid, sha, len(data), "image/png", "digits-edge", "1", "sampled", NOW, NOW],
        )
    conn.close()
    assert len([p for p in plain.rglob("*") if p.is_file()]) == 2

    store = Store(path)
    store.open()  # migrates to the current schema
    try:
        app = create_app(settings(tmp_path), store=store, mqtt=False)
        transport = httpx.ASGITransport(app=app)
        http = httpx.AsyncClient(transport=transport, base_url="http://cp")
        async with authorize(http, store) as client:
            assert (await get(client, "r1")).content == png(1)  # readable before sealing
            sealing, retired = await keeper(app).finish_rotation()
            assert (sealing.legacy, sealing.rotated, retired) == (3, 0, [])
            files = [p for p in plain.rglob("*") if p.is_file()]
            assert len(files) == 3 and all(p.is_relative_to(plain / "sealed") for p in files)
            assert not any(MARKER in p.read_bytes() for p in files)
            for rid, data in inputs.items():
                assert (await get(client, rid)).content == data
                assert row(path, rid)["key_id"] == keeper(app).vault.keys.ring.current_id
            status = (await client.get("/api/v1/data/keys")).json()
            assert (status["unsealed"], status["pending"]) == (0, 0)
            assert keeper(app).metrics.data_sealed.value("legacy") == 3
    finally:
        store.close()


# -- retention -------------------------------------------------------------------------------------


async def test_retention_purges_exactly_what_is_due(
    client: httpx.AsyncClient, app: Starlette, store: Store, tmp_path: Path
) -> None:
    # (created on the device, received here) in days before NOW; the retention is 30 days
    ages = {
        "fresh": (1, 1), "edge": (29.99, 29.99), "old": (30.01, 30.01), "ancient": (400, 400),
        "late": (31, 2),  # made long ago, arrived recently: its age counts
        "ahead": (-1000, 31),  # a device clock far ahead: the arrival counts
    }  # fmt: skip
    for rid, (made, received) in ages.items():
        app.state.ctx.clock = lambda received=received: NOW - received * DAY
        await put(client, rid, png(len(rid)), at=NOW - made * DAY)
    result = m.result(created_at=NOW - 400 * DAY)
    await store.write(Incoming("cam-1", NOW, m.batch("cam-1", [result])))
    await put(client, result.result_id, png(99), at=NOW - 400 * DAY)

    removed = await keeper(app).purge(NOW)
    assert removed.count == 5
    for rid in ("fresh", "edge"):
        assert (await get(client, rid)).status_code == 200
    for rid in ("old", "ancient", "late", "ahead", result.result_id):
        assert (await get(client, rid)).status_code == 404
    assert len(sealed_files(tmp_path)) == 2
    assert keeper(app).metrics.data_purged.value() == 5
    page = (await client.get("/api/v1/results", params={"device_id": "cam-1"})).json()
    (kept,) = page["results"]  # the result stays; its input is gone
    assert kept["result_id"] == result.result_id and "sample_url" not in kept
    assert (await keeper(app).purge(NOW)).count == 0


async def test_no_retention_keeps_every_input(tmp_path: Path, store: Store) -> None:
    app = create_app(settings(tmp_path, data_retention_days=0), store=store, mqtt=False)
    transport = httpx.ASGITransport(app=app)
    async with authorize(
        httpx.AsyncClient(transport=transport, base_url="http://cp"), store
    ) as client:
        await put(client, "r1", png(1), at=1.0)
        assert (await keeper(app).purge(10**12)).count == 0
        assert (await get(client, "r1")).status_code == 200


# -- deletion on demand ----------------------------------------------------------------------------


async def test_delete_by_device_and_time_range(
    client: httpx.AsyncClient, app: Starlette, tmp_path: Path
) -> None:
    for device in ("cam-1", "cam-2"):
        for t in (10, 20, 30):
            await put(client, f"{device}-{t}", png(t), device=device, at=NOW - t)
    query = {"device_id": "cam-1", "since": str(NOW - 25), "until": str(NOW - 10)}
    held = (await client.get("/api/v1/data", params=query)).json()
    assert (held["inputs"], held["bytes"]) == (1, len(png(20)))
    deleted = await client.delete("/api/v1/data", params=query)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted"] == 1 and deleted.json()["selection"]["device_id"] == "cam-1"
    assert (await get(client, "cam-1-20")).status_code == 404
    assert (await get(client, "cam-1-10")).status_code == 200
    audit = (await client.get("/api/v1/audit")).json()["records"]
    (record,) = [r for r in audit if r["action"] == "DELETE /api/v1/data"]
    assert record["detail"]["deleted"] == 1 and record["detail"]["device_id"] == "cam-1"
    deleted = await client.delete("/api/v1/data", params={"device_id": "cam-1"})
    assert deleted.json()["deleted"] == 2
    for t in (10, 20, 30):
        assert (await get(client, f"cam-2-{t}", device="cam-2")).status_code == 200
    assert len(sealed_files(tmp_path)) == 3

    refused = await client.delete("/api/v1/data")
    assert refused.status_code == 400 and "all=true" in refused.json()["error"]
    refused = await client.delete("/api/v1/data", params={"devices": "cam-2"})
    assert refused.status_code == 400 and "unknown parameter" in refused.json()["error"]
    assert len(sealed_files(tmp_path)) == 3

    everything = await client.delete("/api/v1/data", params={"all": "true"})
    assert everything.json()["deleted"] == 3
    assert sealed_files(tmp_path) == []
    assert keeper(app).metrics.data_deleted.value() == 6
    metrics = (await client.get("/metrics")).text
    assert "edgefleet_data_inputs_deleted_total 6" in metrics


async def test_a_large_deletion_goes_in_batches(client: httpx.AsyncClient, app: Starlette) -> None:
    from controlplane.samples import selection

    for n in range(selection.BATCH + 3):
        await store_row(app, n)
    deleted = await client.delete("/api/v1/data", params={"device_id": "cam-9"})
    assert deleted.json()["deleted"] == selection.BATCH + 3


async def store_row(app: Starlette, n: int) -> None:
    sample = queries.NewSample(
        "cam-9", f"r{n}", "0" * 64, 1, "image/png", "m", "1", "sampled", 1.0, 1.0,
        blob=f"sealed/00/{n:032x}", key_id=keeper(app).vault.keys.ring.current_id,
    )  # fmt: skip
    await app.state.ctx.store.transact(queries.insert_sample, sample)


# -- after a crash ---------------------------------------------------------------------------------


async def test_files_no_row_names_are_swept(
    client: httpx.AsyncClient, app: Starlette, tmp_path: Path
) -> None:
    await put(client, "r1", png(1))
    vault = keeper(app).vault
    orphan = vault.write("cam-1", "crashed", png(2))  # sealed, but its row never committed
    root = tmp_path / "data" / "samples"
    legacy = root / "ab" / ("ab" + "0" * 62)  # a plaintext file of before encryption, unneeded
    legacy.parent.mkdir()
    legacy.write_bytes(png(3))
    removed = await keeper(app).sweep(older_than=time.time() + 60)
    assert removed == 2
    assert not (root / orphan.name).exists() and not legacy.exists()
    assert (await get(client, "r1")).content == png(1)
    assert await keeper(app).sweep(older_than=time.time() - 3600) == 0  # recent files stay
