"""Turn trained models into the committed artifacts, and read the artifacts back.

Used by ``models/build.py`` only (build time, with TensorFlow in the build virtualenv). Reading
back goes through the runtimes a device uses, LiteRT and ONNX Runtime, so that what the build
records (tensor specs, accuracy, latency) is what the converted file does.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from tensorflow.lite.tools import flatbuffer_utils

from protocol.manifest import Artifact, Quantization, TensorSpec
from protocol.tensors import DATATYPE_BY_NUMPY

# --- TensorFlow Lite ------------------------------------------------------------------------------


def to_tflite(
    model: keras.Model,
    input_shape: tuple[int, ...],
    representative: Callable[[], Iterator[list[np.ndarray]]] | None = None,
    output_name: str = "probabilities",
) -> bytes:
    """Convert with batch 1; full int8 (input and output too) when a calibration set is given.

    The converter names tensors after the SavedModel signature (``serving_default_input:0``,
    ``StatefulPartitionedCall:0``); they are renamed ``input`` and ``output_name`` so that the
    names a client sees are plain and the same for every model.
    """

    # Through Keras' own SavedModel export: handing the converter a tf.function over a Keras 3
    # model leaves the weights as unfrozen variables (READ_VARIABLE ops with nothing behind them).
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default",
        fn=lambda x: {output_name: model(x, training=False)},
        input_signature=[tf.TensorSpec((1, *input_shape), tf.float32, name="input")],
    )
    with tempfile.TemporaryDirectory() as saved:
        archive.write_out(saved, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        return _convert(converter, representative, output_name)


def _convert(
    converter: tf.lite.TFLiteConverter,
    representative: Callable[[], Iterator[list[np.ndarray]]] | None,
    output_name: str,
) -> bytes:
    if representative is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    flat = flatbuffer_utils.read_model_from_bytearray(bytearray(converter.convert()))
    graph = flat.subgraphs[0]
    graph.tensors[graph.inputs[0]].name = b"input"
    graph.tensors[graph.outputs[0]].name = output_name.encode()
    return bytes(flatbuffer_utils.convert_object_to_bytearray(flat))


class TFLiteModel:
    """A ``.tflite`` file in LiteRT on one thread, taking float input and giving float output."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        scale, zero = self.input["quantization"]
        if scale:
            info = np.iinfo(self.input["dtype"])
            x = np.clip(np.rint(x / scale + zero), info.min, info.max)
        self.interpreter.set_tensor(self.input["index"], x.astype(self.input["dtype"]))
        self.interpreter.invoke()
        y = np.asarray(self.interpreter.get_tensor(self.output["index"]))
        scale, zero = self.output["quantization"]
        return (y.astype(np.float32) - zero) * scale if scale else y

    def tensor_specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        def spec(detail: dict[str, Any]) -> TensorSpec:
            scale, zero = detail["quantization"]
            return TensorSpec(
                name=detail["name"],
                shape=[int(d) for d in detail["shape_signature"]],
                datatype=DATATYPE_BY_NUMPY[np.dtype(detail["dtype"]).name],
                quantization=Quantization(scale=scale, zero_point=zero) if scale else None,
            )

        interp = self.interpreter
        return [spec(d) for d in interp.get_input_details()], [
            spec(d) for d in interp.get_output_details()
        ]


def time_tflite(path: Path, runs: int = 100) -> float:
    """Median milliseconds per inference in LiteRT on one thread."""
    model = TFLiteModel(path)
    shape = tuple(int(d) for d in model.input["shape"])
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    for _ in range(10):
        model(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.interpreter.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


# --- ONNX ----------------------------------------------------------------------------------------


def to_onnx(classifier: Any) -> bytes:
    """A scikit-learn classifier as ONNX: ``input [N, 8, 8, 1]`` in, ``probabilities`` out.

    skl2onnx wants ``[N, 64]``, so a Reshape is put in front, and the ``label`` output is dropped
    so that the probabilities are the first (and only) output, as for the edge models.
    """
    with warnings.catch_warnings():
        # skl2onnx reads SVC.probA_/probB_, deprecated in scikit-learn 1.9 (unused here).
        warnings.simplefilter("ignore", FutureWarning)
        inner = convert_sklearn(
            classifier,
            initial_types=[("flat", FloatTensorType([None, 64]))],
            options={id(classifier): {"zipmap": False}},
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
    graph = inner.graph
    new_input = onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 8, 8, 1])
    shape = onnx.numpy_helper.from_array(np.array([-1, 64], dtype=np.int64), "flat_shape")
    reshape = onnx.helper.make_node("Reshape", ["input", "flat_shape"], ["flat"], name="flatten")
    outputs = [o for o in graph.output if o.name == "probabilities"]
    if len(outputs) != 1:
        raise SystemExit(f"skl2onnx gave outputs {[o.name for o in graph.output]}")
    graph = onnx.helper.make_graph(
        [reshape, *graph.node],
        "digits_cloud",
        [new_input],
        outputs,
        initializer=[shape, *graph.initializer],
    )
    model = onnx.helper.make_model(
        graph, opset_imports=inner.opset_import, producer_name="edgefleet"
    )
    model.ir_version = inner.ir_version
    onnx.checker.check_model(model, full_check=True)
    return bytes(model.SerializeToString())


def onnx_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    def spec(arg: Any) -> TensorSpec:
        shape = [d if isinstance(d, int) else -1 for d in arg.shape]
        return TensorSpec(name=arg.name, shape=shape, datatype="FP32")

    session = onnx_session(path)
    return [spec(a) for a in session.get_inputs()], [spec(a) for a in session.get_outputs()]


def artifact(path: Path) -> Artifact:
    data = path.read_bytes()
    return Artifact(path=path.name, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
