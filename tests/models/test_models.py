"""The committed models agree with their manifests, and the manifests' numbers are true.

Runs the artifacts in the runtimes a device uses (LiteRT, ONNX Runtime), never TensorFlow: the
tensor specs must be what the runtime reports for the file, the recorded test accuracy must come
out again on ``testset.npz``, and the golden PNGs must give their labels through the manifest's
own pre-processing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

from protocol.manifest import ImagePreprocess, ModelManifest, TensorSpec
from protocol.tensors import NUMPY_BY_DATATYPE

MODELS = Path(__file__).resolve().parents[2] / "models"
DIGITS = MODELS / "digits"
MANIFESTS = {
    "digits-edge": DIGITS / "edge_fp32.json",
    "digits-edge-int8": DIGITS / "edge_int8.json",
    "digits-cloud": DIGITS / "cloud.json",
    "convnet224": MODELS / "bench" / "convnet224.json",
}
DIGITS_MODELS = ["digits-edge", "digits-edge-int8", "digits-cloud"]


def manifest(name: str) -> ModelManifest:
    return ModelManifest.load(MANIFESTS[name])


def artifact_path(m: ModelManifest, name: str) -> Path:
    (art,) = m.artifacts.values()
    return MANIFESTS[name].parent / art.path


class Runner:
    """One artifact in its runtime: float input in, float output (dequantised) out."""

    def __init__(self, path: Path) -> None:
        self.onnx = path.suffix == ".onnx"
        if self.onnx:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            self.session = ort.InferenceSession(str(path), options, ["CPUExecutionProvider"])
        else:
            self.interpreter = Interpreter(model_path=str(path), num_threads=1)
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]

    def specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        if self.onnx:
            return [onnx_spec(a) for a in self.session.get_inputs()], [
                onnx_spec(a) for a in self.session.get_outputs()
            ]
        interp = self.interpreter
        return [litert_spec(d) for d in interp.get_input_details()], [
            litert_spec(d) for d in interp.get_output_details()
        ]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Outputs for a batch ``x`` (float, preprocessed); LiteRT runs it image by image."""
        if self.onnx:
            return np.asarray(self.session.run(None, {"input": x})[0])
        return np.concatenate([self._one(image[np.newaxis]) for image in x])

    def _one(self, x: np.ndarray) -> np.ndarray:
        scale, zero = self.input["quantization"]
        if scale:
            info = np.iinfo(self.input["dtype"])
            x = np.clip(np.rint(x / scale + zero), info.min, info.max)
        self.interpreter.set_tensor(self.input["index"], x.astype(self.input["dtype"]))
        self.interpreter.invoke()
        y = np.asarray(self.interpreter.get_tensor(self.output["index"]))
        scale, zero = self.output["quantization"]
        return (y.astype(np.float32) - zero) * scale if scale else y.astype(np.float32)


def litert_spec(detail: dict[str, Any]) -> TensorSpec:
    scale, zero = detail["quantization"]
    return TensorSpec.model_validate(
        {
            "name": detail["name"],
            "shape": [int(d) for d in detail["shape_signature"]],
            "datatype": next(
                k for k, v in NUMPY_BY_DATATYPE.items() if v == np.dtype(detail["dtype"]).name
            ),
            "quantization": {"scale": scale, "zero_point": zero} if scale else None,
        }
    )


def onnx_spec(arg: Any) -> TensorSpec:
    assert arg.type == "tensor(float)", arg.type
    shape = [d if isinstance(d, int) else -1 for d in arg.shape]
    return TensorSpec(name=arg.name, shape=shape, datatype="FP32")


