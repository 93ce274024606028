"""Table-driven tests of the Open Inference Protocol bodies (agent/oip.py): no server, no model."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from agent import oip
from agent.errors import InputError
from protocol.tensors import NUMPY_BY_DATATYPE


def binary_body(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, int]:
    raw = json.dumps(header).encode()
    return raw + b"".join(chunks), len(raw)


def tensor(name: str, datatype: str, shape: list[int], **fields: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, **fields}


def packed(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


# --- JSON requests -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            tensor("x", "FP32", [2, 2], data=[1, 2.5, 3, 4]),
            np.array([[1, 2.5], [3, 4]], np.float32),
        ),
        (
            tensor("x", "FP32", [2, 2], data=[[1, 2], [3, 4]]),
            np.array([[1, 2], [3, 4]], np.float32),
        ),
        (tensor("x", "INT8", [3], data=[-128, 0, 127]), np.array([-128, 0, 127], np.int8)),
        (tensor("x", "UINT8", [2], data=[0.0, 255.0]), np.array([0, 255], np.uint8)),
        (tensor("x", "INT64", [1], data=[2**40]), np.array([2**40], np.int64)),
        (tensor("x", "BOOL", [2], data=[True, False]), np.array([True, False])),
        (tensor("x", "FP16", [1], data=[0.5]), np.array([0.5], np.float16)),
        (tensor("x", "FP64", [0], data=[]), np.zeros(0, np.float64)),
        (tensor("x", "FP32", [], data=[7]), np.array(7, np.float32)),
    ],
)
def test_json_inputs_decode_to_the_declared_type_and_shape(
    spec: dict[str, Any], expected: np.ndarray
) -> None:
    request = oip.decode_infer_request(json.dumps({"inputs": [spec]}).encode())
    got = request.inputs["x"]
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_json_bytes_input_is_utf8_encoded() -> None:
    spec = tensor("t", "BYTES", [2], data=["héllo", ""])
    got = oip.decode_infer_request(json.dumps({"inputs": [spec]}).encode()).inputs["t"]
    assert got.dtype == object
    assert list(got) == ["héllo".encode(), b""]


def test_request_fields_are_decoded() -> None:
    body = {
        "id": "req-1",
        "parameters": {"binary_data_output": True},
        "inputs": [tensor("x", "FP32", [1], data=[1])],
        "outputs": [{"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}],
    }
    request = oip.decode_infer_request(json.dumps(body).encode())
    assert request.id == "req-1"
    assert request.binary_output is True
    assert request.outputs == (
        oip.RequestedOutput("a", True),  # inherits binary_data_output
        oip.RequestedOutput("b", False),
    )


def test_no_outputs_means_all_of_them() -> None:
    request = oip.decode_infer_request(
        b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]}]}'
    )
    assert request.outputs is None
    assert request.binary_output is False
    assert request.id is None


X = tensor("x", "FP32", [2], data=[1, 2])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"{}", "'inputs' must be a non-empty list"),
        ({"inputs": []}, "'inputs' must be a non-empty list"),
        ({"inputs": [X], "id": 5}, "'id' must be a string"),
        ({"inputs": [X], "parameters": []}, "'parameters' must be an object"),
        ({"inputs": [X], "parameters": {"binary_data_output": 1}}, "must be true or false"),
        ({"inputs": [7]}, "inputs[0] must be an object"),
        ({"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}, "inputs[0] has no 'name'"),
        ({"inputs": [X, X]}, "input 'x' is given twice"),
        ({"inputs": [tensor("x", "FLOAT", [1], data=[1])]}, "unknown datatype 'FLOAT'"),
        ({"inputs": [tensor("x", "FP32", [-1], data=[1])]}, "'shape' must be a list of sizes"),
        ({"inputs": [tensor("x", "FP32", "2", data=[1])]}, "'shape' must be a list of sizes"),
        ({"inputs": [tensor("x", "FP32", [True], data=[1])]}, "'shape' must be a list of sizes"),
        ({"inputs": [tensor("x", "FP32", [2])]}, "neither 'data' nor"),
        ({"inputs": [tensor("x", "FP32", [2], data=5)]}, "'data' must be a list"),
        (
            {"inputs": [tensor("x", "FP32", [2], data=[1, 2, 3])]},
            "shape [2] needs 2 values, 'data' has 3",
        ),
        ({"inputs": [tensor("x", "FP32", [2, 2], data=[1, 2, 3])]}, "needs 4 values, 'data' has 3"),
        ({"inputs": [tensor("x", "FP32", [2], data=[[1], [2, 3]])]}, "not a regular array"),
        ({"inputs": [tensor("x", "FP32", [2], data=["a", "b"])]}, "not numbers"),
        ({"inputs": [tensor("x", "FP32", [1], data=[None])]}, "not numbers"),
        ({"inputs": [tensor("x", "INT32", [2], data=[1.5, 2])]}, "fractional numbers"),
        ({"inputs": [tensor("x", "UINT8", [1], data=[256])]}, "out of the range of UINT8"),
        ({"inputs": [tensor("x", "INT8", [1], data=[-129])]}, "out of the range of INT8"),
        ({"inputs": [tensor("x", "BOOL", [1], data=[1])]}, "holds integers, which a BOOL"),
        ({"inputs": [tensor("x", "INT32", [1], data=[True])]}, "holds booleans"),
        ({"inputs": [tensor("x", "BYTES", [1], data=[1])]}, "BYTES data must be a list of strings"),
        ({"inputs": [tensor("x", "FP32", [1], data=[1], parameters=[])]}, "'parameters' must be"),
        (
            {"inputs": [tensor("x", "FP32", [1], parameters={"binary_data_size": 4})]},
            "no Inference-Header-Content-Length header",
        ),
        ({"inputs": [X], "outputs": {"name": "y"}}, "'outputs' must be a list"),
        ({"inputs": [X], "outputs": [{"nom": "y"}]}, "outputs[0] must be an object with a 'name'"),
        (
            {"inputs": [X], "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]},
            "output 'y': binary_data must be true or false",
        ),
        (
            {"inputs": [X], "outputs": [{"name": "y", "parameters": {"classification": 3}}]},
            "classification extension is not supported",
        ),
    ],
)
def test_bad_json_requests_name_the_problem(body: bytes | dict[str, Any], message: str) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(InputError) as caught:
        oip.decode_infer_request(raw)
    assert message in str(caught.value)


# --- binary requests ---------------------------------------------------------------------


def test_binary_inputs_are_views_of_the_body_in_order() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([[1, -2]], dtype=np.int16)
    header = {
        "inputs": [
            tensor("a", "FP32", [2, 3], parameters={"binary_data_size": a.nbytes}),
            tensor("j", "INT32", [1], data=[9]),  # JSON and binary inputs may mix
            tensor("b", "INT16", [1, 2], parameters={"binary_data_size": b.nbytes}),
        ]
    }
    body, length = binary_body(header, a.tobytes(), b.tobytes())
    request = oip.decode_infer_request(body, length)
    np.testing.assert_array_equal(request.inputs["a"], a)
    np.testing.assert_array_equal(request.inputs["b"], b)
    assert request.inputs["j"].tolist() == [9]
    assert request.inputs["a"].dtype == np.float32
    assert not request.inputs["a"].flags.owndata  # no copy: a view of the body
    assert not request.inputs["a"].flags.writeable


def test_binary_bool_and_bytes_inputs() -> None:
    header = {
        "inputs": [
            tensor("f", "BOOL", [3], parameters={"binary_data_size": 3}),
            tensor("t", "BYTES", [2], parameters={"binary_data_size": 4 + 3 + 4 + 0}),
        ]
    }
    body, length = binary_body(header, bytes([1, 0, 1]), packed(b"abc", b""))
    request = oip.decode_infer_request(body, length)
    assert request.inputs["f"].tolist() == [True, False, True]
    assert list(request.inputs["t"]) == [b"abc", b""]


def test_header_only_binary_request_is_plain_json() -> None:
    body, length = binary_body({"inputs": [X]})
    assert oip.decode_infer_request(body, length).inputs["x"].tolist() == [1.0, 2.0]


def _fp32(name: str, shape: list[int], size: int) -> dict[str, Any]:
    return tensor(name, "FP32", shape, parameters={"binary_data_size": size})


@pytest.mark.parametrize(
    ("header", "data", "message"),
    [
        ({"inputs": [_fp32("x", [2], 8)]}, b"\0" * 12, "binary_data_size add up to 8"),
        ({"inputs": [_fp32("x", [2], 8)]}, b"\0" * 4, "runs past the end of the body"),
        ({"inputs": [_fp32("x", [2], 4)]}, b"\0" * 4, "does not match shape [2] of FP32 (8 bytes)"),
        (
            {"inputs": [_fp32("x", [1], 4), _fp32("y", [1], 4)]},
            b"\0" * 6,
            "input 'y': binary_data_size 4 runs past",
        ),
        ({"inputs": [_fp32("x", [1], -4)]}, b"", "binary_data_size must be a byte count"),
        ({"inputs": [_fp32("x", [1], "4")]}, b"\0" * 4, "binary_data_size must be a byte count"),
        (
            {"inputs": [{**_fp32("x", [1], 4), "data": [1]}]},
            b"\0" * 4,
            "both 'data' and parameters.binary_data_size",
        ),
        (
            {"inputs": [tensor("t", "BYTES", [2], parameters={"binary_data_size": 7})]},
            packed(b"abc"),
            "ends after 1 of 2 elements",
        ),
        (
            {"inputs": [tensor("t", "BYTES", [1], parameters={"binary_data_size": 6})]},
            struct.pack("<I", 5) + b"ab",
            "runs past its data",
        ),
        (
            {"inputs": [tensor("t", "BYTES", [1], parameters={"binary_data_size": 9})]},
            packed(b"abc") + b"xx",
            "2 bytes left over",
        ),
    ],
)
def test_bad_binary_requests_name_the_problem(
    header: dict[str, Any], data: bytes, message: str
) -> None:
    body, length = binary_body(header, data)
    with pytest.raises(InputError) as caught:
        oip.decode_infer_request(body, length)
    assert message in str(caught.value)


def test_a_header_length_that_cuts_the_json_is_a_json_error() -> None:
    body, length = binary_body({"inputs": [X]})
    with pytest.raises(InputError, match="the JSON header is not valid JSON"):
        oip.decode_infer_request(body, length - 3)


@pytest.mark.parametrize(
    ("value", "body_length", "expected"),
    [(None, 10, None), ("5", 10, 5), (" 10 ", 10, 10), ("0", 0, 0)],
)
def test_header_length_values(value: str | None, body_length: int, expected: int | None) -> None:
    assert oip.parse_header_length(value, body_length) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [("abc", "must be a number of bytes"), ("-1", "must be a number of bytes"), ("11", "only 10")],
)
def test_bad_header_length_values(value: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        oip.parse_header_length(value, 10)


# --- responses ---------------------------------------------------------------------------

OUTPUTS = {
    "probs": np.array([[0.25, 0.75]], np.float32),
    "label": np.array([3], np.int64),
}


def decode_response(encoded: oip.EncodedResponse) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Decode a response the way tritonclient does (header, then buffers in output order)."""
    cut = encoded.header_length if encoded.header_length is not None else len(encoded.body)
    doc = json.loads(encoded.body[:cut])
    arrays, offset = {}, cut
    for out in doc["outputs"]:
        dtype = np.dtype(NUMPY_BY_DATATYPE[out["datatype"]])
        if "data" in out:
            arrays[out["name"]] = np.array(out["data"], dtype).reshape(out["shape"])
        else:
            size = out["parameters"]["binary_data_size"]
            raw = encoded.body[offset : offset + size]
            arrays[out["name"]] = np.frombuffer(raw, dtype).reshape(out["shape"])
            offset += size
    assert offset == (len(encoded.body) if encoded.header_length is not None else cut)
    return doc, arrays


