"""agent.uplink with a real Outbox (SQLite) and a real Mosquitto."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.outbox import Outbox
from agent.uplink import Uplink, batch_payload, looks_encoded, make_will
from protocol.messages import (
    ClassScore,
    InferenceResult,
    ResultBatch,
    Status,
    Telemetry,
    decode,
    encode,
)
from protocol.mqtt import Message, MQTTClient
from protocol.topics import Channel, device_topic
from tests.mosquitto import Mosquitto


def result(i: int) -> InferenceResult:
    return InferenceResult(
        model="digits",
        model_version="1.0.0",
        artifact_sha256="ab" * 32,
        backend="litert",
        latency_ms=0.5 + i / 1000,
        request_id=f"req-{i}",
        classes=[ClassScore(index=i % 10, label=str(i % 10), score=0.9)],
    )


async def put_results(outbox: Outbox, n: int) -> set[str]:
    results = [result(i) for i in range(n)]
    await outbox.put_many([(r.result_id, r.created_at, encode(r)) for r in results])
    return {r.result_id for r in results}


@dataclass
class Watcher:
    """A subscriber to every channel of one device."""

    batches: list[ResultBatch] = field(default_factory=list)
    statuses: list[Status] = field(default_factory=list)
    telemetry: list[Telemetry] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # channel of each message, as received

    def __call__(self, message: Message) -> None:
        channel = message.topic.rsplit("/", 1)[-1]
        self.order.append(channel)
        if channel == "results":
            self.batches.append(decode(ResultBatch, message.payload))
        elif channel == "status":
            self.statuses.append(decode(Status, message.payload))
        elif channel == "telemetry":
            self.telemetry.append(decode(Telemetry, message.payload))

    def result_ids(self) -> list[str]:
        return [r.result_id for b in self.batches for r in b.results]


async def eventually(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    async def poll() -> None:
        while not predicate():  # noqa: ASYNC110 (a condition in another object's state)
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


@asynccontextmanager
async def watching(url: str, device_id: str) -> AsyncIterator[Watcher]:
    watcher = Watcher()
    client = MQTTClient(url, f"watch-{device_id}", on_message=watcher, reconnect_min=0.05,
                        reconnect_max=0.2)  # fmt: skip
    await client.subscribe(f"edgefleet/v1/devices/{device_id}/#")
    await client.start()
    try:
        await client.wait_connected(10)
        yield watcher
    finally:
        await client.stop()


@dataclass
class Device:
    device_id: str
    outbox: Outbox
    client: MQTTClient
    uplink: Uplink


@asynccontextmanager
async def device(
    url: str, device_id: str, tmp_path: Path, reconnect: float = 0.05, **options: Any
) -> AsyncIterator[Device]:
    outbox = Outbox(tmp_path / f"{device_id}.db", synchronous="NORMAL")
    await outbox.open()
    client = MQTTClient(url, f"agent-{device_id}", will=make_will(device_id),
                        reconnect_min=reconnect, reconnect_max=reconnect)  # fmt: skip
    uplink = Uplink(
        device_id=device_id,
        client=client,
        outbox=outbox,
        birth=lambda: Status(device_id=device_id, state="online", agent_version="test"),
        telemetry=lambda: Telemetry(
            device_id=device_id, interval_s=1.0, outbox_depth=outbox.stats().depth
        ),  # fmt: skip
        **options,
    )
    task = asyncio.create_task(uplink.run())
    await client.start()
    try:
        yield Device(device_id, outbox, client, uplink)
    finally:
        await uplink.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.stop()
        await outbox.close()


# --- pure parts ----------------------------------------------------------------------------


def test_batch_payload_is_what_encode_gives() -> None:
    payloads = [encode(result(i)) for i in range(5)]
    fast = batch_payload("cam-1", payloads)
    batch = decode(ResultBatch, fast)
    assert [r.request_id for r in batch.results] == [f"req-{i}" for i in range(5)]
    assert fast == encode(batch)
    assert fast == encode(
        ResultBatch(
            message_id=batch.message_id,
            sent_at=batch.sent_at,
            device_id="cam-1",
            results=[decode(InferenceResult, p) for p in payloads],
        )
    )


def test_batch_payload_needs_a_result() -> None:
    with pytest.raises(ValueError, match="at least one"):
        batch_payload("cam-1", [])


@pytest.mark.parametrize(
    ("payload", "ok"), [(b'{"a":1}', True), (b"{}", True), (b"", False), (b"garbage", False)]
)
def test_looks_encoded(payload: bytes, ok: bool) -> None:
    assert looks_encoded(payload) is ok


def test_make_will_is_a_retained_offline_status() -> None:
    will = make_will("cam-1")
    assert will.topic == device_topic("cam-1", Channel.STATUS)
    assert (will.qos, will.retain) == (1, True)
    status = decode(Status, will.payload)
    assert (status.device_id, status.state) == ("cam-1", "offline")


def test_uplink_rejects_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        Uplink(device_id="d", client=MQTTClient("mqtt://h", "c"), outbox=Outbox(tmp_path / "o"),
               birth=lambda: Status(device_id="d", state="online"),
               telemetry=lambda: Telemetry(device_id="d", interval_s=1), batch_size=0)  # fmt: skip


# --- with the broker -----------------------------------------------------------------------


async def test_results_arrive_exactly_once_and_the_outbox_empties(
    broker_url: str, unique: str, tmp_path: Path
) -> None:
    device_id = f"dev-{unique}"
    async with watching(broker_url, device_id) as watcher:
        async with device(broker_url, device_id, tmp_path, batch_size=50) as dev:
            ids = await put_results(dev.outbox, 1000)
            dev.uplink.wake()
            await eventually(lambda: dev.uplink.sent_total == 1000)
            assert dev.outbox.stats().depth == 0
            assert await dev.outbox.peek(10) == []
            await eventually(lambda: len(watcher.result_ids()) >= 1000)
    received = watcher.result_ids()
    assert len(received) == len(set(received)) == 1000  # exactly once
    assert set(received) == ids
    assert all(0 < len(b.results) <= 50 for b in watcher.batches)
    assert {b.device_id for b in watcher.batches} == {device_id}


async def test_results_put_while_running_go_out_at_once(
    broker_url: str, unique: str, tmp_path: Path
) -> None:
    device_id = f"dev-{unique}"
    async with watching(broker_url, device_id) as watcher:
        async with device(broker_url, device_id, tmp_path, idle_poll=3600) as dev:
            await dev.client.wait_connected(10)
            for i in range(20):  # wake() is what moves them: the idle poll never fires here
                r = result(i)
                await dev.outbox.put(r.result_id, r.created_at, encode(r))
                dev.uplink.wake()
            await eventually(lambda: len(watcher.result_ids()) == 20)
            await eventually(lambda: dev.outbox.stats().depth == 0)


async def test_broker_outage_keeps_rows_then_drains(
    private_broker: Mosquitto, unique: str, tmp_path: Path
) -> None:
    device_id = f"dev-{unique}"
    url = private_broker.url
    async with device(url, device_id, tmp_path, batch_size=25) as dev:
        await dev.client.wait_connected(10)
        private_broker.stop()
        await eventually(lambda: not dev.client.connected)
        ids = await put_results(dev.outbox, 300)
        dev.uplink.wake()
        await asyncio.sleep(0.3)  # the uplink runs and fails meanwhile
        assert dev.outbox.stats().depth == 300
        assert dev.uplink.sent_total == 0
        private_broker.start()
        async with watching(url, device_id) as watcher:
            await eventually(lambda: dev.uplink.sent_total == 300)
            assert dev.outbox.stats().depth == 0
            await eventually(lambda: len(watcher.result_ids()) >= 300)
        assert sorted(watcher.result_ids()) == sorted(ids)


async def test_a_refused_publish_deletes_nothing(tmp_path: Path, unique: str) -> None:
    """The broker's ACL forbids the results topic: the rows stay, nothing counts as sent."""
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker")
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite edgefleet/v1/devices/+/status\n")
    broker.config.write_text(broker.config.read_text() + f"acl_file {acl}\n")
    broker.start()
    try:
        async with device(broker.url, f"dev-{unique}", tmp_path) as dev:
            await dev.client.wait_connected(10)
            await put_results(dev.outbox, 10)
            dev.uplink.wake()
            await eventually(lambda: dev.uplink.errors_total >= 1)
            assert dev.outbox.stats().depth == 10
            assert dev.uplink.sent_total == 0
    finally:
        broker.stop()


