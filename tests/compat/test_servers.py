"""Our offload client against real OIP servers: Triton (PyTriton), KServe, MLServer, and ours.

Each foreign server runs from its own venv and serves ``models/digits/cloud.onnx`` as
``digits-cloud`` with ONNX Runtime. The servers disagree (recorded in :data:`ANSWERS` and in
docs/offload.md, "Compatibility"); the client relies on status codes alone and must turn each
answer into the right outcome: outputs equal to ONNX Runtime's own, or ``CloudRejected`` with the
server's status, without retrying a 400 or 404 and retrying a 500 once. Tries are counted on the
wire by a proxy between the client and the server.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest

from agent.offload.client import OIPClient
from agent.offload.errors import CloudRejected
from tests.compat.proxy import CountingProxy
from tests.compat.stacks import MODEL_NAME, Server, foreign_server, offload_server

pytestmark = [pytest.mark.compat, pytest.mark.slow]

INFER = f"/v2/models/{MODEL_NAME}/infer"


@dataclass(frozen=True)
class Answers:
    """What a server answers (status codes), as measured against the pinned versions."""

    health_body: str
    """``empty`` or ``json``: the body of ``/v2/health/ready``."""
    bad_shape: int
    """A tensor of the wrong rank."""
    bad_datatype: int
    untyped_json: int
    """A JSON infer body sent with no ``Content-Type`` (as tritonclient sends it)."""
    binary: bool
    """Whether the binary tensor extension works (else the status it answers)."""
    binary_status: int
    unknown_model_ready: int


ANSWERS = {
    # Triton 2.51 (nvidia-pytriton 0.7.0): checks shape and datatype against the model config.
    "pytriton": Answers("empty", 400, 400, 200, True, 200, 400),
    # KServe 0.21: passes tensors to the model unchecked (ONNX Runtime raises: 500) and reads a
    # body without Content-Type as binary; binary replies only for ``binary_data_output``.
    "kserve": Answers("json", 500, 500, 400, True, 200, 404),
    # MLServer 1.7.1: 500 with a plain-text traceback for bad input; no binary extension at all.
    "mlserver": Answers("empty", 500, 500, 200, False, 500, 404),
    # Ours (edgefleet offload serve): 400 with a JSON error naming the input.
    "ours": Answers("json", 400, 400, 200, True, 200, 404),
}


@pytest.fixture(scope="module", params=list(ANSWERS))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    stack: str = request.param
    workdir = tmp_path_factory.mktemp(stack)
    proc = offload_server(workdir) if stack == "ours" else foreign_server(stack, workdir)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def proxy(server: Server) -> AsyncIterator[CountingProxy]:
    counting = CountingProxy(server.url)
    await counting.start()
    try:
        yield counting
    finally:
        await counting.stop()


@pytest.fixture
async def client() -> AsyncIterator[OIPClient]:
    oip = OIPClient()
    try:
        yield oip
    finally:
        await oip.close()


def _stack(server: Server) -> str:
    return "ours" if server.name == "edgefleet-offload" else server.name


def _json_body(batch: np.ndarray, datatype: str = "FP32") -> dict[str, object]:
    return {
        "id": uuid.uuid4().hex,
        "inputs": [
            {"name": "input", "shape": list(batch.shape), "datatype": datatype,
             "data": batch.ravel().tolist()}
        ],
    }  # fmt: skip


# --- what each server answers, with plain HTTP ------------------------------------------------


def test_health_and_metadata(server: Server) -> None:
    expected = ANSWERS[_stack(server)]
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL_NAME}/ready"):
        response = httpx.get(server.url + path, timeout=10)
        assert response.status_code == 200, (path, response.text)
    ready = httpx.get(server.url + "/v2/health/ready", timeout=10)
    assert (json.loads(ready.content) if expected.health_body == "json" else ready.content) in (
        {"ready": True},
        b"",
    )
    meta = httpx.get(server.url + "/v2", timeout=10).json()
    assert isinstance(meta["name"], str) and isinstance(meta["version"], str)
    model = httpx.get(server.url + f"/v2/models/{MODEL_NAME}", timeout=10).json()
    assert model["name"] == MODEL_NAME
    assert [(t["name"], t["datatype"], t["shape"]) for t in model["inputs"]] == [
        ("input", "FP32", [-1, 8, 8, 1])
    ]
    assert [(t["name"], t["datatype"], t["shape"]) for t in model["outputs"]] == [
        ("probabilities", "FP32", [-1, 10])
    ]
    unknown = httpx.get(server.url + "/v2/models/no-such-model", timeout=10)
    assert unknown.status_code == 404
    unknown_ready = httpx.get(server.url + "/v2/models/no-such-model/ready", timeout=10)
    assert unknown_ready.status_code == expected.unknown_model_ready


def test_bad_requests_are_answered_as_recorded(server: Server, digits_batch: np.ndarray) -> None:
    """Fresh connections: KServe and MLServer close theirs after a 500."""
    expected = ANSWERS[_stack(server)]
    url = server.url + INFER
    bad_shape = httpx.post(url, json=_json_body(digits_batch.reshape(8, 8, 8)), timeout=10)
    assert bad_shape.status_code == expected.bad_shape, bad_shape.text
    as_int = _json_body((digits_batch * 255).astype(np.int32), "INT32")
    assert httpx.post(url, json=as_int, timeout=10).status_code == expected.bad_datatype
    untyped = httpx.post(url, content=json.dumps(_json_body(digits_batch)).encode(), timeout=10)
    assert untyped.status_code == expected.untyped_json, untyped.text
    unknown = httpx.post(
        server.url + "/v2/models/no-such-model/infer", json=_json_body(digits_batch), timeout=10
    )
    assert unknown.status_code == 404


# --- our client ----------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
async def test_client_infers(
    server: Server,
    proxy: CountingProxy,
    client: OIPClient,
    digits_batch: np.ndarray,
    reference: np.ndarray,
    binary: bool,
) -> None:
    expected = ANSWERS[_stack(server)]
    call = client.infer(
        proxy.url, MODEL_NAME, {"input": digits_batch},
        request_id=uuid.uuid4().hex, timeout_s=30, binary=binary,
    )  # fmt: skip
    if binary and not expected.binary:
        with pytest.raises(CloudRejected) as refused:
            await call
        assert refused.value.status == expected.binary_status
        assert proxy.count("POST", INFER) == 2  # a 500 is retried once, and only once
        return
    reply = await call
    assert reply.attempts == 1 and proxy.count("POST", INFER) == 1
    assert reply.model_name == MODEL_NAME
    got = reply.outputs["probabilities"]
    assert got.shape == (8, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-6)


async def test_client_does_not_retry_an_unknown_model(
    proxy: CountingProxy, client: OIPClient, digits_batch: np.ndarray
) -> None:
    with pytest.raises(CloudRejected) as refused:
        await client.infer(
            proxy.url, "no-such-model", {"input": digits_batch},
            request_id=uuid.uuid4().hex, timeout_s=30,
        )  # fmt: skip
    assert refused.value.status == 404
    assert proxy.count("POST", "/v2/models/no-such-model/infer") == 1


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
async def test_client_on_a_bad_shape(
    server: Server, proxy: CountingProxy, client: OIPClient, digits_batch: np.ndarray, binary: bool
) -> None:
    expected = ANSWERS[_stack(server)]
    status = expected.bad_shape if binary is False or expected.binary else expected.binary_status
    with pytest.raises(CloudRejected) as refused:
        await client.infer(
            proxy.url, MODEL_NAME, {"input": digits_batch.reshape(8, 8, 8)},
            request_id=uuid.uuid4().hex, timeout_s=30, binary=binary,
        )  # fmt: skip
    assert refused.value.status == status
    assert proxy.count("POST", INFER) == (2 if status == 500 else 1)
