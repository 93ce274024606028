"""The local API (agent/api.py) on a real aiohttp server on 127.0.0.1, with real served models.

The models here are :class:`agent.inference.ServedModel` over the in-memory runtime (NumPy
functions), which is enough for the protocol; the last section serves the real digits model on
LiteRT (models/digits/edge_fp32.tflite) to tritonclient and the image route.
tritonclient's HTTP client, which is synchronous, runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import tritonclient.http as triton
from aiohttp.test_utils import TestServer
from PIL import Image

from agent.api import create_app
from agent.errors import OutboxError
from agent.inference import ServedModel
from agent.runtimes.memory import MemoryRuntime
from agent.telemetry import InferenceStats
from protocol.manifest import ModelManifest, TensorSpec
from protocol.messages import InferenceResult

LIMIT = 64 * 1024


def spec(name: str, datatype: Any, shape: list[int]) -> TensorSpec:
    return TensorSpec(name=name, datatype=datatype, shape=shape)


def served(
    name: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    fn: Any,
    version: str | None = None,
) -> ServedModel:
    manifest = (
        ModelManifest(name=name, version=version, inputs=inputs, outputs=outputs)
        if version
        else None
    )
    return ServedModel.from_runtime(
        MemoryRuntime(inputs, outputs, fn),
        manifest=manifest,
        name=name,
        artifact_sha256="ab" * 32,
        platform="memory",
    )


def _sum(t: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    total = t["a"] + t["b"]
    return {"sum": total, "max": total.max(axis=1)}


def _echo(t: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    lengths = np.array([len(v) for v in t["text"]], np.int32)
    return {"lengths": lengths, "flags_out": ~t["flags"]}


def _mean(t: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"mean": t["pixels"].mean(axis=(1, 2, 3)).reshape(1, 1).astype(np.float32)}


def _broken(t: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    raise RuntimeError("the accelerator fell off the bus")


@pytest.fixture
def models() -> Iterator[dict[str, ServedModel]]:
    four = [-1, 4]
    built = [
        served(
            "sum",
            [spec("a", "FP32", four), spec("b", "FP32", four)],
            [spec("sum", "FP32", four), spec("max", "FP32", [-1])],
            _sum,
            version="3",
        ),
        served(
            "echo",
            [spec("text", "BYTES", [-1]), spec("flags", "BOOL", [-1])],
            [spec("lengths", "INT32", [-1]), spec("flags_out", "BOOL", [-1])],
            _echo,
        ),
        served(
            "tiny", [spec("pixels", "FP32", [1, 8, 8, 1])], [spec("mean", "FP32", [1, 1])], _mean
        ),
        served("broken", [spec("x", "FP32", [1])], [spec("y", "FP32", [1])], _broken),
    ]
    yield {m.name: m for m in built}
    for m in built:
        m.close()


@dataclass
class Api:
    """The running app, what it recorded, and a client session."""

    url: str
    host: str
    session: aiohttp.ClientSession
    stats: InferenceStats
    results: list[InferenceResult] = field(default_factory=list)
    wakes: int = 0
    fail_record: bool = False
    crash_record: bool = False
    gate: asyncio.Event | None = None
    recording: asyncio.Event = field(default_factory=asyncio.Event)

    async def record(self, result: InferenceResult) -> None:
        self.recording.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_record:
            raise OutboxError("database or disk is full")
        if self.crash_record:
            raise KeyError("a bug")
        self.results.append(result)

    def woken(self) -> None:
        self.wakes += 1

    async def request(
        self, method: str, path: str, **kwargs: Any
    ) -> tuple[int, Mapping[str, str], bytes]:
        async with self.session.request(method, self.url + path, **kwargs) as response:
            return response.status, response.headers, await response.read()

    async def json(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        status, headers, body = await self.request(method, path, **kwargs)
        assert headers["Content-Type"] == "application/json", body
        return status, json.loads(body)


async def start(models: Mapping[str, ServedModel]) -> AsyncIterator[Api]:
    stats = InferenceStats()
    holder: list[Api] = []

    async def record(result: InferenceResult) -> None:
        await holder[0].record(result)

    app = create_app(
        models,
        record=record,
        stats=stats,
        max_body_bytes=LIMIT,
        on_recorded=lambda: holder[0].woken(),
    )
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        api = Api(str(server.make_url("")), f"127.0.0.1:{server.port}", session, stats)
        holder.append(api)
        yield api
    await server.close()


@pytest.fixture
async def api(models: dict[str, ServedModel]) -> AsyncIterator[Api]:
    async for running in start(models):
        yield running


A = [[1.0, 2.0, 3.0, 4.0]]
B = [[10.0, 20.0, 30.0, 40.0]]
GOOD = {
    "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": A},
        {"name": "b", "datatype": "FP32", "shape": [1, 4], "data": B},
    ]
}


# --- health and metadata -----------------------------------------------------------------


async def test_health_and_server_metadata(api: Api) -> None:
    assert await api.json("GET", "/v2/health/live") == (200, {"live": True})
    assert await api.json("GET", "/v2/health/ready") == (200, {"ready": True})
    status, meta = await api.json("GET", "/v2")
    assert status == 200
    assert meta["name"] == "edgefleet-agent"
    assert meta["extensions"] == ["binary_tensor_data"]
    assert meta["version"]


async def test_not_ready_until_a_model_is_loaded() -> None:
    models: dict[str, ServedModel] = {}
    async for api in start(models):
        status, body = await api.json("GET", "/v2/health/ready")
        assert status == 503 and body["ready"] is False
        assert (await api.json("GET", "/v2/health/live"))[0] == 200
        model = served("late", [spec("x", "FP32", [1])], [spec("y", "FP32", [1])], dict)
        models["late"] = model  # the app looks models up per request
        try:
            assert await api.json("GET", "/v2/health/ready") == (200, {"ready": True})
        finally:
            model.close()


@pytest.mark.parametrize("prefix", ["/v2/models/sum", "/v2/models/sum/versions/3"])
async def test_model_metadata_and_readiness(api: Api, prefix: str) -> None:
    status, meta = await api.json("GET", prefix)
    assert status == 200
    assert meta["name"] == "sum" and meta["versions"] == ["3"]
    assert meta["inputs"] == [
        {"name": "a", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "b", "datatype": "FP32", "shape": [-1, 4]},
    ]
    assert [o["name"] for o in meta["outputs"]] == ["sum", "max"]
    assert await api.json("GET", prefix + "/ready") == (
        200,
        {"name": "sum", "version": "3", "ready": True},
    )


# --- inference over raw HTTP ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v2/models/sum/infer", "/v2/models/sum/versions/3/infer"])
async def test_json_inference_is_recorded_then_answered(api: Api, path: str) -> None:
    status, body = await api.json("POST", path, json={**GOOD, "id": "req-7"})
    assert status == 200, body
    assert body["model_name"] == "sum" and body["model_version"] == "3" and body["id"] == "req-7"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["sum"] == {
        "name": "sum",
        "datatype": "FP32",
        "shape": [1, 4],
        "data": [11.0, 22.0, 33.0, 44.0],
    }
    assert outputs["max"]["data"] == [44.0]
    [result] = api.results
    assert body["parameters"]["result_id"] == result.result_id
    assert result.model == "sum" and result.model_version == "3"
    assert result.request_id == "req-7"
    assert api.wakes == 1
    assert api.stats.inferences_total == 1


async def test_binary_inference_over_raw_http(api: Api) -> None:
    a = np.array(A, np.float32)
    b = np.array(B, np.float32)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "a",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "parameters": {"binary_data_size": 16},
                },
                {
                    "name": "b",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "parameters": {"binary_data_size": 16},
                },
            ],
            "outputs": [{"name": "max", "parameters": {"binary_data": True}}, {"name": "sum"}],
        }
    ).encode()
    status, headers, body = await api.request(
        "POST",
        "/v2/models/sum/infer",
        data=header + a.tobytes() + b.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert status == 200, body
    assert headers["Content-Type"] == "application/octet-stream"
    cut = int(headers["Inference-Header-Content-Length"])
    doc = json.loads(body[:cut])
    assert [o["name"] for o in doc["outputs"]] == ["max", "sum"]  # the order asked for
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 4}
    assert doc["outputs"][1]["data"] == [11.0, 22.0, 33.0, 44.0]  # binary_data not asked: JSON
    assert np.frombuffer(body[cut:], np.float32).tolist() == [44.0]


async def test_the_answer_waits_for_the_record(api: Api) -> None:
    api.gate = asyncio.Event()
    answer = asyncio.create_task(api.json("POST", "/v2/models/sum/infer", json=GOOD))
    await asyncio.wait_for(api.recording.wait(), timeout=30)
    await asyncio.sleep(0.05)  # time for a premature answer to arrive, if there were one
    assert not answer.done()
    assert api.wakes == 0 and api.stats.inferences_total == 0
    api.gate.set()
    status, _ = await answer
    assert status == 200 and len(api.results) == 1 and api.wakes == 1


async def test_a_result_that_cannot_be_stored_is_503_not_an_answer(api: Api) -> None:
    api.fail_record = True
    status, headers, body = await api.request("POST", "/v2/models/sum/infer", json=GOOD)
    assert status == 503
    assert headers["Content-Type"] == "application/json"
    assert headers["Retry-After"] == "1"
    assert "could not be stored" in json.loads(body)["error"]
    assert api.wakes == 0 and api.stats.inferences_total == 0
    assert api.stats.errors_by_kind == {"outbox": 1}
    api.fail_record = False
    assert (await api.json("POST", "/v2/models/sum/infer", json=GOOD))[0] == 200


async def test_an_unexpected_error_is_a_json_500_without_a_traceback(api: Api) -> None:
    api.crash_record = True
    status, headers, body = await api.request("POST", "/v2/models/sum/infer", json=GOOD)
    assert status == 500 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": "internal error (KeyError); see the agent's log"}
    assert api.stats.errors_by_kind == {"internal": 1}


async def test_a_backend_failure_is_503_with_retry_after(api: Api) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}
    status, headers, raw = await api.request("POST", "/v2/models/broken/infer", json=body)
    assert status == 503 and headers["Retry-After"] == "1"
    assert "accelerator fell off the bus" in json.loads(raw)["error"]
    assert api.results == [] and api.stats.errors_by_kind == {"backend": 1}


# --- tritonclient, both modes ----------------------------------------------------------------


def triton_sum(
    host: str, binary_in: bool, binary_out: bool, name_outputs: bool, compression: str | None = None
) -> dict[str, Any]:
    client = triton.InferenceServerClient(url=host)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("sum") and client.is_model_ready("sum", "3")
        meta = client.get_model_metadata("sum")
        server = client.get_server_metadata()
        a = np.arange(8, dtype=np.float32).reshape(2, 4)
        b = np.full((2, 4), 0.5, np.float32)
        inputs = [triton.InferInput("a", [2, 4], "FP32"), triton.InferInput("b", [2, 4], "FP32")]
        inputs[0].set_data_from_numpy(a, binary_data=binary_in)
        inputs[1].set_data_from_numpy(b, binary_data=binary_in)
        outputs = (
            [
                triton.InferRequestedOutput("sum", binary_data=binary_out),
                triton.InferRequestedOutput("max", binary_data=binary_out),
            ]
            if name_outputs
            else None  # tritonclient then asks for every output as binary
        )
        result = client.infer(
            "sum",
            inputs,
            outputs=outputs,
            request_id="t-1",
            request_compression_algorithm=compression,
        )
        return {
            "meta": meta,
            "server": server,
            "sum": result.as_numpy("sum"),
            "max": result.as_numpy("max"),
            "expected": a + b,
            "response": result.get_response(),
        }
    finally:
        client.close()


@pytest.mark.parametrize(
    ("binary_in", "binary_out", "name_outputs"),
    [
        (False, False, True),
        (True, False, True),
        (False, True, True),
        (True, True, True),
        (True, True, False),
    ],
)
async def test_tritonclient_infers_in_json_and_binary_modes(
    api: Api, binary_in: bool, binary_out: bool, name_outputs: bool
) -> None:
    got = await asyncio.to_thread(triton_sum, api.host, binary_in, binary_out, name_outputs)
    assert got["server"]["extensions"] == ["binary_tensor_data"]
    assert got["meta"]["name"] == "sum"
    np.testing.assert_array_equal(got["sum"], got["expected"])
    np.testing.assert_array_equal(got["max"], got["expected"].max(axis=1))
    assert got["sum"].dtype == np.float32 and got["sum"].shape == (2, 4)
    binary = binary_out or not name_outputs
    assert all(("data" in o) != binary for o in got["response"]["outputs"])
    assert got["response"]["id"] == "t-1"
    assert len(api.results) == 1 and api.results[0].request_id == "t-1"


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
async def test_tritonclient_compressed_requests(api: Api, compression: str) -> None:
    got = await asyncio.to_thread(triton_sum, api.host, True, True, True, compression)
    np.testing.assert_array_equal(got["sum"], got["expected"])


async def test_the_body_limit_applies_after_decompression(api: Api) -> None:
    bomb = gzip.compress(b" " * (4 * LIMIT))  # a few hundred bytes on the wire
    status, _, body = await api.request(
        "POST", INFER, data=bomb, headers={"Content-Encoding": "gzip"}
    )
    assert status == 413 and "over the limit" in json.loads(body)["error"]


def triton_echo(host: str, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    client = triton.InferenceServerClient(url=host)
    try:
        text = triton.InferInput("text", [3], "BYTES")
        text.set_data_from_numpy(np.array([b"one", b"", "tr\u00e8s".encode()], object), binary)
        flags = triton.InferInput("flags", [3], "BOOL")
        flags.set_data_from_numpy(np.array([True, False, True]), binary_data=binary)
        outputs = [
            triton.InferRequestedOutput("lengths", binary_data=binary),
            triton.InferRequestedOutput("flags_out", binary_data=binary),
        ]
        result = client.infer("echo", [text, flags], outputs=outputs)
        return result.as_numpy("lengths"), result.as_numpy("flags_out")
    finally:
        client.close()


@pytest.mark.parametrize("binary", [False, True])
async def test_tritonclient_bytes_and_bool_tensors(api: Api, binary: bool) -> None:
    lengths, flags = await asyncio.to_thread(triton_echo, api.host, binary)
    assert lengths.tolist() == [3, 0, 5]  # "très" is 5 bytes in UTF-8
    assert flags.tolist() == [False, True, False]


def triton_error(host: str) -> str:
    client = triton.InferenceServerClient(url=host)
    try:
        bad = triton.InferInput("a", [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), np.float32), binary_data=True)
        try:
            client.infer("sum", [bad])
        except triton.InferenceServerException as exc:
            return f"{exc.status()} {exc.message()}"
        return "no error"
    finally:
        client.close()


async def test_tritonclient_sees_the_error_message(api: Api) -> None:
    message = await asyncio.to_thread(triton_error, api.host)
    assert message.startswith("400 ")
    assert "missing input 'b'" in message and "expected shape [-1,4], got [1,3]" in message


# --- the image route -------------------------------------------------------------------------


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_image_route_returns_the_result(api: Api) -> None:
    pixels = np.full((8, 8), 51, np.uint8)  # 51 / 255 = 0.2
    status, body = await api.json(
        "POST", "/v1/models/tiny/image", data=png(pixels), headers={"X-Request-Id": "img-1"}
    )
    assert status == 200, body
    assert body["model"] == "tiny" and body["model_version"] == "0"
    assert body["artifact_sha256"] == "ab" * 32 and body["backend"] == "memory"
    assert body["latency_ms"] >= 0 and body["request_id"] == "img-1"
    [mean] = body["outputs"]
    assert mean["name"] == "mean" and mean["data"] == pytest.approx([0.2])
    assert [r.result_id for r in api.results] == [body["result_id"]]


# --- bad input: a 4xx that names the problem, and the server keeps serving ----------------------


def _binary(inputs: list[dict[str, Any]], data: bytes, length: int | None = None) -> dict[str, Any]:
    header = json.dumps({"inputs": inputs}).encode()
    size = len(header) if length is None else length
    return {"data": header + data, "headers": {"Inference-Header-Content-Length": str(size)}}


def _fp32(name: str, size: int) -> dict[str, Any]:
    return {
        "name": name,
        "datatype": "FP32",
        "shape": [1, 4],
        "parameters": {"binary_data_size": size},
    }


def _json(**changes: Any) -> dict[str, Any]:
    inputs = [dict(GOOD["inputs"][0]), dict(GOOD["inputs"][1])]
    inputs[1].update(changes)
    return {"json": {"inputs": inputs}}


async def _chunks(total: int) -> AsyncIterator[bytes]:
    for _ in range(total // 4096):
        yield b"\0" * 4096


INFER = "/v2/models/sum/infer"
BAD = [
    ("POST", INFER, {"data": b"{oops"}, 400, "the body is not valid JSON"),
    ("POST", INFER, {"data": b""}, 400, "not valid JSON"),
    ("POST", INFER, {"json": {"inputs": GOOD["inputs"][:1]}}, 400, "missing input 'b'"),
    (
        "POST",
        INFER,
        {"json": {"inputs": [*GOOD["inputs"], {**GOOD["inputs"][0], "name": "c"}]}},
        400,
        "unknown input 'c'",
    ),
    ("POST", INFER, _json(shape=[2, 2]), 400, "input 'b': expected shape [-1,4], got [2,2]"),
    ("POST", INFER, _json(datatype="FP64"), 400, "input 'b': expected FP32, got FP64"),
    ("POST", INFER, _json(datatype="COMPLEX"), 400, "unknown datatype 'COMPLEX'"),
    ("POST", INFER, _json(data=[1, 2, 3]), 400, "shape [1,4] needs 4 values, 'data' has 3"),
    ("POST", INFER, _json(data=["x", "y", "z", "w"]), 400, "not numbers"),
    (
        "POST",
        INFER,
        {"json": {**GOOD, "outputs": [{"name": "nope"}]}},
        400,
        "unknown output 'nope'",
    ),
    (
        "POST",
        INFER,
        _binary([_fp32("a", 16), _fp32("b", 16)], b"\0" * 24),
        400,
        "runs past the end",
    ),
    ("POST", INFER, _binary([_fp32("a", 16), _fp32("b", 16)], b"\0" * 40), 400, "add up to 32"),
    (
        "POST",
        INFER,
        _binary([_fp32("a", 16), _fp32("b", 12)], b"\0" * 28),
        400,
        "does not match shape [1,4]",
    ),
    (
        "POST",
        INFER,
        _binary([_fp32("a", 16), _fp32("b", 16)], b"\0" * 32, length=10**6),
        400,
        "only",
    ),
    (
        "POST",
        INFER,
        {"data": b"{}", "headers": {"Inference-Header-Content-Length": "x"}},
        400,
        "must be a number",
    ),
    (
        "POST",
        INFER,
        {"json": {"inputs": [_fp32("a", 16), _fp32("b", 16)]}},
        400,
        "no Inference-Header-Content-Length",
    ),
    (
        "POST",
        "/v1/models/tiny/image",
        {"data": b"GIF89a not really"},
        400,
        "not a JPEG or PNG image",
    ),
    ("POST", "/v1/models/tiny/image", {"data": png(np.zeros((8, 8), np.uint8))[:40]}, 400, "image"),
    ("POST", "/v1/models/tiny/image", {"data": b""}, 400, "the body is empty"),
    (
        "POST",
        "/v1/models/sum/image",
        {"data": png(np.zeros((8, 8), np.uint8))},
        400,
        "takes raw tensors",
    ),
    ("POST", "/v2/models/nope/infer", {"json": GOOD}, 404, "unknown model 'nope'"),
    ("GET", "/v2/models/nope", {}, 404, "unknown model 'nope' (this agent serves: 'sum', 'echo'"),
    ("GET", "/v2/models/nope/ready", {}, 404, "unknown model 'nope'"),
    (
        "POST",
        "/v2/models/sum/versions/9/infer",
        {"json": GOOD},
        404,
        "has no version '9' (serving version '3')",
    ),
    ("GET", "/v2/models/sum/versions/9", {}, 404, "has no version '9'"),
    ("POST", "/v1/models/nope/image", {"data": b"x"}, 404, "unknown model 'nope'"),
    ("GET", "/v3/anything", {}, 404, "no such endpoint: /v3/anything"),
    ("GET", INFER, {}, 405, "method GET is not allowed on /v2/models/sum/infer (allowed: POST)"),
    ("PUT", "/v2/health/live", {}, 405, "method PUT is not allowed"),
    (
        "POST",
        INFER,
        {"data": b"\0" * (LIMIT + 1)},
        413,
        f"of {LIMIT + 1} bytes is over the limit of {LIMIT} bytes",
    ),
    ("POST", INFER, {"data": _chunks}, 413, f"is over the limit of {LIMIT} bytes"),
    ("POST", "/v1/models/tiny/image", {"data": b"\0" * (LIMIT + 1)}, 413, "over the limit"),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "message"),
    BAD,
    ids=[f"{status}-{i}" for i, (*_, status, _m) in enumerate(BAD)],
)
async def test_bad_input_gets_its_4xx_and_the_server_keeps_serving(
    api: Api, method: str, path: str, kwargs: dict[str, Any], status: int, message: str
) -> None:
    if kwargs.get("data") is _chunks:
        kwargs = {"data": _chunks(2 * LIMIT)}
    got, headers, body = await api.request(method, path, **kwargs)
    assert got == status, body
    assert headers["Content-Type"] == "application/json"
    error = json.loads(body)["error"]
    assert message in error
    if status == 405:
        assert headers["Allow"]
    assert api.results == [] and api.wakes == 0
    # ... and it keeps serving
    assert (await api.json("POST", INFER, json=GOOD))[0] == 200
    assert len(api.results) == 1


async def test_bad_input_is_counted_by_kind(api: Api) -> None:
    await api.request("POST", INFER, data=b"{oops")
    await api.request("POST", "/v2/models/nope/infer", json=GOOD)
    await api.request("POST", INFER, data=b"\0" * (LIMIT + 1))
    assert api.stats.errors_by_kind == {"bad_input": 1, "unknown_model": 1, "too_large": 1}
    assert api.stats.inferences_total == 0


# --- the real digits model on LiteRT ---------------------------------------------------------

DIGITS = Path(__file__).resolve().parents[2] / "models" / "digits"


@pytest.fixture(scope="module")
def testset() -> tuple[np.ndarray, np.ndarray]:
    with np.load(DIGITS / "testset.npz") as data:
        return data["images"][:40], data["labels"][:40]


@pytest.fixture
async def digits_api() -> AsyncIterator[tuple[Api, ServedModel]]:
    path = DIGITS / "edge_fp32.tflite"
    model = ServedModel.load(path, manifest=ModelManifest.load(path.with_suffix(".json")))
    try:
        async for running in start({model.name: model}):
            yield running, model
    finally:
        model.close()


def triton_digits(
    host: str, model: str, images: np.ndarray, binary: bool
) -> tuple[list[np.ndarray], dict[str, Any]]:
    client = triton.InferenceServerClient(url=host)
    try:
        meta = client.get_model_metadata(model)
        [spec_in], [spec_out] = meta["inputs"], meta["outputs"]
        outputs = []
        for image in images:
            pixels = triton.InferInput(spec_in["name"], [1, 8, 8, 1], "FP32")
            tensor = (image.astype(np.float32) / 255.0).reshape(1, 8, 8, 1)
            pixels.set_data_from_numpy(tensor, binary_data=binary)
            wanted = triton.InferRequestedOutput(spec_out["name"], binary_data=binary)
            result = client.infer(model, [pixels], outputs=[wanted])
            outputs.append(result.as_numpy(spec_out["name"]))
        return outputs, meta
    finally:
        client.close()


@pytest.mark.parametrize("binary", [False, True])
async def test_tritonclient_on_the_digits_model(
    digits_api: tuple[Api, ServedModel], testset: tuple[np.ndarray, np.ndarray], binary: bool
) -> None:
    api, model = digits_api
    images, labels = testset
    outputs, meta = await asyncio.to_thread(triton_digits, api.host, model.name, images, binary)
    assert meta["inputs"] == [
        {"name": model.inputs[0].name, "datatype": "FP32", "shape": [1, 8, 8, 1]}
    ]
    # the same numbers as the model gives in process, whichever way they travelled
    name = model.inputs[0].name
    for image, got in zip(images, outputs, strict=True):
        direct = await model.infer({name: (image.astype(np.float32) / 255.0).reshape(1, 8, 8, 1)})
        [expected] = direct.outputs.values()
        np.testing.assert_array_equal(got, expected)
    predicted = np.array([o.reshape(-1).argmax() for o in outputs])
    assert (predicted == labels).mean() >= 0.9  # a real classifier, not a stand-in
    assert len(api.results) == len(images)
    assert {r.artifact_sha256 for r in api.results} == {model.artifact_sha256}
    assert all(r.classes is not None and len(r.classes) == 3 for r in api.results)


async def test_image_route_on_the_digits_model(
    digits_api: tuple[Api, ServedModel], testset: tuple[np.ndarray, np.ndarray]
) -> None:
    api, model = digits_api
    images, labels = testset
    predicted = []
    for image in images:
        status, body = await api.json("POST", f"/v1/models/{model.name}/image", data=png(image))
        assert status == 200, body
        assert body["model"] == model.name and body["model_version"] == model.version
        assert body["artifact_sha256"] == model.artifact_sha256 and body["backend"] == "litert"
        assert body["latency_ms"] > 0
        classes = body["classes"]
        assert len(classes) == 3 and classes[0]["score"] >= classes[1]["score"]
        predicted.append(int(classes[0]["label"]))
    assert (np.array(predicted) == labels).mean() >= 0.9
    assert [r.result_id for r in api.results][-1] == body["result_id"]


def _digits_bad(name: str, input_name: str, image: bytes) -> list[tuple[Any, ...]]:
    def tensor(**changes: Any) -> dict[str, Any]:
        t = {"name": input_name, "datatype": "FP32", "shape": [1, 8, 8, 1], "data": [0.0] * 64}
        return {"json": {"inputs": [{**t, **changes}]}}

    def binary(size: int, data: bytes) -> dict[str, Any]:
        t = {"name": input_name, "datatype": "FP32", "shape": [1, 8, 8, 1]}
        return _binary([{**t, "parameters": {"binary_data_size": size}}], data)

    infer = f"/v2/models/{name}/infer"
    image_path = f"/v1/models/{name}/image"
    where = f"input {input_name!r}"
    return [
        ("POST", infer, {"data": b'{"inputs": ['}, 400, "not valid JSON"),
        (
            "POST",
            infer,
            tensor(shape=[1, 64]),
            400,
            f"{where}: expected shape [1,8,8,1], got [1,64]",
        ),
        ("POST", infer, tensor(datatype="FP64"), 400, f"{where}: expected FP32, got FP64"),
        ("POST", infer, tensor(data=[0.0] * 63), 400, "needs 64 values, 'data' has 63"),
        ("POST", infer, tensor(name="image"), 400, "unknown input 'image'"),
        ("POST", infer, {"json": {"inputs": []}}, 400, "'inputs' must be a non-empty list"),
        ("POST", infer, binary(255, b"\0" * 255), 400, "does not match shape [1,8,8,1]"),
        ("POST", infer, binary(256, b"\0" * 300), 400, "add up to 256"),
        ("POST", image_path, {"data": b"%PDF-1.4 not an image"}, 400, "not a JPEG or PNG image"),
        ("POST", image_path, {"data": image[: len(image) // 2]}, 400, "image"),
        ("POST", f"/v2/models/{name}/versions/0.0.0/infer", tensor(), 404, "no version '0.0.0'"),
        ("POST", "/v2/models/digits/infer", tensor(), 404, "unknown model 'digits'"),
        ("GET", image_path, {}, 405, "method GET is not allowed"),
        ("POST", image_path, {"data": b"\xff" * (LIMIT + 1)}, 413, "over the limit"),
    ]


async def test_bad_input_to_the_digits_model_gets_its_4xx_and_it_keeps_serving(
    digits_api: tuple[Api, ServedModel], testset: tuple[np.ndarray, np.ndarray]
) -> None:
    api, model = digits_api
    image = png(testset[0][0])
    for method, path, kwargs, status, message in _digits_bad(
        model.name, model.inputs[0].name, image
    ):
        got, headers, body = await api.request(method, path, **kwargs)
        assert (got, headers["Content-Type"]) == (status, "application/json"), (path, body)
        assert message in json.loads(body)["error"], (path, body)
        ok, result = await api.json("POST", f"/v1/models/{model.name}/image", data=image)
        assert ok == 200 and result["classes"][0]["label"] == str(testset[1][0])
    # every refusal of ours is counted in telemetry; aiohttp's routing 405 is not an inference error
    cases = _digits_bad(model.name, "x", image)
    assert api.stats.errors_total == sum(1 for case in cases if case[3] != 405)
