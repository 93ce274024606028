"""A test driver for the desired/deployment protocol: devices played over the real broker.

Each :class:`PlayedDevice` publishes a birth, subscribes to its ``desired`` topic, verifies every
document with :func:`protocol.release.open_desired`, refuses an older generation, and answers the
model's entry with the deployment reports its ``behave`` function chooses. It is a driver of the
wire protocol for the controller's tests, not an agent (the agent's own tests cover that side).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from controlplane.registry.keys import ReleaseKey
from controlplane.registry.releases import StoredRelease, insert_release
from controlplane.store import Store
from protocol.manifest import TensorSpec
from protocol.messages import Accelerator, ModelInfo, Status
from protocol.mqtt import Message, MQTTClient
from protocol.release import (
    DeploymentReport,
    DesiredModel,
    Release,
    ReleaseArtifact,
    ShadowStats,
    SmokeStats,
    open_desired,
)
from protocol.topics import Channel, device_topic

MODEL = "digits"
SHA = {"1": "11" * 32, "2": "22" * 32, "3": "33" * 32}


@dataclass
class Answer:
    """What a device does with one desired entry: the states it reports, then what it runs."""

    states: list[str]
    smoke: SmokeStats | None = None
    shadow: ShadowStats | None = None


def good(entry: DesiredModel) -> Answer:
    return Answer(["downloading", "verifying", "active"], SmokeStats(passed=1, total=1,
                  candidate_ms=1.0, incumbent_ms=1.0))  # fmt: skip


def slow(entry: DesiredModel) -> Answer:
    """Active, but ten times slower than the incumbent in its smoke test."""
    return Answer(["downloading", "active"], SmokeStats(passed=1, total=1, candidate_ms=10.0,
                  incumbent_ms=1.0))  # fmt: skip


def broken(entry: DesiredModel) -> Answer:
    """Its golden test fails (a rollback still works)."""
    return good(entry) if entry.rollback else Answer(["downloading", "verifying", "failed"])


def silent(entry: DesiredModel) -> Answer:
    return Answer([])


@dataclass
class PlayedDevice:
    broker_url: str
    device_id: str
    key: Ed25519PublicKey
    behave: Callable[[DesiredModel], Answer] = good
    tags: dict[str, str] = field(default_factory=lambda: {"site": "lab"})
    kind: str = "cpu"
    version: str = "1"
    hold: asyncio.Event | None = None  # set: answers wait for it
    generation: int = 0
    seen: list[DesiredModel] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    client: MQTTClient | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def status(self) -> Status:
        accelerators = [Accelerator(kind=self.kind, present=True)] if self.kind != "cpu" else []
        return Status(
            device_id=self.device_id, state="online", agent_version="test",
            accelerators=accelerators, tags=self.tags,
            models=[ModelInfo(name=MODEL, version=self.version,
                              artifact_sha256=SHA.get(self.version, SHA["1"]), backend="litert")],
        )  # fmt: skip

    async def start(self, *, birth: bool = True) -> None:
        self.client = MQTTClient(
            self.broker_url, self.device_id, on_message=self._on_message,
            reconnect_min=0.1, reconnect_max=0.5,
        )  # fmt: skip
        await self.client.start()
        await self.client.wait_connected(10)
        await self.client.subscribe(device_topic(self.device_id, Channel.DESIRED))
        if birth:
            await self.birth()

    async def birth(self) -> None:
        assert self.client is not None
        payload = self.status().model_dump_json().encode()
        await self.client.publish(
            device_topic(self.device_id, Channel.STATUS), payload, qos=1, retain=True
        )

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.client is not None:
            await self.client.stop()
            self.client = None

    def _on_message(self, message: Message) -> None:
        if not message.payload:
            return
        try:
            doc = open_desired(message.payload, self.key)
        except Exception as exc:  # a test asserts on refused
            self.refused.append(str(exc))
            return
        if doc.device_id != self.device_id or doc.generation <= self.generation:
            self.refused.append(f"generation {doc.generation} <= {self.generation}")
            return
        self.generation = doc.generation
        for entry in doc.models:
            if entry.model == MODEL:
                self.seen.append(entry)
                task = asyncio.create_task(self._answer(doc.generation, entry))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _answer(self, generation: int, entry: DesiredModel) -> None:
        if self.hold is not None:
            await self.hold.wait()
        answer = self.behave(entry)
        version = entry.release.release.version if entry.release is not None else "1"
        seq = entry.release.release.seq if entry.release is not None else None
        for state in answer.states:
            if generation != self.generation:
                return  # superseded by a newer document
            report = DeploymentReport(
                device_id=self.device_id, generation=generation, model=MODEL,
                rollout_id=entry.rollout_id, version=version, seq=seq, state=state,
                smoke=answer.smoke if state == "active" else None,
                shadow=answer.shadow if state == "active" else None,
            )  # fmt: skip
            assert self.client is not None
            await self.client.publish(
                device_topic(self.device_id, Channel.DEPLOYMENT),
                report.model_dump_json().encode(), qos=1,
            )  # fmt: skip
            if state == "active":
                self.version = version
                await self.birth()


EDGETPU_SHA = "ee" * 32


async def add_release(
    store: Store, key: ReleaseKey, version: str, *, edgetpu: bool = False
) -> StoredRelease:
    """A release with a cpu artifact, and with ``edgetpu`` an Edge TPU build beside it."""
    artifacts = {"cpu": ReleaseArtifact(sha256=SHA[version], size=100, format="tflite")}
    if edgetpu:
        artifacts["edgetpu"] = ReleaseArtifact(sha256=EDGETPU_SHA, size=100, format="tflite")
    release = Release(
        name=MODEL, version=version, seq=1, created_at=time.time(),
        inputs=[TensorSpec(name="x", shape=[1, 28, 28, 1], datatype="FP32")],
        outputs=[TensorSpec(name="y", shape=[1, 10], datatype="FP32")],
        artifacts=artifacts,
    )  # fmt: skip
    stored, _ = await store.transact(insert_release, release, key)
    return stored


async def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll an async or sync ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)


def key_of(data_dir: Path) -> ReleaseKey:
    return ReleaseKey.load_or_create(data_dir)
