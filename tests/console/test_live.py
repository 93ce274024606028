"""Live updates: the event stream over a real store, and over HTTP from a real server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from controlplane.api import Context
from controlplane.console.live import Views, stream
from controlplane.records import Incoming
from controlplane.settings import Settings
from controlplane.store import Store
from tests.console.fleetdata import birth, telemetry
from tests.live import headers, live_control_plane


async def next_events(events: AsyncIterator[str], count: int) -> list[dict[str, Any]]:
    """The next ``count`` fragment events (other lines skipped)."""
    out: list[dict[str, Any]] = []
    while len(out) < count:
        chunk = await asyncio.wait_for(anext(events), 10)
        if chunk.startswith("event: fragment"):
            out.append(json.loads(chunk.split("data: ", 1)[1]))
    return out


async def test_the_stream_sends_every_region_then_only_changes(
    app: Starlette, store: Store
) -> None:
    ctx: Context = app.state.ctx
    now = time.time()
    await store.write(Incoming("cam-1", now, birth("cam-1")))
    events = stream(ctx, Views(fleet=True, devices=("cam-1",), device="cam-1"), poll_s=0.02)
    assert (await anext(events)).startswith("retry: ")
    first = {e["id"]: e["html"] for e in await next_events(events, 4)}
    assert set(first) == {"fleet-counts", "fleet-attention", "device-cam-1", "device-status"}
    assert 'data-count="online">1<' in first["fleet-counts"]
    assert first["device-cam-1"].startswith('<tr id="device-cam-1">')
    # a device that starts failing: the counts, its row and its status change; nothing else does
    await store.write(Incoming("cam-1", now + 1, telemetry("cam-1", now + 1, errors=5)))
    changed = {e["id"]: e["html"] for e in await next_events(events, 4)}
    assert set(changed) == {"fleet-counts", "fleet-attention", "device-cam-1", "device-status"}
    assert 'data-count="degraded">1<' in changed["fleet-counts"]
    assert "5 failed requests" in changed["device-status"]
    await store.write(Incoming("cam-2", now + 2, birth("cam-2")))
    (added,) = await next_events(events, 1)
    assert added["id"] == "fleet-counts" and 'data-count="total">2<' in added["html"]
    await events.aclose()  # type: ignore[attr-defined]


async def test_a_stream_ends_when_the_store_closes(app: Starlette, store: Store) -> None:
    ctx: Context = app.state.ctx
    events = stream(ctx, Views(fleet=True), poll_s=0.02)
    await next_events(events, 2)
    store.close()
    rest = [chunk async for chunk in events]
    assert not any(c.startswith("event:") for c in rest)


@pytest.mark.slow
def test_a_real_server_streams_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"

    def settings(listen: str) -> Settings:
        return Settings(broker="mqtt://127.0.0.1:1", data_dir=data, listen=listen)

    with live_control_plane(settings, monkeypatch) as url:
        events = f"{url}/events?fleet=1"
        with httpx.stream("GET", events, headers=headers(), timeout=20) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.iter_lines()
            seen = _fragment(lines)
            while seen["id"] != "fleet-counts":
                seen = _fragment(lines)
            assert "No device has reported yet" in seen["html"]
            writer = Store(data / "controlplane.db")  # a second writer on the server's file
            writer.open()
            try:
                asyncio.run(writer.write(Incoming("cam-1", time.time(), birth("cam-1"))))
            finally:
                writer.close()
            seen = _fragment(lines)
            while seen["id"] != "fleet-counts":
                seen = _fragment(lines)
            assert 'data-count="total">1<' in seen["html"]


def _fragment(lines: Any) -> dict[str, Any]:
    for line in lines:
        if line.startswith("data: "):
            body: dict[str, Any] = json.loads(line[6:])
            return body
    raise AssertionError("the stream ended")
