"""Open Inference Protocol bodies for the offload server: pure decode, check and encode.

A request is JSON (``inputs``, optional ``id``, ``outputs``, ``parameters``), or, with the binary
tensor extension, JSON followed by raw tensors: the HTTP header ``Inference-Header-Content-Length``
gives the JSON part's length, and each input with ``parameters.binary_data_size`` takes that many
bytes of the rest, in order (little-endian, row-major). Whether a body is binary is decided by that
header alone, never by ``Content-Type``: tritonclient sends none.

Unlike Triton, KServe and MLServer (which answer 500), every request that does not fit the model
(a missing or unknown input, a datatype or a shape that differs) is refused here with
:class:`InvalidRequest` naming the input, what it got and what the model takes. Nothing here does
I/O; the server calls these with the body and the model's signature.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from controlplane.offload.errors import InvalidRequest
from protocol.manifest import TensorSpec
from protocol.tensors import DATATYPE_BY_NUMPY, NUMPY_BY_DATATYPE

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ("binary_tensor_data", "parameters")
NUMERIC = {
    name: np.dtype(np_name).newbyteorder("<")
    for name, np_name in NUMPY_BY_DATATYPE.items()
    if name != "BYTES"
}
"""Datatypes this server takes, with their little-endian dtypes (no BYTES: ONNX strings are rare
on a GPU tier and Runtime refuses such models when it loads them)."""


@dataclass(frozen=True)
class Request:
    """A decoded inference request, checked against the model's inputs."""

    inputs: dict[str, np.ndarray]
    rows: int
    """The batch size of this request: the first dimension every input shares (1 if unbatched)."""
    id: str | None = None
    outputs: tuple[tuple[str, bool], ...] | None = None
    """(name, binary) of the outputs asked for, in order; None for all of them."""
    binary_output: bool = False
    timeout_us: int | None = None


def header_length(value: str | None, body_length: int) -> int | None:
    """The value of ``Inference-Header-Content-Length``, checked against the body."""
    if value is None:
        return None
    if not value.strip().isdigit():
        raise InvalidRequest(f"{HEADER_LENGTH} must be a number of bytes, got {value!r}")
    length = int(value)
    if length > body_length:
        raise InvalidRequest(
            f"{HEADER_LENGTH} is {length} but the body has only {body_length} bytes"
        )
    return length


def decode_request(
    body: bytes, json_length: int | None, inputs: Sequence[TensorSpec], *, batched: bool
) -> Request:
    """Decode ``body`` and check it against the model's ``inputs``.

    ``batched``: the model's first dimension is the batch (dynamic); then every input must carry
    the same number of rows there.
    """
    doc = _json_object(body if json_length is None else body[:json_length], json_length)
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequest(f"'id' must be a string, got {type(request_id).__name__}")
    parameters = _mapping(doc.get("parameters"), "'parameters'")
    binary_output = _flag(parameters.get("binary_data_output"), "parameters.binary_data_output")
    timeout = parameters.get("timeout")
    if timeout is not None and (
        not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0
    ):
        raise InvalidRequest(
            f"parameters.timeout must be microseconds (an integer >= 0), got {timeout!r}"
        )

    given = doc.get("inputs")
    if not isinstance(given, list) or not given:
        raise InvalidRequest("'inputs' must be a non-empty list of tensors")
    raw = memoryview(body)[json_length:] if json_length is not None else None
    specs = {spec.name: spec for spec in inputs}
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for index, tensor in enumerate(given):
        name, array, used = _decode_tensor(tensor, index, specs, raw, offset)
        if name in arrays:
            raise InvalidRequest(f"input {name!r} is given twice")
        arrays[name] = array
        offset += used
    if raw is not None and offset != len(raw):
        raise InvalidRequest(
            f"the body has {len(raw)} bytes after the JSON header but the inputs' "
            f"binary_data_size add up to {offset}"
        )
    missing = [name for name in specs if name not in arrays]
    if missing:
        raise InvalidRequest(f"missing input {missing[0]!r}: the model takes {_names(specs)}")
    return Request(
        inputs=arrays,
        rows=_rows(arrays) if batched else 1,
        id=request_id,
        outputs=_outputs(doc.get("outputs"), binary_output),
        binary_output=binary_output,
        timeout_us=timeout,
    )


