"""The JSON API in process (httpx over ASGI) on a real SQLite store: every route, every 4xx."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from controlplane.app import ROUTES, create_app
from controlplane.metrics import Metrics
from controlplane.records import Incoming
from controlplane.settings import Settings
from controlplane.store import Store
from tests.controlplane import messages as m
from tests.controlplane.auth_helpers import authorize

DOCS = Path(__file__).resolve().parents[2] / "docs"


def settings(tmp_path: Path, **change: Any) -> Settings:
    return Settings(broker="mqtt://127.0.0.1:1", data_dir=tmp_path, **change)


def client_for(app: Starlette) -> httpx.AsyncClient:
    """A client on ``app`` with an admin's token (tests/controlplane/auth_helpers.py)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url="http://cp")
    return authorize(client, app.state.ctx.store)


@pytest.fixture
async def client(tmp_path: Path, store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(settings(tmp_path), store=store, mqtt=False)) as c:
        yield c


async def put(store: Store, *messages: Any, at: float | None = None) -> None:
    now = time.time() if at is None else at
    await store.write(*[Incoming(msg.device_id, now, msg) for msg in messages])


def error(response: httpx.Response, status: int, *words: str) -> str:
    """Check a JSON error answer and return its message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    message: str = response.json()["error"]
    for word in words:
        assert word in message, (word, message)
    return message


# -- devices ---------------------------------------------------------------------------------------


async def test_devices_list_with_state_and_latest_telemetry(
    client: httpx.AsyncClient, store: Store
) -> None:
    await put(store, m.birth("cam-1"), m.birth("cam-2"))
    await put(store, m.telemetry("cam-1", p50=4.0), m.will("cam-2"))
    body = (await client.get("/api/v1/devices")).json()
    assert body["count"] == 2
    cam1, cam2 = body["devices"]
    assert (cam1["id"], cam1["state"], cam2["id"], cam2["state"]) == (
        "cam-1", "online", "cam-2", "offline",
    )  # fmt: skip
    assert cam1["models"][0]["name"] == "digits-edge" and cam1["backend"] == "litert"
    assert cam1["telemetry"]["latency"]["p50_ms"] == 4.0 and cam1["last_seen"] > 0
    online = (await client.get("/api/v1/devices", params={"state": "online"})).json()
    assert [d["id"] for d in online["devices"]] == ["cam-1"]
    offline = (await client.get("/api/v1/devices", params={"state": "offline"})).json()
    assert [d["id"] for d in offline["devices"]] == ["cam-2"]


async def test_a_device_silent_past_offline_after_s_is_offline(
    tmp_path: Path, store: Store
) -> None:
    await put(store, m.birth("old"), at=time.time() - 120)
    app = create_app(settings(tmp_path, offline_after_s=60), store=store, mqtt=False)
    async with client_for(app) as c:
        assert (await c.get("/api/v1/devices/old")).json()["state"] == "offline"
    app = create_app(settings(tmp_path, offline_after_s=600), store=store, mqtt=False)
    async with client_for(app) as c:
        assert (await c.get("/api/v1/devices/old")).json()["state"] == "online"


async def test_device_detail_404_and_400(client: httpx.AsyncClient, store: Store) -> None:
    await put(store, m.birth("cam-1", fallback="libedgetpu.so.1: not found"))
    device = (await client.get("/api/v1/devices/cam-1")).json()
    assert device["id"] == "cam-1" and device["fallback_reason"] == "libedgetpu.so.1: not found"
    assert device["accelerators"][0]["kind"] == "edgetpu"
    error(await client.get("/api/v1/devices/cam-9"), 404, "unknown device", "cam-9")
    error(await client.get("/api/v1/devices/bad%20id"), 400, "invalid device id")
    error(await client.get("/api/v1/devices/" + "x" * 65), 400, "invalid device id")
    error(await client.get("/api/v1/devices", params={"state": "asleep"}), 400, "state", "asleep")
    error(await client.get("/api/v1/devices", params={"stat": "online"}), 400, "stat", "unknown")


# -- telemetry -------------------------------------------------------------------------------------


async def test_device_telemetry_since_and_limit(client: httpx.AsyncClient, store: Store) -> None:
    await put(store, *[m.telemetry("cam-1", sent_at=1000.0 + i, p50=float(i)) for i in range(5)])
    body = (await client.get("/api/v1/devices/cam-1/telemetry", params={"limit": 2})).json()
    assert body["device_id"] == "cam-1" and body["count"] == 2
    assert [t["sent_at"] for t in body["telemetry"]] == [1004.0, 1003.0]
    since = {"since": "1970-01-01T00:16:43+00:00"}  # 1003
    body = (await client.get("/api/v1/devices/cam-1/telemetry", params=since)).json()
    assert [t["sent_at"] for t in body["telemetry"]] == [1004.0, 1003.0]
    body = (await client.get("/api/v1/devices/cam-1/telemetry", params={"since": 1004})).json()
    assert [t["latency"]["p50_ms"] for t in body["telemetry"]] == [4.0]
    error(await client.get("/api/v1/devices/ghost/telemetry"), 404, "unknown device")
    error(await client.get("/api/v1/devices/a+b/telemetry"), 400, "invalid device id")
    bad = "/api/v1/devices/cam-1/telemetry"
    error(await client.get(bad, params={"since": "yesterday"}), 400, "since", "yesterday")
    error(await client.get(bad, params={"limit": "-1"}), 400, "limit")


# -- results ---------------------------------------------------------------------------------------


async def test_results_paged_with_a_cursor(client: httpx.AsyncClient, store: Store) -> None:
    sent = [m.result() for _ in range(23)]
    await put(store, m.batch("cam-1", sent[:13]), m.batch("cam-1", sent[13:]))
    await put(store, m.batch("cam-1", sent[5:8]))  # redelivered: stored once
    seen: list[str] = []
    params: dict[str, Any] = {"device_id": "cam-1", "limit": 10}
    while True:
        body = (await client.get("/api/v1/results", params=params)).json()
        assert body["total"] == 23 and body["limit"] == 10
        seen += [r["result_id"] for r in body["results"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == [r.result_id for r in reversed(sent)], "newest first, each once"
    first = (await client.get("/api/v1/results", params={"order": "asc", "limit": 1})).json()
    assert first["results"][0]["result_id"] == sent[0].result_id
    assert first["results"][0]["artifact_sha256"] == m.SHA
    assert first["results"][0]["device_id"] == "cam-1"


async def test_results_filters(client: httpx.AsyncClient, store: Store) -> None:
    await put(
        store,
        m.batch("a", [m.result("m1", created_at=100.0), m.result("m2", created_at=200.0)]),
        m.batch("b", [m.result("m1", created_at=300.0)]),
    )

    async def get(**params: Any) -> list[tuple[str, str]]:
        body = (await client.get("/api/v1/results", params=params)).json()
        return [(r["device_id"], r["model"]) for r in body["results"]]

    assert await get(device_id="a") == [("a", "m2"), ("a", "m1")]
    assert await get(model="m1") == [("b", "m1"), ("a", "m1")]
    assert await get(since="150") == [("b", "m1"), ("a", "m2")]
    assert await get(since="1970-01-01T00:04:10") == [("b", "m1")]  # 250, naive = UTC
    assert await get(device_id="a", model="m2", since="0") == [("a", "m2")]


async def test_results_limit_is_capped(tmp_path: Path, store: Store) -> None:
    await put(store, m.batch("a", [m.result() for _ in range(8)]))
    app = create_app(settings(tmp_path, results_page_max=5), store=store, mqtt=False)
    async with client_for(app) as c:
        body = (await c.get("/api/v1/results", params={"limit": 1000})).json()
        assert body["limit"] == 5 and body["count"] == 5 and body["next_cursor"]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "2.5"}, "limit"),
        ({"since": "last tuesday"}, "since"),
        ({"since": "nan"}, "since"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"order": "sideways"}, "order"),
        ({"device_id": "no/slashes"}, "device_id"),
        ({"model": ""}, "model"),
        ({"devices": "a"}, "devices"),
    ],
)
async def test_results_bad_parameters_are_400_naming_them(
    client: httpx.AsyncClient, params: dict[str, str], parameter: str
) -> None:
    response = await client.get("/api/v1/results", params=params)
    message = error(response, 400, parameter)
    assert message.startswith(parameter + ":")
    assert response.json()["parameter"] == parameter


async def test_a_cursor_for_the_other_order_is_400(client: httpx.AsyncClient, store: Store) -> None:
    await put(store, m.batch("a", [m.result() for _ in range(3)]))
    body = (await client.get("/api/v1/results", params={"limit": 1})).json()
    response = await client.get(
        "/api/v1/results", params={"limit": 1, "order": "asc", "cursor": body["next_cursor"]}
    )
    error(response, 400, "cursor", "order")


# -- health, metrics, errors -----------------------------------------------------------------------


async def test_healthz_says_what_is_wrong(tmp_path: Path) -> None:
    store = Store(tmp_path / "cp.db")
    store.open()
    async with client_for(create_app(settings(tmp_path), store=store, mqtt=False)) as c:
        ok = await c.get("/healthz")
        assert ok.status_code == 200
        assert ok.json() == {"status": "ok", "store": "open", "mqtt": "disabled"}
        store.close()
        down = await c.get("/healthz")
        assert down.status_code == 503 and down.json()["store"] == "closed"
        error(await c.get("/api/v1/devices"), 503, "store unavailable")


async def test_metrics_in_prometheus_text(client: httpx.AsyncClient, store: Store) -> None:
    r = m.result()
    await put(store, m.birth("a"), m.birth("b"), m.will("b"))
    await put(store, m.batch("a", [r, m.result()]), m.batch("a", [r]))
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = response.text.splitlines()
    for expected in [
        'edgefleet_devices{state="online"} 1',
        'edgefleet_devices{state="offline"} 1',
        "edgefleet_results_ingested_total 2",
        "edgefleet_results_duplicate_total 1",
        "edgefleet_mqtt_connected 0",
        "edgefleet_store_queue_depth 0",
        "# TYPE edgefleet_ingest_latency_seconds histogram",
        'edgefleet_ingest_latency_seconds_bucket{le="+Inf"} 5',
    ]:
        assert expected in lines, expected


async def test_unknown_routes_and_methods_are_json(client: httpx.AsyncClient) -> None:
    error(await client.get("/api/v1/nothing"), 404, "not found", "/api/v1/nothing")
    error(await client.post("/api/v1/devices"), 405, "POST")


async def test_an_unexpected_exception_is_a_500_without_a_traceback(
    tmp_path: Path, store: Store
) -> None:
    app = create_app(settings(tmp_path), store=store, mqtt=False)

    async def broken(request: Request) -> Response:
        raise ZeroDivisionError("a bug")

    app.add_route("/broken", broken)
    async with client_for(app) as c:
        message = error(await c.get("/broken"), 500, "internal server error")
        assert "Traceback" not in message and "ZeroDivision" not in message


# -- docs that cannot rot --------------------------------------------------------------------------


@pytest.mark.parametrize("name", [metric.name for metric in Metrics().all()])
def test_every_metric_is_documented(name: str) -> None:
    assert f"`{name}`" in (DOCS / "controlplane.md").read_text(), f"document {name}"


@pytest.mark.parametrize(
    ("method", "path"),
    sorted({(m, r.path) for r in ROUTES for m in (r.methods or ()) if m != "HEAD"}),
)
def test_every_route_is_documented(method: str, path: str) -> None:
    assert f"`{method} {path}" in (DOCS / "api.md").read_text(), f"document {method} {path}"
