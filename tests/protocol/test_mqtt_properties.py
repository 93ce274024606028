"""protocol.mqtt: MQTT v5 request/response properties and the connection history, against a real
Mosquitto (v5) and the embedded amqtt broker (3.1.1, where the properties are left out)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from controlplane.broker import run_embedded_broker
from protocol.mqtt import MQTTClient
from tests.mosquitto import Mosquitto, free_port
from tests.protocol.test_mqtt import Inbox, eventually, running


async def test_v5_properties_reach_the_subscriber(broker_url: str, unique: str) -> None:
    inbox = Inbox()
    async with running(broker_url, f"sub-{unique}", on_message=inbox) as sub:
        await sub.subscribe(f"t/{unique}/#")
        await sub.wait_connected(10)
        async with running(broker_url, f"pub-{unique}") as pub:
            await pub.wait_connected(10)
            await pub.publish(
                f"t/{unique}/req", b"q", response_topic=f"t/{unique}/reply",
                correlation_data=b"cp-1:r42", message_expiry_s=29.2,
                user_properties={"sender": "ana"},
            )  # fmt: skip
            await pub.publish(f"t/{unique}/plain", b"p")
            with_props, plain = await inbox.next(), await inbox.next()
    assert with_props.response_topic == f"t/{unique}/reply"
    assert with_props.correlation_data == b"cp-1:r42"
    assert with_props.message_expiry_s is not None and 28 <= with_props.message_expiry_s <= 30
    assert (plain.response_topic, plain.correlation_data, plain.message_expiry_s) == (
        None,
        None,
        None,
    )


async def test_properties_are_left_out_under_311(unique: str) -> None:
    broker = await run_embedded_broker("127.0.0.1", free_port())
    try:
        inbox = Inbox()
        async with running(broker.url, f"sub-{unique}", on_message=inbox) as sub:
            await sub.subscribe(f"t/{unique}")
            await sub.wait_connected(10)
            async with running(broker.url, f"pub-{unique}") as pub:
                await pub.wait_connected(10)
                assert pub.protocol_version == "3.1.1"
                await pub.publish(
                    f"t/{unique}", b"q", response_topic="r", correlation_data=b"c",
                    message_expiry_s=5,
                )  # fmt: skip
            got = await inbox.next()
        assert got.payload == b"q"
        assert (got.response_topic, got.correlation_data, got.message_expiry_s) == (
            None,
            None,
            None,
        )
    finally:
        await broker.stop()


async def test_bad_property_values_are_refused(broker_url: str, unique: str) -> None:
    async with running(broker_url, f"pub-{unique}") as pub:
        await pub.wait_connected(10)
        with pytest.raises(ValueError, match="response topic"):
            await pub.publish("t/x", b"", response_topic="t/+")
        with pytest.raises(ValueError, match="message_expiry_s"):
            await pub.publish("t/x", b"", message_expiry_s=0)


async def test_an_expired_message_is_not_delivered_to_a_returning_session(
    broker_url: str, unique: str
) -> None:
    """What a command to an offline device relies on: the broker drops it once expired."""
    options = {"clean_start": False, "session_expiry": 60}
    inbox = Inbox()
    async with running(broker_url, f"sub-{unique}", on_message=inbox, **options) as sub:
        await sub.subscribe(f"t/{unique}")
        await sub.wait_connected(10)
    async with running(broker_url, f"pub-{unique}") as pub:  # the subscriber is away
        await pub.wait_connected(10)
        await pub.publish(f"t/{unique}", b"short", message_expiry_s=1)
        await pub.publish(f"t/{unique}", b"long", message_expiry_s=60)
    await asyncio.sleep(2.2)
    async with running(broker_url, f"sub-{unique}", on_message=inbox, **options) as sub:
        await sub.subscribe(f"t/{unique}")
        got = await inbox.next()
        await asyncio.sleep(0.3)
    assert got.payload == b"long"
    assert inbox.queue.empty()


async def test_connection_history_is_kept_and_bounded(tmp_path: Path, unique: str) -> None:
    broker = Mosquitto(tmp_path)
    broker.start()
    client = MQTTClient(broker.url, f"h-{unique}", reconnect_min=0.05, reconnect_max=0.1)
    try:
        await client.start()
        await client.wait_connected(10)
        before = time.time()
        broker.stop()
        await eventually(lambda: any(e.event == "failed" for e in client.history))
        broker.start()
        await client.wait_connected(20)
        events = [e.event for e in client.history]
        assert events[0] == "connected" and "disconnected" in events
        assert events[-1] == "connected"
        lost = next(e for e in client.history if e.event == "disconnected")
        assert lost.at >= before and lost.detail
        broker.stop()
        # bounded: past 20 failed attempts the older events are gone, the newest kept
        await eventually(lambda: all(e.event == "failed" for e in client.history), 30)
        assert len(client.history) == 20
    finally:
        await client.stop()
        broker.stop()
