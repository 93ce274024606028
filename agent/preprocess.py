"""Pre-processing: from an image or a client's tensors to exactly what the model's input takes.

Pure functions driven by the manifest (:class:`protocol.manifest.ImagePreprocess`) and the
model's input tensor. An image is decoded (JPEG or PNG only, with a pixel limit against
decompression bombs), converted to L or RGB, resized, normalised as
``value = (pixel * scale - mean) / std``, laid out as the tensor wants (NHWC, NCHW or flat) and cast
to its type: floats as they are, integer tensors quantised with the tensor's own scale and zero
point. :func:`plan_image` checks everything that can be checked once, at load, so the per-request
path only computes. Bad input raises :class:`agent.errors.InputError` naming the problem.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np
from PIL import Image, UnidentifiedImageError

from agent.errors import InputError
from protocol.manifest import ImagePreprocess, Quantization, TensorSpec
from protocol.tensors import DATATYPE_BY_NUMPY, NUMPY_BY_DATATYPE

DEFAULT_MAX_PIXELS = 40_000_000
"""Largest image (width x height) decoded by default: a 40 MP photo, about 120 MB as RGB."""

Layout = Literal["nhwc", "nchw", "flat"]

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}


@dataclass(frozen=True)
class ImagePlan:
    """How images become one model input, settled at load (see :func:`plan_image`)."""

    input: TensorSpec
    width: int
    height: int
    color: Literal["L", "RGB"]
    resample: Image.Resampling
    invert: bool
    scale: float
    mean: np.ndarray  # float32, one value per channel (or one for all)
    std: np.ndarray
    layout: Layout
    shape: tuple[int, ...]  # the tensor's shape for one image (batch 1)
    dtype: np.dtype[np.generic]
    max_pixels: int = DEFAULT_MAX_PIXELS


def plan_image(
    pre: ImagePreprocess, spec: TensorSpec, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> ImagePlan:
    """Settle how images feed ``spec``; ValueError naming the problem if they cannot."""
    channels = 1 if pre.color == "L" else 3
    for field, values in (("mean", pre.mean), ("std", pre.std)):
        if len(values) not in (1, channels):
            raise ValueError(
                f"preprocess.{field} has {len(values)} values for {pre.color} images "
                f"({channels} channel{'s' if channels > 1 else ''})"
            )
    if spec.datatype not in NUMPY_BY_DATATYPE or spec.datatype == "BYTES":
        raise ValueError(f"input {spec.name!r} of type {spec.datatype} cannot take an image")
    layout, shape = _layout(spec.shape, pre.height, pre.width, channels)
    if layout is None:
        raise ValueError(
            f"input {spec.name!r} of shape {fmt_shape(spec.shape)} cannot take a "
            f"{pre.width}x{pre.height} {pre.color} image"
        )
    return ImagePlan(
        input=spec,
        width=pre.width,
        height=pre.height,
        color=pre.color,
        resample=_RESAMPLE[pre.resize],
        invert=pre.invert,
        scale=pre.scale,
        mean=np.asarray(pre.mean, dtype=np.float32),
        std=np.asarray(pre.std, dtype=np.float32),
        layout=layout,
        shape=shape,
        dtype=np.dtype(NUMPY_BY_DATATYPE[spec.datatype]),
        max_pixels=max_pixels,
    )


def _layout(
    dims: Sequence[int], height: int, width: int, channels: int
) -> tuple[Layout | None, tuple[int, ...]]:
    def fits(actual: Sequence[int], wanted: Sequence[int]) -> bool:
        return len(actual) == len(wanted) and all(
            a in (-1, w) for a, w in zip(actual, wanted, strict=False)
        )

    if len(dims) == 4 and dims[0] in (-1, 1):
        if fits(dims[1:], (height, width, channels)):
            return "nhwc", (1, height, width, channels)
        if fits(dims[1:], (channels, height, width)):
            return "nchw", (1, channels, height, width)
    # Anything else with the right number of values (e.g. [1, 64] for an 8x8 image): reshape.
    shape = tuple(1 if i == 0 and d == -1 else d for i, d in enumerate(dims))
    if shape and all(d > 0 for d in shape) and math.prod(shape) == height * width * channels:
        return "flat", shape
    return None, ()


def default_image_preprocess(spec: TensorSpec) -> ImagePreprocess | None:
    """Image pre-processing for a model without a manifest, if its input looks like an image.

    An NHWC input with 1 or 3 channels and fixed height and width takes images resized to its
    size, with pixels scaled by 1/255 (raw 0..255 for an integer input without quantisation).
    """
    dims = spec.shape
    if len(dims) != 4 or dims[0] not in (-1, 1) or dims[3] not in (1, 3):
        return None
    if dims[1] <= 0 or dims[2] <= 0 or spec.datatype in ("BYTES", "BOOL"):
        return None
    integer = spec.datatype.startswith(("INT", "UINT"))
    return ImagePreprocess(
        width=dims[2],
        height=dims[1],
        color="L" if dims[3] == 1 else "RGB",
        scale=1.0 if integer and spec.quantization is None else 1.0 / 255.0,
    )


def image_to_tensor(data: bytes, plan: ImagePlan) -> np.ndarray:
    """Decode, resize, normalise and cast an image to the planned input tensor (batch of one)."""
    pixels = decode_image(data, plan)
    values = normalise(pixels, plan)
    if plan.layout == "nchw":
        values = values.transpose(2, 0, 1)
    return to_dtype(values.reshape(plan.shape), plan.dtype, plan.input.quantization)


def decode_image(data: bytes, plan: ImagePlan) -> np.ndarray:
    """JPEG/PNG bytes to uint8 pixels of shape (height, width, channels) at the planned size."""
    try:
        image = Image.open(io.BytesIO(data), formats=("JPEG", "PNG"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"image too large: {exc}") from None
    except UnidentifiedImageError:
        raise InputError("body is not a JPEG or PNG image") from None
    except Exception as exc:  # Pillow's zoo: SyntaxError, struct.error, OSError ...
        raise InputError(f"body is not a JPEG or PNG image: {exc}") from None
    with image:
        if image.width * image.height > plan.max_pixels:
            raise InputError(
                f"image of {image.width}x{image.height} pixels is over the limit of "
                f"{plan.max_pixels} pixels"
            )
        size = (plan.width, plan.height)
        try:
            image.draft(plan.color, size)  # JPEG only: decode at a reduced scale when possible
            source: Image.Image = image
            if source.mode in ("P", "PA"):  # palette with transparency: via RGBA, warning-free
                source = source.convert("RGBA")
            converted = source.convert(plan.color)
            if converted.size != size:
                converted = converted.resize(size, plan.resample)
            pixels = np.asarray(converted)
        except Exception as exc:  # truncated or corrupt data is found while decoding
            raise InputError(f"body is not a valid {image.format} image: {exc}") from None
    return pixels[:, :, np.newaxis] if pixels.ndim == 2 else pixels


def normalise(pixels: np.ndarray, plan: ImagePlan) -> np.ndarray:
    """``(pixel * scale - mean) / std`` per channel (of ``255 - pixel`` if inverting), float32."""
    values = pixels.astype(np.float32)
    if plan.invert:
        np.subtract(255.0, values, out=values)
    values *= np.float32(plan.scale)
    if plan.mean.any():
        values -= plan.mean
    if (plan.std != 1).any():
        values /= plan.std
    return values


def to_dtype(
    values: np.ndarray, dtype: np.dtype[np.generic], quant: Quantization | None
) -> np.ndarray:
    """Cast real values to a tensor type: quantise (``round(v/scale + zero_point)``, clipped)."""
    if dtype.kind == "f":
        return values.astype(dtype, copy=False)
    if dtype.kind in "iu":
        if quant is not None:
            values = values / np.float32(quant.scale) + np.float32(quant.zero_point)
        info = np.iinfo(dtype)  # type: ignore[type-var]
        return cast(np.ndarray, np.clip(np.rint(values), info.min, info.max).astype(dtype))
    if dtype.kind == "b":
        return cast(np.ndarray, values != 0)
    raise InputError(f"cannot convert values to a {dtype.name} tensor")


def validate_inputs(specs: Sequence[TensorSpec], tensors: Mapping[str, np.ndarray]) -> None:
    """Check a client's tensors against the model's inputs; InputError naming every problem."""
    problems: list[str] = []
    known = {spec.name for spec in specs}
    problems += [f"unknown input {name!r}" for name in tensors if name not in known]
    for spec in specs:
        tensor = tensors.get(spec.name)
        if tensor is None:
            problems.append(f"missing input {spec.name!r}")
            continue
        got = DATATYPE_BY_NUMPY.get(
            tensor.dtype.name, "BYTES" if tensor.dtype.kind in "SUO" else ""
        )
        if got != spec.datatype:
            problems.append(
                f"input {spec.name!r}: expected {spec.datatype}, got {got or tensor.dtype.name}"
            )
        if not shape_matches(spec.shape, tensor.shape):
            problems.append(
                f"input {spec.name!r}: expected shape {fmt_shape(spec.shape)}, "
                f"got {fmt_shape(tensor.shape)}"
            )
    if problems:
        raise InputError("; ".join(problems))


def shape_matches(declared: Sequence[int], actual: Sequence[int]) -> bool:
    """Whether a concrete shape fits a declared one (``-1`` matches any size)."""
    return len(declared) == len(actual) and all(
        d in (-1, a) for d, a in zip(declared, actual, strict=False)
    )


def fmt_shape(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"