def preprocess(m: ModelManifest, image: Image.Image) -> np.ndarray:
    """The manifest's image pre-processing, written out here independently of the agent's."""
    pre = m.preprocess
    assert isinstance(pre, ImagePreprocess)
    image = image.convert(pre.color).resize((pre.width, pre.height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32)
    if pre.color == "L":
        pixels = pixels[..., np.newaxis]
    mean = np.asarray(pre.mean, np.float32)
    std = np.asarray(pre.std, np.float32)
    return ((pixels * np.float32(pre.scale) - mean) / std)[np.newaxis]


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_loads_with_its_name(name: str) -> None:
    m = manifest(name)
    assert (m.name, m.version) == (name, "1.0.0")
    assert len(m.artifacts) == 1


@pytest.mark.parametrize("name", MANIFESTS)
def test_artifact_hash_and_size_match_the_file(name: str) -> None:
    m = manifest(name)
    (art,) = m.artifacts.values()
    data = artifact_path(m, name).read_bytes()
    assert art.size == len(data)
    assert art.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("name", MANIFESTS)
def test_target_matches_the_file_type(name: str) -> None:
    m = manifest(name)
    (target,) = m.artifacts
    assert target == ("onnx" if artifact_path(m, name).suffix == ".onnx" else "cpu")


@pytest.mark.parametrize("name", MANIFESTS)
def test_tensor_specs_are_what_the_runtime_reports(name: str) -> None:
    m = manifest(name)
    inputs, outputs = Runner(artifact_path(m, name)).specs()
    for recorded, actual in [
        *zip(m.inputs, inputs, strict=True),
        *zip(m.outputs, outputs, strict=True),
    ]:
        assert (recorded.name, recorded.shape, recorded.datatype) == (
            actual.name,
            actual.shape,
            actual.datatype,
        )
        if actual.quantization is None:
            assert recorded.quantization is None
        else:
            assert recorded.quantization is not None
            assert recorded.quantization.zero_point == actual.quantization.zero_point
            assert recorded.quantization.scale == pytest.approx(actual.quantization.scale)


def test_digits_models_share_one_input_contract() -> None:
    """Edge and cloud take the same images the same way, so a hard case can be sent on as is."""
    specs = [manifest(name).inputs[0] for name in DIGITS_MODELS]
    assert {s.name for s in specs} == {"input"}
    assert {tuple(s.shape[1:]) for s in specs} == {(8, 8, 1)}
    preprocesses = [manifest(name).preprocess for name in DIGITS_MODELS]
    assert all(p == preprocesses[0] for p in preprocesses)
    assert manifest("digits-cloud").inputs[0].shape[0] == -1  # any batch size in the cloud


def test_testset_is_the_recorded_split() -> None:
    with np.load(DIGITS / "testset.npz") as data:
        images, labels = data["images"], data["labels"]
    assert images.dtype == np.uint8 and images.ndim == 3 and images.shape[1:] == (8, 8)
    assert images.max() == 255  # 0..16 of the data set mapped onto the full 8-bit range
    assert labels.shape == (len(images),) and set(labels.tolist()) == set(range(10))
    for name in DIGITS_MODELS:
        assert manifest(name).metrics["test_samples"] == len(images)


def test_labels_file_matches_the_manifests() -> None:
    labels = (DIGITS / "labels.txt").read_text().split()
    assert labels == [str(d) for d in range(10)]
    for name in DIGITS_MODELS:
        assert manifest(name).labels == labels


@pytest.mark.parametrize("name", DIGITS_MODELS)
def test_recorded_accuracy_is_reproduced_on_the_test_set(name: str) -> None:
    m = manifest(name)
    with np.load(DIGITS / "testset.npz") as data:
        images, labels = data["images"], data["labels"]
    x = images[..., np.newaxis].astype(np.float32) / np.float32(255)
    predicted = Runner(artifact_path(m, name))(x).argmax(axis=1)
    accuracy = float(np.mean(predicted == labels))
    assert accuracy == pytest.approx(m.metrics["test_accuracy"], abs=0.005)
    assert accuracy > 0.95


@pytest.mark.parametrize("name", DIGITS_MODELS)
def test_golden_images_give_their_labels(name: str) -> None:
    m = manifest(name)
    assert len(m.golden) >= 3
    runner = Runner(artifact_path(m, name))
    for golden in m.golden:
        with Image.open(MANIFESTS[name].parent / golden.input) as image:
            assert image.format == "PNG"
            x = preprocess(m, image)
        index = int(runner(x)[0].argmax())
        assert (m.labels[index], index) == (golden.expected_label, golden.expected_index)


def test_digits_outputs_are_probabilities() -> None:
    with np.load(DIGITS / "testset.npz") as data:
        x = data["images"][:20, ..., np.newaxis].astype(np.float32) / np.float32(255)
    for name in DIGITS_MODELS:
        m = manifest(name)
        y = Runner(artifact_path(m, name))(x)
        assert y.shape == (20, 10)
        assert np.allclose(y.sum(axis=1), 1.0, atol=0.03), name  # int8 rounds each of ten


def test_convnet_answer_depends_on_its_input() -> None:
    """Random weights, but not a constant: the top-5 changes with the image."""
    m = manifest("convnet224")
    runner = Runner(artifact_path(m, "convnet224"))
    rng = np.random.default_rng(7)
    tops = set()
    for _ in range(4):
        pixels = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
        logits = runner(preprocess(m, Image.fromarray(pixels)))[0]
        assert logits.shape == (len(m.labels),)
        tops.add(tuple(np.argsort(logits)[-5:]))
    assert len(tops) > 1


def test_committed_models_stay_small() -> None:
    """A clone carries every model: the benchmark ones (convnet224 in two formats, the 2 MB rollout
    artifact) are most of it, and the budget is what they need, not a round number to grow into."""
    files = [p for p in MODELS.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert sum(p.stat().st_size for p in files) < 16_000_000
    assert (DIGITS / "edge_fp32.tflite").stat().st_size < 100_000
