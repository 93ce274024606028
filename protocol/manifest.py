"""The model manifest: what a model takes, what it returns, and how to get there.

A manifest travels with every model release. The agent drives pre- and post-processing from
it; the control plane validates artifacts against it. It is a wire document, so unknown keys
are ignored (a newer control plane may add fields), but every known field is validated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocol import SCHEMA_VERSION
from protocol.errors import InvalidMessage
from protocol.tensors import Datatype

Target = Literal["cpu", "edgetpu", "onnx"]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Quantization(_Doc):
    """Affine quantisation: ``real = scale * (quantised - zero_point)``."""

    scale: float = Field(gt=0)
    zero_point: int


class TensorSpec(_Doc):
    name: str
    shape: list[int] = Field(description="Dimensions; -1 marks a dynamic one (the batch).")
    datatype: Datatype
    quantization: Quantization | None = None

    @field_validator("shape")
    @classmethod
    def _dims(cls, shape: list[int]) -> list[int]:
        if any(d < -1 or d == 0 for d in shape):
            raise ValueError(f"shape {shape}: each dimension is a positive size or -1")
        return shape


class ImagePreprocess(_Doc):
    """Decode an image, resize it, then ``value = (pixel * scale - mean) / std`` per channel.

    ``pixel`` is 0..255. The result is quantised to the input tensor's scale and zero point when
    the tensor is an integer type.
    """

    type: Literal["image"] = "image"
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    color: Literal["L", "RGB"] = "RGB"
    resize: Literal["bilinear", "nearest"] = "bilinear"
    scale: float = 1.0 / 255.0
    mean: list[float] = Field(default_factory=lambda: [0.0])
    std: list[float] = Field(default_factory=lambda: [1.0])
    invert: bool = Field(False, description="Use 255 - pixel (dark strokes on light paper).")

    @field_validator("std")
    @classmethod
    def _nonzero(cls, std: list[float]) -> list[float]:
        if any(s == 0 for s in std):
            raise ValueError("std must not contain 0")
        return std


class RawPreprocess(_Doc):
    """Tensors go to the model as the client sent them."""

    type: Literal["raw"] = "raw"


Preprocess = Annotated[ImagePreprocess | RawPreprocess, Field(discriminator="type")]


class ClassificationPostprocess(_Doc):
    """Top-k classes with labels from the first (or the named) output."""

    type: Literal["classification"] = "classification"
    top_k: int = Field(5, gt=0)
    softmax: bool = Field(
        False, description="Apply softmax to the output (the model gives logits)."
    )
    output: str | None = None


class RawPostprocess(_Doc):
    """Outputs are returned as tensors."""

    type: Literal["raw"] = "raw"


Postprocess = Annotated[ClassificationPostprocess | RawPostprocess, Field(discriminator="type")]


class Artifact(_Doc):
    """One file of a release for one target, content-addressed by SHA-256."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class GoldenExample(_Doc):
    """An input with its expected answer, used to smoke-test a model before it serves."""

    input: str = Field(description="Path of an input file relative to the manifest, or base64.")
    expected_label: str | None = None
    expected_index: int | None = None


class ModelManifest(_Doc):
    schema_version: int = SCHEMA_VERSION
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    version: str = Field(min_length=1, max_length=64)
    description: str = ""
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    preprocess: Preprocess = Field(default_factory=RawPreprocess)
    postprocess: Postprocess = Field(default_factory=RawPostprocess)
    labels: list[str] = Field(default_factory=list)
    artifacts: dict[Target, Artifact] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Measured quality, e.g. test_accuracy."
    )
    dataset: str | None = None
    golden: list[GoldenExample] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> ModelManifest:
        if isinstance(self.postprocess, ClassificationPostprocess) and self.labels:
            out = self.outputs[0]
            if self.postprocess.output is not None:
                named = [o for o in self.outputs if o.name == self.postprocess.output]
                if not named:
                    raise ValueError(f"postprocess.output {self.postprocess.output!r} is no output")
                out = named[0]
            classes = out.shape[-1]
            if classes != -1 and classes != len(self.labels):
                raise ValueError(
                    f"{len(self.labels)} labels for an output of {classes} classes ({out.name})"
                )
        return self

    @classmethod
    def load(cls, path: str | Path) -> ModelManifest:
        """Read a manifest file, raising :class:`InvalidMessage` with the file and the problem."""
        try:
            return cls.model_validate_json(Path(path).read_bytes())
        except OSError as exc:
            raise InvalidMessage(f"cannot read manifest {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise InvalidMessage(f"invalid manifest {path}: {exc}") from None

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
