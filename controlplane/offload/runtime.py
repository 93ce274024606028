"""ONNX Runtime for the offload server: the one module that imports ``onnxruntime``.

A session uses ``CUDAExecutionProvider`` when this build of ONNX Runtime has it (the
``onnxruntime-gpu`` wheel on a machine with a GPU) and the CPU otherwise. A model batches when
the first dimension of every input and output is dynamic; the batcher then merges requests along
it. ONNX Runtime releases the GIL while it runs, so the batcher's worker thread leaves the event
loop free.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from controlplane.errors import ConfigError
from controlplane.offload.errors import InferenceFailed
from protocol.manifest import TensorSpec
from protocol.tensors import Datatype

PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
_DATATYPES: dict[str, Datatype] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ModelSource:
    """``NAME[:VERSION]=PATH`` from the command line."""

    name: str
    version: str
    path: Path


def parse_model_arg(text: str) -> ModelSource:
    """Parse ``--model NAME[:VERSION]=PATH`` (version "1" when not given)."""
    key, sep, path = text.partition("=")
    name, colon, version = key.partition(":")
    version = version if colon else "1"
    if not sep or not path:
        raise ConfigError(f"--model {text!r}: expected NAME=path.onnx (or NAME:VERSION=path)")
    for what, value in (("name", name), ("version", version)):
        if not _NAME.match(value):
            raise ConfigError(
                f"--model {text!r}: the {what} {value!r} must be letters, digits, '_', '.' or '-'"
            )
    return ModelSource(name, version, Path(path))


class OnnxModel:
    """One ``.onnx`` model on an inference session; :meth:`run` is called from one thread."""

    def __init__(self, source: ModelSource, session: Any) -> None:
        self.name = source.name
        self.version = source.version
        self.path = source.path
        self._session = session
        self.providers: list[str] = list(session.get_providers())
        self.inputs = [_spec(arg, "input", source.path) for arg in session.get_inputs()]
        self.outputs = [_spec(arg, "output", source.path) for arg in session.get_outputs()]
        self.output_names = [spec.name for spec in self.outputs]
        self.batched = all(s.shape and s.shape[0] == -1 for s in (*self.inputs, *self.outputs))

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            results = self._session.run(self.output_names, dict(inputs))
        except Exception as exc:  # onnxruntime's exceptions derive from Exception only
            message = " ".join(str(exc).split())
            raise InferenceFailed(f"model {self.name!r}: inference failed: {message}") from None
        return dict(zip(self.output_names, results, strict=True))


def load(
    source: ModelSource, *, threads: int = 0, providers: Sequence[str] = PREFERRED_PROVIDERS
) -> OnnxModel:
    """Open ``source`` (``threads`` intra-op threads; 0 lets ONNX Runtime choose)."""
    try:
        ort: Any = importlib.import_module("onnxruntime")
    except ImportError as exc:
        raise ConfigError(
            f"onnxruntime is not installed ({exc}); install edgefleet[onnx]"
        ) from None
    if not source.path.is_file():
        raise ConfigError(f"model {source.name!r}: no such file {source.path}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    available = ort.get_available_providers()
    chosen = [p for p in providers if p in available] or ["CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(source.path), sess_options=options, providers=chosen)
    except Exception as exc:  # InvalidProtobuf, Fail, ...
        message = " ".join(str(exc).split())
        raise ConfigError(f"model {source.name!r}: cannot load {source.path}: {message}") from None
    return OnnxModel(source, session)


def _spec(arg: Any, kind: str, path: Path) -> TensorSpec:
    datatype = _DATATYPES.get(arg.type)
    if datatype is None:
        raise ConfigError(
            f"{path}: {kind} {arg.name!r} has ONNX type {arg.type}, which the "
            "offload server does not serve"
        )
    shape = [d if isinstance(d, int) and d > 0 else -1 for d in arg.shape]
    return TensorSpec(name=arg.name, shape=shape, datatype=datatype)
