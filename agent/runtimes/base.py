"""The one small interface every runtime backend implements, and what backends share.

A :class:`Runtime` is a loaded model on one engine (LiteRT, the Edge TPU, ONNX Runtime). It
describes its tensors as the model file declares them (names, shapes with ``-1`` for dynamic
dimensions, Open Inference Protocol datatypes, quantisation) and runs one inference at a time:
the caller serialises calls (the served model owns one worker thread per model). Every backend
translates its engine's exceptions into :mod:`agent.errors` at this boundary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, cast

import numpy as np

from agent.errors import ModelLoadError
from protocol.manifest import Quantization, TensorSpec
from protocol.tensors import DATATYPE_BY_NUMPY, Datatype


class Runtime(Protocol):
    """A model loaded on one backend. Not thread-safe: one ``infer`` at a time."""

    @property
    def name(self) -> str:
        """The backend: ``litert``, ``tflite-runtime``, ``edgetpu``, ``onnxruntime`` (or
        ``memory``); a supervised runtime names the one answering now."""
        ...

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on validated inputs (exact dtypes and shapes); outputs by name.

        Raises :class:`agent.errors.RuntimeBackendError` when the engine fails.
        """
        ...

    def close(self) -> None:
        """Release the engine; the runtime is unusable afterwards."""
        ...


def datatype_of(dtype: np.dtype[np.generic] | type[np.generic], where: str) -> Datatype:
    """The OIP datatype of a NumPy dtype; ModelLoadError naming ``where`` if it has none."""
    dt = np.dtype(dtype)
    if dt.kind in "SUO":
        return "BYTES"
    name = DATATYPE_BY_NUMPY.get(dt.name)
    if name is None:
        raise ModelLoadError(f"{where}: tensor type {dt.name} has no Open Inference Protocol type")
    return cast(Datatype, name)


def quantization_of(scale: float, zero_point: int) -> Quantization | None:
    """Affine quantisation parameters, or None where the engine reports none (scale 0)."""
    return Quantization(scale=float(scale), zero_point=int(zero_point)) if scale > 0 else None
