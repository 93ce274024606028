"""The real agent process: bad input gets its 4xx and the agent keeps serving; a missing Edge TPU
library falls back to the CPU and says so in the birth message and in telemetry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import ROOT, AgentProcess, ControlPlane, digit_pngs, wait_until

pytestmark = [pytest.mark.e2e]

MODEL = "digits-edge"
GOOD_TENSOR = {
    "inputs": [{"name": "input", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": [0.0] * 64}]
}


def _bad_requests(input_name: str) -> list[tuple[str, str, bytes, dict[str, str], int]]:
    def tensor(**change: object) -> bytes:
        spec = {"name": input_name, "shape": [1, 8, 8, 1], "datatype": "FP32", "data": [0.0] * 64}
        spec.update(change)
        return json.dumps({"inputs": [spec]}).encode()

    json_ct = {"Content-Type": "application/json"}
    return [
        ("not an image", f"/v1/models/{MODEL}/image", b"plain text", {}, 400),
        ("unknown model", "/v1/models/nope/image", digit_pngs(1)[0][0], {}, 404),
        ("malformed json", f"/v2/models/{MODEL}/infer", b"{not json", json_ct, 400),
        (
            "wrong shape",
            f"/v2/models/{MODEL}/infer",
            tensor(shape=[1, 8, 8], data=[0.0] * 64),
            json_ct,
            400,
        ),
        (
            "wrong dtype",
            f"/v2/models/{MODEL}/infer",
            tensor(datatype="INT64", data=[0] * 64),
            json_ct,
            400,
        ),
        ("data/shape mismatch", f"/v2/models/{MODEL}/infer", tensor(data=[0.0] * 10), json_ct, 400),
        ("unknown model infer", "/v2/models/nope/infer", tensor(), json_ct, 404),
        ("too large", f"/v1/models/{MODEL}/image", b"\0" * (2 * 2**20), {}, 413),
    ]


def test_bad_input_gets_4xx_and_the_agent_keeps_serving(
    broker_url: str, tmp_path: Path, unique: str
) -> None:
    agent = AgentProcess(broker_url, f"bad-{unique}", tmp_path, "--max-body-bytes", str(2**20))
    agent.start()
    try:
        meta = httpx.get(f"{agent.url}/v2/models/{MODEL}").json()
        input_name = meta["inputs"][0]["name"]
        for what, path, body, headers, status in _bad_requests(input_name):
            r = httpx.post(agent.url + path, content=body, headers=headers, timeout=10)
            assert r.status_code == status, f"{what}: {r.status_code} {r.text}"
            assert r.headers["content-type"].startswith("application/json"), what
            assert r.json()["error"], what
        png, label = digit_pngs(1)[0]
        ok = httpx.post(f"{agent.url}/v1/models/{MODEL}/image", content=png, timeout=10)
        assert ok.status_code == 200, ok.text
        assert agent.alive()
    finally:
        agent.stop()


def test_missing_edgetpu_library_falls_back_to_cpu_and_says_so(
    broker_url: str, tmp_path: Path, unique: str
) -> None:
    device = f"tpu-{unique}"
    cp = ControlPlane(broker_url, tmp_path)
    agent = AgentProcess(broker_url, device, tmp_path, "--backends", "edgetpu,litert")
    cp.start()
    agent.start()
    try:
        png, _ = digit_pngs(1)[0]
        r = httpx.post(f"{agent.url}/v1/models/{MODEL}/image", content=png, timeout=10)
        assert r.status_code == 200 and r.json()["backend"] == "litert"

        def reported() -> dict[str, object] | None:
            d = cp.device(device)
            return d if d and d.get("telemetry") else None

        device_view = wait_until("birth and telemetry", reported, 30, cp, agent)
        text = json.dumps(device_view)
        assert "libedgetpu" in text, "the fallback reason reaches the control plane"
        edgetpu = [a for a in device_view["accelerators"] if a["kind"] == "edgetpu"]
        assert edgetpu and edgetpu[0]["present"] is False
        assert "WARNING" in agent.log() and "edgetpu" in agent.log()
    finally:
        agent.stop()
        cp.stop()


def test_serves_any_tflite_file_without_a_manifest(
    broker_url: str, tmp_path: Path, unique: str
) -> None:
    model = tmp_path / "my_detector.tflite"
    shutil.copy(ROOT / "models" / "bench" / "convnet224.tflite", model)  # no .json beside it
    agent = AgentProcess(broker_url, f"raw-{unique}", tmp_path, "--model", str(model))
    agent.start()
    try:
        meta = httpx.get(f"{agent.url}/v2/models/my_detector", timeout=10).json()
        assert meta["name"] == "my_detector"
        (spec,) = meta["inputs"]
        assert spec["shape"] == [1, 224, 224, 3] and spec["datatype"] == "INT8"
        body = {"inputs": [{**spec, "data": [1] * (224 * 224 * 3)}]}
        r = httpx.post(f"{agent.url}/v2/models/my_detector/infer", json=body, timeout=30)
        assert r.status_code == 200, r.text
        (out,) = r.json()["outputs"]
        assert out["shape"] == [1, 1000] and len(out["data"]) == 1000
    finally:
        agent.stop()
