"""The rollout controller end to end in process: the real app (store, ingestion, controller, API)
on the real Mosquitto, with devices played by :mod:`tests.controlplane.rollouts.devices`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.api import Context
from controlplane.app import create_app
from controlplane.settings import Settings
from tests.controlplane.auth_helpers import authorize
from tests.controlplane.rollouts.devices import (
    EDGETPU_SHA,
    PlayedDevice,
    add_release,
    broken,
    eventually,
    key_of,
    silent,
    slow,
)

pytestmark = pytest.mark.slow


@asynccontextmanager
async def control_plane(
    broker_url: str, data_dir: Path, unique: str, **change: Any
) -> AsyncIterator[tuple[Context, httpx.AsyncClient]]:
    settings = Settings(
        broker=broker_url, data_dir=data_dir, client_id=f"cp-{unique}", rollout_tick_s=0.05,
        **change,
    )  # fmt: skip
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        ctx: Context = app.state.ctx
        assert ctx.ingestor is not None and ctx.rollouts is not None
        await ctx.ingestor.client.wait_connected(10)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        http = authorize(httpx.AsyncClient(transport=transport, base_url="http://cp"), ctx.store)
        async with http:
            yield ctx, http


@asynccontextmanager
async def fleet(
    broker_url: str, data_dir: Path, unique: str, n: int, **kwargs: Any
) -> AsyncIterator[list[PlayedDevice]]:
    key = key_of(data_dir).public
    devices = [
        PlayedDevice(broker_url, f"{unique}-d{i}", key, tags={"site": unique}, **kwargs)
        for i in range(n)
    ]
    try:
        for d in devices:
            await d.start()
        yield devices
    finally:
        for d in devices:
            await d.stop()


async def known(http: httpx.AsyncClient, devices: list[PlayedDevice]) -> None:
    ids = {d.device_id for d in devices}

    async def check() -> bool:
        body = (await http.get("/api/v1/devices")).json()
        return ids <= {d["id"] for d in body["devices"]}

    await eventually(check, what="the births")


async def start(http: httpx.AsyncClient, unique: str, **body: Any) -> dict[str, Any]:
    request = {"model": "digits", "version": "2", "select": {"site": unique}, "bake": 0,
               "min_sample": 0, **body}  # fmt: skip
    response = await http.post("/api/v1/rollouts", json=request)
    assert response.status_code == 201, response.text
    rollout: dict[str, Any] = response.json()
    return rollout


async def final(http: httpx.AsyncClient, rollout_id: str, *states: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body: dict[str, Any] = (await http.get(f"/api/v1/rollouts/{rollout_id}")).json()
        return body if body["state"] in states else None

    result: dict[str, Any] = await eventually(check, what=f"rollout {rollout_id} in {states}")
    return result


async def test_a_good_release_goes_through_every_wave(
    broker_url: str, tmp_path: Path, unique: str
) -> None:
    async with control_plane(broker_url, tmp_path, unique) as (ctx, http):
        assert ctx.release_key is not None
        await add_release(ctx.store, ctx.release_key, "2")
        async with fleet(broker_url, tmp_path, unique, 4) as devices:
            devices[3].kind = "edgetpu"  # no edgetpu artifact: it gets the cpu one
            await devices[3].birth()
            await known(http, devices)
            rollout = await start(http, unique, waves="25%,50%,100%")
            done = await final(http, rollout["id"], "completed", "halted", "rolling_back")
    assert done["state"] == "completed", done
    assert {d["state"] for d in done["deployments"]} == {"active"}
    waves = done["waves_detail"]
    assert [w["devices"] for w in waves] == [2, 1, 1], "stratified: each kind has a canary"
    assert [w["evaluation"]["decision"] for w in waves] == ["pass", "pass", "pass"]
    assert all(d.version == "2" and d.refused == [] for d in devices)
    for d in devices:
        (entry,) = d.seen
        assert entry.target == "cpu" and entry.rollout_id == rollout["id"] and not entry.rollback
        assert entry.artifact_url is not None
        assert entry.artifact_url.endswith("/api/v1/artifacts/" + "22" * 32)


async def test_an_edge_tpu_device_also_gets_the_cpu_artifact_to_fall_back_to(
    broker_url: str, tmp_path: Path, unique: str
) -> None:
    async with control_plane(broker_url, tmp_path, unique) as (ctx, http):
        assert ctx.release_key is not None
        await add_release(ctx.store, ctx.release_key, "2", edgetpu=True)
        async with fleet(broker_url, tmp_path, unique, 2) as devices:
            devices[1].kind = "edgetpu"
            await devices[1].birth()
            await known(http, devices)
            rollout = await start(http, unique, waves="100%")
            done = await final(http, rollout["id"], "completed", "halted", "rolling_back")
    assert done["state"] == "completed", done
    (cpu,), (tpu,) = devices[0].seen, devices[1].seen
    assert cpu.target == "cpu" and cpu.fallback_artifact_url is None
    assert tpu.target == "edgetpu" and tpu.artifact_url is not None
    assert tpu.artifact_url.endswith("/api/v1/artifacts/" + EDGETPU_SHA)
    assert tpu.fallback_artifact_url is not None
    assert tpu.fallback_artifact_url.endswith("/api/v1/artifacts/" + "22" * 32)


async def test_a_slow_release_halts_in_the_canary_wave_and_rolls_back(
    broker_url: str, tmp_path: Path, unique: str
) -> None:
    async with control_plane(broker_url, tmp_path, unique) as (ctx, http):
        assert ctx.release_key is not None
        await add_release(ctx.store, ctx.release_key, "2")
        async with fleet(broker_url, tmp_path, unique, 4, behave=slow) as devices:
            await known(http, devices)
            rollout = await start(http, unique, waves="25%,100%")
            done = await final(http, rollout["id"], "rolled_back", "completed")
    assert done["state"] == "rolled_back"
    halt = done["halt"]
    assert (halt["gate"], halt["value"], halt["threshold"], halt["wave"]) == (
        "latency_ratio<=2", 10.0, 2.0, 0,
    )  # fmt: skip
    assert "latency_ratio 10 > 2" in halt["reason"]
    states = {d["device_id"]: d["state"] for d in done["deployments"]}
    canary = [i for i, s in states.items() if s != "pending"]
    assert len(canary) == 1 and states[canary[0]] == "rolled_back", states
    played = {d.device_id: d for d in devices}
    assert [e.rollback for e in played[canary[0]].seen] == [False, True]
    assert played[canary[0]].seen[1].release is None, "back to its own configured model"
    assert all(d.version == "1" for d in devices)
    assert sum(1 for d in devices if d.seen) == 1, "the other waves never got the release"


async def test_failures_are_retried_a_bounded_number_of_times_then_roll_back(
    broker_url: str, tmp_path: Path, unique: str
) -> None:
    async with control_plane(broker_url, tmp_path, unique, rollout_max_retries=2) as (ctx, http):
        assert ctx.release_key is not None
        await add_release(ctx.store, ctx.release_key, "2")
        async with fleet(broker_url, tmp_path, unique, 1, behave=broken) as devices:
            await known(http, devices)
            rollout = await start(http, unique, waves="100%")
            done = await final(http, rollout["id"], "rolled_back", "completed")
    (deployment,) = done["deployments"]
    assert deployment["attempts"] == 3 and deployment["state"] == "rolled_back"
    assert done["halt"]["gate"] == "failure_rate<=0.1"
    seen = devices[0].seen
    assert [e.rollback for e in seen] == [False, False, False, True]


async def test_a_device_that_never_answers_times_out(
    broker_url: str, tmp_path: Path, unique: str
) -> None:
    async with control_plane(broker_url, tmp_path, unique, rollout_max_retries=1) as (ctx, http):
        assert ctx.release_key is not None
        await add_release(ctx.store, ctx.release_key, "2")
        async with fleet(broker_url, tmp_path, unique, 1, behave=silent) as devices:
            await known(http, devices)
            rollout = await start(http, unique, waves="100%", device_timeout=0.3, on_halt="pause")
            done = await final(http, rollout["id"], "halted", "completed")
    (deployment,) = done["deployments"]
    assert deployment["state"] == "timed_out" and deployment["attempts"] == 2
    assert "no answer within 0.3s" in deployment["detail"]
    assert done["halt"]["gate"] == "failure_rate<=0.1" and done["halt"]["value"] == 1.0
    generations = devices[0].generation
    assert len(devices[0].seen) == 2 and generations > 0, "sent once, retried once"


async def test_the_rollout_carries_on_after_a_control_plane_restart(
    broker_url: str, tmp_path: Path, unique: str
) -> None:
    hold = asyncio.Event()
    async with fleet(broker_url, tmp_path, unique, 3, hold=hold) as devices:
        async with control_plane(broker_url, tmp_path, unique) as (ctx, http):
            assert ctx.release_key is not None
            await add_release(ctx.store, ctx.release_key, "2")
            await known(http, devices)
            rollout = await start(http, unique, waves="34%,100%")
            await eventually(lambda: any(d.seen for d in devices), what="the canary's document")
        hold.set()  # the canary answers while the control plane is away
        await asyncio.sleep(0.2)
        async with control_plane(broker_url, tmp_path, unique) as (ctx, http):
            done = await final(http, rollout["id"], "completed", "halted", "rolling_back")
    assert done["state"] == "completed"
    assert all(d.version == "2" for d in devices)
    assert sum(len(d.seen) for d in devices) == 3, "nobody got the release twice"


async def test_a_device_tagged_later_joins_the_rollout(
    broker_url: str, tmp_path: Path, unique: str
) -> None:
    hold = asyncio.Event()
    async with control_plane(broker_url, tmp_path, unique) as (ctx, http):
        assert ctx.release_key is not None
        await add_release(ctx.store, ctx.release_key, "2")
        async with fleet(broker_url, tmp_path, unique, 2, hold=hold) as devices:
            late = PlayedDevice(broker_url, f"{unique}-late", devices[0].key,
                                tags={"site": "elsewhere"})  # fmt: skip
            await late.start()
            try:
                await known(http, [*devices, late])
                rollout = await start(http, unique, waves="100%")
                assert rollout["devices"] == {"pending": 2}
                tagged = await http.patch(
                    f"/api/v1/devices/{late.device_id}/tags", json={"set": {"site": unique}}
                )
                assert tagged.status_code == 200 and tagged.json()["tags"]["site"] == unique
                await eventually(lambda: late.seen, what="the newcomer's document")
                hold.set()
                done = await final(http, rollout["id"], "completed", "halted", "rolling_back")
            finally:
                await late.stop()
    assert done["state"] == "completed" and late.version == "2"
    assert {d["device_id"] for d in done["deployments"]} == {
        devices[0].device_id, devices[1].device_id, late.device_id,
    }  # fmt: skip


async def test_an_offline_device_converges_from_the_retained_document(
    broker_url: str, tmp_path: Path, unique: str
) -> None:
    async with control_plane(broker_url, tmp_path, unique) as (ctx, http):
        assert ctx.release_key is not None
        await add_release(ctx.store, ctx.release_key, "2")
        async with fleet(broker_url, tmp_path, unique, 2) as devices:
            offline = devices[1]
            await known(http, devices)
            await offline.stop()
            rollout = await start(http, unique, waves="100%")

            async def published() -> bool:
                body = (await http.get(f"/api/v1/rollouts/{rollout['id']}")).json()
                return all(d["state"] != "pending" for d in body["deployments"])

            await eventually(published, what="both dispatched")
            await asyncio.sleep(0.3)
            assert offline.seen == []
            await offline.start(birth=False)  # back: the broker hands it the retained document
            done = await final(http, rollout["id"], "completed", "halted", "rolling_back")
    assert done["state"] == "completed" and offline.version == "2"
