"""One agent: its models, outbox, uplink and counters, wired together.

``edgefleet-agent`` runs one of these behind the local HTTP API (:mod:`agent.main`); the simulator
runs many in one process, sharing the loaded models (:mod:`agent.simulator`). The agent answers
inference requests whether or not the broker is there: results wait in the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from agent import __version__
from agent.config import AgentSettings, ModelConfig
from agent.inference import InferenceOutput, ServedModel
from agent.outbox import Outbox
from agent.telemetry import HostProbe, InferenceStats
from agent.uplink import Uplink, make_will
from protocol.manifest import ModelManifest
from protocol.messages import Accelerator, InferenceResult, ModelInfo, Status, Telemetry, encode
from protocol.mqtt import MQTTClient

log = logging.getLogger(__name__)


def load_models(settings: AgentSettings) -> dict[str, ServedModel]:
    """Load every configured model (ModelLoadError names the model and each backend tried)."""
    models: dict[str, ServedModel] = {}
    for cfg in settings.models:
        served = ServedModel.load(
            cfg.path,
            manifest=_manifest_for(cfg),
            priority=cfg.backends or settings.backends,
            threads=settings.threads,
            max_output_values=settings.max_output_values,
        )
        if served.name in models:
            served.close()
            raise ValueError(f"two models are named {served.name!r}; names must be unique")
        models[served.name] = served
        log.info(
            "serving model %s %s on %s%s",
            served.name,
            served.version,
            served.backend,
            f" (fallback: {served.fallback_reason})" if served.fallback_reason else "",
        )
    return models


def _manifest_for(cfg: ModelConfig) -> ModelManifest | None:
    if cfg.manifest is not None:
        return ModelManifest.load(cfg.manifest)
    beside = cfg.path.with_suffix(".json")
    return ModelManifest.load(beside) if beside.is_file() else None


def accelerators(models: Mapping[str, ServedModel]) -> list[Accelerator]:
    """What the agent found: the CPU always, plus each accelerator a model uses or tried to use."""
    found = [Accelerator(kind="cpu", present=True, detail=platform.processor() or None)]
    for served in models.values():
        if served.backend == "edgetpu":
            found.append(Accelerator(kind="edgetpu", present=True))
        elif served.fallback_reason and "edgetpu" in served.fallback_reason:
            found.append(Accelerator(kind="edgetpu", present=False, detail=served.fallback_reason))
    return found


class Agent:
    """The device side of edgefleet for one device id."""

    def __init__(
        self,
        settings: AgentSettings,
        models: Mapping[str, ServedModel],
        *,
        outbox_path: Path | None = None,
        probe: HostProbe | None = None,
    ) -> None:
        self.settings = settings
        self.device_id = settings.device_id
        self.models = models
        self.stats = InferenceStats()
        self.outbox = Outbox(
            outbox_path or settings.data_dir / "outbox.db",
            max_rows=settings.outbox.max_rows,
            max_bytes=settings.outbox.max_bytes,
            synchronous=settings.outbox.synchronous,
        )
        self.client = MQTTClient(
            settings.broker,
            client_id=f"edgefleet-agent-{self.device_id}",
            will=make_will(self.device_id),
            protocol=settings.mqtt_protocol,
        )
        self.uplink = Uplink(
            device_id=self.device_id,
            client=self.client,
            outbox=self.outbox,
            birth=self.birth,
            telemetry=self.telemetry,
            telemetry_interval=settings.uplink.telemetry_interval_s,
            batch_size=settings.uplink.batch_size,
            ack_timeout=settings.uplink.ack_timeout_s,
            linger=settings.uplink.linger_s,
        )
        self._probe = probe
        self._last_telemetry = time.monotonic()
        self._uplink_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.outbox.open()
        self._uplink_task = asyncio.create_task(self.uplink.run(), name=f"uplink-{self.device_id}")
        await self.client.start()

    async def stop(self) -> None:
        """Publish the offline status, stop the uplink and the MQTT client, flush the outbox."""
        try:
            await self.uplink.stop()
        finally:
            if self._uplink_task is not None:
                self._uplink_task.cancel()
                await asyncio.gather(self._uplink_task, return_exceptions=True)
            await self.client.stop()
            await self.outbox.close()

    async def record(self, result: InferenceResult) -> None:
        """Keep a result durably (returns once committed), then nudge the uplink."""
        await self.outbox.put(result.result_id, result.created_at, encode(result))
        self.uplink.wake()

    async def infer_image(self, model: str, data: bytes) -> InferenceOutput:
        """Infer on an image and record the result (the simulator's path; the API has its own)."""
        served = self.models[model]
        try:
            output = await served.infer_image(data)
        except Exception:
            self.stats.error("inference")
            raise
        await self.record(output.result)
        self.stats.observe(model, output.result.latency_ms)
        return output

    def birth(self) -> Status:
        host, port = self.settings.listen_address
        return Status(
            device_id=self.device_id,
            state="online",
            agent_version=__version__,
            hardware={
                "machine": platform.machine(),
                "system": platform.system(),
                "python": platform.python_version(),
                "cpu_count": psutil.cpu_count(),
                "memory_bytes": psutil.virtual_memory().total,
            },
            accelerators=accelerators(self.models),
            models=[
                ModelInfo(
                    name=m.name,
                    version=m.version,
                    artifact_sha256=m.artifact_sha256,
                    backend=m.backend,
                    fallback_reason=m.fallback_reason,
                )
                for m in self.models.values()
            ],
            tags=self.settings.tags,
            api_url=f"http://{host}:{port}",
        )

    def telemetry(self) -> Telemetry:
        now = time.monotonic()
        interval, self._last_telemetry = now - self._last_telemetry, now
        inferences, errors, latency = self.stats.take_interval()
        box = self.outbox.stats()
        host = self._probe.read() if self._probe else None
        first = next(iter(self.models.values()), None)
        return Telemetry(
            device_id=self.device_id,
            interval_s=round(interval, 3),
            inferences=inferences,
            inferences_total=self.stats.inferences_total,
            errors=errors,
            errors_total=self.stats.errors_total,
            latency=latency,
            backend=first.backend if first else None,
            fallback_reason=first.fallback_reason if first else None,
            outbox_depth=box.depth,
            outbox_oldest_age_s=(
                round(time.time() - box.oldest_created_at, 3) if box.oldest_created_at else None
            ),
            outbox_evicted_total=box.evicted_total,
            results_sent_total=self.uplink.sent_total,
            cpu_percent=host.cpu_percent if host else None,
            memory_rss_bytes=host.memory_rss_bytes if host else None,
            memory_percent=host.memory_percent if host else None,
            temperature_c=host.temperature_c if host else None,
        )
