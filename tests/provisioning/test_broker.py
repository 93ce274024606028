"""The generated broker configuration against the real Mosquitto (2.0.11 on Debian 12).

MQTT v5 throughout, so that a publish the ACL forbids comes back as "not authorized". Non-delivery
is checked as Mosquitto's own tests do: a marker is sent after the forbidden message, and once the
marker has arrived, the forbidden one has not (the broker delivers in order).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography import x509

from controlplane.identities.broker import OneOff, cut_session
from protocol.errors import NotConnected, PublishRefused
from protocol.mqtt import BrokerURL, Message, MQTTClient, TLSFiles
from protocol.mqtt.tls import tls_context
from protocol.topics import Channel, device_filter, device_topic, shared_filter
from provisioning import pki
from provisioning.ca import FleetCA, utcnow
from tests.provisioning.secure_broker import SecureBroker

pytestmark = pytest.mark.timeout(60)


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.arrived = asyncio.Event()

    def __call__(self, message: Message) -> None:
        self.messages.append(message)
        self.arrived.set()

    async def wait_for(self, topic: str, payload: bytes, timeout: float = 10) -> None:
        async def seen() -> None:
            while not any(m.topic == topic and m.payload == payload for m in self.messages):
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(seen(), timeout)

    def payloads(self, topic: str) -> list[bytes]:
        return [m.payload for m in self.messages if m.topic == topic]


@asynccontextmanager
async def connected(
    broker: SecureBroker, client_id: str, files: TLSFiles, inbox: Inbox | None = None
) -> AsyncIterator[MQTTClient]:
    client = MQTTClient(
        broker.url, client_id, protocol="5", tls=files, on_message=inbox, reconnect_min=0.1
    )
    await client.start()
    try:
        await client.wait_connected(10)
        yield client
    finally:
        await client.stop()


async def refused(broker: SecureBroker, client_id: str, files: TLSFiles) -> bool:
    """True when the broker does not let a client with ``files`` in (within a few tries)."""
    client = MQTTClient(broker.url, client_id, protocol="5", tls=files, reconnect_min=0.1)
    await client.start()
    try:
        await client.wait_connected(3)
        return False
    except NotConnected:
        return True
    finally:
        await client.stop()


async def test_a_device_cannot_publish_on_another_devices_topics(
    secure_broker: SecureBroker, unique: str
) -> None:
    a, b = f"a-{unique}", f"b-{unique}"
    a_files, _ = secure_broker.device(a)
    cp_inbox = Inbox()
    async with (
        connected(secure_broker, "cp", secure_broker.control_plane(), cp_inbox) as cp,
        connected(secure_broker, a, a_files) as device_a,
    ):
        for channel in (Channel.STATUS, Channel.RESULTS):
            await cp.subscribe(device_filter(channel))
        for channel in Channel:  # not even its own desired/commands: those are the cp's to send
            if channel in (Channel.DESIRED, Channel.COMMANDS):
                with pytest.raises(PublishRefused, match="Not authorized"):
                    await device_a.publish(device_topic(a, channel), b"forged")
        for channel in (Channel.STATUS, Channel.RESULTS, Channel.DESIRED):
            with pytest.raises(PublishRefused, match="Not authorized"):
                await device_a.publish(device_topic(b, channel), b"forged")
        await device_a.publish(device_topic(a, Channel.STATUS), b"marker")
        await cp_inbox.wait_for(device_topic(a, Channel.STATUS), b"marker")
        assert cp_inbox.payloads(device_topic(b, Channel.STATUS)) == []
        assert cp_inbox.payloads(device_topic(b, Channel.RESULTS)) == []


async def test_a_device_cannot_receive_another_devices_messages(
    secure_broker: SecureBroker, unique: str
) -> None:
    a, b = f"a-{unique}", f"b-{unique}"
    a_files, _ = secure_broker.device(a)
    inbox = Inbox()
    async with (
        connected(secure_broker, "cp", secure_broker.control_plane()) as cp,
        connected(secure_broker, a, a_files, inbox) as device_a,
    ):
        # 2.0.11 grants these subscriptions and filters on delivery, by the read ACL
        await device_a.subscribe(device_topic(b, Channel.DESIRED))
        await device_a.subscribe(device_filter(Channel.COMMANDS))
        await device_a.subscribe("#")
        await cp.publish(device_topic(b, Channel.DESIRED), b"for-b", retain=True)
        await cp.publish(device_topic(b, Channel.COMMANDS), b"for-b")
        await cp.publish(device_topic(a, Channel.COMMANDS), b"marker")
        await inbox.wait_for(device_topic(a, Channel.COMMANDS), b"marker")
        assert [m.topic for m in inbox.messages if b in m.topic] == []


async def test_a_device_cannot_take_another_devices_client_id(
    secure_broker: SecureBroker, unique: str
) -> None:
    a, b = f"a-{unique}", f"b-{unique}"
    (a_files, _), (b_files, _) = secure_broker.device(a), secure_broker.device(b)
    cp_inbox = Inbox()
    async with (
        connected(secure_broker, "cp", secure_broker.control_plane(), cp_inbox) as cp,
        connected(secure_broker, b, b_files) as device_b,
    ):
        await cp.subscribe(device_filter(Channel.STATUS))
        # A asks for B's client id: the broker makes it A's CN, so B stays connected
        async with connected(secure_broker, b, a_files) as a_as_b:
            with pytest.raises(PublishRefused):
                await a_as_b.publish(device_topic(b, Channel.STATUS), b"forged")
            await a_as_b.publish(device_topic(a, Channel.STATUS), b"still-a")
            await device_b.publish(device_topic(b, Channel.STATUS), b"b-alive")
            await cp_inbox.wait_for(device_topic(b, Channel.STATUS), b"b-alive")
            await cp_inbox.wait_for(device_topic(a, Channel.STATUS), b"still-a")
        assert device_b.connected
        assert b"forged" not in cp_inbox.payloads(device_topic(b, Channel.STATUS))


async def test_the_control_plane_reads_every_device_and_sends_desired(
    secure_broker: SecureBroker, unique: str
) -> None:
    ids = [f"d{i}-{unique}" for i in range(3)]
    cp_inbox, inboxes = Inbox(), {i: Inbox() for i in ids}
    async with connected(secure_broker, "cp", secure_broker.control_plane(), cp_inbox) as cp:
        for channel in (Channel.STATUS, Channel.RESULTS):
            await cp.subscribe(device_filter(channel))
        await cp.subscribe(shared_filter("cp", device_filter(Channel.TELEMETRY)))  # replicas
        for device_id in ids:
            files, _ = secure_broker.device(device_id)
            async with connected(secure_broker, device_id, files, inboxes[device_id]) as dev:
                await dev.subscribe(device_topic(device_id, Channel.DESIRED))
                await dev.publish(device_topic(device_id, Channel.RESULTS), b"r")
                await cp.publish(device_topic(device_id, Channel.DESIRED), b"d")
                await inboxes[device_id].wait_for(device_topic(device_id, Channel.DESIRED), b"d")
                await cp_inbox.wait_for(device_topic(device_id, Channel.RESULTS), b"r")
                await dev.publish(device_topic(device_id, Channel.TELEMETRY), b"t", qos=1)
                await cp_inbox.wait_for(device_topic(device_id, Channel.TELEMETRY), b"t")
        with pytest.raises(PublishRefused):  # the control plane does not speak for devices
            await cp.publish(device_topic(ids[0], Channel.STATUS), b"forged")


async def test_expired_foreign_and_revoked_certificates_are_refused(
    secure_broker: SecureBroker, unique: str, tmp_path: Path
) -> None:
    device_id = f"dev-{unique}"
    good, _ = secure_broker.device(device_id)
    expired, _ = secure_broker.device(
        device_id, lifetime=dt.timedelta(hours=1), now=utcnow() - dt.timedelta(hours=3)
    )
    other_ca = FleetCA.create(tmp_path / "other-ca")
    foreign, _ = secure_broker.device(device_id, ca=other_ca, name="foreign")
    revoked, serial = secure_broker.device(device_id)
    secure_broker.revoke(serial)
    secure_broker.hup()
    async with connected(secure_broker, device_id, good):
        pass
    assert await refused(secure_broker, device_id, expired)
    assert await refused(secure_broker, device_id, foreign)
    assert await refused(secure_broker, device_id, revoked)
    assert await refused(secure_broker, device_id, TLSFiles(secure_broker.layout.ca_file))
    async with connected(secure_broker, device_id, good):  # the broker is still up, and fair
        pass


async def test_sighup_reloads_the_crl_but_leaves_a_live_session_that_the_cut_closes(
    secure_broker: SecureBroker, unique: str
) -> None:
    """What 2.0.11 does, and why a revocation also cuts the session (controlplane/identities)."""
    device_id = f"dev-{unique}"
    files, serial = secure_broker.device(device_id)
    cp_inbox = Inbox()
    async with (
        connected(secure_broker, "cp", secure_broker.control_plane(), cp_inbox) as cp,
        connected(secure_broker, device_id, files) as device,
    ):
        await cp.subscribe(device_filter(Channel.STATUS))
        canary, canary_serial = secure_broker.device(f"canary-{unique}")
        secure_broker.revoke(serial, canary_serial)
        secure_broker.hup()
        for _ in range(20):  # the broker handles the signal in its next loop
            if await refused(secure_broker, f"canary-{unique}", canary):
                break  # the CRL is in force ...
        else:
            pytest.fail("the broker did not apply the CRL after SIGHUP")
        await device.publish(device_topic(device_id, Channel.STATUS), b"after-hup")
        await cp_inbox.wait_for(device_topic(device_id, Channel.STATUS), b"after-hup")
        assert device.connected  # ... and the revoked device's live connection goes on
        outcome = await cut_session(
            BrokerURL.parse(secure_broker.url),
            secure_broker.layout.ca_file,
            device_id,
            _one_off(canary),
            _one_off(secure_broker.device(device_id, name="takeover")[0]),
        )
        assert outcome.ok, outcome.detail
        await asyncio.sleep(1.0)  # the device's client tries to reconnect, and is refused
        assert not device.connected
        with pytest.raises(NotConnected):
            await device.wait_connected(2)


def _one_off(files: TLSFiles) -> OneOff:
    assert files.cert_file is not None and files.key_file is not None
    return OneOff(files.cert_file.read_bytes(), files.key_file.read_bytes())


def _server_serial(broker: SecureBroker, files: TLSFiles) -> int:
    context = tls_context(files)
    with (
        socket.create_connection(("localhost", broker.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_reissued_server_certificates_are_served_after_sighup(
    secure_broker: SecureBroker, unique: str
) -> None:
    """Rotation of the broker's certificate (docs/security.md): no restart, no device cut off."""
    files, _ = secure_broker.device(f"dev-{unique}")
    before = _server_serial(secure_broker, files)
    async with connected(secure_broker, f"dev-{unique}", files) as device:
        pki.reissue(secure_broker.layout.root)
        secure_broker.hup()
        for _ in range(50):
            if _server_serial(secure_broker, files) != before:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the broker still serves its old certificate after SIGHUP")
        assert device.connected  # the live connection was not cut
    async with connected(secure_broker, f"dev-{unique}", files):  # and new ones trust the new one
        pass
