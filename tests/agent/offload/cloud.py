"""A small, real OIP server for the offload tests: the real digits-cloud model (ONNX Runtime)
behind a fault injector that answers the next requests with 429, 503, 500, 400, a delay, ...

Each request takes the next fault from ``faults`` (then answers normally); every request is
recorded (path, headers, decoded JSON header), so a test can check what the client sent.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from aiohttp import web

ROOT = Path(__file__).resolve().parents[3]
CLOUD_ONNX = ROOT / "models" / "digits" / "cloud.onnx"
CLOUD_MANIFEST = ROOT / "models" / "digits" / "cloud.json"
HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass
class Fault:
    status: int = 200
    delay_s: float = 0.0
    retry_after: str | None = None


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    doc: dict[str, Any]


@dataclass
class FakeCloud:
    faults: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    down: bool = False  # every request answers 503 while set
    port: int = 0
    _runner: web.AppRunner | None = None
    _session: ort.InferenceSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        self._session = ort.InferenceSession(str(CLOUD_ONNX), providers=["CPUExecutionProvider"])
        app = web.Application()
        app.router.add_post("/v2/models/{name}/infer", self._infer)
        app.router.add_post("/v2/models/{name}/versions/{version}/infer", self._infer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _infer(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        length = request.headers.get(HEADER_LENGTH)
        split = int(length) if length is not None else len(body)
        doc = json.loads(body[:split])
        self.seen.append(Seen(request.path, dict(request.headers), doc))
        fault = self.faults.pop(0) if self.faults else Fault()
        if self.down:
            fault = Fault(503)
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault.status != 200:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
            return web.json_response(
                {"error": f"injected {fault.status}"}, status=fault.status, headers=headers
            )
        if request.match_info["name"] != "digits-cloud":
            return web.json_response({"error": "unknown model"}, status=404)
        spec = doc["inputs"][0]
        if "data" in spec:
            x = np.asarray(spec["data"], dtype=np.float32).reshape(spec["shape"])
        else:
            x = np.frombuffer(body[split:], dtype="<f4").reshape(spec["shape"])
        assert self._session is not None
        (probabilities,) = self._session.run(["probabilities"], {"input": x})
        out: dict[str, Any] = {"name": "probabilities", "datatype": "FP32"}
        out["shape"] = list(probabilities.shape)
        reply: dict[str, Any] = {"model_name": "digits-cloud", "model_version": "1.0.0"}
        if "id" in doc:
            reply["id"] = doc["id"]
        binary = bool((doc.get("parameters") or {}).get("binary_data_output"))
        if not binary:
            out["data"] = probabilities.ravel().tolist()
            reply["outputs"] = [out]
            return web.json_response(reply)
        raw = probabilities.astype("<f4").tobytes()
        out["parameters"] = {"binary_data_size": len(raw)}
        reply["outputs"] = [out]
        header = json.dumps(reply).encode()
        return web.Response(
            body=header + raw,
            content_type="application/octet-stream",
            headers={HEADER_LENGTH: str(len(header))},
        )


def digit(index: int = 0) -> tuple[np.ndarray, int]:
    """A test-set image as both models' input tensor (scaled to 0..1) and its true label."""
    data = np.load(ROOT / "models" / "digits" / "testset.npz")
    x = (data["images"][index].astype(np.float32) / 255.0).reshape(1, 8, 8, 1)
    return x, int(data["labels"][index])
