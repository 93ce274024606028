"""The ONNX Runtime backend (``onnxruntime``): Jetson GPUs and the cloud tier.

``onnxruntime`` is an optional dependency (the ``onnx`` extra); without it, opening a model raises
:class:`agent.errors.ModelLoadError` saying so. Execution providers are tried in the order given
(TensorRT, then CUDA, then the CPU by default), keeping only those this build of ONNX Runtime has.
ONNX Runtime releases the GIL while it runs, like LiteRT.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.errors import ModelLoadError, RuntimeBackendError
from protocol.manifest import TensorSpec
from protocol.tensors import Datatype

DEFAULT_PROVIDERS = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)

# ONNX Runtime's type strings ("tensor(float)") to Open Inference Protocol datatypes.
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
    "tensor(string)": "BYTES",
}


class OnnxRuntime:
    """A ``.onnx`` model on an ONNX Runtime inference session."""

    name = "onnxruntime"

    def __init__(self, session: Any) -> None:
        self._session: Any = session
        self.providers: list[str] = list(session.get_providers())
        self.inputs = [_spec(arg, "input") for arg in session.get_inputs()]
        self.outputs = [_spec(arg, "output") for arg in session.get_outputs()]
        self._output_names = [spec.name for spec in self.outputs]

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self._session
        if session is None:
            raise RuntimeBackendError("onnxruntime: the model is closed")
        try:
            results = session.run(self._output_names, dict(inputs))
        except Exception as exc:  # onnxruntime's own exception classes derive from Exception only
            raise RuntimeBackendError(f"onnxruntime: inference failed: {exc}") from None
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        self._session = None


def _spec(arg: Any, kind: str) -> TensorSpec:
    datatype = _DATATYPES.get(arg.type)
    if datatype is None:
        raise ModelLoadError(f"{kind} {arg.name!r}: ONNX type {arg.type} is not supported")
    # Symbolic ("batch") and unknown (None) dimensions are dynamic.
    shape = [d if isinstance(d, int) and d > 0 else -1 for d in arg.shape]
    return TensorSpec(name=arg.name, shape=shape, datatype=datatype)


def choose_providers(wanted: Sequence[str], available: Sequence[str]) -> list[str]:
    """The wanted providers this build has, in the wanted order; the CPU if none is."""
    chosen = [p for p in wanted if p in available]
    return chosen or ["CPUExecutionProvider"]


GPU_PROVIDERS = frozenset({"TensorrtExecutionProvider", "CUDAExecutionProvider"})


def gpu_available() -> bool:
    """Whether this ONNX Runtime build has a GPU provider (False when it is not installed)."""
    try:
        ort: Any = importlib.import_module("onnxruntime")
    except ImportError:
        return False
    return bool(GPU_PROVIDERS & set(ort.get_available_providers()))


def open_onnxruntime(
    path: Path, threads: int, *, providers: Sequence[str] = DEFAULT_PROVIDERS
) -> OnnxRuntime:
    """``path`` on an ONNX Runtime session with ``threads`` intra-op threads."""
    try:
        ort: Any = importlib.import_module("onnxruntime")
    except ImportError as exc:
        raise ModelLoadError(
            f"onnxruntime is not installed ({exc}); install edgefleet[onnx]"
        ) from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: the selection logs what matters
    try:
        session = ort.InferenceSession(
            str(path),
            sess_options=options,
            providers=choose_providers(providers, ort.get_available_providers()),
        )
    except Exception as exc:  # Fail, InvalidProtobuf, NoSuchFile, ... all derive from Exception
        message = " ".join(str(exc).split())
        raise ModelLoadError(f"cannot load {path}: {message}") from None
    return OnnxRuntime(session)
