from __future__ import annotations

import asyncio
import hashlib
import io
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agent.errors import InputError, ModelLoadError, RuntimeBackendError
from agent.inference import ServedModel, model_name, spec_mismatches
from agent.runtimes.memory import MemoryRuntime
from protocol.manifest import ModelManifest, TensorSpec
from protocol.messages import TensorData, TensorDigest

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "models" / "digits"
BENCH = ROOT / "models" / "bench"

IMAGE = TensorSpec(name="image", shape=[1, 4, 4, 1], datatype="FP32")
PROBS = TensorSpec(name="probs", shape=[1, 3], datatype="FP32")


def png(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def brightness_model(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Class 0 for dark images, 2 for bright ones: a model whose answer a test can predict."""
    mean = float(inputs["image"].mean())
    probs = np.array([[1 - mean, 0.0, mean]], np.float32)
    return {"probs": probs}


def served(
    model: object = brightness_model,
    *,
    manifest: ModelManifest | None = None,
    inputs: list[TensorSpec] | None = None,
    outputs: list[TensorSpec] | None = None,
    max_output_values: int = 4096,
) -> ServedModel:
    runtime = MemoryRuntime(inputs or [IMAGE], outputs or [PROBS], model)  # type: ignore[arg-type]
    return ServedModel.from_runtime(
        runtime,
        manifest=manifest,
        name="tiny model",
        artifact_sha256="ab" * 32,
        platform="memory",
        max_output_values=max_output_values,
    )


def classifier_manifest(**changes: object) -> ModelManifest:
    doc: dict[str, object] = {
        "name": "tiny",
        "version": "2.0.0",
        "inputs": [IMAGE.model_dump()],
        "outputs": [PROBS.model_dump()],
        "preprocess": {"type": "image", "width": 4, "height": 4, "color": "L"},
        "postprocess": {"type": "classification", "top_k": 2},
        "labels": ["dark", "grey", "bright"],
    }
    doc.update(changes)
    return ModelManifest.model_validate(doc)


# --- the core, on the in-memory runtime ----------------------------------------------------


async def test_without_manifest_a_model_is_raw_tensors_named_after_its_file() -> None:
    model = served()
    try:
        assert (model.name, model.version, model.backend) == ("tiny_model", "0", "memory")
        assert model.metadata() == {
            "name": "tiny_model",
            "versions": ["0"],
            "platform": "memory",
            "inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 4, 4, 1]}],
            "outputs": [{"name": "probs", "datatype": "FP32", "shape": [1, 3]}],
        }
        out = await model.infer({"image": np.ones((1, 4, 4, 1), np.float32)}, request_id="r1")
        np.testing.assert_array_equal(out.outputs["probs"], [[0.0, 0.0, 1.0]])
        result = out.result
        assert (result.model, result.model_version, result.request_id) == ("tiny_model", "0", "r1")
        assert result.artifact_sha256 == "ab" * 32 and result.latency_ms >= 0
        assert result.classes is None
        assert result.outputs == [
            TensorData(name="probs", shape=[1, 3], datatype="FP32", data=[0.0, 0.0, 1.0])
        ]
    finally:
        model.close()


async def test_without_manifest_an_image_like_input_takes_images_scaled_by_1_255() -> None:
    model = served()
    try:
        assert model.accepts_images
        white = await model.infer_image(png(np.full((10, 7), 255, np.uint8)))
        np.testing.assert_allclose(white.outputs["probs"], [[0.0, 0.0, 1.0]])
    finally:
        model.close()


async def test_a_raw_model_that_is_no_image_model_says_so() -> None:
    flat = TensorSpec(name="x", shape=[1, 3], datatype="FP32")
    model = served(lambda inputs: {"probs": inputs["x"]}, inputs=[flat])
    try:
        assert not model.accepts_images
        with pytest.raises(InputError, match=r"takes raw tensors \('x' FP32 \[1,3\]\), not images"):
            await model.infer_image(png(np.zeros((4, 4), np.uint8)))
    finally:
        model.close()


async def test_a_classifier_manifest_gives_labelled_top_k() -> None:
    model = served(manifest=classifier_manifest())
    try:
        assert (model.name, model.version) == ("tiny", "2.0.0")
        grey = np.full((4, 4), 64, np.uint8)
        out = await model.infer_image(png(grey))
        assert out.result.outputs is None
        assert out.result.classes is not None
        assert [(c.label, c.index) for c in out.result.classes] == [("dark", 0), ("bright", 2)]
        assert out.result.classes[0].score == pytest.approx(1 - 64 / 255, abs=1e-6)
    finally:
        model.close()


async def test_bad_input_is_an_input_error_naming_it() -> None:
    model = served(manifest=classifier_manifest())
    try:
        with pytest.raises(
            InputError, match=r"input 'image': expected shape \[1,4,4,1\], got \[4,4\]"
        ):
            await model.infer({"image": np.zeros((4, 4), np.float32)})
        with pytest.raises(InputError, match="body is not a JPEG or PNG image"):
            await model.infer_image(b"GIF89a")
        ok = await model.infer({"image": np.zeros((1, 4, 4, 1), np.float32)})
        assert ok.result.classes is not None  # still serving
    finally:
        model.close()


async def test_large_raw_outputs_are_digested() -> None:
    big = TensorSpec(name="features", shape=[1, 100], datatype="FP32")
    features = np.arange(100, dtype=np.float32).reshape(1, 100)
    model = served(lambda inputs: {"features": features}, outputs=[big], max_output_values=99)
    try:
        out = await model.infer({"image": np.zeros((1, 4, 4, 1), np.float32)})
        (kept,) = out.result.outputs or []
        assert isinstance(kept, TensorDigest)
        assert kept.sha256 == hashlib.sha256(features.tobytes()).hexdigest()
        assert out.outputs["features"] is features  # the caller still gets the whole tensor
    finally:
        model.close()


async def test_inference_runs_on_one_worker_thread_without_blocking_the_loop() -> None:
    release = threading.Event()
    threads: set[str] = set()

    def slow(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        threads.add(threading.current_thread().name)
        assert release.wait(10), "the event loop was blocked"
        return brightness_model(inputs)

    model = served(slow)
    try:
        image = {"image": np.zeros((1, 4, 4, 1), np.float32)}
        pending = [asyncio.create_task(model.infer(image)) for _ in range(20)]
        await asyncio.sleep(0.01)  # the loop runs while the first inference waits in the worker
        assert not any(task.done() for task in pending)
        release.set()
        # MemoryRuntime raises if two threads use it at once: all 20 succeed only if serialised.
        results = await asyncio.gather(*pending)
        assert len({r.result.result_id for r in results}) == 20
        assert len(threads) == 1 and threads.pop().startswith("infer-tiny_model")
    finally:
        model.close()


async def test_backend_failures_and_closed_models_are_backend_errors() -> None:
    def broken(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise OSError("accelerator fell off the bus")

    model = served(broken)
    with pytest.raises(RuntimeBackendError, match="accelerator fell off the bus"):
        await model.infer({"image": np.zeros((1, 4, 4, 1), np.float32)})
    model.close()
    model.close()  # idempotent
    with pytest.raises(RuntimeBackendError, match="'tiny_model' is closed"):
        await model.infer({"image": np.zeros((1, 4, 4, 1), np.float32)})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"inputs": [{"name": "img", "shape": [1, 4, 4, 1], "datatype": "FP32"}]},
            "input 'img' is not in the model \\(it has 'image'\\); model input 'image' is not in",
        ),
        (
            {"inputs": [{"name": "image", "shape": [1, 4, 4, 1], "datatype": "UINT8"}]},
            "input 'image': manifest says UINT8, model has FP32",
        ),
        (
            {"inputs": [{"name": "image", "shape": [1, 8, 8, 1], "datatype": "FP32"}]},
            r"input 'image': manifest says shape \[1,8,8,1\], model has \[1,4,4,1\]",
        ),
        (
            {
                "outputs": [
                    {
                        "name": "probs",
                        "shape": [1, 3],
                        "datatype": "FP32",
                        "quantization": {"scale": 0.5, "zero_point": 1},
                    }
                ]
            },
            "output 'probs': manifest says quantisation scale 0.5 zero point 1, model has none",
        ),
        (
            {"preprocess": {"type": "image", "width": 4, "height": 4, "color": "RGB"}},
            r"shape \[1,4,4,1\] cannot take a 4x4 RGB image",
        ),
    ],
)
def test_a_manifest_that_does_not_match_the_model_is_refused(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ModelLoadError, match="model 'tiny'.*" + message):
        served(manifest=classifier_manifest(**changes))


def test_spec_mismatches_accept_dynamic_dimensions_on_either_side() -> None:
    declared = [TensorSpec(name="x", shape=[-1, 8], datatype="FP32")]
    actual = [TensorSpec(name="x", shape=[1, -1], datatype="FP32")]
    assert spec_mismatches("input", declared, actual) == []


@pytest.mark.parametrize(
    ("stem", "name"),
    [
        ("convnet224", "convnet224"),
        ("my model (v2)", "my_model__v2_"),
        ("", "model"),
        ("x" * 80, "x" * 64),
    ],
)
def test_model_name_from_a_file_stem(stem: str, name: str) -> None:
    assert model_name(stem) == name


# --- the real models -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def testset() -> Iterator[tuple[np.ndarray, np.ndarray]]:
    with np.load(DIGITS / "testset.npz") as data:
        yield data["images"][:120], data["labels"][:120]


async def _accuracy(model: ServedModel, testset: tuple[np.ndarray, np.ndarray]) -> float:
    images, labels = testset
    correct = 0
    for image, label in zip(images, labels, strict=True):
        out = await model.infer_image(png(image))
        assert out.result.classes is not None and len(out.result.classes) == 3
        correct += out.result.classes[0].label == str(int(label))
    return correct / len(labels)


@pytest.mark.parametrize("stem", ["edge_fp32", "edge_int8"])
async def test_digits_from_png_images_get_the_right_label(
    stem: str, testset: tuple[np.ndarray, np.ndarray]
) -> None:
    path = DIGITS / f"{stem}.tflite"
    manifest = ModelManifest.load(DIGITS / f"{stem}.json")
    model = ServedModel.load(path, manifest=manifest, priority=["litert"], threads=1)
    try:
        assert (model.name, model.version, model.backend) == (manifest.name, "1.0.0", "litert")
        assert model.fallback_reason is None
        assert model.artifact_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert model.metadata()["platform"] == "tflite"
        assert await _accuracy(model, testset) >= 0.9
    finally:
        model.close()


async def test_int8_model_takes_quantised_tensors() -> None:
    manifest = ModelManifest.load(DIGITS / "edge_int8.json")
    model = ServedModel.load(DIGITS / "edge_int8.tflite", manifest=manifest, threads=1)
    try:
        (x,) = model.inputs
        assert x.datatype in ("INT8", "UINT8") and x.quantization is not None
        zero = np.full((1, 8, 8, 1), x.quantization.zero_point, np.dtype(x.datatype.lower()))
        out = await model.infer({x.name: zero})
        assert out.result.classes is not None
        with pytest.raises(InputError, match=f"input '{x.name}': expected {x.datatype}, got FP32"):
            await model.infer({x.name: np.zeros((1, 8, 8, 1), np.float32)})
    finally:
        model.close()


async def test_any_tflite_without_manifest_is_served_raw() -> None:
    path = BENCH / "convnet224.tflite"
    model = ServedModel.load(path, manifest=None, threads=1, max_output_values=10)
    try:
        assert (model.name, model.version) == ("convnet224", "0")
        meta = model.metadata()
        (x,) = meta["inputs"]
        assert x["shape"][1:] == [224, 224, 3]
        tensor = np.zeros([1, 224, 224, 3], np.dtype(model.inputs[0].datatype.lower()))
        out = await model.infer({x["name"]: tensor})
        assert out.result.classes is None and out.result.outputs is not None
        assert all(isinstance(o, TensorDigest) for o in out.result.outputs)  # over 10 values
        photo = np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)
        from_image = await model.infer_image(png(photo, "JPEG"))
        assert set(from_image.outputs) == set(out.outputs)
    finally:
        model.close()


async def test_benchmark_model_with_its_manifest_classifies_rgb_jpegs() -> None:
    manifest = ModelManifest.load(BENCH / "convnet224.json")
    model = ServedModel.load(BENCH / "convnet224.tflite", manifest=manifest, threads=1)
    try:
        photo = np.random.default_rng(2).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        out = await model.infer_image(png(photo, "JPEG"), request_id="cam-1")
        classes = out.result.classes
        assert classes is not None and len(classes) == 5
        assert all(c.label == manifest.labels[c.index] for c in classes)
        assert [c.score for c in classes] == sorted((c.score for c in classes), reverse=True)
        assert out.result.request_id == "cam-1" and out.result.outputs is None
    finally:
        model.close()


async def test_onnx_cloud_model_serves_batches_and_images(
    testset: tuple[np.ndarray, np.ndarray],
) -> None:
    manifest = ModelManifest.load(DIGITS / "cloud.json")
    model = ServedModel.load(DIGITS / "cloud.onnx", manifest=manifest, threads=1)
    try:
        assert (model.backend, model.metadata()["platform"]) == ("onnxruntime", "onnx")
        images, labels = testset
        batch = (images[:5, :, :, np.newaxis] / 255.0).astype(np.float32)
        out = await model.infer({model.inputs[0].name: batch})
        assert out.result.classes is None  # a batch keeps its raw outputs
        (probs,) = [o for o in out.result.outputs or [] if o.name == model.outputs[0].name]
        assert isinstance(probs, TensorData) and probs.shape == [5, 10]
        assert await _accuracy(model, testset) >= 0.9
    finally:
        model.close()


async def test_missing_edge_tpu_falls_back_to_litert_and_says_why() -> None:
    manifest = ModelManifest.load(DIGITS / "edge_fp32.json")
    model = ServedModel.load(
        DIGITS / "edge_fp32.tflite", manifest=manifest, priority=["edgetpu", "litert"], threads=1
    )
    try:
        assert model.backend == "litert"
        assert model.fallback_reason is not None
        assert model.fallback_reason.startswith("edgetpu: libedgetpu.so.1 not found")
        assert model.fallback_reason.endswith("; using litert")
        golden = sorted((DIGITS / "golden").glob("*.png"))
        assert golden
        out = await model.infer_image(golden[0].read_bytes())
        assert out.result.backend == "litert"
    finally:
        model.close()


def test_a_real_model_with_the_wrong_manifest_is_refused() -> None:
    manifest = ModelManifest.load(DIGITS / "edge_int8.json")
    with pytest.raises(ModelLoadError, match="does not match its manifest"):
        ServedModel.load(DIGITS / "edge_fp32.tflite", manifest=manifest, threads=1)
