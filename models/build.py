"""Build the committed models in models/ reproducibly, and write their manifests.

The digits models are real classifiers trained on scikit-learn's bundled handwritten digits (8x8
grey images, no download): a small Keras CNN for the edge as float32 and fully int8 ``.tflite``,
and a more accurate RBF SVM for the cloud tier as ONNX. Every accuracy in a manifest is measured by
running the converted artifact (LiteRT, ONNX Runtime) on the held-out split, never the Keras or
scikit-learn object, so it is what a device will see. The benchmark model is MobileNetV2 with
random weights (``weights=None``): realistic size and cost, meaningless answers. The rollout
releases are further versions of digits-edge, each made to pass or trip one rollout gate.

Run from the repository root with the build virtualenv (TensorFlow never enters the agent's)::

    PYTHONPATH=. .venv-build/bin/python models/build.py            # everything
    PYTHONPATH=. .venv-build/bin/python models/build.py digits # or some of: digits, bench, rollout

Seeds are fixed and TensorFlow runs its ops deterministically, so a rebuild gives the same
accuracy (and, on the same machine and versions, the same bytes).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.calibration import CalibratedClassifierCV  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

from models.export import (  # noqa: E402
    TFLiteModel,
    artifact,
    onnx_session,
    onnx_specs,
    time_tflite,
    to_onnx,
    to_tflite,
)
from protocol.manifest import (  # noqa: E402
    ClassificationPostprocess,
    GoldenExample,
    ImagePreprocess,
    ModelManifest,
)

SEED = 20240611
VERSION = "1.0.0"
MODELS = Path(__file__).resolve().parent
LABELS = [str(d) for d in range(10)]
GOLDEN_DIGITS = (2, 5, 8)
DIGITS_DATASET = "sklearn.datasets.load_digits, stratified 75/25 split, seed {seed}, {split}"
DIGITS_PREPROCESS = ImagePreprocess(
    width=8, height=8, color="L", scale=1 / 255, mean=[0.0], std=[1.0]
)
ZIP_TIME = (2024, 1, 1, 0, 0, 0)


# --- the data -----------------------------------------------------------------------------------


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and test images as uint8 ``[n, 8, 8]`` (0..16 mapped to 0..255) with their labels."""
    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, stratify=labels, random_state=SEED
    )
    return x_train, y_train, x_test, y_test


