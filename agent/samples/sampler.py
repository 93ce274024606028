"""The agent's side of the data loop: decide (pure, at once), spool (a worker thread), upload
(a background task). :meth:`Sampler.offer` is what the request path calls; it returns at once and
never raises, so keeping inputs can neither slow nor fail an inference."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from agent.identity.signer import Sign
from agent.offload.deferred import pack_inputs
from agent.samples.config import ModelSamples, SamplesConfig
from agent.samples.policy import Policy, decide, draw
from agent.samples.store import KeptInput, SampleSpool, SpoolStats
from agent.samples.uploader import Uploader
from protocol.keyring import KeyringFile
from protocol.messages import InferenceResult

log = logging.getLogger(__name__)

NPZ = "application/x-npz"


def policies(
    config: SamplesConfig, overrides: Mapping[str, ModelSamples | None]
) -> dict[str, Policy]:
    """Each model's policy: its own settings over the ``[samples]`` defaults."""
    out = {}
    for model, own in overrides.items():
        share = own.share if own is not None and own.share is not None else config.share
        low = (
            own.low_confidence
            if own is not None and own.low_confidence is not None
            else config.low_confidence
        )
        out[model] = Policy(share=share, low_confidence=low)
    return out


def content_type(data: bytes) -> str:
    """The media type of an image body by its first bytes (what the API's image route took)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] in (b"GIF8",):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:2] == b"BM":
        return "image/bmp"
    return "application/octet-stream"


def encode_input(payload: Any) -> tuple[bytes, str]:
    """An input as the request gave it: image bytes as they are, tensors as ``.npz``."""
    if isinstance(payload, bytes | bytearray | memoryview):
        data = bytes(payload)
        return data, content_type(data)
    arrays: Mapping[str, np.ndarray] = payload
    return pack_inputs(arrays), NPZ


class Sampler:
    def __init__(
        self,
        config: SamplesConfig,
        overrides: Mapping[str, ModelSamples | None],
        *,
        device_id: str,
        path: Path,
        keys: KeyringFile | None = None,
        sign: Sign | None = None,
    ) -> None:
        if config.control_plane_url is None:
            raise ValueError("samples.control_plane_url is not set")
        self.config = config
        self._policies = policies(config, overrides)
        self._default = Policy(share=config.share, low_confidence=config.low_confidence)
        self.spool = SampleSpool(
            path, max_rows=config.max_rows, max_bytes=config.max_bytes, keys=keys
        )
        self.uploader = Uploader(
            self.spool, base_url=config.control_plane_url, device_id=device_id, sign=sign
        )  # sign: the device's key signs each upload (agent/identity/signer.py)
        self._task: asyncio.Task[None] | None = None
        self._puts: set[asyncio.Task[None]] = set()
        self.kept_total = 0

    async def start(self) -> None:
        await self.spool.open()
        self._task = asyncio.create_task(self.uploader.run(), name="samples-upload")

    async def stop(self) -> None:
        """Finish the puts in flight (they are quick), stop uploading, close the spool."""
        if self._puts:
            await asyncio.gather(*self._puts, return_exceptions=True)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.spool.close()

    def offer(self, result: InferenceResult, payload: Any) -> None:
        """Keep ``payload`` (the request's input) if the model's policy says so. Returns at once."""
        try:
            policy = self._policies.get(result.model, self._default)
            reason = decide(result, policy, draw(result.result_id))
            if reason is None:
                return
            data, kind = encode_input(payload)
            item = KeptInput(
                result.result_id, result.model, result.model_version, reason, kind,
                result.created_at, data,
            )  # fmt: skip
            task = asyncio.get_running_loop().create_task(self._put(item))
        except Exception:  # keeping inputs must never fail a request
            log.exception("samples: could not keep the input of %s", result.result_id)
            return
        self._puts.add(task)
        task.add_done_callback(self._puts.discard)

    async def _put(self, item: KeptInput) -> None:
        try:
            dropped = await self.spool.put(item)
        except Exception as exc:
            log.warning("samples: could not spool the input of %s: %s", item.result_id, exc)
            return
        self.kept_total += 1
        if dropped:
            log.info("samples: the spool is full; dropped the %d oldest inputs", dropped)
        self.uploader.wake()

    async def stats(self) -> SpoolStats:
        return await self.spool.stats()