@pytest.mark.parametrize("binary", [(False, False), (True, False), (False, True), (True, True)])
def test_responses_round_trip_json_and_binary(binary: tuple[bool, bool]) -> None:
    selected = [
        (name, array, flag) for (name, array), flag in zip(OUTPUTS.items(), binary, strict=True)
    ]
    encoded = oip.encode_infer_response(
        model_name="m", model_version="2", outputs=selected, request_id="r", parameters={"k": 1}
    )
    doc, arrays = decode_response(encoded)
    assert (encoded.header_length is None) == (not any(binary))
    assert encoded.content_type == (
        "application/octet-stream" if any(binary) else "application/json"
    )
    assert doc["model_name"] == "m" and doc["model_version"] == "2"
    assert doc["id"] == "r" and doc["parameters"] == {"k": 1}
    assert [o["datatype"] for o in doc["outputs"]] == ["FP32", "INT64"]
    for name, array in OUTPUTS.items():
        np.testing.assert_array_equal(arrays[name], array)


def test_binary_bytes_and_bool_outputs() -> None:
    text = np.array([b"ab", b""], dtype=object)
    flags = np.array([True, False])
    encoded = oip.encode_infer_response(
        model_name="m", model_version="1", outputs=[("t", text, True), ("f", flags, True)]
    )
    assert encoded.header_length is not None
    tail = encoded.body[encoded.header_length :]
    assert tail == packed(b"ab", b"") + b"\x01\x00"


