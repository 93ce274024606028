from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from agent.errors import InputError
from agent.preprocess import (
    default_image_preprocess,
    image_to_tensor,
    plan_image,
    to_dtype,
    validate_inputs,
)
from protocol.manifest import ImagePreprocess, Quantization, TensorSpec


def spec(
    shape: list[int], datatype: str = "FP32", q: tuple[float, int] | None = None
) -> TensorSpec:
    quant = Quantization(scale=q[0], zero_point=q[1]) if q else None
    return TensorSpec.model_validate(
        {"name": "x", "shape": shape, "datatype": datatype, "quantization": quant}
    )


def encode(pixels: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode).save(buf, format=fmt)
    return buf.getvalue()


GRAY = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4  # 0, 4, ..., 252
L8 = ImagePreprocess(width=8, height=8, color="L")


# --- planning ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "color", "layout", "planned"),
    [
        ([1, 8, 8, 1], "L", "nhwc", (1, 8, 8, 1)),
        ([-1, 8, 8, 1], "L", "nhwc", (1, 8, 8, 1)),
        ([1, -1, -1, 3], "RGB", "nhwc", (1, 8, 8, 3)),
        ([1, 3, 8, 8], "RGB", "nchw", (1, 3, 8, 8)),
        ([1, 64], "L", "flat", (1, 64)),
        ([-1, 64], "L", "flat", (1, 64)),
        ([8, 8, 1], "L", "flat", (8, 8, 1)),
    ],
)
def test_plan_lays_images_out_as_the_input_wants(
    shape: list[int], color: str, layout: str, planned: tuple[int, ...]
) -> None:
    pre = ImagePreprocess(width=8, height=8, color=color)
    plan = plan_image(pre, spec(shape))
    assert (plan.layout, plan.shape) == (layout, planned)


@pytest.mark.parametrize(
    ("pre", "tensor", "message"),
    [
        (L8, spec([1, 8, 8, 3]), r"shape \[1,8,8,3\] cannot take a 8x8 L image"),
        (L8, spec([1, 16, 16, 1]), "cannot take"),
        (L8, spec([1, -1]), "cannot take"),
        (ImagePreprocess(width=8, height=8, mean=[0, 0]), spec([1, 8, 8, 3]), "mean has 2"),
        (ImagePreprocess(width=8, height=8, color="L", std=[1, 1, 1]), spec([1, 8, 8, 1]), "std"),
        (L8, spec([1, 8, 8, 1], "BYTES"), "BYTES cannot take an image"),
    ],
)
def test_plan_refuses_what_cannot_work(
    pre: ImagePreprocess, tensor: TensorSpec, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        plan_image(pre, tensor)


@pytest.mark.parametrize(
    ("tensor", "expected"),
    [
        (spec([1, 224, 224, 3]), (224, 224, "RGB", 1 / 255)),
        (spec([-1, 28, 32, 1]), (32, 28, "L", 1 / 255)),
        (spec([1, 8, 8, 1], "UINT8"), (8, 8, "L", 1.0)),  # raw pixels for an unquantised int
        (spec([1, 8, 8, 1], "INT8", (0.5, -3)), (8, 8, "L", 1 / 255)),
        (spec([1, 64]), None),
        (spec([1, -1, -1, 3]), None),
        (spec([1, 8, 8, 4]), None),
        (spec([2, 8, 8, 1]), None),
        (spec([1, 8, 8, 1], "BYTES"), None),
    ],
)
def test_default_image_preprocess_for_models_without_manifest(
    tensor: TensorSpec, expected: tuple[int, int, str, float] | None
) -> None:
    pre = default_image_preprocess(tensor)
    if expected is None:
        assert pre is None
    else:
        assert pre is not None
        assert (pre.width, pre.height, pre.color) == expected[:3]
        assert pre.scale == pytest.approx(expected[3])


# --- images to tensors ---------------------------------------------------------------------


def test_gray_png_to_float_tensor() -> None:
    out = image_to_tensor(encode(GRAY), plan_image(L8, spec([1, 8, 8, 1])))
    assert out.dtype == np.float32 and out.shape == (1, 8, 8, 1)
    np.testing.assert_allclose(out[0, :, :, 0], GRAY / 255.0, rtol=1e-6)


def test_invert_mean_std_per_channel_and_nchw() -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 100, 0
    pre = ImagePreprocess(
        width=4, height=4, color="RGB", invert=True, scale=1.0, mean=[0, 10, 20], std=[1, 5, 2]
    )
    out = image_to_tensor(encode(rgb), plan_image(pre, spec([1, 3, 4, 4])))
    assert out.shape == (1, 3, 4, 4)
    # inverted pixels 0, 155, 255 -> (p - mean) / std
    np.testing.assert_allclose(out[0, :, 0, 0], [0.0, (155 - 10) / 5, (255 - 20) / 2])


def test_int8_input_is_quantised_with_the_tensor_scale_and_zero_point() -> None:
    tensor = spec([1, 8, 8, 1], "INT8", (1 / 255, -128))
    out = image_to_tensor(encode(GRAY), plan_image(L8, tensor))
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out[0, :, :, 0], GRAY.astype(np.int16) - 128)


