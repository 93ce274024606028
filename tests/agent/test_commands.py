"""agent.commands: a real agent on a real Mosquitto (MQTT v5) takes requests and answers them; what
must not run (expired, unknown, aimed at another topic) does not run.

The control plane's side is played here by a plain MQTT client, so that each request can be shaped
as the test needs (the control plane end to end is tested in tests/controlplane/commands).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent import logs
from agent.config import validate
from agent.daemon import Agent, load_models
from protocol.commands import CommandReply, CommandRequest, reply_topic
from protocol.messages import decode, encode
from protocol.mqtt import Message, MQTTClient
from protocol.topics import Channel, device_topic
from tests.agent.deploy.releases import FP32

pytestmark = pytest.mark.slow


class Replies:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[Message, CommandReply]] = asyncio.Queue()

    def __call__(self, message: Message) -> None:
        self.queue.put_nowait((message, decode(CommandReply, message.payload)))

    async def next(self, timeout: float = 10.0) -> tuple[Message, CommandReply]:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def none_within(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        assert self.queue.empty(), f"unexpected reply: {self.queue.get_nowait()[1]}"


@dataclass
class Bench:
    broker_url: str
    device_id: str
    tmp: Path
    cp: MQTTClient
    replies: Replies
    agents: list[Agent]

    def settings(self, **change: Any) -> Any:
        data: dict[str, Any] = {
            "device_id": self.device_id, "broker": self.broker_url,
            "data_dir": str(self.tmp / "agent"), "models": [{"path": str(FP32)}],
            "backends": ["litert"], "uplink": {"telemetry_interval_s": 60},
            "outbox": {"synchronous": "NORMAL"},
        }  # fmt: skip
        return validate(data | change)

    async def agent(self, **change: Any) -> Agent:
        settings = self.settings(**change)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        agent = Agent(settings, load_models(settings))
        await agent.start()
        await agent.client.wait_connected(10)
        self.agents.append(agent)
        return agent

    async def stop(self, agent: Agent) -> None:
        self.agents.remove(agent)
        await agent.stop()
        for served in agent.models.values():
            served.close()
        await agent.cache.drain()
        agent.cache.close_all()

    def request(self, command: str, *, timeout: float = 10.0, **fields: Any) -> CommandRequest:
        now = time.time()
        base: dict[str, Any] = {
            "device_id": self.device_id, "command": command, "sender": "test",
            "sent_at": now, "expires_at": now + timeout, "reply_to": reply_topic(self.device_id),
        }  # fmt: skip
        request = CommandRequest(**(base | fields))
        return request.model_copy(update={"correlation_id": f"cp-test:{request.request_id}"})

    async def send(
        self, request: CommandRequest | bytes, *, expiry: float | None = 10.0, **props: Any
    ) -> None:
        payload = request if isinstance(request, bytes) else encode(request)
        correlation = None if isinstance(request, bytes) else request.correlation_id
        options: dict[str, Any] = {
            "response_topic": reply_topic(self.device_id),
            "correlation_data": correlation.encode() if correlation else None,
            "message_expiry_s": expiry,
        } | props
        await self.cp.publish(device_topic(self.device_id, Channel.COMMANDS), payload, **options)

    async def ask(self, command: str, **fields: Any) -> CommandReply:
        request = self.request(command, **fields)
        await self.send(request)
        message, reply = await self.replies.next()
        assert reply.request_id == request.request_id
        assert message.correlation_data == request.correlation_id.encode()  # type: ignore[union-attr]
        return reply


@pytest.fixture
async def bench(broker_url: str, unique: str, tmp_path: Path) -> AsyncIterator[Bench]:
    device_id = f"cmd-{unique}"
    replies = Replies()
    cp = MQTTClient(broker_url, f"cp-{unique}", on_message=replies)
    await cp.subscribe(reply_topic(device_id))
    await cp.start()
    await cp.wait_connected(10)
    b = Bench(broker_url, device_id, tmp_path, cp, replies, [])
    try:
        yield b
    finally:
        for agent in list(b.agents):
            await b.stop(agent)
        await cp.stop()


async def test_ping_gets_a_pong_on_the_response_topic_with_the_correlation_data(
    bench: Bench,
) -> None:
    await bench.agent()
    before = time.time()
    reply = await bench.ask("ping")
    assert reply.ok and reply.result == {"pong": True} and reply.command == "ping"
    assert reply.device_id == bench.device_id
    assert before <= reply.received_at <= reply.agent_time <= time.time()


async def test_diag_answers_what_an_engineer_asks_first(bench: Bench) -> None:
    agent = await bench.agent()
    reply = await bench.ask("diag")
    assert reply.ok, reply.error
    d = reply.result
    assert d["agent"]["device_id"] == bench.device_id and d["agent"]["log_level"]
    assert d["runtime"]["packages"]["ai-edge-litert"]  # installed here
    [model] = d["models"]
    assert model["name"] == "digits-edge" and model["backend"] == "litert"
    assert model["artifact_sha256"] == agent.models["digits-edge"].artifact_sha256
    assert model["serving_from"] == "configured file"
    assert d["accelerators"][0]["kind"] == "cpu"
    assert d["outbox"]["depth"] == 0 and d["disk"]["free_bytes"] > 0
    assert d["memory"]["rss_bytes"] > 0
    assert d["mqtt"]["connected"] and d["mqtt"]["protocol_version"] == "5"
    assert d["mqtt"]["history"][-1]["event"] == "connected"


async def test_logs_tail_returns_the_last_lines(bench: Bench, unique: str) -> None:
    await bench.agent()
    logging.getLogger("tests.commands").error("marker %s", unique, extra={"marker": unique})
    reply = await bench.ask("logs", args={"tail": 5})
    assert reply.ok and 1 <= reply.result["count"] <= 5
    last = [line for line in reply.result["lines"] if line.get("marker") == unique]
    assert last and last[0]["msg"] == f"marker {unique}" and last[0]["level"] == "ERROR"


async def test_set_log_level_changes_the_level_and_refuses_an_unknown_one(bench: Bench) -> None:
    await bench.agent()
    before = logs.current_level()
    try:
        reply = await bench.ask("set-log-level", args={"level": "debug"})
        assert reply.ok and reply.result == {"previous": before, "level": "DEBUG"}
        assert logs.current_level() == "DEBUG"
        refused = await bench.ask("set-log-level", args={"level": "LOUD"})
        assert not refused.ok and "level" in (refused.error or "")
        assert logs.current_level() == "DEBUG"
    finally:
        logs.set_level(before)


async def test_an_unknown_command_is_refused_and_never_run(bench: Bench) -> None:
    agent = await bench.agent()
    request = bench.request("ping")
    body = encode(request).replace(b'"command":"ping"', b'"command":"shell"')
    await bench.send(body, correlation_data=request.correlation_id.encode())  # type: ignore[union-attr]
    _, reply = await bench.replies.next()
    assert not reply.ok and reply.error is not None
    assert reply.error.startswith("unknown command 'shell': the commands are ping, diag")
    assert agent.commands.ran_total == 0 and agent.commands.refused_total == 1


async def test_a_reply_topic_outside_the_device_is_refused(bench: Bench, unique: str) -> None:
    agent = await bench.agent()
    other = reply_topic(f"other-{unique}")
    await bench.send(bench.request("ping", reply_to=other))
    _, reply = await bench.replies.next()  # the refusal comes on its own reply topic
    assert not reply.ok and "is not this device's" in (reply.error or "")
    await bench.send(bench.request("ping"), response_topic=other)
    _, reply = await bench.replies.next()
    assert not reply.ok and "is not this device's" in (reply.error or "")
    assert agent.commands.ran_total == 0


async def test_a_request_past_its_expires_at_is_not_run(bench: Bench) -> None:
    agent = await bench.agent()
    now = time.time()
    stale = bench.request("resync", sent_at=now - 60, expires_at=now - 50)
    await bench.send(stale)  # the broker's expiry is fine: the device's clock says no
    _, reply = await bench.replies.next()
    assert not reply.ok and (reply.error or "").startswith("expired")
    assert agent.commands.ran_total == 0


async def test_a_redelivered_request_runs_once(bench: Bench) -> None:
    agent = await bench.agent()
    request = bench.request("ping")
    await bench.send(request)
    await bench.send(request)
    _, reply = await bench.replies.next()
    assert reply.ok
    await bench.replies.none_within(0.5)
    assert agent.commands.ran_total == 1


async def test_a_request_for_an_offline_device_expires_instead_of_running_later(
    bench: Bench,
) -> None:
    """With a persistent session the broker keeps commands for an offline device; one whose
    message expiry passed before the device came back never reaches it (and never runs), one
    still alive does."""
    agent = await bench.agent(mqtt_session_expiry_s=60)
    await bench.stop(agent)  # the session stays on the broker
    short = bench.request("ping", timeout=60)  # expires_at is far: only the broker's expiry acts
    alive = bench.request("ping", timeout=60)
    await bench.send(short, expiry=1)
    await bench.send(alive, expiry=60)
    await asyncio.sleep(2.2)
    agent = await bench.agent(mqtt_session_expiry_s=60)
    _, reply = await bench.replies.next()
    assert reply.ok and reply.request_id == alive.request_id
    await bench.replies.none_within(0.5)
    assert agent.commands.ran_total == 1


async def test_a_late_delivery_without_broker_expiry_is_refused_by_expires_at(
    bench: Bench,
) -> None:
    """A 3.1.1 session (or a broker without message expiry) hands over an old request: the
    device's clock refuses it."""
    agent = await bench.agent(mqtt_session_expiry_s=60)
    await bench.stop(agent)
    now = time.time()
    late = bench.request("reload-model", sent_at=now - 30, expires_at=now - 20)
    await bench.send(late, expiry=None)
    agent = await bench.agent(mqtt_session_expiry_s=60)
    _, reply = await bench.replies.next()
    assert not reply.ok and (reply.error or "").startswith("expired")
    assert agent.commands.ran_total == 0


