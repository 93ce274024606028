"""The LiteRT backends: ``litert`` (ai-edge-litert), ``tflite-runtime`` and ``edgetpu``.

All three run a ``.tflite`` file on the same interpreter API; ``edgetpu`` adds the Coral delegate
from ``libedgetpu.so.1``. A missing library (``OSError``) or no device (``ValueError``) makes
``open_edgetpu`` raise :class:`agent.errors.ModelLoadError` with the reason, and the selection in
:mod:`agent.runtimes` falls back to the next backend. The hot path is ``set_tensor`` (one copy
into the interpreter), ``invoke`` (which releases the GIL, so the event loop keeps serving while a
worker thread infers) and ``get_tensor`` (one copy out, which the caller may keep).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from agent.errors import ModelLoadError, RuntimeBackendError
from agent.runtimes.base import datatype_of, quantization_of
from protocol.manifest import TensorSpec

log = logging.getLogger(__name__)

EDGETPU_LIBRARY = "libedgetpu.so.1"
LITERT_MODULE = "ai_edge_litert.interpreter"
TFLITE_RUNTIME_MODULE = "tflite_runtime.interpreter"


class LiteRTRuntime:
    """A ``.tflite`` model on a LiteRT (or tflite-runtime) interpreter, maybe with a delegate."""

    def __init__(self, interpreter: Any, *, name: str) -> None:
        self.name = name
        self._interpreter: Any = interpreter
        details_in = interpreter.get_input_details()
        details_out = interpreter.get_output_details()
        self.inputs = [_spec(d, "input") for d in details_in]
        self.outputs = [_spec(d, "output") for d in details_out]
        # (name, tensor index, currently allocated shape): set_tensor needs the exact shape, and a
        # dynamic dimension (the batch) is resized only when a request changes it.
        self._in = [(d["name"], int(d["index"]), tuple(d["shape"])) for d in details_in]
        self._out = [(d["name"], int(d["index"])) for d in details_out]

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        interpreter = self._interpreter
        if interpreter is None:
            raise RuntimeBackendError(f"{self.name}: the model is closed")
        try:
            for i, (name, index, shape) in enumerate(self._in):
                array = inputs[name]
                if array.shape != shape:
                    interpreter.resize_tensor_input(index, array.shape, strict=True)
                    interpreter.allocate_tensors()
                    self._in[i] = (name, index, array.shape)
                interpreter.set_tensor(index, array)
            interpreter.invoke()
            return {name: interpreter.get_tensor(index) for name, index in self._out}
        except KeyError as exc:
            raise RuntimeBackendError(f"{self.name}: missing input {exc}") from None
        except (RuntimeError, ValueError) as exc:
            raise RuntimeBackendError(f"{self.name}: inference failed: {exc}") from None

    def close(self) -> None:
        # The interpreter releases its delegates itself, after its own native state.
        self._interpreter = None


def _spec(detail: Mapping[str, Any], kind: str) -> TensorSpec:
    name = str(detail["name"])
    signature = detail.get("shape_signature")
    shape = signature if signature is not None and len(signature) else detail["shape"]
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorSpec(
        name=name,
        shape=[int(d) for d in shape],
        datatype=datatype_of(detail["dtype"], f"{kind} {name!r}"),
        quantization=quantization_of(scale, zero_point),
    )


def open_litert(path: Path, threads: int) -> LiteRTRuntime:
    """``path`` on ai-edge-litert's interpreter (XNNPACK on the CPU), ``threads`` threads."""
    module = _import(LITERT_MODULE, "ai-edge-litert")
    return LiteRTRuntime(_interpreter(module, path, threads), name="litert")


def open_tflite_runtime(path: Path, threads: int) -> LiteRTRuntime:
    """``path`` on the older ``tflite-runtime`` package (where ai-edge-litert has no wheel)."""
    module = _import(TFLITE_RUNTIME_MODULE, "tflite-runtime")
    return LiteRTRuntime(_interpreter(module, path, threads), name="tflite-runtime")


def open_edgetpu(path: Path, threads: int, *, library: str = EDGETPU_LIBRARY) -> LiteRTRuntime:
    """``path`` with the Coral Edge TPU delegate; ModelLoadError saying why if there is none."""
    try:
        module = _import(LITERT_MODULE, "ai-edge-litert")
    except ModelLoadError:
        module = _import(TFLITE_RUNTIME_MODULE, "ai-edge-litert or tflite-runtime")
    delegate = load_delegate(module, library)
    return LiteRTRuntime(_interpreter(module, path, threads, [delegate]), name="edgetpu")


def load_delegate(module: ModuleType, library: str) -> Any:
    """``module.load_delegate(library)``, made safe when it fails; ModelLoadError on failure.

    Upstream's ``Delegate.__init__`` sets ``_library`` only once the library is loaded, and its
    ``__del__`` reads it: a missing library (or one that is not a delegate) then prints
    "Exception ignored in: Delegate.__del__ ... AttributeError: _library" when the half-built
    object is collected (pytest turns that into an error). So the object is created with
    ``_library = None`` first and, on any failure, reset to None before it is dropped, which makes
    ``__del__`` a no-op instead of destroying a delegate that was never created.
    """
    delegate = module.Delegate.__new__(module.Delegate)
    delegate._library = None
    try:
        delegate.__init__(library)
    except OSError as exc:
        delegate._library = None
        detail = str(exc).removeprefix(f"{library}: ")
        raise ModelLoadError(f"{library} not found ({detail})") from None
    except ValueError as exc:  # the library loaded but created no delegate: no device
        delegate._library = None
        detail = str(exc).strip() or "no device"
        raise ModelLoadError(f"{library} found no Edge TPU ({detail})") from None
    except (AttributeError, RuntimeError) as exc:  # not a delegate library; not CPython
        delegate._library = None
        raise ModelLoadError(f"{library} is not a usable delegate ({exc})") from None
    return delegate


def _import(module: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModelLoadError(f"{package} is not installed ({exc})") from None


def _interpreter(
    module: ModuleType, path: Path, threads: int, delegates: list[Any] | None = None
) -> Any:
    try:
        interpreter = module.Interpreter(
            model_path=str(path), num_threads=threads, experimental_delegates=delegates
        )
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        message = " ".join(str(exc).split())
        raise ModelLoadError(f"cannot load {path}: {message}") from None
    return interpreter
