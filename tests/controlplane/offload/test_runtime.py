"""ONNX Runtime sessions: the models' signatures, batching on the real benchmark model, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from controlplane.errors import ConfigError
from controlplane.offload.runtime import OnnxModel, load, parse_model_arg
from tests.controlplane.offload.conftest import ROOT

CONVNET = ROOT / "models" / "bench" / "convnet224.onnx"


def test_the_cloud_model_batches(cloud_model: OnnxModel) -> None:
    assert cloud_model.batched
    assert [(s.name, s.shape, s.datatype) for s in cloud_model.inputs] == [
        ("input", [-1, 8, 8, 1], "FP32")
    ]
    assert cloud_model.providers[-1] == "CPUExecutionProvider"


def test_the_benchmark_model_gives_each_row_what_it_gets_alone() -> None:
    model = load(parse_model_arg(f"convnet224={CONVNET}"), threads=1)
    assert model.batched and model.output_names == ["logits"]
    rows = np.random.default_rng(1).random((2, 224, 224, 3), dtype=np.float32)
    together = model.run({"input": rows})["logits"]
    alone = [model.run({"input": rows[i : i + 1]})["logits"][0] for i in range(2)]
    assert together.shape == (2, 1000)
    np.testing.assert_allclose(together, np.stack(alone), rtol=1e-4, atol=1e-4)
    assert np.abs(together[0] - together[1]).max() > 1e-3, "logits must depend on the input"


@pytest.mark.parametrize(
    ("text", "name", "version"),
    [
        ("m=a.onnx", "m", "1"),
        ("m:3=a.onnx", "m", "3"),
        ("digits-cloud:v2.1=x/y.onnx", "digits-cloud", "v2.1"),
    ],
)
def test_model_args(text: str, name: str, version: str) -> None:
    source = parse_model_arg(text)
    assert (source.name, source.version) == (name, version)


@pytest.mark.parametrize("text", ["m", "=a.onnx", "m=", "m:=a.onnx", "a/b=c.onnx"])
def test_bad_model_args(text: str) -> None:
    with pytest.raises(ConfigError, match="--model"):
        parse_model_arg(text)


def test_a_file_that_is_not_onnx_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="cannot load"):
        load(parse_model_arg(f"bad={bad}"))
