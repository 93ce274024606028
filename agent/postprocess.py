"""Post-processing: from the model's outputs to the answer a result keeps.

Pure functions. A classifier's output is dequantised (integer outputs, with the tensor's scale
and zero point), optionally soft-maxed, and reduced to its top-k classes with labels. Raw outputs
are kept in full up to ``max_values`` values each; a larger output is kept as a digest (shape,
type, SHA-256 of its bytes, size), so the uplink carries answers, not megabytes of tensors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from protocol.manifest import Quantization
from protocol.messages import ClassScore, TensorData, TensorDigest
from protocol.tensors import DATATYPE_BY_NUMPY, Datatype

DEFAULT_MAX_OUTPUT_VALUES = 4096


def dequantize(values: np.ndarray, quant: Quantization | None) -> np.ndarray:
    """Real values of a tensor: ``scale * (q - zero_point)`` for quantised integers, else floats."""
    if quant is not None and values.dtype.kind in "iu":
        real: np.ndarray = (values.astype(np.float32) - np.float32(quant.zero_point)) * np.float32(
            quant.scale
        )
        return real
    return values.astype(np.float32, copy=False)


def softmax(values: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    shifted = np.exp(values - values.max(axis=-1, keepdims=True))
    return cast(np.ndarray, shifted / shifted.sum(axis=-1, keepdims=True))


def top_k(scores: np.ndarray, k: int, labels: Sequence[str] = ()) -> list[ClassScore]:
    """The ``k`` best of a 1-D score vector, best first (ties: lower index first)."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [
        ClassScore(
            index=int(i),
            label=labels[i] if i < len(labels) else None,
            score=round(float(scores[i]), 6),
        )
        for i in order
    ]


def classify(
    output: np.ndarray,
    quant: Quantization | None,
    *,
    k: int,
    apply_softmax: bool,
    labels: Sequence[str] = (),
) -> list[ClassScore] | None:
    """Top-k classes of a classifier output for ONE item (shape ``[classes]`` or ``[1, classes]``).

    Returns None for a batch of several items: the result then keeps the raw outputs instead.
    """
    if output.ndim == 0 or output.size != output.shape[-1]:
        return None
    scores = dequantize(output.reshape(-1), quant)
    if apply_softmax:
        scores = softmax(scores)
    return top_k(scores, k, labels)


def summarize_outputs(
    outputs: Mapping[str, np.ndarray], max_values: int = DEFAULT_MAX_OUTPUT_VALUES
) -> list[TensorData | TensorDigest]:
    """Each output in full up to ``max_values`` values, else as a :class:`TensorDigest`."""
    return [
        tensor_data(name, array) if array.size <= max_values else tensor_digest(name, array)
        for name, array in outputs.items()
    ]


def tensor_data(name: str, array: np.ndarray) -> TensorData:
    if array.dtype.kind in "SUO":  # BYTES outputs: kept as text (UTF-8, undecodable bytes replaced)
        data: list[Any] = [_text(v) for v in array.ravel().tolist()]
    else:
        data = array.ravel().tolist()
    return TensorData(name=name, shape=list(array.shape), datatype=datatype(array), data=data)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def tensor_digest(name: str, array: np.ndarray) -> TensorDigest:
    """Shape, type and SHA-256 of the tensor's bytes (C order, little-endian)."""
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return TensorDigest(
        name=name,
        shape=list(array.shape),
        datatype=datatype(array),
        sha256=hashlib.sha256(little.data).hexdigest(),
        size_bytes=little.nbytes,
    )


def datatype(array: np.ndarray) -> Datatype:
    """The Open Inference Protocol datatype of an array (BYTES for strings and objects)."""
    return cast(Datatype, DATATYPE_BY_NUMPY.get(array.dtype.name, "BYTES"))