async def test_results_wait_while_nobody_subscribes(
    private_broker: Mosquitto, unique: str, tmp_path: Path
) -> None:
    """A v5 PUBACK "no matching subscribers" keeps the rows: nobody would have got them.

    A broker of its own: on the shared one, a control plane of an earlier test leaves a persistent
    session subscribed to every device's results, so there always is a subscriber.
    """
    device_id = f"dev-{unique}"
    broker_url = private_broker.url
    async with device(broker_url, device_id, tmp_path) as dev:
        ids = await put_results(dev.outbox, 50)
        dev.uplink.wake()
        await eventually(lambda: dev.uplink.no_subscriber)
        assert dev.outbox.stats().depth == 50
        assert dev.uplink.sent_total == 0
        async with watching(broker_url, device_id) as watcher:
            await eventually(lambda: dev.uplink.sent_total == 50)
            await eventually(lambda: len(watcher.result_ids()) >= 50)
        assert not dev.uplink.no_subscriber
        assert dev.outbox.stats().depth == 0
    assert sorted(watcher.result_ids()) == sorted(ids)


async def test_birth_is_retained_and_republished_after_a_restart(
    private_broker: Mosquitto, unique: str, tmp_path: Path
) -> None:
    device_id = f"dev-{unique}"
    url = private_broker.url
    async with device(url, device_id, tmp_path) as dev:
        await dev.client.wait_connected(10)
        async with watching(url, device_id) as watcher:  # subscribes after the birth: retained
            await eventually(lambda: len(watcher.statuses) == 1)
            assert watcher.statuses[0].state == "online"
            first = watcher.statuses[0].message_id
        private_broker.stop()
        await eventually(lambda: not dev.client.connected)
        private_broker.start()
        await dev.client.wait_connected(30)
        async with watching(url, device_id) as watcher:  # a birth of the new connection
            await eventually(lambda: any(s.message_id != first for s in watcher.statuses))
            assert watcher.statuses[-1].state == "online"
        await dev.uplink.stop()  # a clean stop says offline itself (the will is not sent)
        async with watching(url, device_id) as watcher:
            await eventually(lambda: len(watcher.statuses) == 1)
            assert watcher.statuses[0].state == "offline"


