"""The sampling hook on the real local API (aiohttp on 127.0.0.1) with the real digits model on
LiteRT: an image and a tensor request are kept as they came (PNG bytes, ``.npz``), with the
policy's reason; a request is answered even when keeping its input fails."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from agent.api import create_app
from agent.config import validate
from agent.daemon import Agent, load_models
from agent.offload.deferred import unpack_inputs
from agent.samples.sampler import Sampler
from agent.samples.store import SpooledInput
from agent.telemetry import InferenceStats
from protocol.messages import InferenceResult
from tests.e2e.processes import EDGE_MODEL, digit_pngs
from tests.mosquitto import free_port

MODEL = "digits-edge"


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    settings = validate({
        "device_id": "cam-1", "data_dir": str(tmp_path), "models": [{"path": str(EDGE_MODEL)}],
        # Nobody listens there: inputs stay in the spool, where the test reads them.
        "samples": {"control_plane_url": f"http://127.0.0.1:{free_port()}", "share": 1.0},
    })  # fmt: skip
    models = load_models(settings)
    agent = Agent(settings, models)
    assert agent.sampler is not None
    await agent.outbox.open()
    await agent.sampler.start()
    try:
        yield agent
    finally:
        await agent.sampler.stop()
        await agent.outbox.close()
        for served in models.values():
            served.close()


async def spooled(sampler: Sampler, count: int) -> list[SpooledInput]:
    for _ in range(500):
        rows = await sampler.spool.oldest(100)
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {count} inputs were spooled")


async def test_image_and_tensor_inputs_are_kept_as_they_came(agent: Agent) -> None:
    kept: list[InferenceResult] = []

    async def record(result: InferenceResult) -> None:
        kept.append(result)

    app = create_app(agent.models, record=record, stats=InferenceStats(), sample=agent.sample)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    png, _ = digit_pngs(1)[0]
    tensor = {"name": "input", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": [0.5] * 64}
    try:
        async with aiohttp.ClientSession(str(server.make_url(""))) as http:
            async with http.post(f"/v1/models/{MODEL}/image", data=png) as response:
                assert response.status == 200
            async with http.post(
                f"/v2/models/{MODEL}/infer", data=json.dumps({"inputs": [tensor]}),
                headers={"Content-Type": "application/json"},
            ) as response:  # fmt: skip
                assert response.status == 200
    finally:
        await server.close()
    assert agent.sampler is not None
    rows = await spooled(agent.sampler, 2)
    by_id = {r.item.result_id: r.item for r in rows}
    image, tensors = by_id[kept[0].result_id], by_id[kept[1].result_id]
    assert (image.data, image.content_type, image.model) == (png, "image/png", MODEL)
    assert tensors.content_type == "application/x-npz"
    np.testing.assert_array_equal(unpack_inputs(tensors.data)["input"], np.full((1, 8, 8, 1), 0.5))
    assert {image.reason, tensors.reason} <= {"sampled", "low_confidence"}
    assert image.model_version == kept[0].model_version


async def test_a_failure_to_keep_never_fails_the_request(agent: Agent) -> None:
    assert agent.sampler is not None
    await agent.sampler.spool.close()  # every put fails now
    output = await agent.infer_image(MODEL, digit_pngs(1)[0][0])
    assert output.result.classes
    await asyncio.sleep(0.05)
    assert agent.sampler.kept_total == 0
    await agent.sampler.spool.open()
