"""Ingestion with the real broker: messages published over MQTT show up in the API, once.

Each test runs the real app (its lifespan opens the store and connects to Mosquitto) and talks
to it in process through httpx; a separate MQTT client publishes like a device would.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from controlplane.app import create_app
from controlplane.ingest import RateLimitedLog, channel_label, subscriptions
from controlplane.settings import Settings
from protocol.messages import Status, encode
from protocol.mqtt import MQTTClient
from protocol.topics import Channel, device_topic
from tests.controlplane import messages as m
from tests.controlplane.auth_helpers import authorize
from tests.mosquitto import Mosquitto

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


async def eventually(what: str, check: Callable[[], Awaitable[T | None]], timeout: float = 20) -> T:
    """Poll until ``check`` returns something truthy; the timeout only bounds a failure."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@asynccontextmanager
async def controlplane(
    broker: str, data_dir: Path, client_id: str, **change: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The real app with its lifespan (store + MQTT), and an httpx client on it."""
    settings = Settings(broker=broker, data_dir=data_dir, client_id=client_id, **change)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        http = httpx.AsyncClient(transport=transport, base_url="http://cp")
        client = authorize(http, app.state.ctx.store)
        async with client:

            async def healthy() -> bool:
                return (await client.get("/healthz")).status_code == 200

            await eventually("the control plane connected", healthy)
            yield client


@asynccontextmanager
async def publisher(broker: str, name: str) -> AsyncIterator[MQTTClient]:
    client = MQTTClient(broker, f"pub-{name}")
    await client.start()
    await client.wait_connected(10)
    try:
        yield client
    finally:
        await client.stop()


async def send(pub: MQTTClient, message: Any, *, retain: bool = False) -> None:
    channel = {"status": Channel.STATUS, "telemetry": Channel.TELEMETRY}.get(
        message.type, Channel.RESULTS
    )
    await pub.publish(device_topic(message.device_id, channel), encode(message), retain=retain)


async def metric(client: httpx.AsyncClient, line_prefix: str) -> float:
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {line_prefix}")


async def results_of(client: httpx.AsyncClient, device_id: str) -> list[dict[str, Any]]:
    body = (await client.get("/api/v1/results", params={"device_id": device_id})).json()
    rows: list[dict[str, Any]] = body["results"]
    return rows


# -- pure parts ------------------------------------------------------------------------------------


def test_subscriptions_share_results_and_telemetry_but_not_status() -> None:
    assert subscriptions(None) == [
        "edgefleet/v1/devices/+/status",
        "edgefleet/v1/devices/+/telemetry",
        "edgefleet/v1/devices/+/results",
    ]
    assert subscriptions("cp") == [
        "edgefleet/v1/devices/+/status",
        "$share/cp/edgefleet/v1/devices/+/telemetry",
        "$share/cp/edgefleet/v1/devices/+/results",
    ]


def test_channel_label_of_topics_that_do_not_parse() -> None:
    assert channel_label("edgefleet/v1/devices/bad id/results") == "results"
    assert channel_label("edgefleet/v1/devices/x/elsewhere") == "unknown"


def test_rate_limited_log() -> None:
    now = [0.0]
    limiter = RateLimitedLog(interval=10.0, clock=lambda: now[0])
    assert limiter.should_log("results") == (True, 0)
    assert limiter.should_log("results") == (False, 0)
    assert limiter.should_log("status") == (True, 0), "each kind has its own budget"
    now[0] = 5.0
    assert limiter.should_log("results") == (False, 0)
    now[0] = 10.0
    assert limiter.should_log("results") == (True, 2), "reports what it held back"


# -- with the broker -------------------------------------------------------------------------------


async def test_status_telemetry_and_results_reach_the_api(
    broker_url: str, tmp_path: Path, unique: str
) -> None:
    device = f"ing-{unique}"
    async with (
        controlplane(broker_url, tmp_path, f"cp-{unique}", session_expiry_s=0) as api,
        publisher(broker_url, unique) as pub,
    ):
        await send(pub, m.birth(device, fallback="libedgetpu.so.1: cannot open"))
        await send(pub, m.telemetry(device, p50=3.5, fallback="libedgetpu.so.1: cannot open"))
        sent = [m.result() for _ in range(200)]
        await send(pub, m.batch(device, sent))

        async def view() -> dict[str, Any] | None:
            r = await api.get(f"/api/v1/devices/{device}")
            return r.json() if r.status_code == 200 and r.json().get("telemetry") else None

        device_view = await eventually("the device with telemetry", view)
        assert device_view["state"] == "online"
        assert device_view["fallback_reason"] == "libedgetpu.so.1: cannot open"
        assert device_view["models"][0]["fallback_reason"] == "libedgetpu.so.1: cannot open"
        assert device_view["telemetry"]["latency"]["p50_ms"] == 3.5

        async def all_results() -> list[dict[str, Any]] | None:
            body = (
                await api.get("/api/v1/results", params={"device_id": device, "limit": 500})
            ).json()
            return body["results"] if body["total"] == len(sent) else None

        rows = await eventually("200 results", all_results)
        assert {r["result_id"] for r in rows} == {r.result_id for r in sent}
        assert {(r["model"], r["artifact_sha256"]) for r in rows} == {("digits-edge", m.SHA)}
        samples = (await api.get(f"/api/v1/devices/{device}/telemetry")).json()["telemetry"]
        assert samples[0]["latency"]["p50_ms"] == 3.5


async def test_duplicates_are_stored_once_and_malformed_messages_are_counted(
    private_broker: Mosquitto, tmp_path: Path, unique: str
) -> None:
    device = f"dup-{unique}"
    url = private_broker.url
    async with controlplane(url, tmp_path, f"cp-{unique}") as api, publisher(url, unique) as pub:
        batch = m.batch(device, [m.result() for _ in range(10)])
        await send(pub, batch)
        await send(pub, batch)  # at-least-once: the same batch again
        overlap = m.batch(device, batch.results[:5] + [m.result()])
        await send(pub, overlap)
        results_topic = device_topic(device, Channel.RESULTS)
        await pub.publish(results_topic, b"{not json")
        await pub.publish(results_topic, b'{"device_id": "%s", "results": []}' % device.encode())
        await pub.publish(results_topic, encode(m.batch("someone-else", [m.result()])))
        await pub.publish(device_topic(device, Channel.TELEMETRY), b"[]", qos=0)
        await pub.publish(f"edgefleet/v1/devices/bad id/{Channel.STATUS.value}", b"{}")
        last = m.batch(device, [m.result()])
        await send(pub, last)  # ingestion goes on after the malformed ones

        async def stored() -> list[dict[str, Any]] | None:
            rows = await results_of(api, device)
            return rows if last.results[0].result_id in {r["result_id"] for r in rows} else None

        rows = await eventually("the last batch", stored)
        assert len(rows) == 12 and len({r["result_id"] for r in rows}) == 12
        assert await metric(api, "edgefleet_results_ingested_total") == 12
        assert await metric(api, "edgefleet_results_duplicate_total") == 10 + 5
        malformed = 'edgefleet_messages_malformed_total{channel="%s"}'
        assert await metric(api, malformed % "results") == 3
        assert await metric(api, malformed % "telemetry") == 1
        assert await metric(api, malformed % "status") == 1
        assert await metric(api, 'edgefleet_messages_received_total{channel="results"}') == 7
        assert await metric(api, "edgefleet_mqtt_connected") == 1


WILL_CHILD = """
import asyncio, sys
from protocol.messages import Status, encode
from protocol.mqtt import MQTTClient, Will
from protocol.topics import Channel, device_topic

async def main(url, device):
    topic = device_topic(device, Channel.STATUS)
    will = Will(topic, encode(Status(device_id=device, state="offline")), qos=1, retain=True)
    client = MQTTClient(url, device, will=will, keepalive=5)
    await client.start()
    await client.wait_connected(10)
    await client.publish(topic, encode(Status(device_id=device, state="online")), retain=True)
    print("ready", flush=True)
    await asyncio.sleep(600)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_the_will_of_a_vanished_device_marks_it_offline(
    broker_url: str, tmp_path: Path, unique: str
) -> None:
    device = f"will-{unique}"
    async with controlplane(broker_url, tmp_path, f"cp-{unique}", session_expiry_s=0) as api:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WILL_CHILD, broker_url, device,
            stdout=asyncio.subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        try:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), 30)
            assert line.strip() == b"ready", line

            async def state() -> str | None:
                r = await api.get(f"/api/v1/devices/{device}")
                return r.json()["state"] if r.status_code == 200 else None

            assert await eventually("the birth", state) == "online"
            child.send_signal(signal.SIGKILL)  # no DISCONNECT: the broker sends the will
            await eventually("the will", lambda: _is(state, "offline"))
            device_view = (await api.get(f"/api/v1/devices/{device}")).json()
            assert device_view["reported_state"] == "offline"
            offline = (await api.get("/api/v1/devices", params={"state": "offline"})).json()
            assert device in {d["id"] for d in offline["devices"]}
        finally:
            if child.returncode is None:
                child.kill()
            await child.wait()
        async with publisher(broker_url, unique) as pub:  # clear the retained status
            await pub.publish(device_topic(device, Channel.STATUS), b"", retain=True)


