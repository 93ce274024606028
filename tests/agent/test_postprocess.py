from __future__ import annotations

import hashlib

import numpy as np
import pytest

from agent.postprocess import classify, dequantize, softmax, summarize_outputs, top_k
from protocol.manifest import Quantization
from protocol.messages import TensorData, TensorDigest

LABELS = [f"c{i}" for i in range(5)]


def test_dequantize_int8_and_leaves_floats() -> None:
    q = Quantization(scale=0.5, zero_point=-128)
    np.testing.assert_allclose(dequantize(np.array([-128, -126, 127], np.int8), q), [0, 1, 127.5])
    floats = np.array([0.25], np.float32)
    assert dequantize(floats, q) is floats  # floats have no quantisation to undo


def test_softmax_is_stable_and_sums_to_one() -> None:
    p = softmax(np.array([1000.0, 1000.0, -1000.0], np.float32))
    np.testing.assert_allclose(p, [0.5, 0.5, 0.0], atol=1e-7)
    p2 = softmax(np.array([[1.0, 2.0], [3.0, 3.0]], np.float32))
    np.testing.assert_allclose(p2.sum(axis=-1), [1.0, 1.0], rtol=1e-6)


def test_top_k_orders_scores_with_labels_and_breaks_ties_by_index() -> None:
    scores = np.array([0.1, 0.3, 0.05, 0.3, 0.25], np.float32)
    best = top_k(scores, 3, LABELS)
    assert [(c.index, c.label) for c in best] == [(1, "c1"), (3, "c3"), (4, "c4")]
    assert best[0].score == pytest.approx(0.3)
    assert [c.label for c in top_k(scores, 2)] == [None, None]
    assert len(top_k(scores, 10)) == 5


@pytest.mark.parametrize(
    ("output", "quant", "softmaxed", "best", "score"),
    [
        (np.array([[0.1, 0.7, 0.2, 0, 0]], np.float32), None, False, 1, 0.7),
        (np.array([0.1, 0.7, 0.2, 0, 0], np.float32), None, False, 1, 0.7),
        (np.array([[0, 0, 0, 0, np.log(3)]], np.float32), None, True, 4, 3 / 7),
        # int8 probabilities: scale 1/256, zero point -128 (LiteRT's softmax output)
        (np.array([[-128, -128, 63, -128, -128]], np.int8), (1 / 256, -128), False, 2, 191 / 256),
        (np.array([[0, 0, 0, 200, 10]], np.uint8), (0.004, 0), False, 3, 0.8),
    ],
)
def test_classify(
    output: np.ndarray,
    quant: tuple[float, int] | None,
    softmaxed: bool,
    best: int,
    score: float,
) -> None:
    q = Quantization(scale=quant[0], zero_point=quant[1]) if quant else None
    classes = classify(output, q, k=2, apply_softmax=softmaxed, labels=LABELS)
    assert classes is not None and len(classes) == 2
    assert classes[0].index == best and classes[0].label == f"c{best}"
    assert classes[0].score == pytest.approx(score, abs=1e-6)


def test_classify_leaves_batches_to_raw_outputs() -> None:
    assert classify(np.zeros((2, 5), np.float32), None, k=1, apply_softmax=False) is None


def test_summary_keeps_small_outputs_in_full_and_digests_large_ones() -> None:
    small = np.arange(6, dtype=np.int32).reshape(2, 3)
    large = np.linspace(0, 1, 5000, dtype=np.float32).reshape(1, 5000)
    flags = np.array([True, False])
    kept = summarize_outputs({"small": small, "large": large, "flags": flags}, max_values=4096)
    assert isinstance(kept[0], TensorData)
    assert (kept[0].shape, kept[0].datatype, kept[0].data) == ([2, 3], "INT32", [0, 1, 2, 3, 4, 5])
    assert isinstance(kept[1], TensorDigest)
    assert (kept[1].shape, kept[1].datatype, kept[1].size_bytes) == ([1, 5000], "FP32", 20000)
    assert kept[1].sha256 == hashlib.sha256(large.tobytes()).hexdigest()
    assert isinstance(kept[2], TensorData) and kept[2].data == [True, False]


@pytest.mark.parametrize(("limit", "full"), [(0, False), (5, False), (6, True), (4096, True)])
def test_summary_limit_is_inclusive(limit: int, full: bool) -> None:
    (kept,) = summarize_outputs({"y": np.zeros(6, np.float32)}, max_values=limit)
    assert isinstance(kept, TensorData) is full


def test_digest_is_of_little_endian_c_order_bytes() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    views = {
        "c": a,
        "fortran": np.asfortranarray(a),
        "big-endian": a.astype(">f4"),
    }
    digests = {k: summarize_outputs({"y": v}, max_values=0)[0] for k, v in views.items()}
    expected = hashlib.sha256(a.tobytes()).hexdigest()
    assert {k: d.sha256 for k, d in digests.items() if isinstance(d, TensorDigest)} == {
        k: expected for k in views
    }


def test_bytes_outputs_are_kept_as_text() -> None:
    (kept,) = summarize_outputs({"s": np.array([b"ab", b"\xff"], dtype=object)})
    assert isinstance(kept, TensorData)
    assert kept.datatype == "BYTES"
    assert kept.data == ["ab", "\ufffd"]
