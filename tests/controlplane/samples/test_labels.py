"""The pure decisions of the data loop: the best label of an input, the evaluation gate."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.samples.labels import Label, best_label, judge_evaluation

NONE = (None, None)


@pytest.mark.parametrize(
    ("feedback", "cloud", "edge", "labelled", "expected"),
    [
        ("3", ("5", 0.9), ("7", 0.4), False, Label("3", "feedback", 1.0)),
        ("3", NONE, NONE, True, Label("3", "feedback", 1.0)),
        (None, ("5", 0.9), ("7", 0.4), False, Label("5", "cloud", 0.9)),
        (None, ("5", 0.9), ("7", 0.4), True, Label("5", "cloud", 0.9)),
        (None, NONE, ("7", 0.4), False, Label("7", "edge", 0.4)),
        (None, NONE, ("7", 0.4), True, None),  # --labelled: the device's answer is no label
        (None, NONE, NONE, False, None),  # the result has not arrived yet
    ],
)
def test_best_label(
    feedback: str | None,
    cloud: tuple[str | None, float | None],
    edge: tuple[str | None, float | None],
    labelled: bool,
    expected: Label | None,
) -> None:
    assert best_label(feedback, cloud, edge, labelled=labelled) == expected


def _eval(accuracy: float | None, samples: int = 100) -> dict[str, Any]:
    return {"accuracy": accuracy, "samples": samples, "dataset": {"digest": "ab" * 32}}


def _inc(accuracy: float | None) -> dict[str, Any]:
    return {"version": "1.0.0", "accuracy": accuracy, "dataset_digest": "ab" * 32}


@pytest.mark.parametrize(
    ("latest", "incumbent", "ok", "words"),
    [
        (None, None, False, ["no stored evaluation", "models evaluate"]),
        (_eval(None), None, False, ["no accuracy"]),
        (_eval(0.9), None, True, ["no incumbent"]),
        (_eval(0.9), _inc(None), True, ["no incumbent"]),
        (_eval(0.98), _inc(0.97), True, ["0.9800", "0.9700"]),
        (_eval(0.97), _inc(0.97), True, ["0.9700"]),  # as good is good enough
        (_eval(0.10), _inc(0.97), False, ["does worse", "0.1000", "0.9700", "1.0.0", "100"]),
    ],
)
def test_judge_evaluation(
    latest: dict[str, Any] | None, incumbent: dict[str, Any] | None, ok: bool, words: list[str]
) -> None:
    verdict = judge_evaluation("m:2", latest, incumbent)
    assert verdict.ok is ok
    for word in words:
        assert word in verdict.reason
