"""protocol.mqtt against a real Mosquitto (amqtt for the 3.1.1 fallback); pure parts by table."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from controlplane.broker import run_embedded_broker
from protocol.mqtt import (
    Message,
    MQTTClient,
    NoSubscribers,
    NotConnected,
    PublishRefused,
    PublishTimeout,
    Will,
)
from tests.mosquitto import Mosquitto, free_port

ROOT = Path(__file__).resolve().parents[2]


class Inbox:
    """Messages a client received, awaitable one at a time."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Message] = asyncio.Queue()

    def __call__(self, message: Message) -> None:
        self.queue.put_nowait(message)

    async def next(self, timeout: float = 10.0) -> Message:
        return await asyncio.wait_for(self.queue.get(), timeout)


@asynccontextmanager
async def running(url: str, client_id: str, **options: Any) -> AsyncIterator[MQTTClient]:
    client = MQTTClient(url, client_id, reconnect_min=0.05, reconnect_max=0.5, **options)
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not predicate():  # noqa: ASYNC110 (a condition in another object's state)
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


def test_client_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="protocol"):
        MQTTClient("mqtt://h", "c", protocol="4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reconnect_min"):
        MQTTClient("mqtt://h", "c", reconnect_min=5, reconnect_max=1)
    with pytest.raises(ValueError, match="expected mqtt://"):
        MQTTClient("http://h", "c")


# --- against Mosquitto ---------------------------------------------------------------------


async def test_publish_returns_after_puback_and_subscriber_gets_it(
    broker_url: str, unique: str
) -> None:
    inbox = Inbox()
    async with running(broker_url, f"sub-{unique}", on_message=inbox) as sub:
        await sub.subscribe(f"t/{unique}/#")
        await sub.wait_connected(10)
        async with running(broker_url, f"pub-{unique}") as pub:
            await pub.wait_connected(10)
            assert pub.connected and pub.protocol_version == "5"
            await pub.publish(f"t/{unique}/a", b"hello", qos=1)
            await pub.publish(f"t/{unique}/b", b"fire and forget", qos=0)
            got = [await inbox.next(), await inbox.next()]
    assert {(m.topic, m.payload) for m in got} == {
        (f"t/{unique}/a", b"hello"),
        (f"t/{unique}/b", b"fire and forget"),
    }


async def test_many_concurrent_publishes_all_arrive_once(broker_url: str, unique: str) -> None:
    inbox = Inbox()
    async with running(broker_url, f"sub-{unique}", on_message=inbox) as sub:
        await sub.subscribe(f"t/{unique}")
        await sub.wait_connected(10)
        async with running(broker_url, f"pub-{unique}", max_inflight=20) as pub:
            await pub.wait_connected(10)
            await asyncio.gather(*(pub.publish(f"t/{unique}", b"%d" % i) for i in range(500)))
        payloads = sorted([int((await inbox.next()).payload) for _ in range(500)])
    assert payloads == list(range(500))
    assert inbox.queue.empty()


async def test_publish_while_disconnected_raises_at_once(unique: str) -> None:
    nobody = f"mqtt://127.0.0.1:{free_port()}"
    async with running(nobody, f"pub-{unique}") as pub:
        with pytest.raises(NotConnected, match="cannot publish"):
            await pub.publish("t/x", b"x")
        with pytest.raises(NotConnected, match="Connection refused"):
            await pub.wait_connected(0.3)
    with pytest.raises(NotConnected, match="stopped"):
        await pub.wait_connected(0.1)


async def test_publish_refused_by_the_acl(tmp_path: Path, unique: str) -> None:
    """Under v5 a forbidden publish is an error, not a silent drop (the reason we use v5)."""
    broker = Mosquitto(tmp_path)
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite allowed/#\n")
    broker.config.write_text(broker.config.read_text() + f"acl_file {acl}\n")
    broker.start()
    try:
        async with running(broker.url, f"pub-{unique}") as pub:
            await pub.wait_connected(10)
            await pub.publish("allowed/x", b"ok")
            with pytest.raises(PublishRefused, match="(?i)not authorized") as info:
                await pub.publish("forbidden/x", b"no")
            assert info.value.reason_code == 0x87
            assert pub.connected  # a refusal is not a disconnect
    finally:
        broker.stop()