def test_uint8_input_and_flat_layout() -> None:
    tensor = spec([1, 64], "UINT8", (1 / 255, 0))
    out = image_to_tensor(encode(GRAY), plan_image(L8, tensor))
    assert out.dtype == np.uint8 and out.shape == (1, 64)
    np.testing.assert_array_equal(out[0], GRAY.ravel())


def test_large_jpeg_is_resized() -> None:
    red = np.zeros((300, 200, 3), np.uint8)
    red[..., 0] = 250
    pre = ImagePreprocess(width=8, height=8, color="RGB", scale=1.0)
    out = image_to_tensor(encode(red, "JPEG"), plan_image(pre, spec([1, 8, 8, 3])))
    assert out.shape == (1, 8, 8, 3)
    assert abs(float(out[..., 0].mean()) - 250) < 6 and float(out[..., 1:].max()) < 10


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA", "1", "I;16"])
def test_other_png_modes_are_converted(mode: str) -> None:
    image = Image.fromarray(GRAY).convert(mode if mode != "P" else "RGB")
    if mode == "P":
        image = image.convert("P")
        image.info["transparency"] = 0
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    out = image_to_tensor(buf.getvalue(), plan_image(L8, spec([1, 8, 8, 1])))
    assert out.shape == (1, 8, 8, 1) and out.dtype == np.float32


# --- bad images ----------------------------------------------------------------------------


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a size; its pixel data is that of a 1x1 image."""
    data = bytearray(encode(np.zeros((1, 1), np.uint8)))
    ihdr = 8 + 8  # signature, then length and type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def _truncated(fmt: str) -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(noise, fmt)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "body is not a JPEG or PNG image"),
        (b"hello, world", "body is not a JPEG or PNG image"),
        (encode(GRAY, "GIF"), "body is not a JPEG or PNG image"),
        (encode(GRAY, "BMP"), "body is not a JPEG or PNG image"),
        (_truncated("PNG"), "not a valid PNG image"),
        (_truncated("JPEG"), "not a valid JPEG image"),
        (_png_claiming(5000, 5000), "over the limit of 1000000 pixels"),
        (_png_claiming(30000, 30000), "image too large"),  # Pillow's own bomb guard
    ],
    ids=["empty", "text", "gif", "bmp", "cut-png", "cut-jpeg", "over-limit", "bomb"],
)
def test_bad_images_name_the_problem(body: bytes, message: str) -> None:
    plan = plan_image(L8, spec([1, 8, 8, 1]), max_pixels=1_000_000)
    with pytest.raises(InputError, match=message):
        image_to_tensor(body, plan)


# --- casting -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "dtype", "quant", "expected"),
    [
        ([0.5, -0.25], "float32", None, [0.5, -0.25]),
        ([0.5, -0.25], "float16", None, [0.5, -0.25]),
        ([0.0, 1.0, 2.0, -1.0], "int8", (1 / 127, 0), [0, 127, 127, -127]),
        ([0.0, 1.0, -5.0], "uint8", (1 / 255, 0), [0, 255, 0]),
        ([0.5, 0.51, 1.49], "int8", (1.0, 10), [10, 11, 11]),  # round half to even
        ([300.0, -3.0], "uint8", None, [255, 0]),
        ([0.0, 2.0], "bool", None, [False, True]),
    ],
)
def test_to_dtype(
    values: list[float], dtype: str, quant: tuple[float, int] | None, expected: list[float]
) -> None:
    q = Quantization(scale=quant[0], zero_point=quant[1]) if quant else None
    out = to_dtype(np.asarray(values, np.float32), np.dtype(dtype), q)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, np.asarray(expected, dtype))


# --- client tensors ------------------------------------------------------------------------

SPECS = [spec([1, 8, 8, 1]), TensorSpec(name="k", shape=[-1], datatype="INT32")]


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        (
            {"x": np.zeros((1, 8, 8), np.float32)},
            "input 'x': expected shape [1,8,8,1], got [1,8,8]",
        ),
        ({"x": np.zeros((1, 8, 8, 1), np.int64)}, "input 'x': expected FP32, got INT64"),
        ({}, "missing input 'x'; missing input 'k'"),
        ({"y": np.zeros(1, np.float32)}, "unknown input 'y'"),
        ({"x": np.zeros((1, 8, 8, 1), "U3")}, "input 'x': expected FP32, got BYTES"),
    ],
)
def test_validate_inputs_names_the_problem(tensors: dict[str, np.ndarray], message: str) -> None:
    full = {"k": np.zeros(3, np.int32), **tensors} if tensors else {}
    with pytest.raises(InputError) as info:
        validate_inputs(SPECS, full)
    assert message in str(info.value)


def test_validate_inputs_accepts_dynamic_dimensions() -> None:
    validate_inputs(SPECS, {"x": np.zeros((1, 8, 8, 1), np.float32), "k": np.zeros(7, np.int32)})
