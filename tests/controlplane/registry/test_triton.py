"""Release -> Triton ``config.pbtxt`` (pure), checked against Triton's own ModelConfig schema."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any, get_args

import pytest
import tritonclient
from google.protobuf import text_format

from controlplane.registry.triton import (
    TritonExportError,
    TritonOptions,
    batch_blocker,
    config_pbtxt,
    labels_text,
    plan_batching,
)
from protocol.manifest import TensorSpec
from protocol.release import Release
from protocol.tensors import Datatype
from tests.controlplane.registry.conftest import DIGITS

SHA = "c0c341086a4ccae4f1bbc69e2c242e64c56009d26ab0def14f069866d37aa12f"


def _model_config_pb2() -> ModuleType:
    """Triton's model_config.proto as tritonclient ships it, loaded from its file: the package
    ``tritonclient.grpc`` itself needs grpcio, which the dev environment does not have."""
    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("edgefleet_test_model_config_pb2", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PB2 = _model_config_pb2()


def parse(text: str) -> Any:
    """The config as Triton reads it; a text that Triton could not parse fails here."""
    return text_format.Parse(text, PB2.ModelConfig())


def release(**change: Any) -> Release:
    raw = json.loads((DIGITS / "cloud.json").read_text())
    body: dict[str, Any] = {
        "name": "digits-cloud",
        "version": "1.0.0",
        "seq": 3,
        "created_at": 0.0,
        "inputs": raw["inputs"],
        "outputs": raw["outputs"],
        "preprocess": raw["preprocess"],
        "postprocess": raw["postprocess"],
        "labels": raw["labels"],
        "artifacts": {"onnx": {"sha256": SHA, "size": 216100, "format": "onnx"}},
    }
    body.update(change)
    return Release.model_validate(body)


def T(name: str, shape: list[int], datatype: str = "FP32") -> TensorSpec:
    return TensorSpec.model_validate({"name": name, "shape": shape, "datatype": datatype})


def test_the_digits_cloud_release() -> None:
    text = config_pbtxt(release())
    config = parse(text)
    assert config.name == "digits-cloud"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 32
    (inp,) = config.input
    assert (inp.name, list(inp.dims)) == ("input", [8, 8, 1])  # the batch dimension left out
    assert inp.data_type == PB2.TYPE_FP32
    (out,) = config.output
    assert (out.name, list(out.dims), out.label_filename) == ("probabilities", [10], "labels.txt")
    (group,) = config.instance_group
    assert (group.count, group.kind) == (1, PB2.ModelInstanceGroup.KIND_AUTO)
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 256
    assert "# edgefleet release digits-cloud 1.0.0 (seq 3)" in text and SHA in text
    assert labels_text(release()) == "".join(f"{i}\n" for i in range(10))


def test_options() -> None:
    options = TritonOptions(
        max_batch_size=64,
        max_queue_delay_us=500,
        max_queue_size=0,
        preferred_batch_sizes=(16, 32),
        instances=2,
        kind="gpu",
    )
    config = parse(config_pbtxt(release(), options, model_name="digits"))
    assert config.name == "digits" and config.max_batch_size == 64
    assert list(config.dynamic_batching.preferred_batch_size) == [16, 32]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert not config.dynamic_batching.HasField("default_queue_policy")  # 0: unbounded
    (group,) = config.instance_group
    assert (group.count, group.kind) == (2, PB2.ModelInstanceGroup.KIND_GPU)


def test_no_batching_keeps_every_dimension_and_has_no_batcher() -> None:
    config = parse(config_pbtxt(release(), TritonOptions(max_batch_size=0, kind="cpu")))
    assert config.max_batch_size == 0
    assert list(config.input[0].dims) == [-1, 8, 8, 1]
    assert not config.HasField("dynamic_batching")
    assert config.instance_group[0].kind == PB2.ModelInstanceGroup.KIND_CPU


def test_the_artifact_tensors_win_over_the_manifest() -> None:
    """A release whose manifest came from the cpu target says [1, 8, 8, 1]; the ONNX file
    batches ([-1, 8, 8, 1]), and what Triton loads is the file."""
    fixed = release(
        inputs=[{"name": "input", "shape": [1, 8, 8, 1], "datatype": "FP32"}],
        outputs=[{"name": "probabilities", "shape": [1, 10], "datatype": "FP32"}],
    )
    assert parse(config_pbtxt(fixed)).max_batch_size == 0  # the manifest alone: cannot batch
    config = parse(
        config_pbtxt(
            fixed, inputs=[T("input", [-1, 8, 8, 1])], outputs=[T("probabilities", [-1, 10])]
        )
    )
    assert config.max_batch_size == 32 and list(config.input[0].dims) == [8, 8, 1]


def test_a_batch_only_tensor_is_reshaped() -> None:
    config = parse(config_pbtxt(release(), outputs=[T("label", [-1], "INT64")]))
    (out,) = config.output
    assert list(out.dims) == [1] and list(out.reshape.shape) == []
    assert out.data_type == PB2.TYPE_INT64 and out.label_filename == "labels.txt"


@pytest.mark.parametrize("datatype", get_args(Datatype))
def test_every_datatype_maps_to_a_triton_type(datatype: str) -> None:
    config = parse(config_pbtxt(release(), inputs=[T("x", [-1, 4], datatype)]))
    want = "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"
    assert PB2.DataType.Name(config.input[0].data_type) == want


def test_names_are_quoted() -> None:
    config = parse(config_pbtxt(release(), inputs=[T('in"put\\x', [-1, 2])]))
    assert config.input[0].name == 'in"put\\x'


def test_no_labels_no_label_file() -> None:
    rel = release(labels=[])
    assert "label_filename" not in config_pbtxt(rel) and labels_text(rel) is None
    raw = release(postprocess={"type": "raw"})
    assert "label_filename" not in config_pbtxt(raw)


@pytest.mark.parametrize(
    ("tensors", "blocker"),
    [
        ([T("a", [-1, 3]), T("b", [-1])], None),
        ([T("a", [-1, 3]), T("b", [1, 3])], "tensor 'b' has a fixed first dimension (1)"),
        ([T("a", [])], "tensor 'a' is a scalar"),
    ],
)
def test_batch_blocker(tensors: list[TensorSpec], blocker: str | None) -> None:
    assert batch_blocker(tensors) == blocker


@pytest.mark.parametrize(
    ("requested", "tensors", "expected"),
    [
        (None, [T("a", [-1, 3])], 32),
        (None, [T("a", [1, 3])], 0),
        (0, [T("a", [-1, 3])], 0),
        (8, [T("a", [-1, 3])], 8),
        (8, [T("a", [1, 3])], "cannot batch"),
        (-1, [T("a", [-1, 3])], "0 or more"),
    ],
)
def test_plan_batching(requested: int | None, tensors: list[TensorSpec], expected: Any) -> None:
    if isinstance(expected, str):
        with pytest.raises(TritonExportError, match=expected):
            plan_batching(requested, tensors)
    else:
        assert plan_batching(requested, tensors) == expected


@pytest.mark.parametrize(
    ("rel", "options", "message"),
    [
        (
            release(artifacts={"cpu": {"sha256": SHA, "size": 1, "format": "tflite"}}),
            TritonOptions(),
            "has no onnx artifact .it has: cpu.",
        ),
        (release(), TritonOptions(instances=0), "instances"),
        (release(), TritonOptions(max_queue_delay_us=-1), "max_queue_delay_us"),
        (release(), TritonOptions(max_batch_size=8, preferred_batch_sizes=(16,)), "over max"),
        (release(), TritonOptions(max_batch_size=0, preferred_batch_sizes=(4,)), "need batching"),
        (
            release(),
            TritonOptions(max_batch_size=4),
            None,
        ),
    ],
)
def test_bad_requests_are_named(rel: Release, options: TritonOptions, message: str | None) -> None:
    if message is None:
        assert parse(config_pbtxt(rel, options)).max_batch_size == 4
        return
    with pytest.raises(TritonExportError, match=message):
        config_pbtxt(rel, options)
