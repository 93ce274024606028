"""The Open Inference Protocol's REST bodies, with the binary tensor extension: pure encode/decode.

A request is a JSON object (``inputs``, optional ``id``, ``outputs``, ``parameters``). With the
binary tensor extension the HTTP header ``Inference-Header-Content-Length: N`` says that the first
``N`` bytes of the body are that JSON and the rest are the raw bytes of the inputs that carry
``parameters.binary_data_size``, in the order of ``inputs``: little-endian, row-major, BOOL one
byte per element, BYTES a 4-byte little-endian length before each element. Outputs requested with
``binary_data`` (or all of them, with the request parameter ``binary_data_output``) come back the
same way. Whether a body is binary is decided by that header alone, never by ``Content-Type``
(tritonclient sends none).

No I/O here: :func:`decode_infer_request` turns a body into NumPy arrays (binary inputs are views
of the body, no copy) and :func:`encode_infer_response` turns outputs into a body. Everything a
client can get wrong raises :class:`agent.errors.InputError` with a message that names the input,
the field and what was expected.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.errors import InputError
from protocol.tensors import DATATYPE_BY_NUMPY, NUMPY_BY_DATATYPE

HEADER_LENGTH = "Inference-Header-Content-Length"
"""The binary tensor extension's HTTP header: the length of the JSON part of the body."""

EXTENSIONS = ("binary_tensor_data",)

_DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(numpy_name).newbyteorder("<") for name, numpy_name in NUMPY_BY_DATATYPE.items()
}
"""Each datatype's NumPy dtype, little-endian as the binary extension lays tensors out."""
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for, and whether it wants it as binary data."""

    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """A decoded inference request."""

    inputs: dict[str, np.ndarray]
    id: str | None = None
    outputs: tuple[RequestedOutput, ...] | None = None
    """The outputs asked for, in order; None for all of them."""
    binary_output: bool = False
    """The request parameter ``binary_data_output``: the default for outputs not named."""


@dataclass(frozen=True)
class EncodedResponse:
    """A response body; ``header_length`` is set (for the HTTP header) when it has binary data."""

    body: bytes
    header_length: int | None

    @property
    def content_type(self) -> str:
        return "application/json" if self.header_length is None else "application/octet-stream"


# --- requests --------------------------------------------------------------------------------


def parse_header_length(value: str | None, body_length: int) -> int | None:
    """The value of ``Inference-Header-Content-Length``, checked against the body's length."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit():
        raise InputError(f"{HEADER_LENGTH} must be a number of bytes, got {value!r}")
    length = int(text)
    if length > body_length:
        raise InputError(f"{HEADER_LENGTH} is {length} but the body has only {body_length} bytes")
    return length


def decode_infer_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """Decode an inference request body (JSON, or JSON then binary tensors when ``header_length``).

    Binary inputs are read-only views of ``body``: nothing is copied.
    """
    header = body if header_length is None else body[:header_length]
    try:
        doc = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = "the JSON header" if header_length is not None else "the body"
        raise InputError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InputError("the request must be a JSON object with an 'inputs' list")

    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InputError(f"'id' must be a string, got {type(request_id).__name__}")
    parameters = _object(doc.get("parameters"), "'parameters'")
    binary_output = _flag(parameters.get("binary_data_output"), "parameters.binary_data_output")

    specs = doc.get("inputs")
    if not isinstance(specs, list) or not specs:
        raise InputError("'inputs' must be a non-empty list of tensors")
    binary = memoryview(body)[header_length:] if header_length is not None else None
    offset = 0
    inputs: dict[str, np.ndarray] = {}
    for index, spec in enumerate(specs):
        name, array, used = _decode_input(spec, index, binary, offset)
        if name in inputs:
            raise InputError(f"input {name!r} is given twice")
        inputs[name] = array
        offset += used
    if binary is not None and offset != len(binary):
        raise InputError(
            f"the body has {len(binary)} bytes of binary data after the JSON header but the "
            f"inputs' binary_data_size add up to {offset}"
        )
    return InferRequest(
        inputs=inputs,
        id=request_id,
        outputs=_requested_outputs(doc.get("outputs"), binary_output),
        binary_output=binary_output,
    )


