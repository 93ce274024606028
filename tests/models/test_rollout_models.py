"""The rollout releases in models/rollout/ are what the rollout tests and the benchmark need.

Each is a ``digits-edge`` release that an agent can serve in place of ``digits/edge_fp32.tflite``
(1.0.0), made to pass or trip one gate: good, swap (disagrees with 1.0.0 in shadow), broken
(golden fails), slow (much more compute), big (a 2 MiB download). Everything is re-measured from
the committed files in LiteRT, never TensorFlow, and no test asserts a wall-clock time.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from PIL import Image

from protocol.manifest import ImagePreprocess, ModelManifest

MODELS = Path(__file__).resolve().parents[2] / "models"
ROLLOUT = MODELS / "rollout"
INCUMBENT = MODELS / "digits" / "edge_fp32.json"
TESTSET = MODELS / "digits" / "testset.npz"
VERSIONS = {
    "good": "2.0.0",
    "swap": "2.1.0-swap",
    "broken": "2.2.0-broken",
    "slow": "2.3.0-slow",
    "big": "3.0.0",
}
PASS_GOLDEN = ["good", "swap", "slow", "big"]
SWAP_CYCLE = (1, 3, 4, 6, 7, 9)


def manifest(stem: str) -> ModelManifest:
    return ModelManifest.load(ROLLOUT / f"{stem}.json")


def model_path(stem: str) -> Path:
    """The release's one artifact, or edge_fp32 for ``incumbent``."""
    if stem == "incumbent":
        return INCUMBENT.parent / "edge_fp32.tflite"
    return ROLLOUT / manifest(stem).artifacts["cpu"].path