def model_input(images: np.ndarray) -> np.ndarray:
    """What the models take, exactly as the manifest's preprocessing makes it: ``[n, 8, 8, 1]``."""
    return (images.astype(np.float32) / np.float32(255.0))[..., np.newaxis]


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` with a fixed timestamp, so that a rebuild gives the same bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


# --- the edge model (Keras -> .tflite) ------------------------------------------------------------


def train_edge(x: np.ndarray, y: np.ndarray, seed: int = SEED, wide: int = 0) -> keras.Model:
    """A small CNN (~15k parameters) with softmax inside, so the output is probabilities.

    ``wide`` puts a dense layer of that many units after the convolutions (the big release).
    """
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    layers = keras.layers
    hidden = [layers.Dense(wide, activation="relu")] if wide else []
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="input"),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            *hidden,
            layers.Dropout(0.25),
            layers.Dense(10, activation="softmax", name="probabilities"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(model_input(x), y, epochs=60, batch_size=32, shuffle=True, verbose=0)
    return model


def calibration(x: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    def samples() -> Iterator[list[np.ndarray]]:
        for image in model_input(x):
            yield [image[np.newaxis]]

    return samples


def tflite_predict(path: Path, images: np.ndarray) -> np.ndarray:
    model = TFLiteModel(path)
    return np.array([int(np.argmax(model(x[np.newaxis]))) for x in model_input(images)])


# --- the cloud model (scikit-learn SVM -> ONNX) ---------------------------------------------------


def train_cloud(x: np.ndarray, y: np.ndarray) -> CalibratedClassifierCV:
    """An RBF SVM with sigmoid-calibrated probabilities (``SVC(probability=True)`` is deprecated
    since scikit-learn 1.9); 5 unshuffled stratified folds, so no randomness at all."""
    svm = SVC(C=10.0, gamma="scale")
    model = CalibratedClassifierCV(svm, method="sigmoid", ensemble=False, cv=5)
    return model.fit(model_input(x).reshape(len(x), 64), y)


def onnx_predict(path: Path, images: np.ndarray) -> np.ndarray:
    probabilities = onnx_session(path).run(["probabilities"], {"input": model_input(images)})[0]
    return np.asarray(np.asarray(probabilities).argmax(axis=1))


# --- manifests and checks -------------------------------------------------------------------------


def write_manifest(path: Path, version: str = VERSION, **fields: Any) -> ModelManifest:
    manifest = ModelManifest(version=version, **fields)
    manifest.dump(path)
    print(f"  {path.parent.name}/{path.name}: {manifest.metrics}")
    return manifest


def pick_golden(x: np.ndarray, y: np.ndarray, agree: np.ndarray) -> list[int]:
    """The first test image of each golden digit that every digits model gets right."""
    return [int(np.flatnonzero((y == digit) & agree)[0]) for digit in GOLDEN_DIGITS]


def golden_answers(manifest_path: Path, model_path: Path) -> list[tuple[str, str | None, str]]:
    """Decode each golden PNG, preprocess as the manifest says, run the .tflite: for each, its
    input, expected label and the label the model gives."""
    manifest = ModelManifest.load(manifest_path)
    pre = manifest.preprocess
    assert isinstance(pre, ImagePreprocess)
    model = TFLiteModel(model_path)
    answers = []
    for golden in manifest.golden:
        with Image.open(manifest_path.parent / golden.input) as png:
            image = png.convert(pre.color).resize(
                (pre.width, pre.height), Image.Resampling.BILINEAR
            )
        pixels = np.asarray(image, dtype=np.float32)
        x = ((pixels * pre.scale - pre.mean[0]) / pre.std[0])[np.newaxis, ..., np.newaxis]
        label = manifest.labels[int(np.argmax(model(x)))]
        answers.append((golden.input, golden.expected_label, label))
    return answers


def check_golden(manifest_path: Path, model_path: Path) -> None:
    """Every golden PNG must give its label through the manifest's pre-processing."""
    answers = golden_answers(manifest_path, model_path)
    for name, expected, label in answers:
        if label != expected:
            raise SystemExit(f"{model_path.name}: {name} gave {label}")
    print(f"  {model_path.name}: {len(answers)} golden PNGs give their labels")


def build_digits(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = digits_split()
    print(f"digits: {len(x_train)} train, {len(x_test)} test")
    (out / "labels.txt").write_text("\n".join(LABELS) + "\n")
    save_npz(out / "testset.npz", images=x_test, labels=y_test)

    keras_model = train_edge(x_train, y_train)
    (out / "edge_fp32.tflite").write_bytes(to_tflite(keras_model, (8, 8, 1)))
    (out / "edge_int8.tflite").write_bytes(to_tflite(keras_model, (8, 8, 1), calibration(x_train)))
    (out / "cloud.onnx").write_bytes(to_onnx(train_cloud(x_train, y_train)))

    predictions = {
        "edge_fp32": tflite_predict(out / "edge_fp32.tflite", x_test),
        "edge_int8": tflite_predict(out / "edge_int8.tflite", x_test),
        "cloud": onnx_predict(out / "cloud.onnx", x_test),
    }
    agree = np.logical_and.reduce([p == y_test for p in predictions.values()])
    golden_dir = out / "golden"
    golden_dir.mkdir(exist_ok=True)
    for stale in golden_dir.glob("*.png"):
        stale.unlink()
    golden = []
    for index in pick_golden(x_test, y_test, agree):
        name = f"golden/{y_test[index]}_test{index:03d}.png"
        Image.fromarray(x_test[index]).save(out / name, optimize=True)  # uint8 [8, 8]: mode L
        label = int(y_test[index])
        golden.append(GoldenExample(input=name, expected_label=LABELS[label], expected_index=label))

    common: dict[str, Any] = {
        "preprocess": DIGITS_PREPROCESS,
        "postprocess": ClassificationPostprocess(top_k=3),
        "labels": LABELS,
        "dataset": DIGITS_DATASET.format(seed=SEED, split=f"test split ({len(x_test)} images)"),
        "golden": golden,
    }
    described = {
        "edge_fp32": ("digits-edge", "Small CNN for 8x8 handwritten digits, float32."),
        "edge_int8": ("digits-edge-int8", "The digits-edge CNN fully quantised to int8."),
        "cloud": (
            "digits-cloud",
            "RBF SVM, sigmoid-calibrated, for 8x8 handwritten digits (cloud tier).",
        ),
    }
    for stem, (name, description) in described.items():
        path = out / (f"{stem}.onnx" if stem == "cloud" else f"{stem}.tflite")
        inputs, outputs = onnx_specs(path) if stem == "cloud" else TFLiteModel(path).tensor_specs()
        accuracy = float(np.mean(predictions[stem] == y_test))
        write_manifest(
            out / f"{stem}.json",
            name=name,
            description=description,
            inputs=inputs,
            outputs=outputs,
            artifacts={"onnx" if stem == "cloud" else "cpu": artifact(path)},
            metrics={"test_accuracy": round(accuracy, 6), "test_samples": len(y_test)},
            **common,
        )
    for stem in ("edge_fp32", "edge_int8"):
        check_golden(out / f"{stem}.json", out / f"{stem}.tflite")


# --- the benchmark model --------------------------------------------------------------------------


def build_bench(out: Path) -> None:
    """MobileNetV2 (alpha 1.0, 3.5M parameters, 300M multiply-adds) with random weights, int8.

    Fresh random weights let the signal fade layer by layer (logits around 1e-6, the same for
    every input), so each batch normalisation takes the statistics of one batch of noise images
    (a data-dependent initialisation); the net then gives logits of unit scale that depend on
    its input. It gives logits (no softmax inside: the softmax of 1000 near-equal logits rounds
    to one int8 value), and the manifest asks the post-processing for the softmax.

    Measured with LiteRT on one thread on the project's machine (AVX-512 VNNI): alpha 0.35 runs
    in 1.1 ms as int8 and 1.6 ms as float32 (6.7 MB), too fast to show serving overhead as it
    will be on a device; alpha 1.0 as int8 takes about 3.4 ms and 3.9 MB, inside both budgets
    (float32 would be 14 MB).
    """
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(SEED)
    net = keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), alpha=1.0, weights=None, classes=1000, classifier_activation=None
    )
    rng = np.random.default_rng(SEED)
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0  # the moving statistics become this batch's
    net(rng.uniform(-1, 1, (16, 224, 224, 3)).astype(np.float32), training=True)

    def representative() -> Iterator[list[np.ndarray]]:
        for _ in range(32):
            yield [rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)]

    path = out / "convnet224.tflite"
    path.write_bytes(to_tflite(net, (224, 224, 3), representative, output_name="logits"))
    ms = time_tflite(path)
    print(f"bench: {path.name} {path.stat().st_size / 1e6:.2f} MB, {ms:.2f} ms/inference, 1 thread")
    inputs, outputs = TFLiteModel(path).tensor_specs()
    write_manifest(
        out / "convnet224.json",
        name="convnet224",
        description="MobileNetV2 (alpha 1.0) with RANDOM weights, int8: for benchmarks only.",
        inputs=inputs,
        outputs=outputs,
        preprocess=ImagePreprocess(
            width=224, height=224, color="RGB", scale=1 / 127.5, mean=[1.0] * 3, std=[1.0] * 3
        ),
        postprocess=ClassificationPostprocess(top_k=5, softmax=True),
        labels=[str(i) for i in range(1000)],
        artifacts={"cpu": artifact(path)},
        dataset="none: random weights (keras.applications.MobileNetV2, weights=None)",
    )


# --- the rollout releases -------------------------------------------------------------------------

# Releases of digits-edge that replace edge_fp32 (1.0.0) in the rollout tests and benchmark: the
# same tensors, pre/post-processing and labels, each made to pass or trip one gate.
ROLLOUT_RELEASES = {
    "good": ("2.0.0", "The digits-edge CNN retrained with another seed: a good release."),
    "swap": (
        "2.1.0-swap",
        "The digits-edge CNN trained with classes 1,3,4,6,7,9 rotated (1->3->4->6->7->9->1): "
        "right on 0, 2, 5, 8 (golden passes), disagrees with 1.0.0 on most other digits.",
    ),
    "broken": (
        "2.2.0-broken",
        "The digits-edge CNN trained on shuffled labels: a broken release (golden fails).",
    ),
    "slow": (
        "2.3.0-slow",
        "The good release plus a heavy convolutional branch added with a small weight: "
        "answers like 2.0.0 at many times the compute.",
    ),
    "big": ("3.0.0", "The digits-edge CNN with a wide dense layer: a good release of about 2 MiB."),
}
SWAP_CYCLE = (1, 3, 4, 6, 7, 9)  # each of these labels becomes the next, the last the first
BIG_WIDTH = 3664  # units of big's dense layer, for a file of 2.0 MiB
SLOW_CHANNELS = 96  # of the heavy branch's convolutions on a 32x32 upsampled copy of the input
SLOW_WEIGHT = 0.2  # of the heavy branch's logits (spread 1) in the sum before the softmax


def rotate_labels(y: np.ndarray, cycle: tuple[int, ...] = SWAP_CYCLE) -> np.ndarray:
    """Each label in ``cycle`` replaced by the next one (the last by the first); others kept."""
    mapping = np.arange(10)
    mapping[list(cycle)] = list(cycle[1:] + cycle[:1])
    return mapping[y]


def add_heavy_branch(model: keras.Model, x: np.ndarray, seed: int) -> keras.Model:
    """``model``'s layers and weights, plus a costly branch whose logits are added to its own.

    The branch upsamples the input to 32x32 (so each convolution weight is used 1,024 times)
    and runs two convolutions on it with random weights. Its logits are scaled to a spread of
    one on the images ``x`` and go into the softmax with a small weight. It depends on the
    input, so the converter cannot fold it away: it really runs, it shifts the probabilities,
    and the answers stay (nearly all) those of ``model``.
    """
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inputs = keras.Input((8, 8, 1), name="input")
    features = inputs
    for layer in model.layers[:-1]:
        features = layer(features)
    head = layers.Dense(10, name="logits")
    logits = head(features)
    head.set_weights(model.layers[-1].get_weights())  # the same head, without its softmax
    heavy = layers.UpSampling2D(4)(inputs)
    heavy = layers.Conv2D(SLOW_CHANNELS, 3, padding="same", activation="relu")(heavy)
    heavy = layers.Conv2D(SLOW_CHANNELS, 3, padding="same", activation="relu")(heavy)
    heavy = layers.Dense(10)(layers.GlobalAveragePooling2D()(heavy))
    raw = np.asarray(keras.Model(inputs, heavy).predict(model_input(x), verbose=0))
    spread = float(np.std(raw - raw.mean(axis=1, keepdims=True)))  # softmax ignores the mean
    mixed = layers.Add()([logits, layers.Rescaling(SLOW_WEIGHT / spread)(heavy)])
    return keras.Model(inputs, layers.Softmax(name="probabilities")(mixed))


def latency_ratio(path: Path, incumbent: Path, x: np.ndarray, runs: int = 1000) -> float:
    """Mean ``invoke()`` time of ``path`` over that of ``incumbent`` (LiteRT, one thread).

    The two run in turn, so that load from other processes on the machine weighs on both alike.
    """
    models = [TFLiteModel(path), TFLiteModel(incumbent)]
    for model in models:
        for _ in range(20):
            model(x)
    totals = [0.0, 0.0]
    for _ in range(runs):
        for i, model in enumerate(models):
            start = time.perf_counter()
            model.interpreter.invoke()
            totals[i] += time.perf_counter() - start
    return totals[0] / totals[1]


def build_rollout(out: Path) -> None:
    """The digits-edge releases of ``ROLLOUT_RELEASES``, checked against what each must do."""
    digits = out.parent / "digits"
    incumbent_path = digits / "edge_fp32.tflite"
    if not incumbent_path.exists():
        raise SystemExit(f"rollout: {incumbent_path} is missing: build the digits part first")
    incumbent = ModelManifest.load(digits / "edge_fp32.json")
    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = digits_split()
    shuffled = np.random.default_rng(SEED).permutation(y_train)

    def release(stem: str, model: keras.Model) -> None:
        (out / f"{stem}.tflite").write_bytes(to_tflite(model, (8, 8, 1)))

    # Each training starts from a fresh Keras session, so that the layer names (which end up
    # in the .tflite) and so the bytes do not depend on what was built before in this process.
    keras.utils.clear_session(free_memory=True)
    good = train_edge(x_train, y_train, SEED + 1)
    release("good", good)
    release("slow", add_heavy_branch(good, x_train[:256], SEED + 2))
    for stem, labels, seed, wide in (
        ("swap", rotate_labels(y_train), SEED + 3, 0),
        ("broken", shuffled, SEED + 4, 0),
        ("big", y_train, SEED + 5, BIG_WIDTH),
    ):
        keras.utils.clear_session(free_memory=True)
        release(stem, train_edge(x_train, labels, seed, wide))

    trained_on = {
        "swap": "trained with labels 1,3,4,6,7,9 rotated",
        "broken": "trained on shuffled labels",
    }
    golden = [g.model_copy(update={"input": f"../digits/{g.input}"}) for g in incumbent.golden]
    incumbent_predictions = tflite_predict(incumbent_path, x_test)
    print(f"rollout: releases of {incumbent.name} over {incumbent_path.name} {incumbent.version}")
    for stem, (version, description) in ROLLOUT_RELEASES.items():
        path = out / f"{stem}.tflite"
        inputs, outputs = TFLiteModel(path).tensor_specs()
        if (inputs, outputs) != (incumbent.inputs, incumbent.outputs):
            raise SystemExit(f"{path.name}: tensors {inputs} -> {outputs} differ from edge_fp32")
        predicted = tflite_predict(path, x_test)
        accuracy = float(np.mean(predicted == y_test))
        split = f"test split ({len(x_test)} images)"
        if stem in trained_on:
            split += f"; {trained_on[stem]}, accuracy against the true labels"
        write_manifest(
            out / f"{stem}.json",
            version=version,
            name=incumbent.name,
            description=description,
            inputs=inputs,
            outputs=outputs,
            preprocess=incumbent.preprocess,
            postprocess=incumbent.postprocess,
            labels=incumbent.labels,
            artifacts={"cpu": artifact(path)},
            metrics={"test_accuracy": round(accuracy, 6), "test_samples": len(y_test)},
            dataset=DIGITS_DATASET.format(seed=SEED, split=split),
            golden=golden,
        )
        size = path.stat().st_size
        ratio = latency_ratio(path, incumbent_path, model_input(x_test[:1]))
        agreement = float(np.mean(predicted == incumbent_predictions))
        answers = golden_answers(out / f"{stem}.json", path)
        golden_right = sum(expected == label for _, expected, label in answers)
        print(
            f"  {path.name} {version}: accuracy {accuracy:.4f}, {size / 2**20:.3f} MiB, "
            f"latency {ratio:.1f}x edge_fp32, agrees with it on {agreement:.1%} of the test "
            f"split, golden {golden_right}/{len(answers)}"
        )
        problem = rollout_problem(
            stem, accuracy, size, ratio, agreement, golden_right, len(answers)
        )
        if problem:
            raise SystemExit(f"{path.name}: {problem}")


def rollout_problem(
    stem: str, accuracy: float, size: int, ratio: float, agreement: float, golden: int, of: int
) -> str | None:
    """What makes a built release unfit for the gate it is meant to pass or trip, if anything."""
    golden_fails = golden < of
    checks = {
        "good": [(accuracy >= 0.97, "accuracy below 0.97"), (not golden_fails, "golden fails")],
        "swap": [
            (not golden_fails, "golden fails"),
            (agreement < 0.6, "agrees with edge_fp32 on 60 % or more of the test split"),
        ],
        "broken": [(golden_fails, "every golden input gives its label")],
        "slow": [
            (accuracy >= 0.95, "accuracy below 0.95"),
            (not golden_fails, "golden fails"),
            (ratio >= 10, "less than 10x the latency of edge_fp32"),
        ],
        "big": [
            (accuracy >= 0.97, "accuracy below 0.97"),
            (not golden_fails, "golden fails"),
            (abs(size / 2**20 - 2.0) <= 0.2, "size not within 2.0 +- 0.2 MiB"),
        ],
    }
    return next((message for ok, message in checks[stem] if not ok), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "parts", nargs="*", metavar="PART", help="digits, bench, rollout (default: all)"
    )
    parser.add_argument("--out", type=Path, default=MODELS, help="models folder (default: here)")
    args = parser.parse_args(argv)
    parts = args.parts or ["digits", "bench", "rollout"]
    unknown = sorted(set(parts) - {"digits", "bench", "rollout"})
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}: choose digits, bench, rollout")
    if "digits" in parts:
        build_digits(args.out / "digits")
    if "bench" in parts:
        build_bench(args.out / "bench")
    if "rollout" in parts:
        build_rollout(args.out / "rollout")  # over the digits models
    return 0


if __name__ == "__main__":
    sys.exit(main())
