"""tritonclient[http], from its own venv, against our offload server in JSON and binary modes.

tritonclient is what Triton users already script against; if it works against
``edgefleet offload serve``, so do their tools. It sends JSON bodies with no ``Content-Type``
and, in binary mode, the ``Inference-Header-Content-Length`` extension both ways. Answers must
equal ONNX Runtime run directly on the same input.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.compat.stacks import MODEL_NAME, Server, offload_server, tritonclient

pytestmark = [pytest.mark.compat, pytest.mark.slow]


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = offload_server(tmp_path_factory.mktemp("offload"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _run(server: Server, tmp_path: Path, batch: np.ndarray, *args: str) -> dict[str, Any]:
    path = tmp_path / "batch.npy"
    np.save(path, batch)
    return tritonclient(server.url, "--input", str(path), *args)


@pytest.mark.parametrize("mode", ["json", "binary"])
def test_tritonclient_infers_on_our_server(
    ours: Server, tmp_path: Path, digits_batch: np.ndarray, reference: np.ndarray, mode: str
) -> None:
    args = ["--request-id", f"tc-{mode}"] + (["--binary"] if mode == "binary" else [])
    report = _run(ours, tmp_path, digits_batch, *args)

    assert report["live"] is True and report["ready"] is True
    assert report["model_ready"] is True
    assert "binary_tensor_data" in report["server"]["extensions"]
    model = report["model"]
    assert model["name"] == MODEL_NAME
    assert [(t["name"], t["datatype"], t["shape"]) for t in model["inputs"]] == [
        ("input", "FP32", [-1, 8, 8, 1])
    ]
    assert [(t["name"], t["datatype"], t["shape"]) for t in model["outputs"]] == [
        ("probabilities", "FP32", [-1, 10])
    ]

    infer = report["infer"]
    assert "error" not in infer, infer
    assert infer["id"] == f"tc-{mode}"
    assert infer["model_name"] == MODEL_NAME
    assert infer["binary"] == [mode == "binary"]
    out = infer["outputs"]["probabilities"]
    assert out["shape"] == [8, 10] and out["datatype"] == "FP32"
    got = np.asarray(out["data"], dtype=np.float32).reshape(8, 10)
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-6)
    assert (got.argmax(axis=1) == reference.argmax(axis=1)).all()


@pytest.mark.parametrize("mode", ["json", "binary"])
def test_tritonclient_sees_our_errors(
    ours: Server, tmp_path: Path, digits_batch: np.ndarray, mode: str
) -> None:
    binary = ["--binary"] if mode == "binary" else []
    unknown = _run(ours, tmp_path, digits_batch, "--model", "no-such-model", *binary)
    assert unknown["model"]["status"] == "404"
    assert unknown["infer"]["status"] == "404"
    assert "no-such-model" in unknown["infer"]["error"]

    # A bad shape: 400 with a message naming the input (Triton, KServe and MLServer answer 500
    # for some or all of these).
    bad = _run(ours, tmp_path, digits_batch.reshape(8, 64), *binary)
    assert bad["infer"]["status"] == "400"
    assert "input" in bad["infer"]["error"]
