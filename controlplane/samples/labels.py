"""The best label known for a kept input, and the evaluation gate of ``rollout start
--require-eval``: pure functions over plain values, tested as tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Source = Literal["feedback", "cloud", "edge"]


@dataclass(frozen=True)
class Label:
    label: str
    source: Source
    confidence: float | None


def best_label(
    feedback: str | None,
    cloud: tuple[str | None, float | None],
    edge: tuple[str | None, float | None],
    *,
    labelled: bool,
) -> Label | None:
    """Operator feedback first, then the cloud model's answer, then (unless ``labelled``: only
    inputs someone or something better than the device labelled) the device's own answer."""
    if feedback is not None:
        return Label(feedback, "feedback", 1.0)
    if cloud[0] is not None:
        return Label(cloud[0], "cloud", cloud[1])
    if not labelled and edge[0] is not None:
        return Label(edge[0], "edge", edge[1])
    return None


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str


def judge_evaluation(
    release: str, latest: dict[str, Any] | None, incumbent: dict[str, Any] | None
) -> Verdict:
    """Whether a rollout of ``release`` may start: it needs a stored evaluation (``latest``, the
    newest), and its accuracy must not be below the incumbent's on the same data set.
    ``incumbent`` is ``{"version", "accuracy", "dataset_digest"}``: the ``--against`` figures of
    ``latest``, or another release's evaluation on the same data; None when there is none."""
    if latest is None:
        return Verdict(
            False,
            f"{release} has no stored evaluation: run `edgefleet models evaluate {release} "
            "--against NAME:INCUMBENT` first",
        )
    accuracy = latest.get("accuracy")
    samples = latest.get("samples")
    if accuracy is None:
        return Verdict(False, f"the latest evaluation of {release} has no accuracy")
    if incumbent is None or incumbent.get("accuracy") is None:
        return Verdict(
            True, f"{release}: accuracy {accuracy:.4f} on {samples} inputs (no incumbent figures)"
        )
    theirs = float(incumbent["accuracy"])
    figures = (
        f"accuracy {accuracy:.4f} against {theirs:.4f} for version {incumbent['version']} "
        f"on the same {samples} inputs (data set {str(incumbent.get('dataset_digest'))[:12]})"
    )
    if accuracy < theirs:
        return Verdict(False, f"{release} does worse than the incumbent: {figures}")
    return Verdict(True, f"{release}: {figures}")
