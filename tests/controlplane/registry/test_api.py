"""The registry's routes in process (httpx over ASGI) on a real store, real files, real runtimes."""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from controlplane.app import create_app
from controlplane.records import Incoming
from controlplane.store import Store
from protocol.messages import ModelInfo, Status
from protocol.release import open_release
from protocol.signing import public_key_from_text
from tests.controlplane.registry.conftest import (
    DIGITS,
    client_for,
    error,
    golden,
    manifest,
    settings,
    upload,
)

FP32 = (DIGITS / "edge_fp32.tflite").read_bytes()
INT8 = (DIGITS / "edge_int8.tflite").read_bytes()
ONNX = (DIGITS / "cloud.onnx").read_bytes()


async def push(client: httpx.AsyncClient, name: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post(f"/api/v1/models/{name}/releases", json=body)


async def digits_body(client: httpx.AsyncClient, version: str = "1.0.0") -> dict[str, Any]:
    return {
        "version": version,
        "artifacts": {"cpu": await upload(client, FP32)},
        "manifest": manifest(),
        "golden": golden(),
    }


# -- artifacts -------------------------------------------------------------------------------------


async def test_put_stores_by_hash_and_is_idempotent(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    first = await client.put("/api/v1/artifacts", content=FP32)
    assert first.status_code == 201, first.text
    sha = hashlib.sha256(FP32).hexdigest()
    assert first.json() == {"sha256": sha, "size": len(FP32), "format": "tflite"}
    again = await client.put("/api/v1/artifacts", content=FP32)
    assert again.status_code == 200 and again.json() == first.json()
    on_disk = tmp_path / "data" / "artifacts" / sha[:2] / sha
    assert on_disk.read_bytes() == FP32
    assert list((tmp_path / "data" / "artifacts" / "tmp").iterdir()) == [], "no temporary left"
    onnx = (await client.put("/api/v1/artifacts", content=ONNX)).json()
    assert onnx["format"] == "onnx"
    text = (await client.put("/api/v1/artifacts", content=b"hello, not a model")).json()
    assert text["format"] == "unknown"


async def test_put_streams_a_chunked_body(client: httpx.AsyncClient) -> None:
    async def chunks() -> Any:
        for i in range(0, len(FP32), 1000):
            yield FP32[i : i + 1000]

    response = await client.put("/api/v1/artifacts", content=chunks())
    assert response.json()["sha256"] == hashlib.sha256(FP32).hexdigest()


async def test_put_past_the_limit_is_413_and_keeps_nothing(tmp_path: Path, store: Store) -> None:
    app = create_app(settings(tmp_path, max_artifact_bytes=1000), store=store, mqtt=False)
    async with client_for(app) as client:
        error(await client.put("/api/v1/artifacts", content=FP32), 413, "max_artifact_bytes")

        async def chunks() -> Any:  # no Content-Length: caught while streaming
            for i in range(0, len(FP32), 500):
                yield FP32[i : i + 500]

        error(await client.put("/api/v1/artifacts", content=chunks()), 413, "1000 bytes")
        error(await client.put("/api/v1/artifacts", content=b""), 400, "empty")
    root = tmp_path / "data" / "artifacts"
    assert [p for p in root.rglob("*") if p.is_file()] == []


async def test_get_head_and_ranges(client: httpx.AsyncClient) -> None:
    sha = await upload(client, FP32)
    url = f"/api/v1/artifacts/{sha}"
    size = len(FP32)
    whole = await client.get(url)
    assert whole.status_code == 200 and whole.content == FP32
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["etag"] == f'"{sha}"'
    assert whole.headers["content-length"] == str(size)
    head = await client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(size)
    cases = [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, size - 1),
        ("bytes=-10", size - 10, size - 1),
        (f"bytes=10-{size + 50}", 10, size - 1),  # clamped to the end
        (f"bytes=-{size * 2}", 0, size - 1),
    ]
    for header, start, end in cases:
        part = await client.get(url, headers={"Range": header})
        assert part.status_code == 206, (header, part.text)
        assert part.content == FP32[start : end + 1], header
        assert part.headers["content-range"] == f"bytes {start}-{end}/{size}"
        assert part.headers["content-length"] == str(end - start + 1)
    for header in (f"bytes={size}-", f"bytes={size + 5}-{size + 9}", "bytes=-0"):
        refused = await client.get(url, headers={"Range": header})
        error(refused, 416, "range")
        assert refused.headers["content-range"] == f"bytes */{size}"
    ignored = await client.get(url, headers={"Range": "bytes=0-1,5-9"})  # several: the whole
    assert ignored.status_code == 200 and ignored.content == FP32
    stale = await client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.content == FP32
    fresh = await client.get(url, headers={"Range": "bytes=0-9", "If-Range": f'"{sha}"'})
    assert fresh.status_code == 206 and fresh.content == FP32[:10]


async def test_an_interrupted_download_resumes_to_the_exact_file(
    client: httpx.AsyncClient,
) -> None:
    sha = await upload(client, INT8)
    got = b""
    async with client.stream("GET", f"/api/v1/artifacts/{sha}") as response:
        async for chunk in response.aiter_bytes(1000):
            got += chunk
            if len(got) >= 3000:
                break  # the connection drops here
    got = got[:3000]
    rest = await client.get(f"/api/v1/artifacts/{sha}", headers={"Range": f"bytes={len(got)}-"})
    assert rest.status_code == 206
    assert hashlib.sha256(got + rest.content).hexdigest() == sha


async def test_bad_and_unknown_hashes(client: httpx.AsyncClient) -> None:
    error(await client.get("/api/v1/artifacts/xyz"), 400, "sha256", "64")
    error(await client.get("/api/v1/artifacts/" + "A" * 64), 400, "sha256")
    error(await client.get("/api/v1/artifacts/" + "0" * 64), 404, "no artifact")
    assert (await client.head("/api/v1/artifacts/" + "0" * 64)).status_code == 404


# -- releases --------------------------------------------------------------------------------------


async def test_push_signs_numbers_and_serves_a_release(client: httpx.AsyncClient) -> None:
    key = (await client.get("/api/v1/keys/release")).json()
    assert key["public_key"].startswith("ed25519:") and len(key["key_id"]) == 16
    assert "PRIVATE" not in str(key)
    response = await push(client, "digits", await digits_body(client))
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["name"], body["version"], body["seq"]) == ("digits", "1.0.0", 1)
    assert body["running_on"] == 0 and body["targets"] == ["cpu"]
    sha = hashlib.sha256(FP32).hexdigest()
    assert body["artifacts"]["cpu"] == {
        "sha256": sha, "size": len(FP32), "format": "tflite",
        "url": f"http://127.0.0.1:8080/api/v1/artifacts/{sha}",
    }  # fmt: skip
    signed = open_release(body["sealed"], public_key_from_text(key["public_key"]))
    release = signed.release
    assert release.labels == [str(i) for i in range(10)] and release.seq == 1
    assert [g.expected_index for g in release.golden] == [2, 5, 8]
    assert release.inputs[0].shape == [1, 8, 8, 1] and release.metrics["test_accuracy"] > 0.9
    assert (
        base64.b64decode(release.golden[0].input) == (DIGITS / "golden/2_test008.png").read_bytes()
    )

    second = await push(client, "digits", {**await digits_body(client, "1.1.0")})
    assert second.status_code == 201 and second.json()["seq"] == 2
    other = await push(client, "other", await digits_body(client))
    assert other.json()["seq"] == 1, "seq grows per model name"

    listing = (await client.get("/api/v1/models")).json()
    assert listing["count"] == 2
    assert listing["models"][0] == {
        "name": "digits", "latest_version": "1.1.0", "latest_seq": 2, "releases": 2,
        "updated_at": listing["models"][0]["updated_at"],
    }  # fmt: skip
    model = (await client.get("/api/v1/models/digits")).json()
    assert [r["version"] for r in model["releases"]] == ["1.1.0", "1.0.0"]
    shown = (await client.get("/api/v1/models/digits/releases/1.0.0")).json()
    assert shown["sealed"] == body["sealed"]
    error(await client.get("/api/v1/models/nope"), 404, "no model 'nope'")
    error(await client.get("/api/v1/models/digits/releases/9.9"), 404, "digits 9.9")
    error(await client.get("/api/v1/models/bad name!"), 400, "name")