def interpreter(path: Path) -> Interpreter:
    # Without the default (XNNPACK) delegate, so that the graph's own operators stay listed.
    interp = Interpreter(
        model_path=str(path),
        num_threads=1,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interp.allocate_tensors()
    return interp


def run(path: Path, x: np.ndarray) -> np.ndarray:
    """Probabilities for a batch of preprocessed images ``[n, 8, 8, 1]``, one image at a time."""
    interp = interpreter(path)
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    rows = []
    for image in x:
        interp.set_tensor(inp["index"], image[np.newaxis].astype(np.float32))
        interp.invoke()
        rows.append(np.array(interp.get_tensor(out["index"])[0]))
    return np.stack(rows)


@functools.cache
def held_out() -> tuple[np.ndarray, np.ndarray]:
    with np.load(TESTSET) as data:
        return data["images"][..., np.newaxis].astype(np.float32) / np.float32(255), data["labels"]


@functools.cache
def probabilities(stem: str) -> np.ndarray:
    return run(model_path(stem), held_out()[0])


def predictions(stem: str) -> np.ndarray:
    return np.asarray(probabilities(stem).argmax(axis=1))


def golden_labels(stem: str, model: str | None = None) -> list[tuple[str | None, str]]:
    """(expected, given) for each golden PNG of ``stem``, pre-processed as its manifest says and
    run through ``model`` (default: ``stem`` itself)."""
    m = manifest(stem)
    path = model_path(model or stem)
    pre = m.preprocess
    assert isinstance(pre, ImagePreprocess)
    answers = []
    for golden in m.golden:
        with Image.open(ROLLOUT / golden.input) as png:
            image = png.convert(pre.color).resize(
                (pre.width, pre.height), Image.Resampling.BILINEAR
            )
        pixels = np.asarray(image, dtype=np.float32)[..., np.newaxis]
        x = (pixels * np.float32(pre.scale) - pre.mean[0]) / pre.std[0]
        answers.append((golden.expected_label, m.labels[int(run(path, x[None])[0].argmax())]))
    return answers


def work(path: Path) -> tuple[int, int]:
    """(multiply-accumulates, weights) per inference of the convolutions and dense layers."""
    interp = interpreter(path)
    shapes = {t["index"]: [int(d) for d in t["shape"]] for t in interp.get_tensor_details()}
    macs = params = 0
    for op in interp._get_ops_details():  # the graph's operators; no public API lists them
        name, inputs = op["op_name"], [int(i) for i in op["inputs"]]
        out = int(np.prod(shapes[int(op["outputs"][0])]))
        if name == "CONV_2D":  # filter [out, h, w, in]
            macs += out * int(np.prod(shapes[inputs[1]][1:]))
        elif name == "DEPTHWISE_CONV_2D":  # filter [1, h, w, out]
            macs += out * int(np.prod(shapes[inputs[1]][1:3]))
        elif name == "FULLY_CONNECTED":  # weights [out, in]
            macs += out * shapes[inputs[1]][1]
        else:
            continue
        params += sum(int(np.prod(shapes[i])) for i in inputs[1:] if i >= 0)
    return macs, params


# --- every release ---------------------------------------------------------------------------


@pytest.mark.parametrize("stem", VERSIONS)
def test_manifest_is_a_digits_edge_release(stem: str) -> None:
    m = manifest(stem)
    assert (m.name, m.version) == ("digits-edge", VERSIONS[stem])
    assert list(m.artifacts) == ["cpu"]
    assert m.artifacts["cpu"].path == f"{stem}.tflite"


@pytest.mark.parametrize("stem", VERSIONS)
def test_artifact_hash_and_size_match_the_file(stem: str) -> None:
    art = manifest(stem).artifacts["cpu"]
    data = model_path(stem).read_bytes()
    assert art.size == len(data)
    assert art.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("stem", VERSIONS)
def test_serves_in_place_of_edge_fp32(stem: str) -> None:
    """Same tensors (as the manifest says and as LiteRT reports), processing and labels."""
    m, incumbent = manifest(stem), ModelManifest.load(INCUMBENT)
    assert (m.inputs, m.outputs) == (incumbent.inputs, incumbent.outputs)
    assert (m.preprocess, m.postprocess, m.labels) == (
        incumbent.preprocess,
        incumbent.postprocess,
        incumbent.labels,
    )
    interp = interpreter(model_path(stem))
    for recorded, details in [
        (m.inputs, interp.get_input_details()),
        (m.outputs, interp.get_output_details()),
    ]:
        actual = [(d["name"], [int(s) for s in d["shape_signature"]], d["dtype"]) for d in details]
        assert actual == [(t.name, t.shape, np.float32) for t in recorded]


@pytest.mark.parametrize("stem", VERSIONS)
def test_golden_entries_are_the_incumbents_pngs(stem: str) -> None:
    golden, incumbent = manifest(stem).golden, ModelManifest.load(INCUMBENT).golden
    assert len(golden) == len(incumbent) == 3
    for ours, theirs in zip(golden, incumbent, strict=True):
        assert ours.input == f"../digits/{theirs.input}"
        assert (ROLLOUT / ours.input).resolve() == (INCUMBENT.parent / theirs.input).resolve()
        assert (ROLLOUT / ours.input).is_file()
        assert (ours.expected_label, ours.expected_index) == (
            theirs.expected_label,
            theirs.expected_index,
        )


@pytest.mark.parametrize("stem", VERSIONS)
def test_recorded_accuracy_is_reproduced_on_the_test_set(stem: str) -> None:
    m = manifest(stem)
    labels = held_out()[1]
    accuracy = float(np.mean(predictions(stem) == labels))
    assert accuracy == pytest.approx(m.metrics["test_accuracy"], abs=0.005)
    assert m.metrics["test_samples"] == len(labels) == 450
    assert np.allclose(probabilities(stem).sum(axis=1), 1.0, atol=1e-4)  # softmax inside


@pytest.mark.parametrize(("stem", "least"), [("good", 0.97), ("slow", 0.95), ("big", 0.97)])
def test_good_answers_are_accurate(stem: str, least: float) -> None:
    assert float(np.mean(predictions(stem) == held_out()[1])) >= least


@pytest.mark.parametrize("stem", PASS_GOLDEN)
def test_golden_passes(stem: str) -> None:
    for expected, given in golden_labels(stem):
        assert given == expected


def test_folder_stays_small_besides_big() -> None:
    files = [p for p in ROLLOUT.iterdir() if p.is_file() and p.name != "big.tflite"]
    assert sum(p.stat().st_size for p in files) < 3_000_000


# --- each release trips (or not) its own gate ------------------------------------------------


def test_broken_fails_its_golden_test() -> None:
    answers = golden_labels("broken")
    assert any(given != expected for expected, given in answers), answers
    assert float(np.mean(predictions("broken") == held_out()[1])) < 0.3


def test_swap_agrees_with_the_incumbent_on_golden_only() -> None:
    ours = [given for _, given in golden_labels("swap")]
    theirs = [given for _, given in golden_labels("swap", model="incumbent")]
    assert ours == theirs  # 100 % on golden
    agreement = float(np.mean(predictions("swap") == predictions("incumbent")))
    assert agreement < 0.6


def test_swap_answers_the_rotated_classes() -> None:
    """Not just wrong: 1 is read as 3, 3 as 4, ..., 9 as 1, and 0, 2, 5, 8 as themselves."""
    labels = held_out()[1]
    rotated = labels.copy()
    for a, b in zip(SWAP_CYCLE, SWAP_CYCLE[1:] + SWAP_CYCLE[:1], strict=True):
        rotated[labels == a] = b
    assert float(np.mean(predictions("swap") == rotated)) >= 0.95
    kept = np.isin(labels, [0, 2, 5, 8])
    assert float(np.mean(predictions("swap")[kept] == labels[kept])) >= 0.95


def test_slow_does_ten_times_the_work_of_edge_fp32() -> None:
    slow_macs, slow_params = work(model_path("slow"))
    edge_macs, edge_params = work(model_path("incumbent"))
    assert edge_macs > 100_000 and edge_params > 10_000  # the counter sees edge_fp32's layers
    assert slow_macs >= 10 * edge_macs, (slow_macs, edge_macs)


def test_slow_heavy_branch_contributes_to_the_answer() -> None:
    """Not folded away: slow is good plus the branch's logits, which shift its log-probabilities
    by input-dependent amounts (compared where neither probability underflows), not its answers."""
    slow, good = probabilities("slow"), probabilities("good")
    both = (slow > 1e-30) & (good > 1e-30)
    shift = np.log(np.where(both, slow, 1)) - np.log(np.where(both, good, 1))
    rows = both.all(axis=1)
    shift = shift[rows] - shift[rows].mean(axis=1, keepdims=True)  # softmax ignores a constant
    assert rows.sum() >= 100
    assert float(shift.std()) > 0.05
    assert float(np.mean(slow.argmax(axis=1) == good.argmax(axis=1))) >= 0.98


def test_big_is_about_two_mebibytes() -> None:
    size = model_path("big").stat().st_size
    assert abs(size / 2**20 - 2.0) <= 0.2, size
