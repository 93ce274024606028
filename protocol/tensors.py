"""Tensor data types as the Open Inference Protocol names them, and their NumPy equivalents.

Kept free of NumPy so that the protocol package stays importable everywhere; callers turn the
NumPy name into a dtype with ``numpy.dtype(name)``.
"""

from __future__ import annotations

from typing import Literal

Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64",
    "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip

NUMPY_BY_DATATYPE: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}
DATATYPE_BY_NUMPY: dict[str, str] = {v: k for k, v in NUMPY_BY_DATATYPE.items()}
