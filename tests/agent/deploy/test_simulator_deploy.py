"""Simulated devices deploy: each downloads and verifies its own copy, they share one model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.deploy.slots import ModelSlots, slot_name
from agent.simulator import build_parser, device_ids, main, simulate
from protocol.messages import decode
from protocol.mqtt import Message, MQTTClient
from protocol.release import DeploymentReport
from protocol.signing import public_key_text
from protocol.topics import Channel, device_topic
from tests.agent.deploy.conftest import DeployEnv
from tests.agent.deploy.releases import FP32, INT8, MODEL, desired_payload, make_release

V2 = make_release(INT8, version="2.0.0", seq=2)


async def test_simulated_fleet_deploys(env: DeployEnv, unique: str, tmp_path: Path) -> None:
    env.server.add(INT8)
    key_file = tmp_path / "release.pub"
    key_file.write_text(public_key_text(env.key.public_key()) + "\n")
    prefix = f"simdep-{unique}"
    ids = device_ids(prefix, 3)
    args = build_parser().parse_args(
        [
            "--broker", env.broker_url,
            "--devices", "3",
            "--rate", "5",
            "--duration", "20",
            "--model", str(FP32),
            "--data-dir", str(tmp_path / "sim"),
            "--id-prefix", prefix,
            "--release-key", str(key_file),
            "--tag", "site=lab",
            "--telemetry-interval", "60",
        ]
    )  # fmt: skip
    reports: dict[str, str] = {}

    def on_message(message: Message) -> None:
        report = decode(DeploymentReport, message.payload)
        reports[report.device_id] = report.state

    watcher = MQTTClient(env.broker_url, client_id=f"w-{unique}", on_message=on_message)
    for device_id in ids:
        await watcher.subscribe(device_topic(device_id, Channel.DEPLOYMENT))
    await watcher.start()
    await watcher.wait_connected(10)
    run = asyncio.create_task(simulate(args))
    try:
        await asyncio.sleep(2)  # the devices connect
        for device_id in ids:
            payload = desired_payload(env.key, device_id, 1, V2, base_url=env.server.url)
            topic = device_topic(device_id, Channel.DESIRED)
            await env.publisher.publish(topic, payload, qos=1, retain=True)
        for _ in range(400):
            if all(reports.get(d) == "active" for d in ids):
                break
            await asyncio.sleep(0.05)
        assert {d: reports.get(d) for d in ids} == dict.fromkeys(ids, "active")
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        for device_id in ids:
            topic = device_topic(device_id, Channel.DESIRED)
            await env.publisher.publish(topic, b"", qos=1, retain=True)
        await watcher.stop()
    assert len(env.server.ranges) == 3  # every device fetched its own copy
    slot = slot_name(2, V2.artifacts["cpu"].sha256)
    for device_id in ids:
        slots = ModelSlots(tmp_path / "sim" / device_id / "models", MODEL)
        assert slots.load().active == slot and slots.complete(slot) is not None


def test_a_bad_release_key_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--release-key", "ed25519:nope", "--duration", "0"]) == 2
    assert "deploy.public_key" in capsys.readouterr().err
    assert main(["--release-key", str(tmp_path / "missing.pub"), "--duration", "0"]) == 2
    assert "cannot read" in capsys.readouterr().err
