"""Deployment test fixtures: a release key, an artifact server, real agents on a real broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config import AgentSettings, validate
from agent.daemon import Agent, load_models
from agent.deploy.keys import load_release_key
from protocol.messages import Status, decode
from protocol.mqtt import Message, MQTTClient
from protocol.release import DeploymentReport, Release
from protocol.signing import public_key_text
from protocol.topics import Channel, device_topic
from tests.agent.deploy.releases import FP32, ArtifactServer, desired_payload


@dataclass
class Collector:
    """Reads a device's deployment reports and births from the broker."""

    reports: list[DeploymentReport] = field(default_factory=list)
    births: list[Status] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_message(self, message: Message) -> None:
        if message.topic.endswith("/deployment"):
            self.reports.append(decode(DeploymentReport, message.payload))
        elif message.payload:
            self.births.append(decode(Status, message.payload))
        self.changed.set()

    async def wait_for(
        self,
        what: str,
        check: Callable[[DeploymentReport], bool],
        timeout: float = 30,
        after: int = 0,
    ) -> DeploymentReport:
        """The first report from index ``after`` on that passes ``check``."""

        async def scan() -> DeploymentReport:
            while True:
                for report in self.reports[after:]:
                    if check(report):
                        return report
                self.changed.clear()
                await self.changed.wait()

        try:
            return await asyncio.wait_for(scan(), timeout)
        except asyncio.TimeoutError:
            seen = [(r.generation, r.state, r.detail) for r in self.reports]
            raise AssertionError(f"no report {what}; saw {seen}") from None

    def states(self, generation: int) -> list[str]:
        return [r.state for r in self.reports if r.generation == generation]


@dataclass
class DeployEnv:
    broker_url: str
    device_id: str
    tmp: Path
    key: Ed25519PrivateKey
    server: ArtifactServer
    collector: Collector
    publisher: MQTTClient
    agents: list[Agent] = field(default_factory=list)

    def settings(self, **overrides: Any) -> AgentSettings:
        data: dict[str, Any] = {
            "device_id": self.device_id,
            "broker": self.broker_url,
            "data_dir": str(self.tmp / "agent"),
            "models": [{"path": str(FP32)}],
            "backends": ["litert"],
            "deploy": {"public_key": public_key_text(self.key.public_key())},
            "uplink": {"telemetry_interval_s": 60},
            "outbox": {"synchronous": "NORMAL"},
        }
        return validate(data | overrides)

    async def agent(self, settings: AgentSettings | None = None, **kwargs: Any) -> Agent:
        settings = settings or self.settings()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        agent = Agent(
            settings,
            load_models(settings),
            release_key=load_release_key(settings.deploy),
            **kwargs,
        )
        await agent.start()
        await agent.client.wait_connected(10)
        self.agents.append(agent)
        return agent

    async def stop_agent(self, agent: Agent) -> None:
        self.agents.remove(agent)
        await agent.stop()
        for served in agent.models.values():
            served.close()
        await agent.cache.drain()
        agent.cache.close_all()

    async def publish(self, generation: int, release: Release | None, **kwargs: Any) -> None:
        payload = desired_payload(
            kwargs.pop("key", self.key),
            kwargs.pop("device_id", self.device_id),
            generation,
            release,
            base_url=self.server.url,
            **kwargs,
        )
        await self.publisher.publish(
            device_topic(self.device_id, Channel.DESIRED), payload, qos=1, retain=True
        )


@pytest.fixture
async def env(broker_url: str, unique: str, tmp_path: Path) -> AsyncIterator[DeployEnv]:
    device_id = f"dep-{unique}"
    server = ArtifactServer()
    await server.start()
    collector = Collector()
    collector_client = MQTTClient(
        broker_url, client_id=f"collect-{unique}", on_message=collector.on_message
    )
    await collector_client.subscribe(device_topic(device_id, Channel.DEPLOYMENT))
    await collector_client.subscribe(device_topic(device_id, Channel.STATUS))
    await collector_client.start()
    await collector_client.wait_connected(10)
    publisher = MQTTClient(broker_url, client_id=f"publish-{unique}")
    await publisher.start()
    await publisher.wait_connected(10)
    e = DeployEnv(
        broker_url,
        device_id,
        tmp_path,
        Ed25519PrivateKey.generate(),
        server,
        collector,
        publisher,
    )
    try:
        yield e
    finally:
        for agent in list(e.agents):
            await e.stop_agent(agent)
        # clear the retained document so the shared broker does not keep it
        await publisher.publish(device_topic(device_id, Channel.DESIRED), b"", qos=1, retain=True)
        await publisher.stop()
        await collector_client.stop()
        await server.stop()