async def test_a_repush_is_idempotent_and_a_changed_one_is_409(client: httpx.AsyncClient) -> None:
    body = await digits_body(client)
    first = await push(client, "digits", body)
    again = await push(client, "digits", body)
    assert again.status_code == 200 and again.json()["sealed"] == first.json()["sealed"]
    changed = {**body, "description": "something else"}
    error(await push(client, "digits", changed), 409, "digits 1.0.0", "new version")
    assert (await client.get("/api/v1/models/digits")).json()["count"] == 1


async def test_running_on_counts_devices_that_report_the_release(
    client: httpx.AsyncClient, store: Store
) -> None:
    await push(client, "digits", await digits_body(client))
    now = time.time()

    def birth(device: str, version: str) -> Incoming:
        info = ModelInfo(name="digits", version=version, artifact_sha256="0" * 64, backend="litert")
        return Incoming(device, now, Status(device_id=device, state="online", models=[info]))

    await store.write(birth("cam-1", "1.0.0"), birth("cam-2", "1.0.0"), birth("cam-3", "0.9"))
    shown = (await client.get("/api/v1/models/digits/releases/1.0.0")).json()
    assert shown.get("running_on") == 2, shown


async def test_a_push_without_a_manifest_takes_the_tensors_from_the_model(
    client: httpx.AsyncClient,
) -> None:
    sha = await upload(client, INT8)
    response = await push(client, "bare", {"version": "1", "artifacts": {"cpu": sha}})
    assert response.status_code == 201, response.text
    release = response.json()["sealed"]["release"]
    assert release["inputs"][0]["datatype"] == "INT8"
    assert release["inputs"][0]["quantization"]["zero_point"] == -128
    assert release["postprocess"] == {"type": "raw"}