async def test_reload_model_loads_a_fresh_interpreter(bench: Bench) -> None:
    agent = await bench.agent()
    before = agent.models["digits-edge"]
    reply = await bench.ask("reload-model", args={"model": "digits-edge"})
    assert reply.ok, reply.error
    [reloaded] = reply.result["reloaded"]
    assert reloaded["name"] == "digits-edge" and reloaded["backend"] == "litert"
    assert agent.models["digits-edge"] is not before
    assert reloaded["artifact_sha256"] == before.artifact_sha256
    missing = await bench.ask("reload-model", args={"model": "nope"})
    assert not missing.ok and "no model named 'nope'" in (missing.error or "")


async def test_resync_republishes_the_birth(bench: Bench) -> None:
    agent = await bench.agent()
    births: asyncio.Queue[Message] = asyncio.Queue()
    watcher = MQTTClient(bench.broker_url, f"w-{bench.device_id}", on_message=births.put_nowait)
    await watcher.subscribe(device_topic(bench.device_id, Channel.STATUS))
    await watcher.start()
    try:
        await asyncio.wait_for(births.get(), 10)  # the retained one
        reply = await bench.ask("resync")
        assert reply.ok and reply.result["birth"] == "done"
        assert reply.result["telemetry"] == "done" and reply.result["desired"] == "done"
        assert (await asyncio.wait_for(births.get(), 10)).payload
        assert agent.commands.ran_total == 1
    finally:
        await watcher.stop()