def test_json_bytes_output_must_be_text() -> None:
    ok = oip.encode_infer_response(
        model_name="m", model_version="1", outputs=[("t", np.array([b"hi"], object), False)]
    )
    assert json.loads(ok.body)["outputs"][0]["data"] == ["hi"]
    with pytest.raises(InputError, match="request it with parameters.binary_data"):
        oip.encode_infer_response(
            model_name="m", model_version="1", outputs=[("t", np.array([b"\xff"], object), False)]
        )


def test_big_endian_outputs_are_sent_little_endian() -> None:
    array = np.array([1.5, -2.0], dtype=">f4")
    encoded = oip.encode_infer_response(
        model_name="m", model_version="1", outputs=[("y", array, True)]
    )
    assert encoded.header_length is not None
    assert encoded.body[encoded.header_length :] == np.array([1.5, -2.0], "<f4").tobytes()


@pytest.mark.parametrize(
    ("request_outputs", "binary_output", "expected"),
    [
        (None, False, [("probs", False), ("label", False)]),
        (None, True, [("probs", True), ("label", True)]),
        ((oip.RequestedOutput("label", True),), False, [("label", True)]),
        (
            (oip.RequestedOutput("label", False), oip.RequestedOutput("probs", True)),
            False,
            [("label", False), ("probs", True)],
        ),
    ],
)
def test_select_outputs(
    request_outputs: tuple[oip.RequestedOutput, ...] | None,
    binary_output: bool,
    expected: list[tuple[str, bool]],
) -> None:
    request = oip.InferRequest(inputs={}, outputs=request_outputs, binary_output=binary_output)
    got = oip.select_outputs(request, OUTPUTS)
    assert [(name, flag) for name, _, flag in got] == expected


def test_select_unknown_output_names_the_known_ones() -> None:
    request = oip.InferRequest(inputs={}, outputs=(oip.RequestedOutput("nope", False),))
    with pytest.raises(InputError, match="unknown output 'nope' .*'probs', 'label'"):
        oip.select_outputs(request, OUTPUTS)


def test_server_metadata_and_error_body() -> None:
    assert oip.server_metadata("s", "1") == {
        "name": "s",
        "version": "1",
        "extensions": ["binary_tensor_data"],
    }
    assert json.loads(oip.error_body('bad "x"')) == {"error": 'bad "x"'}
