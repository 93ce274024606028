"""The protocol's bodies, pure: decode and check against a model's inputs, encode responses."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from controlplane.offload import oip
from controlplane.offload.errors import InvalidRequest
from protocol.manifest import TensorSpec

INPUTS = [TensorSpec(name="input", shape=[-1, 2, 2], datatype="FP32")]
COUNTS = [TensorSpec(name="counts", shape=[-1, 3], datatype="INT32")]


def body(*tensors: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"inputs": list(tensors), **extra}).encode()


def tensor(
    name: str = "input",
    shape: Any = (1, 2, 2),
    datatype: str = "FP32",
    data: Any = (0.0, 0.5, 1.0, 1.5),
) -> dict[str, Any]:
    return {"name": name, "shape": list(shape), "datatype": datatype, "data": list(data)}


def test_json_request_decodes_to_arrays_of_the_models_type() -> None:
    request = oip.decode_request(body(tensor(), id="r-1"), None, INPUTS, batched=True)
    assert request.id == "r-1"
    assert request.rows == 1
    array = request.inputs["input"]
    assert array.dtype == np.float32 and array.shape == (1, 2, 2)
    assert array.ravel().tolist() == [0.0, 0.5, 1.0, 1.5]


def test_nested_json_data_is_accepted_as_triton_does() -> None:
    nested = tensor(shape=(2, 2, 2), data=[[[0, 1], [2, 3]], [[4, 5], [6, 7]]])
    request = oip.decode_request(body(nested), None, INPUTS, batched=True)
    assert request.rows == 2
    assert request.inputs["input"][1, 1, 1] == 7


def test_integral_floats_are_integers_but_fractions_are_not() -> None:
    ok = oip.decode_request(
        body(tensor("counts", (1, 3), "INT32", [1.0, 2, 3])), None, COUNTS, batched=True
    )
    assert ok.inputs["counts"].tolist() == [[1, 2, 3]]
    with pytest.raises(InvalidRequest, match="INT32 tensor cannot take"):
        oip.decode_request(
            body(tensor("counts", (1, 3), "INT32", [1.5, 2, 3])), None, COUNTS, batched=True
        )


def binary_body(array: np.ndarray, **parameters: Any) -> tuple[bytes, int]:
    raw = array.astype("<f4").tobytes()
    header = json.dumps(
        {
            "id": "b-1",
            "inputs": [
                {
                    "name": "input",
                    "shape": list(array.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": parameters,
        }
    ).encode()
    return header + raw, len(header)


def test_binary_request_is_read_from_after_the_json_header() -> None:
    array = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    data, length = binary_body(array, binary_data_output=True)
    request = oip.decode_request(
        data, oip.header_length(str(length), len(data)), INPUTS, batched=True
    )
    np.testing.assert_array_equal(request.inputs["input"], array)
    assert request.rows == 2 and request.binary_output is True


# Each row: what is wrong with the request, and words the error must contain.
BAD = [
    (b"{not json", None, "not valid JSON"),
    (b"[1, 2]", None, "JSON object"),
    (body(), None, "non-empty list"),
    (body(tensor(name="image")), None, "unknown input 'image'"),
    (body(tensor(datatype="FP64")), None, "datatype 'FP64' given, the model takes FP32"),
    (body(tensor(shape=(1, 4))), None, "shape [1,4] given, the model takes [-1,2,2]"),
    (body(tensor(shape=(1, 2, 3))), None, "input 'input': shape [1,2,3]"),
    (body(tensor(data=[1, 2, 3])), None, "needs 4 values, 'data' has 3"),
    (body(tensor(data=["a", "b", "c", "d"])), None, "FP32 tensor cannot take"),
    (body(tensor(), tensor()), None, "given twice"),
    (body(tensor(), id=7), None, "'id' must be a string"),
    (body(tensor(), parameters={"timeout": -1}), None, "parameters.timeout"),
    (
        body(tensor(), outputs=[{"name": "p", "parameters": {"classification": 2}}]),
        None,
        "classification",
    ),
    (body({"name": "input", "shape": [1, 2, 2], "datatype": "FP32"}), None, "neither 'data'"),
    (
        body(
            {
                "name": "input",
                "shape": [1, 2, 2],
                "datatype": "FP32",
                "parameters": {"binary_data_size": 16},
            }
        ),
        None,
        "no Inference-Header-Content-Length",
    ),
    (body(tensor(shape=(0, 2, 2), data=[])), None, "at least one row"),
]


@pytest.mark.parametrize(("data", "length", "words"), BAD)
def test_bad_requests_name_what_is_wrong(data: bytes, length: int | None, words: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        oip.decode_request(data, length, INPUTS, batched=True)
    assert words in str(caught.value)


def test_missing_input_is_named() -> None:
    two = [*INPUTS, TensorSpec(name="mask", shape=[-1, 2], datatype="BOOL")]
    with pytest.raises(InvalidRequest, match="missing input 'mask'"):
        oip.decode_request(body(tensor()), None, two, batched=True)


def test_inputs_with_different_batch_sizes_are_refused() -> None:
    two = [*INPUTS, TensorSpec(name="mask", shape=[-1, 2], datatype="BOOL")]
    mask = {"name": "mask", "shape": [2, 2], "datatype": "BOOL", "data": [True] * 4}
    with pytest.raises(InvalidRequest, match="batch"):
        oip.decode_request(body(tensor(), mask), None, two, batched=True)


@pytest.mark.parametrize(
    ("size", "words"), [(15, "does not match shape"), (32, "does not match shape")]
)
def test_binary_size_must_match_the_shape(size: int, words: str) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 2, 2],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    ).encode()
    data = header + bytes(16)
    with pytest.raises(InvalidRequest, match=words):
        oip.decode_request(data, len(header), INPUTS, batched=True)


def test_leftover_binary_bytes_are_refused() -> None:
    data, length = binary_body(np.zeros((1, 2, 2), np.float32))
    with pytest.raises(InvalidRequest, match="add up to 16"):
        oip.decode_request(data + b"xx", length, INPUTS, batched=True)


@pytest.mark.parametrize(("value", "ok"), [("12", True), ("x", False), ("999", False)])
def test_header_length_is_checked_against_the_body(value: str, ok: bool) -> None:
    if ok:
        assert oip.header_length(value, 100) == 12
    else:
        with pytest.raises(InvalidRequest, match="Inference-Header-Content-Length"):
            oip.header_length(value, 100)


@pytest.mark.parametrize(
    ("shape", "model", "fits"),
    [
        ([1, 2], [-1, 2], True),
        ([9, 2], [-1, 2], True),
        ([1, 3], [-1, 2], False),
        ([1, 2, 1], [-1, 2], False),
        ([2], [2], True),
    ],
)
def test_shape_fits(shape: list[int], model: list[int], fits: bool) -> None:
    assert oip.shape_fits(shape, model) is fits


def test_response_mixes_json_and_binary_outputs() -> None:
    probs = np.array([[0.25, 0.75]], np.float32)
    ids = np.array([[1]], np.int64)
    data, length = oip.encode_response(
        "m", "1", [("probs", probs, True), ("ids", ids, False)], "r-9"
    )
    assert length is not None
    doc = json.loads(data[:length])
    assert doc["id"] == "r-9" and doc["model_name"] == "m" and doc["model_version"] == "1"
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert doc["outputs"][1]["data"] == [1] and doc["outputs"][1]["datatype"] == "INT64"
    np.testing.assert_array_equal(np.frombuffer(data[length:], "<f4"), probs.ravel())


def test_json_only_response_has_no_header_length() -> None:
    data, length = oip.encode_response("m", "1", [("p", np.zeros((1, 2), np.float32), False)], None)
    assert length is None and "id" not in json.loads(data)


def test_an_unknown_output_is_refused_before_it_runs() -> None:
    request = oip.decode_request(
        body(tensor(), outputs=[{"name": "nope"}]), None, INPUTS, batched=True
    )
    with pytest.raises(InvalidRequest, match="unknown output 'nope'"):
        oip.check_outputs(request, ["probabilities"])
