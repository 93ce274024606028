"""controlplane.broker: the demo's broker, mosquitto (when installed) or embedded amqtt."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import sys
from pathlib import Path

import pytest

from controlplane.broker import (
    find_mosquitto,
    main,
    mosquitto_config,
    run_embedded_broker,
    start_mosquitto,
)
from protocol.mqtt import Message, MQTTClient
from tests.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[2]
needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")


def test_mosquitto_config_is_20_syntax_and_sizes_the_queue() -> None:
    lines = mosquitto_config(18830).splitlines()
    assert "listener 18830 127.0.0.1" in lines
    assert "allow_anonymous true" in lines
    assert "persistence false" in lines
    assert "max_queued_messages 100000" in lines  # the default 1000 drops QoS 1 bursts silently
    assert "max_inflight_messages 100" in lines
    assert "max_queued_messages 5" in mosquitto_config(1, max_queued_messages=5)


def test_find_mosquitto_agrees_with_path() -> None:
    found = find_mosquitto()
    assert found is None or Path(found).is_file()
    if shutil.which("mosquitto"):
        assert found == shutil.which("mosquitto")


def test_main_rejects_a_bad_port(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--port", "0", "--embedded"])
    assert info.value.code == 2
    assert "--port must be between 1 and 65535" in capsys.readouterr().err


async def round_trip(url: str, token: str) -> Message:
    got: asyncio.Queue[Message] = asyncio.Queue()
    sub = MQTTClient(url, f"sub-{token}", on_message=got.put_nowait, reconnect_min=0.05)
    pub = MQTTClient(url, f"pub-{token}", reconnect_min=0.05)
    await sub.subscribe(f"t/{token}")
    await sub.start()
    await pub.start()
    try:
        await sub.wait_connected(10)
        await pub.wait_connected(10)
        await pub.publish(f"t/{token}", b"ping")
        return await asyncio.wait_for(got.get(), 10)
    finally:
        await pub.stop()
        await sub.stop()


@needs_mosquitto
async def test_start_mosquitto_serves_mqtt_v5(tmp_path: Path, unique: str) -> None:
    port = free_port()
    proc = start_mosquitto(tmp_path, port)
    try:
        await wait_listening(port)
        assert (await round_trip(f"mqtt://127.0.0.1:{port}", unique)).payload == b"ping"
    finally:
        proc.terminate()
        proc.wait(10)
    assert (tmp_path / "mosquitto.conf").read_text() == mosquitto_config(port)


async def test_embedded_broker_serves_mqtt_311(unique: str) -> None:
    broker = await run_embedded_broker("127.0.0.1", free_port())
    try:
        assert (await round_trip(broker.url, unique)).payload == b"ping"
    finally:
        await broker.stop()
    await broker.stop()  # idempotent


@pytest.mark.parametrize(
    "embedded", [True, pytest.param(False, marks=needs_mosquitto)], ids=["amqtt", "mosquitto"]
)
async def test_module_runs_a_broker_and_stops_on_sigterm(
    tmp_path: Path, unique: str, embedded: bool
) -> None:
    port = free_port()
    argv = ["-m", "controlplane.broker", "--port", str(port), "--workdir", str(tmp_path / "b")]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, *(["--embedded"] if embedded else []), cwd=ROOT
    )
    try:
        await wait_listening(port)
        assert (await round_trip(f"mqtt://127.0.0.1:{port}", unique)).payload == b"ping"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 20)
    assert code == 0


async def wait_listening(port: int) -> None:
    async def poll() -> None:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), 30)