async def _is(check: Callable[[], Awaitable[str | None]], expected: str) -> bool:
    return await check() == expected


async def test_a_message_is_acknowledged_only_after_its_commit(
    private_broker: Mosquitto, tmp_path: Path, unique: str
) -> None:
    """A message the store could not commit is not acknowledged, so the broker delivers it again
    to the next control plane with the same client id (persistent session); a restart while the
    control plane was away loses nothing either."""
    url, device, cid = private_broker.url, f"ack-{unique}", f"cp-{unique}"
    first = m.batch(device, [m.result() for _ in range(5)])
    async with controlplane(url, tmp_path / "a", cid, session_expiry_s=60) as api:
        transport = api._transport
        assert isinstance(transport, httpx.ASGITransport)
        store = transport.app.state.ctx.store  # type: ignore[attr-defined]
        await asyncio.to_thread(store.close)  # the store fails: nothing can be committed
        async with publisher(url, unique) as pub:
            await send(pub, first)
            await eventually(
                "the batch to arrive",
                lambda: metric(api, 'edgefleet_messages_received_total{channel="results"}'),
            )
    second = m.batch(device, [m.result() for _ in range(3)])
    async with publisher(url, unique) as pub:  # published while no control plane runs
        await send(pub, second)
    async with controlplane(url, tmp_path / "b", cid, session_expiry_s=60) as api:

        async def everything() -> list[dict[str, Any]] | None:
            rows = await results_of(api, device)
            return rows if len(rows) >= 8 else None

        rows = await eventually("redelivery", everything)
        expected = {r.result_id for r in first.results + second.results}
        assert {r["result_id"] for r in rows} == expected and len(rows) == 8


async def test_an_empty_retained_status_is_ignored_not_malformed(
    private_broker: Mosquitto, tmp_path: Path, unique: str
) -> None:
    url, device = private_broker.url, f"clr-{unique}"
    async with controlplane(url, tmp_path, f"cp-{unique}") as api, publisher(url, unique) as pub:
        await send(pub, Status(device_id=device, state="online"), retain=True)
        await pub.publish(device_topic(device, Channel.STATUS), b"", retain=True)
        await send(pub, m.batch(device, [m.result()]))
        await eventually("the result", lambda: results_of(api, device))
        assert await metric(api, 'edgefleet_messages_malformed_total{channel="status"}') == 0
        assert await metric(api, 'edgefleet_messages_received_total{channel="status"}') == 2