def _json_object(text: bytes, json_length: int | None) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = "the body" if json_length is None else "the JSON header"
        raise InvalidRequest(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidRequest("the request must be a JSON object with an 'inputs' list")
    return doc


def _decode_tensor(
    tensor: object,
    index: int,
    specs: Mapping[str, TensorSpec],
    raw: memoryview | None,
    offset: int,
) -> tuple[str, np.ndarray, int]:
    """One input, checked against its spec: (name, array, binary bytes used)."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise InvalidRequest(f"inputs[{index}] must be an object with name, shape, datatype")
    name: str = tensor["name"]
    spec = specs.get(name)
    if spec is None:
        raise InvalidRequest(f"unknown input {name!r}: the model takes {_names(specs)}")
    where = f"input {name!r}"
    datatype = tensor.get("datatype")
    if datatype != spec.datatype:
        raise InvalidRequest(
            f"{where}: datatype {datatype!r} given, the model takes {spec.datatype}"
        )
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidRequest(f"{where}: 'shape' must be a list of sizes, got {shape!r}")
    if not shape_fits(shape, spec.shape):
        raise InvalidRequest(
            f"{where}: shape {_fmt(shape)} given, the model takes {_fmt(spec.shape)} (-1: any size)"
        )
    dtype = NUMERIC[spec.datatype]
    count = math.prod(shape)
    parameters = _mapping(tensor.get("parameters"), f"{where}: 'parameters'")
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in tensor:
            raise InvalidRequest(f"{where} has neither 'data' nor parameters.binary_data_size")
        return name, _from_json(where, tensor["data"], dtype, shape, count), 0
    if "data" in tensor:
        raise InvalidRequest(f"{where} has both 'data' and parameters.binary_data_size")
    if raw is None:
        raise InvalidRequest(f"{where} has binary_data_size but there is no {HEADER_LENGTH}")
    if not isinstance(size, int) or isinstance(size, bool) or size != count * dtype.itemsize:
        raise InvalidRequest(
            f"{where}: binary_data_size {size!r} does not match shape "
            f"{_fmt(shape)} of {datatype} ({count * dtype.itemsize} bytes)"
        )
    if offset + size > len(raw):
        raise InvalidRequest(f"{where}: binary_data_size {size} runs past the end of the body")
    array = np.frombuffer(raw[offset : offset + size], dtype=dtype).reshape(shape)
    return name, array, size


def _from_json(
    where: str, data: object, dtype: np.dtype[Any], shape: list[int], count: int
) -> np.ndarray:
    if not isinstance(data, list):
        raise InvalidRequest(f"{where}: 'data' must be a list of numbers")
    try:
        values = np.asarray(data)
    except ValueError:
        raise InvalidRequest(f"{where}: 'data' is not a regular array of numbers") from None
    if values.size != count:
        raise InvalidRequest(
            f"{where}: shape {_fmt(shape)} needs {count} values, 'data' has {values.size}"
        )
    if values.size and not _fits(values, dtype):
        raise InvalidRequest(
            f"{where}: 'data' holds values that a {_datatype(dtype)} tensor cannot take"
        )
    return values.reshape(shape).astype(dtype, copy=False)


def _fits(values: np.ndarray, dtype: np.dtype[Any]) -> bool:
    """Whether JSON values keep their meaning as ``dtype`` (3.0 is an integer, 3.5 is not)."""
    kind = values.dtype.kind
    if dtype.kind == "b" or kind == "b":
        return kind == dtype.kind
    if kind not in "iuf":
        return False
    if dtype.kind == "f":
        return True
    if kind == "f" and not (np.isfinite(values).all() and (values == np.trunc(values)).all()):
        return False
    info = np.iinfo(dtype)
    return bool(values.min() >= info.min and values.max() <= info.max)


def shape_fits(shape: Sequence[int], model: Sequence[int]) -> bool:
    """Whether a request's shape fits the model's (``-1`` there takes any size)."""
    return len(shape) == len(model) and all(m in (-1, s) for s, m in zip(shape, model, strict=True))


def _rows(arrays: Mapping[str, np.ndarray]) -> int:
    rows = {name: a.shape[0] for name, a in arrays.items()}
    distinct = set(rows.values())
    if len(distinct) != 1:
        raise InvalidRequest(f"the inputs' first (batch) dimensions differ: {rows}")
    (count,) = distinct
    if count < 1:
        raise InvalidRequest("a request needs at least one row in its batch dimension")
    return int(count)


def _outputs(value: object, default_binary: bool) -> tuple[tuple[str, bool], ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidRequest("'outputs' must be a list of {name, parameters} objects")
    wanted = []
    for index, spec in enumerate(value):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InvalidRequest(f"outputs[{index}] must be an object with a 'name'")
        params = _mapping(spec.get("parameters"), f"output {spec['name']!r}: 'parameters'")
        if params.get("classification"):
            raise InvalidRequest(
                f"output {spec['name']!r}: the classification extension is "
                "not supported; ask for the raw tensor"
            )
        binary = params.get("binary_data")
        flag = default_binary if binary is None else _flag(binary, "binary_data")
        wanted.append((spec["name"], flag))
    return tuple(wanted)


def _mapping(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where} must be an object")
    return value


def _flag(value: object, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest(f"{where} must be true or false, got {value!r}")
    return value


# --- responses -----------------------------------------------------------------------------


def select_outputs(
    request: Request, outputs: Mapping[str, np.ndarray]
) -> list[tuple[str, np.ndarray, bool]]:
    """(name, array, binary) of the outputs to return: those asked for, in order, or all."""
    if request.outputs is None:
        return [(name, array, request.binary_output) for name, array in outputs.items()]
    chosen = []
    for name, binary in request.outputs:
        if name not in outputs:
            raise InvalidRequest(f"unknown output {name!r}: the model has {_names(outputs)}")
        chosen.append((name, outputs[name], binary))
    return chosen


def check_outputs(request: Request, names: Sequence[str]) -> None:
    """Refuse a request for an unknown output before it is queued, not after it ran."""
    for name, _ in request.outputs or ():
        if name not in names:
            raise InvalidRequest(
                f"unknown output {name!r}: the model has {', '.join(map(repr, names))}"
            )


def encode_response(
    model: str,
    version: str,
    outputs: Sequence[tuple[str, np.ndarray, bool]],
    request_id: str | None,
) -> tuple[bytes, int | None]:
    """The response body, and the JSON part's length when binary outputs follow it."""
    described: list[dict[str, Any]] = []
    raw: list[bytes] = []
    for name, array, binary in outputs:
        datatype = _datatype(array.dtype)
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(data)}
            raw.append(data)
        else:
            tensor["data"] = array.ravel().tolist()
        described.append(tensor)
    doc: dict[str, Any] = {"model_name": model, "model_version": version}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = described
    header = json.dumps(doc, separators=(",", ":")).encode()
    return (header + b"".join(raw), len(header)) if raw else (header, None)


def model_metadata(
    name: str,
    versions: Sequence[str],
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    platform: str = "onnxruntime_onnx",
) -> dict[str, Any]:
    def tensors(specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
        return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in specs]

    return {
        "name": name,
        "versions": list(versions),
        "platform": platform,
        "inputs": tensors(inputs),
        "outputs": tensors(outputs),
    }


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": "edgefleet-offload", "version": version, "extensions": list(EXTENSIONS)}


def _datatype(dtype: np.dtype[Any]) -> str:
    name = DATATYPE_BY_NUMPY.get(dtype.name)
    if name is None:
        raise InvalidRequest(f"a tensor of type {dtype.name} has no protocol datatype")
    return name


def _names(specs: Mapping[str, object]) -> str:
    return ", ".join(repr(n) for n in specs)


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"