async def test_a_cpu_and_onnx_release_checks_both(client: httpx.AsyncClient) -> None:
    body = await digits_body(client)
    body["artifacts"]["onnx"] = await upload(client, ONNX)
    response = await push(client, "digits", body)
    assert response.status_code == 201, response.text
    assert response.json()["targets"] == ["cpu", "onnx"]


async def test_an_edgetpu_artifact_needs_the_compiler_marker(client: httpx.AsyncClient) -> None:
    body = await digits_body(client)
    body["artifacts"]["edgetpu"] = body["artifacts"]["cpu"]
    error(await push(client, "digits", body), 400, "artifacts.edgetpu", "edgetpu_compiler")
    compiled = FP32 + b"\x00" * 7 + b"edgetpu-custom-op" + b"\x00"  # the marker, as compiled
    body["artifacts"]["edgetpu"] = await upload(client, compiled)
    response = await push(client, "digits", body)
    assert response.status_code == 201, response.text


def _with(body: dict[str, Any], **change: Any) -> dict[str, Any]:
    return {**body, **change}


async def test_refused_pushes_name_the_problem(client: httpx.AsyncClient) -> None:
    good = await digits_body(client)
    text = await upload(client, b"this is not a model at all")
    fake_tflite = await upload(client, b"\x00\x00\x00\x00TFL3" + b"\x00" * 64)
    fake_onnx = await upload(client, b"\x08\x07garbage that is not protobuf")
    onnx = await upload(client, ONNX)
    int8 = await upload(client, INT8)
    wrong_shape = manifest()
    wrong_shape["inputs"] = [{**wrong_shape["inputs"][0], "shape": [1, 28, 28, 1]}]
    renamed = manifest()
    renamed["outputs"] = [{**renamed["outputs"][0], "name": "logits"}]
    cases: list[tuple[dict[str, Any], list[str]]] = [
        (_with(good, artifacts={"cpu": "0" * 64}), ["artifacts.cpu", "no artifact", "upload"]),
        (_with(good, artifacts={"cpu": text}), ["artifacts.cpu", "not a model file"]),
        (_with(good, artifacts={"cpu": onnx}), ["artifacts.cpu", "onnx file", "tflite"]),
        (_with(good, artifacts={"onnx": good["artifacts"]["cpu"]}), ["artifacts.onnx", "onnx"]),
        (_with(good, artifacts={"cpu": fake_tflite}), ["artifacts.cpu", "LiteRT cannot load"]),
        (_with(good, artifacts={"onnx": fake_onnx}), ["artifacts.onnx", "ONNX Runtime"]),
        (_with(good, artifacts={"cpu": int8}), ["artifacts.cpu", "INT8", "FP32"]),
        (_with(good, manifest=wrong_shape), ["artifacts.cpu", "[1, 8, 8, 1]", "[1, 28, 28, 1]"]),
        (_with(good, manifest=renamed), ["artifacts.cpu", "probabilities", "logits"]),
        (_with(good, labels=["a", "b"]), ["labels", "2 labels", "10 classes"]),
        (
            _with(good, golden=[{"input": "%%%", "expected_index": 1}]),
            ["golden[0].input", "base64"],
        ),
        (
            _with(
                good, golden=[{"input": base64.b64encode(b"nope").decode(), "expected_index": 1}]
            ),
            ["golden[0].input", "not an image"],
        ),
        (
            _with(good, golden=[{**golden()[0], "expected_label": "eleven"}]),
            ["golden[0].expected_label", "'eleven'", "labels"],
        ),
        (
            _with(good, golden=[{**golden()[0], "expected_label": "2", "expected_index": 3}]),
            ["golden[0].expected_index", "index 2"],
        ),
        (
            _with(good, golden=[{"input": golden()[0]["input"], "expected_index": 10}]),
            ["golden[0].expected_index", "10 classes"],
        ),
        (
            _with(good, golden=[{**golden()[0], "expected_scores": [0.5]}]),
            ["golden[0].expected_scores", "1 scores"],
        ),
        (_with(good, golden=[{"input": golden()[0]["input"]}]), ["golden.0", "expected_label"]),
        (_with(good, version="1.0/beta"), ["version", "1 to 64"]),
        (_with(good, artifacts={}), ["artifacts"]),
        (_with(good, artifacts={"gpu": good["artifacts"]["cpu"]}), ["artifacts.gpu"]),
        (_with(good, colour="red"), ["colour"]),
        (_with(good, manifest={**manifest(), "inputs": "x"}), ["manifest.inputs"]),
    ]
    for body, words in cases:
        response = await push(client, "digits", body)
        message = error(response, 400, *words)
        assert "Traceback" not in message
    error(await client.post("/api/v1/models/digits/releases", content=b"{"), 400, "not JSON")
    assert (await client.get("/api/v1/models")).json()["count"] == 0, "nothing was stored"


@pytest.mark.parametrize("path", ["/api/v1/models", "/api/v1/keys/release"])
async def test_unknown_parameters_are_refused(client: httpx.AsyncClient, path: str) -> None:
    error(await client.get(path, params={"limit": "1"}), 400, "limit", "unknown parameter")


async def test_the_registry_survives_a_new_app_on_the_same_data_dir(
    tmp_path: Path, store: Store, app: Starlette
) -> None:
    async with client_for(app) as client:
        first = (await push(client, "digits", await digits_body(client))).json()
    again = create_app(settings(tmp_path), store=store, mqtt=False)
    async with client_for(again) as client:
        key = (await client.get("/api/v1/keys/release")).json()
        assert key["key_id"] == first["key_id"], "the same key, loaded from the data directory"
        shown = (await client.get("/api/v1/models/digits/releases/1.0.0")).json()
        assert shown["sealed"] == first["sealed"]
