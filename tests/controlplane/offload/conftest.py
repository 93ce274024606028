"""Fixtures for the offload server's tests: the real digits-cloud ONNX model on ONNX Runtime, the
app in process (with its lifespan, so the batchers run), and the real server as a subprocess."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from controlplane.offload.batcher import BatchPolicy
from controlplane.offload.command import offload_argv
from controlplane.offload.runtime import OnnxModel, load, parse_model_arg
from controlplane.offload.server import OffloadState, build_state, create_app
from tests.e2e.processes import Process, wait_until
from tests.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[3]
CLOUD = ROOT / "models" / "digits" / "cloud.onnx"


@pytest.fixture(scope="session")
def cloud_model() -> OnnxModel:
    return load(parse_model_arg(f"digits-cloud={CLOUD}"), threads=1)


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """Test images as the cloud model takes them (FP32 [n, 8, 8, 1], 0..1) and their labels."""
    with np.load(ROOT / "models" / "digits" / "testset.npz") as data:
        images = (data["images"].astype(np.float32) / 255.0)[..., None]
        return images, data["labels"]


class App:
    """The app in process, its state, and an async client on it."""

    def __init__(self, state: OffloadState, client: httpx.AsyncClient) -> None:
        self.state = state
        self.client = client

    def metric(self, name: str, model: str = "digits-cloud", version: str = "1") -> float:
        metrics = self.state.metrics
        return {m.name: m for m in metrics.all()}[name].value(model, version)  # type: ignore[attr-defined,no-any-return]


async def open_app(models: list[OnnxModel], policy: BatchPolicy) -> AsyncIterator[App]:
    state = build_state(models, policy)
    app = create_app(state)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://offload") as client:
            yield App(state, client)


@pytest.fixture
async def served(cloud_model: OnnxModel) -> AsyncIterator[App]:
    async for app in open_app([cloud_model], BatchPolicy(max_batch=8, max_delay=0.001)):
        yield app


class OffloadServer(Process):
    """``edgefleet offload serve`` as a real process on a free port."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = offload_argv(f"127.0.0.1:{self.port}", {"digits-cloud": str(CLOUD)}, *extra)
        super().__init__("offload", argv, workdir)

    def start(self) -> None:
        super().start()
        wait_until(
            "offload server ready",
            lambda: httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200,
            60,
            self,
        )


@pytest.fixture
def offload_process(tmp_path: Path) -> Iterator[OffloadServer]:
    server = OffloadServer(tmp_path, "--threads", "1")
    server.start()
    try:
        yield server
    finally:
        server.stop()
