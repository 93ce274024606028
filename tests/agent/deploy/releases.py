"""Test helpers: real signed releases of the digits models, desired documents, an artifact server.

The artifact server is a tiny aiohttp app serving real files by SHA-256 with ``Range`` (aiohttp's
FileResponse), recording the ``Range`` header of every request; ``stall_after`` makes it send
that many bytes of a file and then hang, so a download can be caught in the middle.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.manifest import ModelManifest
from protocol.release import GoldenCase, Release, ReleaseArtifact, seal_desired, seal_release

ROOT = Path(__file__).resolve().parents[3]
DIGITS = ROOT / "models" / "digits"
FP32 = DIGITS / "edge_fp32.tflite"
INT8 = DIGITS / "edge_int8.tflite"
MODEL = "digits-edge"
"""The name the fp32 model is served under (from its manifest beside it)."""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def golden_cases(wrong_index: bool = False) -> list[GoldenCase]:
    manifest = json.loads((DIGITS / "edge_fp32.json").read_text())
    cases = []
    for case in manifest["golden"]:
        expected = int(case["expected_index"])
        cases.append(
            GoldenCase(
                input=base64.b64encode((DIGITS / case["input"]).read_bytes()).decode(),
                expected_index=(expected + 1) % 10 if wrong_index else expected,
            )
        )
    return cases


def make_release(
    artifact: Path,
    *,
    version: str,
    seq: int,
    golden: Sequence[GoldenCase] | None = None,
    name: str = MODEL,
) -> Release:
    """A release of ``artifact`` (fp32 or int8 digits) with the tensors of its own manifest."""
    manifest = ModelManifest.load(artifact.with_suffix(".json"))
    return Release(
        name=name,
        version=version,
        seq=seq,
        created_at=time.time(),
        inputs=manifest.inputs,
        outputs=manifest.outputs,
        preprocess=manifest.preprocess,
        postprocess=manifest.postprocess,
        labels=manifest.labels,
        artifacts={
            "cpu": ReleaseArtifact(
                sha256=sha256(artifact), size=artifact.stat().st_size, format="tflite"
            )
        },
        golden=list(golden_cases() if golden is None else golden),
    )


def desired_payload(
    key: Ed25519PrivateKey,
    device_id: str,
    generation: int,
    release: Release | None,
    *,
    base_url: str = "http://127.0.0.1:9/api/v1",
    rollback: bool = False,
    shadow: dict[str, Any] | None = None,
    model: str = MODEL,
    rollout_id: str | None = "r-1",
) -> bytes:
    entry: dict[str, Any] = {"model": model, "rollout_id": rollout_id, "rollback": rollback}
    if release is not None:
        sha = release.artifacts["cpu"].sha256
        entry |= {
            "release": seal_release(key, release),
            "target": "cpu",
            "artifact_url": f"{base_url}/artifacts/{sha}",
        }
    if shadow is not None:
        entry["shadow"] = shadow
    body = {
        "device_id": device_id,
        "generation": generation,
        "issued_at": time.time(),
        "models": [entry],
    }
    return seal_desired(key, body)


@dataclass
class ArtifactServer:
    """Serves files by SHA-256 at ``{url}/artifacts/{sha256}`` with Range."""

    files: dict[str, Path] = field(default_factory=dict)
    ranges: list[str | None] = field(default_factory=list)
    stall_after: int | None = None
    runner: web.AppRunner | None = None
    url: str = ""
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, path: Path) -> str:
        digest = sha256(path)
        self.files[digest] = path
        return digest

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v1/artifacts/{sha}", self._get)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/api/v1"

    async def stop(self) -> None:
        self.released.set()
        if self.runner is not None:
            await self.runner.cleanup()

    async def _get(self, request: web.Request) -> web.StreamResponse:
        self.ranges.append(request.headers.get("Range"))
        path = self.files.get(request.match_info["sha"])
        if path is None:
            return web.json_response({"error": "no such artifact"}, status=404)
        if self.stall_after is not None and "Range" not in request.headers:
            data = path.read_bytes()
            response = web.StreamResponse(headers={"Content-Length": str(len(data))})
            await response.prepare(request)
            await response.write(data[: self.stall_after])
            await self.released.wait()
            return response
        return web.FileResponse(path)