async def test_no_subscribers_only_when_asked(broker_url: str, unique: str) -> None:
    topic = f"t/{unique}/nobody"
    async with running(broker_url, f"pub-{unique}") as pub:
        await pub.wait_connected(10)
        await pub.publish(topic, b"x")  # 0x10 is a success by default
        with pytest.raises(NoSubscribers, match="no subscriber"):
            await pub.publish(topic, b"x", require_subscribers=True)
        async with running(broker_url, f"sub-{unique}") as sub:
            await sub.subscribe(topic)
            await sub.wait_connected(10)
            await pub.publish(topic, b"x", require_subscribers=True)


async def test_publish_timeout_when_the_broker_hangs(
    private_broker: Mosquitto, unique: str
) -> None:
    async with running(private_broker.url, f"pub-{unique}") as pub:
        await pub.wait_connected(10)
        assert private_broker.proc is not None
        private_broker.proc.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(PublishTimeout, match="no PUBACK"):
                await pub.publish("t/x", b"x", timeout=0.3)
        finally:
            private_broker.proc.send_signal(signal.SIGCONT)
        await pub.publish("t/x", b"after", timeout=10)  # the same connection carries on


async def test_a_disconnect_fails_pending_publishes_at_once(
    private_broker: Mosquitto, unique: str
) -> None:
    async with running(private_broker.url, f"pub-{unique}") as pub:
        await pub.wait_connected(10)
        assert private_broker.proc is not None
        private_broker.proc.send_signal(signal.SIGSTOP)
        pending = asyncio.create_task(pub.publish("t/x", b"x", timeout=120))
        await asyncio.sleep(0.1)
        assert not pending.done()
        private_broker.proc.kill()  # the kernel closes its sockets
        private_broker.proc.wait()
        with pytest.raises(NotConnected, match="before the PUBACK"):
            await asyncio.wait_for(pending, 30)


async def test_reconnects_resubscribes_and_runs_on_connect_again(
    private_broker: Mosquitto, unique: str
) -> None:
    connects = 0

    async def on_connect() -> None:
        nonlocal connects
        connects += 1

    inbox = Inbox()
    topic = f"t/{unique}"
    async with running(
        private_broker.url, f"sub-{unique}", on_message=inbox, on_connect=on_connect
    ) as sub:
        await sub.subscribe(topic)
        await sub.wait_connected(10)
        await eventually(lambda: connects == 1)
        private_broker.stop()
        await eventually(lambda: not sub.connected)
        private_broker.start()
        await sub.wait_connected(30)
        await eventually(lambda: connects == 2)
        async with running(private_broker.url, f"pub-{unique}") as pub:
            await pub.wait_connected(10)
            await pub.publish(topic, b"after the restart")
        message = await inbox.next()
    assert message.payload == b"after the restart"  # the broker kept no session: resubscribed


WILL_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from protocol.mqtt import MQTTClient, Will

    async def main():
        url, topic = sys.argv[1], sys.argv[2]
        will = Will(topic=topic, payload=b"offline", qos=1, retain=True)
        client = MQTTClient(url, "will-child-" + topic.replace("/", "-"), will=will)
        await client.start()
        await client.wait_connected(10)
        await client.publish(topic, b"online", retain=True)
        print("ready", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_will_is_published_when_the_client_dies(broker_url: str, unique: str) -> None:
    topic = f"t/{unique}/status"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WILL_CHILD, broker_url, topic, cwd=ROOT, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), 30) == b"ready\n"
    finally:
        child.kill()  # SIGKILL: no DISCONNECT
        await child.wait()
    inbox = Inbox()
    async with running(broker_url, f"sub-{unique}", on_message=inbox) as sub:
        await sub.subscribe(topic)
        await sub.wait_connected(10)
        message = await inbox.next()
        while message.payload == b"online":  # subscribed before the broker saw the close
            message = await inbox.next()
    assert message.payload == b"offline"


