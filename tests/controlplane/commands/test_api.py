"""Remote commands end to end in process: the real app (store, ingestion, requester, API) on the
real Mosquitto (MQTT v5) and on the embedded amqtt broker (3.1.1), with a real agent
(:class:`agent.daemon.Agent`) answering; a plain MQTT client plays a misbehaving device."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent import logs
from agent.config import validate
from agent.daemon import Agent, load_models
from controlplane.app import create_app
from controlplane.broker import run_embedded_broker
from controlplane.settings import Settings
from protocol.commands import CommandReply, CommandRequest, reply_topic
from protocol.messages import Status, decode, encode
from protocol.mqtt import Message, MQTTClient
from protocol.topics import Channel, device_topic
from tests.agent.deploy.releases import FP32
from tests.controlplane.auth_helpers import authorize, make_token
from tests.controlplane.rollouts.devices import eventually
from tests.mosquitto import free_port

pytestmark = pytest.mark.slow

SENDER = "ana"
"""The operator whose token the clients of :func:`control_plane` carry: the sender recorded."""


@asynccontextmanager
async def control_plane(
    broker_url: str, data_dir: Path, client_id: str
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(broker=broker_url, data_dir=data_dir, client_id=client_id)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.ctx.ingestor.client.wait_connected(10)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        make_token(app.state.ctx.store)  # an admin exists: the control plane is set up
        client = httpx.AsyncClient(transport=transport, base_url="http://cp")
        async with authorize(client, app.state.ctx.store, SENDER, "operator") as http:
            yield http


@asynccontextmanager
async def running_agent(broker_url: str, device_id: str, tmp: Path) -> AsyncIterator[Agent]:
    settings = validate(
        {
            "device_id": device_id, "broker": broker_url, "data_dir": str(tmp / device_id),
            "models": [{"path": str(FP32)}], "backends": ["litert"],
            "uplink": {"telemetry_interval_s": 60}, "outbox": {"synchronous": "NORMAL"},
        }
    )  # fmt: skip
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    agent = Agent(settings, load_models(settings))
    await agent.start()
    try:
        await agent.client.wait_connected(10)
        yield agent
    finally:
        await agent.stop()
        for served in agent.models.values():
            served.close()
        await agent.cache.drain()
        agent.cache.close_all()


async def known(http: httpx.AsyncClient, device_id: str) -> None:
    async def check() -> bool:
        return (await http.get(f"/api/v1/devices/{device_id}")).status_code == 200

    await eventually(check, what=f"{device_id}'s birth")


async def run(http: httpx.AsyncClient, device_id: str, command: str, **body: Any) -> httpx.Response:
    return await http.post(
        f"/api/v1/devices/{device_id}/commands",
        json={"command": command, **body},
        timeout=30,
    )


async def test_every_command_end_to_end_and_recorded_with_its_sender(
    broker_url: str, unique: str, tmp_path: Path
) -> None:
    device_id = f"cmd-{unique}"
    level = logs.current_level()
    async with (
        control_plane(broker_url, tmp_path / "cp", f"cp-{unique}") as http,
        running_agent(broker_url, device_id, tmp_path) as agent,
    ):
        await known(http, device_id)
        answers: dict[str, dict[str, Any]] = {}
        try:
            for command, args in [
                ("ping", {}),
                ("diag", {}),
                ("set-log-level", {"level": "INFO"}),
                ("logs", {"tail": 20}),
                ("resync", {}),
                ("reload-model", {"model": "digits-edge"}),
            ]:
                response = await run(http, device_id, command, args=args)
                assert response.status_code == 200, response.text
                answers[command] = response.json()
        finally:
            logs.set_level(level)
        for command, record in answers.items():
            assert record["status"] == "ok", (command, record)
            assert record["sender"] == "ana" and record["device_id"] == device_id
            assert record["answered_at"] >= record["sent_at"]
            assert abs(record["clock_offset_s"]) < 1 and record["round_trip_s"] >= 0
        assert answers["ping"]["result"] == {"pong": True}
        diag = answers["diag"]["result"]
        assert diag["models"][0]["backend"] == "litert" and diag["mqtt"]["connected"]
        assert answers["set-log-level"]["result"]["level"] == "INFO"
        lines = answers["logs"]["result"]["lines"]
        assert any("set-log-level from ana" in line["msg"] for line in lines)
        assert answers["resync"]["result"]["birth"] == "done"
        assert answers["reload-model"]["result"]["reloaded"][0]["name"] == "digits-edge"
        assert agent.commands.ran_total == 6

        listed = (await http.get(f"/api/v1/devices/{device_id}/commands")).json()
        assert listed["count"] == 6
        assert [c["command"] for c in listed["commands"]] == list(reversed(answers))
        assert {c["sender"] for c in listed["commands"]} == {"ana"}
        # the sender is who the token belongs to, whatever a client claims; no token, no command
        claimed = await http.post(f"/api/v1/devices/{device_id}/commands",
                                  json={"command": "ping"},
                                  headers={"X-Edgefleet-User": "mallory"})  # fmt: skip
        assert claimed.status_code == 200 and claimed.json()["sender"] == "ana"
        anonymous = await http.post(f"/api/v1/devices/{device_id}/commands",
                                    json={"command": "ping"},
                                    headers={"Authorization": ""})  # fmt: skip
        assert anonymous.status_code == 401
        assert agent.commands.ran_total == 7


async def test_an_error_reply_is_recorded_as_an_error(
    broker_url: str, unique: str, tmp_path: Path
) -> None:
    device_id = f"cmd-{unique}"
    async with (
        control_plane(broker_url, tmp_path / "cp", f"cp-{unique}") as http,
        running_agent(broker_url, device_id, tmp_path),
    ):
        await known(http, device_id)
        response = await run(http, device_id, "reload-model", args={"model": "nope"})
        assert response.status_code == 200
        record = response.json()
        assert record["status"] == "error" and "no model named 'nope'" in record["error"]


async def test_bad_requests_are_refused_before_anything_is_sent(
    broker_url: str, unique: str, tmp_path: Path
) -> None:
    device_id = f"cmd-{unique}"
    async with (
        control_plane(broker_url, tmp_path / "cp", f"cp-{unique}") as http,
        running_agent(broker_url, device_id, tmp_path) as agent,
    ):
        await known(http, device_id)
        unknown = await run(http, f"ghost-{unique}", "ping")
        assert unknown.status_code == 404
        assert unknown.json() == {"error": f"unknown device 'ghost-{unique}'"}
        shell = await run(http, device_id, "shell", args={"cmd": "reboot"})
        assert shell.status_code == 400 and "unknown command 'shell'" in shell.json()["error"]
        level = await run(http, device_id, "set-log-level", args={"level": "LOUD"})
        assert level.status_code == 400 and level.json()["parameter"] == "args"
        bad_id = await run(http, "a/b", "ping")
        assert bad_id.status_code in (400, 404)
        not_json = await http.post(f"/api/v1/devices/{device_id}/commands", content=b"{")
        assert not_json.status_code == 400 and not_json.json()["parameter"] == "body"
        listed = (await http.get(f"/api/v1/devices/{device_id}/commands")).json()
        assert listed["count"] == 0 and agent.commands.ran_total == 0
        assert (await http.get(f"/api/v1/devices/ghost-{unique}/commands")).status_code == 404


async def test_an_offline_device_times_out_with_504_and_a_timeout_record(
    broker_url: str, unique: str, tmp_path: Path
) -> None:
    device_id = f"cmd-{unique}"
    async with control_plane(broker_url, tmp_path / "cp", f"cp-{unique}") as http:
        async with running_agent(broker_url, device_id, tmp_path):
            await known(http, device_id)
        response = await run(http, device_id, "diag", timeout_s=1)
        assert response.status_code == 504
        body = response.json()
        assert body["error"].startswith(f"device {device_id} did not answer within 1s")
        assert body["command"]["status"] == "timeout"
        [record] = (await http.get(f"/api/v1/devices/{device_id}/commands")).json()["commands"]
        assert record["status"] == "timeout" and record["sender"] == "ana"
        assert record["answered_at"] is None


async def test_only_the_right_device_and_instance_answer(
    broker_url: str, unique: str, tmp_path: Path
) -> None:
    """A reply published on another device's topic, or carrying another instance's correlation,
    does not answer a request."""
    target, other = f"cmd-{unique}", f"other-{unique}"
    requests: asyncio.Queue[Message] = asyncio.Queue()
    fake = MQTTClient(broker_url, f"fake-{unique}", on_message=requests.put_nowait)
    await fake.subscribe(device_topic(target, Channel.COMMANDS))
    await fake.start()
    try:
        await fake.wait_connected(10)
        birth = encode(Status(device_id=target, state="online"))
        await fake.publish(device_topic(target, Channel.STATUS), birth, retain=True)
        async with control_plane(broker_url, tmp_path / "cp", f"cp-{unique}") as http:
            await known(http, target)
            pending = asyncio.create_task(run(http, target, "ping", timeout_s=3))
            message = await asyncio.wait_for(requests.get(), 10)
            request = decode(CommandRequest, message.payload)
            assert message.response_topic == reply_topic(target)
            assert message.correlation_data == (request.correlation_id or "").encode()
            assert message.message_expiry_s is not None and message.message_expiry_s <= 3

            def reply(device_id: str, correlation: str) -> bytes:
                return encode(CommandReply(
                    device_id=device_id, request_id=request.request_id, command="ping", ok=True,
                    result={"forged": True}, received_at=time.time(), correlation_id=correlation,
                ))  # fmt: skip

            corr = request.correlation_id or ""
            await fake.publish(
                reply_topic(other), reply(other, corr), correlation_data=corr.encode()
            )
            wrong_instance = "someone-else:" + request.request_id
            await fake.publish(reply_topic(target), reply(target, wrong_instance),
                               correlation_data=wrong_instance.encode())  # fmt: skip
            response = await pending
            assert response.status_code == 504, response.text
    finally:
        await fake.publish(device_topic(target, Channel.STATUS), b"", retain=True)
        await fake.stop()


async def test_two_instances_each_get_their_own_replies(
    broker_url: str, unique: str, tmp_path: Path
) -> None:
    device_id = f"cmd-{unique}"
    async with (
        control_plane(broker_url, tmp_path / "cp1", f"cp1-{unique}") as one,
        control_plane(broker_url, tmp_path / "cp2", f"cp2-{unique}") as two,
        running_agent(broker_url, device_id, tmp_path) as agent,
    ):
        await known(one, device_id)
        await known(two, device_id)
        answers = await asyncio.gather(
            *(run(http, device_id, "ping") for http in (one, two, one, two))
        )
        assert [a.status_code for a in answers] == [200] * 4
        assert agent.commands.ran_total == 4
        for http in (one, two):
            listed = (await http.get(f"/api/v1/devices/{device_id}/commands")).json()
            assert [c["status"] for c in listed["commands"]] == ["ok", "ok"]


async def test_mqtt_311_falls_back_to_the_payload_fields(
    unique: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The embedded amqtt broker speaks 3.1.1 only: no properties travel, the payload's
    reply_to, correlation_id and expires_at do the work."""
    caplog.set_level(logging.WARNING)
    broker = await run_embedded_broker("127.0.0.1", free_port())
    device_id = f"cmd-{unique}"
    try:
        async with (
            control_plane(broker.url, tmp_path / "cp", f"cp-{unique}") as http,
            running_agent(broker.url, device_id, tmp_path) as agent,
        ):
            assert agent.client.protocol_version == "3.1.1"
            await known(http, device_id)
            response = await run(http, device_id, "diag")
            assert response.status_code == 200, response.text
            record = response.json()
            assert record["status"] == "ok"
            assert record["result"]["mqtt"]["protocol_version"] == "3.1.1"
            quick = await run(http, device_id, "ping", timeout_s=0.5)
            assert quick.status_code == 200 and quick.json()["result"] == {"pong": True}
    finally:
        await broker.stop()
