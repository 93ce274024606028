"""The offload server's routes in process (httpx on the ASGI app, the real model and batcher)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import numpy as np
import pytest

from controlplane.offload.batcher import BatchPolicy
from controlplane.offload.runtime import OnnxModel
from tests.controlplane.offload.conftest import App, open_app

PREFIXES = ["/v2/models/digits-cloud", "/v2/models/digits-cloud/versions/1"]


def json_request(images: np.ndarray, **extra: object) -> bytes:
    tensor = {
        "name": "input",
        "shape": list(images.shape),
        "datatype": "FP32",
        "data": images.ravel().tolist(),
    }
    return json.dumps({"inputs": [tensor], **extra}).encode()


async def test_health_and_server_metadata(served: App) -> None:
    assert (await served.client.get("/v2/health/live")).json() == {"live": True}
    assert (await served.client.get("/v2/health/ready")).json() == {"ready": True}
    meta = (await served.client.get("/v2")).json()
    assert meta["name"] == "edgefleet-offload" and "binary_tensor_data" in meta["extensions"]


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_model_metadata_and_ready_with_and_without_version(served: App, prefix: str) -> None:
    meta = (await served.client.get(prefix)).json()
    assert meta["name"] == "digits-cloud" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 8, 8, 1]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    ready = await served.client.get(prefix + "/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_json_infer_without_content_type_echoes_the_id(
    served: App, digits: tuple[np.ndarray, np.ndarray], prefix: str
) -> None:
    images, labels = digits
    response = await served.client.post(
        prefix + "/infer",
        content=json_request(images[:3], id="req-1"),
        headers={"content-type": ""},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "req-1" and body["model_name"] == "digits-cloud"
    assert body["model_version"] == "1"
    (out,) = body["outputs"]
    assert out["name"] == "probabilities" and out["shape"] == [3, 10]
    predicted = np.asarray(out["data"]).reshape(3, 10).argmax(axis=1)
    assert predicted.tolist() == labels[:3].tolist()


async def test_binary_infer_in_and_out(served: App, digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    raw = images[:4].astype("<f4").tobytes()
    header = json.dumps(
        {
            "id": "bin-1",
            "inputs": [
                {
                    "name": "input",
                    "shape": [4, 8, 8, 1],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    response = await served.client.post(
        "/v2/models/digits-cloud/infer",
        content=header + raw,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    doc = json.loads(response.content[:length])
    assert doc["id"] == "bin-1"
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == 4 * 10 * 4
    probs = np.frombuffer(response.content[length:], "<f4").reshape(4, 10)
    assert probs.argmax(axis=1).tolist() == labels[:4].tolist()


@pytest.mark.parametrize(
    ("path", "content", "status", "words"),
    [
        ("/v2/models/nope/infer", b"{}", 404, "unknown model 'nope'"),
        ("/v2/models/digits-cloud/versions/7/infer", b"{}", 404, "no version '7'"),
        ("/v2/models/digits-cloud/infer", b"{oops", 400, "not valid JSON"),
        (
            "/v2/models/digits-cloud/infer",
            json_request(np.zeros((1, 8, 8), np.float32)),
            400,
            "input 'input': shape [1,8,8]",
        ),
        (
            "/v2/models/digits-cloud/infer",
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "input",
                            "shape": [1, 8, 8, 1],
                            "datatype": "FP64",
                            "data": [0.0] * 64,
                        }
                    ]
                }
            ).encode(),
            400,
            "datatype 'FP64'",
        ),
        (
            "/v2/models/digits-cloud/infer",
            json_request(np.zeros((1, 8, 8, 1), np.float32), outputs=[{"name": "x"}]),
            400,
            "unknown output 'x'",
        ),
    ],
)
async def test_errors_are_json_with_the_right_status(
    served: App, path: str, content: bytes, status: int, words: str
) -> None:
    response = await served.client.post(path, content=content)
    assert response.status_code == status
    assert words in response.json()["error"]


@pytest.mark.parametrize(
    "path", ["/v2/models/nope", "/v2/models/nope/ready", "/v2/models/digits-cloud/versions/2/ready"]
)
async def test_unknown_model_or_version_is_404(served: App, path: str) -> None:
    response = await served.client.get(path)
    assert response.status_code == 404 and "error" in response.json()


async def test_concurrent_requests_share_executions(
    cloud_model: OnnxModel, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    async for app in open_app([cloud_model], BatchPolicy(max_batch=8, max_delay=30.0)):
        posts = [
            app.client.post(
                "/v2/models/digits-cloud/infer",
                content=json_request(digits[0][i : i + 1], id=str(i)),
            )
            for i in range(16)
        ]
        responses = await asyncio.gather(*posts)
        assert [r.json()["id"] for r in responses] == [str(i) for i in range(16)]
        for i, r in enumerate(responses):
            assert np.argmax(r.json()["outputs"][0]["data"]) == digits[1][i]
        assert app.metric("nv_inference_count") == 16
        assert app.metric("nv_inference_exec_count") == 2
        assert app.metric("nv_inference_request_success") == 16
        metrics = (await app.client.get("/metrics")).text
        assert 'nv_inference_exec_count{model="digits-cloud",version="1"} 2' in metrics
        assert 'nv_inference_pending_request_count{model="digits-cloud",version="1"} 0' in metrics


async def test_full_queue_is_503_with_retry_after(
    cloud_model: OnnxModel, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    async for app in open_app([cloud_model], BatchPolicy(max_batch=8, max_delay=30.0, max_queue=1)):
        body = json_request(digits[0][:1])
        first = asyncio.ensure_future(
            app.client.post("/v2/models/digits-cloud/infer", content=body)
        )
        while app.state.all()[0].pending < 1:  # noqa: ASYNC110 (the queue has no event to wait on)
            await asyncio.sleep(0.001)
        refused = await app.client.post("/v2/models/digits-cloud/infer", content=body)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert "full" in refused.json()["error"]
        assert app.metric("nv_inference_request_failure") == 1
        await app.state.drain()
        assert (await first).status_code == 200


async def test_deadline_passed_in_the_queue_is_504(
    cloud_model: OnnxModel, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    async for app in open_app([cloud_model], BatchPolicy(max_batch=8, max_delay=30.0)):
        body = json_request(digits[0][:1], parameters={"timeout": 20_000})  # 20 ms, in µs
        response = await app.client.post("/v2/models/digits-cloud/infer", content=body)
        assert response.status_code == 504
        assert "timeout" in response.json()["error"]
        assert app.metric("nv_inference_exec_count") == 0


async def test_draining_server_is_not_ready_and_refuses_inference(
    served: App, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    await served.state.drain()
    assert (await served.client.get("/v2/health/ready")).status_code == 503
    assert (await served.client.get("/v2/models/digits-cloud/ready")).status_code == 503
    assert (await served.client.get("/v2/health/live")).status_code == 200
    refused = await served.client.post(
        "/v2/models/digits-cloud/infer", content=json_request(digits[0][:1])
    )
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"


@pytest.fixture
async def two_versions(cloud_model: OnnxModel) -> AsyncIterator[App]:
    from controlplane.offload.runtime import load, parse_model_arg

    v2 = load(parse_model_arg(f"digits-cloud:2={cloud_model.path}"), threads=1)
    async for app in open_app([cloud_model, v2], BatchPolicy()):
        yield app


async def test_without_a_version_the_highest_answers(
    two_versions: App, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    meta = (await two_versions.client.get("/v2/models/digits-cloud")).json()
    assert meta["versions"] == ["1", "2"]
    response = await two_versions.client.post(
        "/v2/models/digits-cloud/infer", content=json_request(digits[0][:1])
    )
    assert response.json()["model_version"] == "2"
    pinned = await two_versions.client.post(
        "/v2/models/digits-cloud/versions/1/infer", content=json_request(digits[0][:1])
    )
    assert pinned.json()["model_version"] == "1"
