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
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import psutil
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent import __version__
from agent.commands import CommandRunner, agent_handlers
from agent.config import AgentSettings, ModelConfig
from agent.custody import Custody, KeptInputs
from agent.deploy.cache import ModelCache
from agent.deploy.deployer import Deployer
from agent.deploy.shadow import ShadowInput
from agent.identity import signer
from agent.identity.files import mqtt_tls
from agent.inference import InferenceOutput, ServedModel
from agent.offload.offloader import Offloader, configured_offloads
from agent.outbox import Outbox
from agent.samples.sampler import Sampler
from agent.sealing import keyring_of
from agent.supervisor.engines import restarts_total
from agent.telemetry import HostProbe, InferenceStats
from agent.uplink import Uplink, make_will
from protocol.manifest import ModelManifest
from protocol.messages import Accelerator, InferenceResult, ModelInfo, Status, Telemetry, encode
from protocol.mqtt import Message, MQTTClient, MQTTError
from protocol.release import DeploymentReport
from protocol.topics import Channel, device_topic

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
            supervision=settings.supervisor,
            fallback=cfg.fallback_path,
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


def configured_loaders(
    settings: AgentSettings, models: Mapping[str, ServedModel]
) -> dict[str, Callable[[], ServedModel]]:
    """How to load each configured model again, by name (``models`` as load_models gave it)."""

    def loader(cfg: ModelConfig) -> Callable[[], ServedModel]:
        return lambda: ServedModel.load(
            cfg.path,
            manifest=_manifest_for(cfg),
            priority=cfg.backends or settings.backends,
            threads=settings.threads,
            max_output_values=settings.max_output_values,
            supervision=settings.supervisor,
            fallback=cfg.fallback_path,
        )

    return {name: loader(cfg) for name, cfg in zip(models, settings.models, strict=False)}


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
        elif "edgetpu" in served.demoted_backends:  # there, but it kept crashing or hanging
            found.append(Accelerator(kind="edgetpu", present=True, detail=served.fallback_reason))
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
        release_key: Ed25519PublicKey | None = None,
        cache: ModelCache | None = None,
        models_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.device_id = settings.device_id
        # This agent's own dict: a deployment swaps a model by replacing its entry.
        self.models: dict[str, ServedModel] = dict(models)
        if cache is None:
            cache = ModelCache()
            for name, served in self.models.items():
                cache.adopt(f"cfg:{name}", served)
        self.cache = cache
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
            clean_start=settings.mqtt_session_expiry_s == 0,
            session_expiry=settings.mqtt_session_expiry_s,
            on_message=self._on_message,
            tls=mqtt_tls(settings),  # [tls]: the device certificate for an mqtts:// broker
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
        # Seals the inputs kept on disk (samples, deferred cases): agent/custody.py.
        self.keys = keyring_of(self.outbox.path.parent)
        offloads = configured_offloads(list(models), [cfg.offload for cfg in settings.models])
        self.offloader: Offloader | None = None
        if offloads:
            self.offloader = Offloader(
                offloads,
                deferred_path=self.outbox.path.with_name("deferred.db"),
                put=self.outbox.put,
                on_put=self.uplink.wake,
                synchronous=settings.outbox.synchronous,
                max_output_values=settings.max_output_values,
                keys=self.keys,
            )
        self._offload_task: asyncio.Task[None] | None = None
        # [tls]: the device's key signs its HTTP calls (downloads, uploads): docs/security.md
        self.signer = signer.RequestSigner.from_settings(settings)
        self.sampler: Sampler | None = None  # keeps inputs for the data loop (docs/data.md)
        if settings.samples.control_plane_url is not None:
            self.sampler = Sampler(
                settings.samples,
                {name: cfg.samples for name, cfg in zip(models, settings.models, strict=False)},
                device_id=self.device_id,
                path=self.outbox.path.with_name("samples.db"),
                keys=self.keys,
                sign=self.signer.sign if self.signer is not None else None,
            )
        kept: list[KeptInputs] = [self.sampler.spool] if self.sampler is not None else []
        if self.offloader is not None:
            kept.append(self.offloader.queue)
        self.custody = Custody(  # their key, its rotation, their retention
            self.keys,
            kept,
            retention_days=settings.samples.retention_days,
            rotation_days=settings.samples.key_rotation_days,
        )
        self._custody_task: asyncio.Task[None] | None = None
        self._probe = probe
        self._announced = self._serving()
        self._announcing: set[asyncio.Task[None]] = set()
        self._last_telemetry = time.monotonic()
        self._uplink_task: asyncio.Task[None] | None = None
        self._desired_topic = device_topic(self.device_id, Channel.DESIRED)
        self._deployment_topic = device_topic(self.device_id, Channel.DEPLOYMENT)
        self.deployer = Deployer(
            device_id=self.device_id,
            root=models_dir or settings.data_dir / "models",
            config=settings.deploy,
            key=release_key,
            models=self.models,
            cache=cache,
            load_release=self._load_release,
            configured=configured_loaders(settings, models),
            publish=self._publish_report,
            on_swap=self.announce,
        )
        self.commands = CommandRunner(  # remote commands (docs/operations.md)
            self.device_id,
            self.client,
            agent_handlers(self),
            ack_timeout=settings.uplink.ack_timeout_s,
        )
        announce_after_uplink = self.client.on_connect

        async def on_connect() -> None:
            if announce_after_uplink is not None:
                await announce_after_uplink()
            await self.deployer.flush()

        self.client.on_connect = on_connect

    async def start(self) -> None:
        """Open the outbox, serve the deployed models (see agent.deploy), then connect."""
        await self.outbox.open()
        if self.custody.files:
            await self.custody.open()
        if self.offloader is not None:
            await self.offloader.start()
            self._offload_task = asyncio.create_task(self.offloader.run(), name="offload-drain")
        if self.sampler is not None:
            await self.sampler.start()
        if self.custody.files:
            self._custody_task = asyncio.create_task(self.custody.run(), name="kept-inputs")
        # the deployer's tasks, made now, sign their downloads as this device
        signing = signer.current.set(self.signer.sign if self.signer is not None else None)
        try:
            await self.deployer.start()
        finally:
            signer.current.reset(signing)
        await self.client.subscribe(self._desired_topic, qos=1)
        await self.commands.start()
        self._uplink_task = asyncio.create_task(self.uplink.run(), name=f"uplink-{self.device_id}")
        await self.client.start()

    async def stop(self) -> None:
        """Publish the offline status, stop the uplink and the MQTT client, flush the outbox."""
        try:
            await self.commands.stop()
            await self.deployer.stop()
            await self.uplink.stop()
        finally:
            if self._uplink_task is not None:
                self._uplink_task.cancel()
                await asyncio.gather(self._uplink_task, return_exceptions=True)
            await self.client.stop()
            if self._custody_task is not None:
                self._custody_task.cancel()
                await asyncio.gather(self._custody_task, return_exceptions=True)
            if self._offload_task is not None:
                self._offload_task.cancel()
                await asyncio.gather(self._offload_task, return_exceptions=True)
            if self.offloader is not None:
                await self.offloader.stop()
            await self.outbox.close()
            if self.sampler is not None:
                await self.sampler.stop()
            await self.custody.close()

    async def record(self, result: InferenceResult) -> None:
        """Keep a result durably (returns once committed), then nudge the uplink."""
        await self.outbox.put(result.result_id, result.created_at, encode(result))
        self.uplink.wake()

    def sample(self, result: InferenceResult, payload: ShadowInput) -> None:
        """A result was kept: keep its input too if the sampling policy says so (returns at once;
        the upload runs in the background)."""
        if self.sampler is not None:
            self.sampler.offer(result, payload)

    async def offload(
        self,
        result: InferenceResult,
        inputs: Mapping[str, np.ndarray],
        queued: int,
        timeout_s: float | None,
    ) -> InferenceResult:
        """The API's offload hook: the result with its offload decision (docs/agent.md)."""
        if self.offloader is None:
            return result
        return await self.offloader.process(result, inputs, queued=queued, timeout_s=timeout_s)

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
        self.sample(output.result, data)
        self.observe(model, data, output)
        return output

    def observe(self, model: str, payload: ShadowInput, output: InferenceOutput) -> None:
        """A request was answered by ``model``: a shadow deployment may run it on its candidate."""
        self.deployer.observe(model, payload, output)

    async def announce(self) -> None:
        """Publish the birth again (retained): after a swap it lists the new release."""
        try:
            await self.client.publish(
                device_topic(self.device_id, Channel.STATUS),
                encode(self.birth()),
                qos=1,
                retain=True,
                timeout=self.settings.uplink.ack_timeout_s,
            )
        except MQTTError as exc:  # the next (re)connect publishes it anyway
            log.info("%s: birth not re-published: %s", self.device_id, exc)

    def _on_message(self, message: Message) -> None:
        if message.topic == self._desired_topic:
            self.deployer.receive(message.payload)
        elif message.topic == self.commands.topic:
            self.commands.receive(message)

    async def _publish_report(self, report: DeploymentReport) -> None:
        await self.client.publish(
            self._deployment_topic,
            encode(report),
            qos=1,
            timeout=self.settings.uplink.ack_timeout_s,
        )

    def _load_release(
        self, path: Path, manifest: ModelManifest, fallback: Path | None = None
    ) -> ServedModel:
        return ServedModel.load(
            path,
            manifest=manifest,
            priority=self.settings.backends,
            threads=self.settings.threads,
            max_output_values=self.settings.max_output_values,
            supervision=self.settings.supervisor,
            fallback=fallback,
        )

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
                    seq=self.deployer.seq_of(m.name),
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
        serving = self._serving()
        if serving != self._announced:  # the supervisor demoted or promoted a backend
            self._announced = serving
            self._announce_soon()
        return Telemetry(
            device_id=self.device_id,
            interval_s=round(interval, 3),
            inferences=inferences,
            inferences_total=self.stats.inferences_total,
            errors=errors,
            errors_total=self.stats.errors_total,
            latency=latency,
            backend=first.backend if first else None,
            fallback_reason=next(
                (m.fallback_reason for m in self.models.values() if m.fallback_reason), None
            ),
            demoted_backends=sorted({b for m in self.models.values() for b in m.demoted_backends}),
            backend_restarts_total=restarts_total(),
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
            throttled=host.throttled if host else None,
            disk_free_bytes=host.disk_free_bytes if host else None,
            disk_used_percent=host.disk_used_percent if host else None,
        )

    def _serving(self) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
        """What the birth says about each model's backend (a change is worth a new birth)."""
        return tuple((m.name, m.backend, tuple(m.demoted_backends)) for m in self.models.values())

    def _announce_soon(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the agent's loop (a test): the next birth says it
            return
        task = loop.create_task(self.announce(), name=f"announce-{self.device_id}")
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)
