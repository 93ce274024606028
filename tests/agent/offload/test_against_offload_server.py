"""The agent's OIP client against the real ``edgefleet offload serve`` process (the default
offload server, digits-cloud on ONNX Runtime): JSON and binary, versions, refusals."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from agent.offload.client import OIPClient
from agent.offload.errors import CloudRejected
from tests.agent.offload.cloud import CLOUD_MANIFEST, digit
from tests.controlplane.offload.conftest import OffloadServer
from tests.e2e.processes import EDGE_MODEL, Process, wait_until
from tests.mosquitto import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OffloadServer]:
    process = OffloadServer(tmp_path_factory.mktemp("offload"))
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def client() -> AsyncIterator[OIPClient]:
    c = OIPClient()
    try:
        yield c
    finally:
        await c.close()


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("version", [None, "1"])
async def test_the_cloud_model_answers(
    server: OffloadServer, client: OIPClient, binary: bool, version: str | None
) -> None:
    for index in (0, 223, 364):
        x, label = digit(index)
        reply = await client.infer(
            server.url, "digits-cloud", {"input": x}, request_id=f"r{index}",
            timeout_s=10, binary=binary, version=version,
        )  # fmt: skip
        assert reply.model_name == "digits-cloud"
        assert int(np.argmax(reply.outputs["probabilities"])) == label


async def test_refusals_are_not_retried(
    server: OffloadServer, client: OIPClient, tmp_path: Path
) -> None:
    x, _ = digit(0)
    with pytest.raises(CloudRejected) as unknown:
        await client.infer(server.url, "nope", {"input": x}, request_id="a", timeout_s=10)
    assert unknown.value.status == 404
    with pytest.raises(CloudRejected) as bad_shape:
        await client.infer(
            server.url, "digits-cloud", {"input": x.reshape(1, 64)}, request_id="b", timeout_s=10
        )
    assert bad_shape.value.status == 400


def test_the_agent_process_offloads_a_hard_case(
    server: OffloadServer, broker_url: str, unique: str, tmp_path: Path
) -> None:
    """``edgefleet-agent --config`` with [models.offload] against the real offload server."""
    port = free_port()
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
device_id = "offp-{unique}"
broker = "{broker_url}"
listen = "127.0.0.1:{port}"
data_dir = "{tmp_path / "data"}"
backends = ["litert"]

[[models]]
path = "{EDGE_MODEL}"

[models.offload]
endpoint = "{server.url}"
model = "digits-cloud"
manifest = "{CLOUD_MANIFEST}"
binary = true
deadline_ms = 5000
"""
    )
    agent = Process("agent", [sys.executable, "-m", "agent", "--config", str(config)], tmp_path)
    agent.start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(
            "agent ready",
            lambda: httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200,
            60,
            agent,
        )
        x, label = digit(223)
        body = {"id": "q1", "inputs": [
            {"name": "input", "shape": [1, 8, 8, 1], "datatype": "FP32",
             "data": x.ravel().tolist()},
        ]}  # fmt: skip
        reply = httpx.post(url + "/v2/models/digits-edge/infer", json=body, timeout=10)
        assert reply.status_code == 200, reply.text
        parameters = reply.json()["parameters"]
        assert parameters["offload"] == "offloaded"
        assert parameters["cloud_label"] == str(label)
    finally:
        agent.stop()