async def test_stop_does_not_send_the_will(broker_url: str, unique: str) -> None:
    topic = f"t/{unique}/status"
    inbox = Inbox()
    async with running(broker_url, f"sub-{unique}", on_message=inbox) as sub:
        await sub.subscribe(topic)
        await sub.wait_connected(10)
        will = Will(topic=topic, payload=b"offline")
        async with running(broker_url, f"dev-{unique}", will=will) as dev:
            await dev.wait_connected(10)
            await dev.publish(topic, b"online", retain=True)
            assert (await inbox.next()).payload == b"online"
        async with running(broker_url, f"probe-{unique}") as probe:  # after dev's DISCONNECT
            await probe.wait_connected(10)
            await probe.publish(topic, b"marker")
        assert (await inbox.next()).payload == b"marker"
        assert inbox.queue.empty()


async def test_unacked_message_is_redelivered_to_a_resumed_session(
    broker_url: str, unique: str
) -> None:
    """manual_ack + clean_start=False + session_expiry: Mosquitto 2.0 resends what was not acked."""
    topic = f"t/{unique}"
    options: dict[str, Any] = {"manual_ack": True, "clean_start": False, "session_expiry": 60}
    first = Inbox()
    async with running(broker_url, f"sub-{unique}", on_message=first, **options) as sub:
        await sub.subscribe(topic)
        await sub.wait_connected(10)
        async with running(broker_url, f"pub-{unique}") as pub:
            await pub.wait_connected(10)
            await pub.publish(topic, b"one")
            await pub.publish(topic, b"two")
        one, two = await first.next(), await first.next()
        assert (one.payload, two.payload) == (b"one", b"two")
        two.ack()
        two.ack()  # idempotent
    again = Inbox()
    async with running(broker_url, f"sub-{unique}", on_message=again, **options) as sub:
        await sub.wait_connected(10)
        redelivered = await again.next()
        assert redelivered.payload == b"one"
        redelivered.ack()
        async with running(broker_url, f"pub-{unique}") as pub:
            await pub.wait_connected(10)
            await pub.publish(topic, b"three")
        assert (await again.next()).payload == b"three"  # "two" was acked: not sent again
    assert again.queue.empty()


# --- against amqtt: the fallback to MQTT 3.1.1 ---------------------------------------------


async def test_falls_back_to_311_when_the_broker_refuses_v5(
    unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker = await run_embedded_broker("127.0.0.1", free_port())
    try:
        inbox = Inbox()
        with caplog.at_level(logging.WARNING, logger="protocol.mqtt"):
            async with running(broker.url, f"sub-{unique}", on_message=inbox) as sub:
                await sub.subscribe(f"t/{unique}")
                await sub.wait_connected(10)
                assert sub.protocol_version == "3.1.1"
                async with running(broker.url, f"pub-{unique}") as pub:
                    await pub.wait_connected(10)
                    await pub.publish(f"t/{unique}", b"over 3.1.1")
                assert (await inbox.next()).payload == b"over 3.1.1"
        assert any("falling back to MQTT 3.1.1" in r.getMessage() for r in caplog.records)
    finally:
        await broker.stop()


async def test_falls_back_when_the_broker_never_answers_v5(
    unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A v5 CONNECT with properties (a persistent session) gets no CONNACK at all from amqtt."""
    broker = await run_embedded_broker("127.0.0.1", free_port())
    options: dict[str, Any] = {"clean_start": False, "session_expiry": 60, "connect_timeout": 0.5}
    try:
        with caplog.at_level(logging.INFO, logger="protocol.mqtt"):
            async with running(broker.url, f"cp-{unique}", **options) as client:
                await client.wait_connected(20)
                assert client.protocol_version == "3.1.1"
        messages = [r.getMessage() for r in caplog.records]
        assert any("trying MQTT 3.1.1" in m for m in messages)
        assert any("falling back to MQTT 3.1.1" in m for m in messages)
    finally:
        await broker.stop()


async def test_explicit_v5_does_not_fall_back(unique: str) -> None:
    broker = await run_embedded_broker("127.0.0.1", free_port())
    try:
        async with running(broker.url, f"c-{unique}", protocol="5") as client:
            with pytest.raises(NotConnected, match="Unsupported protocol version"):
                await client.wait_connected(1.0)
            assert client.protocol_version == "5"
    finally:
        await broker.stop()


def test_will_defaults_are_retained_qos1() -> None:
    will = Will(topic="a/b", payload=b"x")
    assert (will.qos, will.retain) == (1, True)