def _decode_input(
    spec: object, index: int, binary: memoryview | None, offset: int
) -> tuple[str, np.ndarray, int]:
    """One input: (name, array, bytes of binary data it used)."""
    if not isinstance(spec, dict):
        raise InputError(f"inputs[{index}] must be an object with name, shape, datatype, data")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise InputError(f"inputs[{index}] has no 'name'")
    where = f"input {name!r}"
    datatype = spec.get("datatype")
    if datatype not in _DTYPES:
        raise InputError(f"{where}: unknown datatype {datatype!r} (one of {', '.join(_DTYPES)})")
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InputError(f"{where}: 'shape' must be a list of sizes (integers >= 0), got {shape!r}")
    count = math.prod(shape)
    parameters = _object(spec.get("parameters"), f"{where}: 'parameters'")
    size = parameters.get("binary_data_size")

    if size is None:
        if "data" not in spec:
            raise InputError(f"{where} has neither 'data' nor parameters.binary_data_size")
        return name, _json_tensor(where, datatype, shape, count, spec["data"]), 0
    if "data" in spec:
        raise InputError(f"{where} has both 'data' and parameters.binary_data_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InputError(f"{where}: binary_data_size must be a byte count, got {size!r}")
    if binary is None:
        raise InputError(
            f"{where} has binary_data_size but the request has no {HEADER_LENGTH} header"
        )
    if offset + size > len(binary):
        raise InputError(
            f"{where}: binary_data_size {size} runs past the end of the body (binary data is "
            f"{len(binary)} bytes, {len(binary) - offset} left for this input)"
        )
    chunk = binary[offset : offset + size]
    return name, _binary_tensor(where, datatype, shape, count, chunk), size


def _binary_tensor(
    where: str, datatype: str, shape: list[int], count: int, chunk: memoryview
) -> np.ndarray:
    if datatype == "BYTES":
        return _unpack_bytes(where, chunk, count).reshape(shape)
    dtype = _DTYPES[datatype]
    if len(chunk) != count * dtype.itemsize:
        raise InputError(
            f"{where}: binary_data_size {len(chunk)} does not match shape {_fmt(shape)} of "
            f"{datatype} ({count * dtype.itemsize} bytes)"
        )
    return np.frombuffer(chunk, dtype=dtype).reshape(shape)


def _json_tensor(
    where: str, datatype: str, shape: list[int], count: int, data: object
) -> np.ndarray:
    if not isinstance(data, list):
        raise InputError(f"{where}: 'data' must be a list of values")
    if datatype == "BYTES":
        flat = _flatten(data)
        if not all(isinstance(v, str) for v in flat):
            raise InputError(f"{where}: BYTES data must be a list of strings")
        values = np.empty(len(flat), dtype=object)
        values[:] = [v.encode() for v in flat]
    else:
        try:
            values = np.asarray(data).reshape(-1)
        except (ValueError, TypeError):
            raise InputError(f"{where}: 'data' is not a regular array of values") from None
        values = _cast(where, datatype, values)
    if values.size != count:
        raise InputError(
            f"{where}: shape {_fmt(shape)} needs {count} values, 'data' has {values.size}"
        )
    return values.reshape(shape)


def _cast(where: str, datatype: str, values: np.ndarray) -> np.ndarray:
    """JSON values to the declared type, refusing what would change a value's kind or range."""
    dtype = _DTYPES[datatype]
    if values.size == 0:
        return values.astype(dtype)
    kind = values.dtype.kind
    if dtype.kind == "b":
        ok = kind == "b"
    elif dtype.kind in "iu":
        # 3.0 is an integer written by a JSON encoder that knows only floats; 3.5 is not.
        ok = kind in "iu" or (
            kind == "f" and bool(np.isfinite(values).all() and (values == np.trunc(values)).all())
        )
        if ok:
            info = np.iinfo(dtype)
            if values.min() < info.min or values.max() > info.max:
                raise InputError(
                    f"{where}: values out of the range of {datatype} ({info.min}..{info.max})"
                )
    else:
        ok = kind in "iuf"
    if not ok:
        what = {"b": "booleans", "f": "fractional numbers", "i": "integers", "u": "integers"}
        raise InputError(
            f"{where}: 'data' holds {what.get(kind, 'values that are not numbers')}, "
            f"which a {datatype} tensor cannot take"
        )
    return values.astype(dtype, copy=False)


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _unpack_bytes(where: str, chunk: memoryview, count: int) -> np.ndarray:
    """BYTES elements from their binary form: each a uint32 length (LE), then the bytes."""
    values = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(chunk):
            raise InputError(f"{where}: binary BYTES data ends after {i} of {count} elements")
        (length,) = _LENGTH.unpack_from(chunk, pos)
        pos += 4
        if pos + length > len(chunk):
            raise InputError(f"{where}: BYTES element {i} of {length} bytes runs past its data")
        values[i] = bytes(chunk[pos : pos + length])
        pos += length
    if pos != len(chunk):
        raise InputError(
            f"{where}: {len(chunk) - pos} bytes left over after {count} BYTES elements"
        )
    return values


def _requested_outputs(value: object, default_binary: bool) -> tuple[RequestedOutput, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InputError("'outputs' must be a list of {name, parameters} objects")
    requested: list[RequestedOutput] = []
    for index, spec in enumerate(value):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InputError(f"outputs[{index}] must be an object with a 'name'")
        name = spec["name"]
        parameters = _object(spec.get("parameters"), f"output {name!r}: 'parameters'")
        if parameters.get("classification"):
            raise InputError(
                f"output {name!r}: the classification extension is not supported; "
                "POST an image to /v1/models/{name}/image for top-k classes"
            )
        binary = parameters.get("binary_data")
        flag = default_binary if binary is None else _flag(binary, f"output {name!r}: binary_data")
        requested.append(RequestedOutput(name, flag))
    return tuple(requested)


def _object(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{where} must be an object")
    return value


def _flag(value: object, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InputError(f"{where} must be true or false, got {value!r}")
    return value


# --- responses -------------------------------------------------------------------------------


def select_outputs(
    request: InferRequest, outputs: Mapping[str, np.ndarray]
) -> list[tuple[str, np.ndarray, bool]]:
    """The outputs to return as (name, array, binary): those asked for, in order, or all."""
    if request.outputs is None:
        return [(name, array, request.binary_output) for name, array in outputs.items()]
    selected = []
    for wanted in request.outputs:
        array = outputs.get(wanted.name)
        if array is None:
            raise InputError(
                f"unknown output {wanted.name!r} (the model has {', '.join(map(repr, outputs))})"
            )
        selected.append((wanted.name, array, wanted.binary))
    return selected


def encode_infer_response(
    *,
    model_name: str,
    model_version: str,
    outputs: Sequence[tuple[str, np.ndarray, bool]],
    request_id: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> EncodedResponse:
    """The response body: outputs as JSON ``data``, or as binary data after the JSON header."""
    described: list[dict[str, Any]] = []
    buffers: list[bytes | memoryview] = []
    for name, array, binary in outputs:
        datatype = datatype_of(array)
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            raw = _to_binary(array, datatype)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            buffers.append(raw)
        else:
            tensor["data"] = _to_json(name, array, datatype)
        described.append(tensor)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    if parameters:
        doc["parameters"] = dict(parameters)
    doc["outputs"] = described
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not buffers:
        return EncodedResponse(header, None)
    return EncodedResponse(b"".join([header, *buffers]), len(header))


def datatype_of(array: np.ndarray) -> str:
    """The protocol's datatype of an array (BYTES for strings and objects)."""
    if array.dtype.kind in "SUO":
        return "BYTES"
    name = DATATYPE_BY_NUMPY.get(array.dtype.name)
    if name is None:
        raise InputError(f"an output of type {array.dtype.name} has no protocol datatype")
    return name


def _to_binary(array: np.ndarray, datatype: str) -> bytes | memoryview:
    if datatype == "BYTES":
        return pack_bytes(array)
    little = np.ascontiguousarray(array, dtype=_DTYPES[datatype])
    return little.reshape(-1).view(np.uint8).data


def _to_json(name: str, array: np.ndarray, datatype: str) -> list[Any]:
    if datatype != "BYTES":
        return list(array.ravel().tolist())
    try:
        return [_as_bytes(v).decode() for v in array.ravel()]
    except UnicodeDecodeError:
        raise InputError(
            f"output {name!r} holds bytes that are not UTF-8 text; request it with "
            "parameters.binary_data = true"
        ) from None


def pack_bytes(array: np.ndarray) -> bytes:
    """BYTES elements in their binary form: each a uint32 length (LE), then the bytes."""
    parts: list[bytes] = []
    for value in array.ravel():
        raw = _as_bytes(value)
        parts += [_LENGTH.pack(len(raw)), raw]
    return b"".join(parts)


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


# --- metadata and errors ---------------------------------------------------------------------


def server_metadata(name: str, version: str) -> dict[str, Any]:
    return {"name": name, "version": version, "extensions": list(EXTENSIONS)}


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"