async def test_telemetry_keeps_going_while_a_backlog_drains(
    broker_url: str, unique: str, tmp_path: Path
) -> None:
    device_id = f"dev-{unique}"
    async with watching(broker_url, device_id) as watcher:
        async with device(broker_url, device_id, tmp_path, batch_size=20, max_in_flight=1,
                          telemetry_interval=0.02) as dev:  # fmt: skip
            await put_results(dev.outbox, 4000)  # 200 batches, one at a time
            dev.uplink.wake()
            await eventually(lambda: dev.uplink.sent_total == 4000, timeout=60)
            await eventually(lambda: len(watcher.result_ids()) == 4000)
    order = watcher.order
    first, last = order.index("results"), len(order) - 1 - order[::-1].index("results")
    assert "telemetry" in order[first:last]  # interleaved with the backlog, not after it
    assert any(t.outbox_depth > 0 for t in watcher.telemetry)


async def test_a_corrupt_row_is_dropped_and_the_rest_goes_out(
    broker_url: str, unique: str, tmp_path: Path
) -> None:
    device_id = f"dev-{unique}"
    async with watching(broker_url, device_id) as watcher:
        async with device(broker_url, device_id, tmp_path) as dev:
            await dev.outbox.put("bad", time.time(), b"\x00not json")
            ids = await put_results(dev.outbox, 3)
            dev.uplink.wake()
            await eventually(lambda: len(watcher.result_ids()) == 3)
            assert set(watcher.result_ids()) == ids
            await eventually(lambda: dev.outbox.stats().depth == 0)
            assert dev.uplink.dropped_total == 1
