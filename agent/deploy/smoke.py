"""The smoke test: a candidate release must give the answers its golden inputs promise.

Each golden case is an image with the top class it must answer and, optionally, the scores (after
post-processing) it should give within a tolerance. The same inputs then time the candidate and
the incumbent (the model serving now) on this very device, so the control plane can gate on the
latency ratio even when no shadow runs.
"""

from __future__ import annotations

import base64
import binascii
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from agent.errors import AgentError
from agent.inference import InferenceOutput, ServedModel
from agent.postprocess import classify
from protocol.manifest import ClassificationPostprocess
from protocol.release import GoldenCase, Release, SmokeStats

TIMING_ROUNDS = 5
"""Times each golden input runs on each model for the latency medians (after the checked run).
The two models take turns, input by input, so that a burst of load on the device falls on both
alike; medians, so that one slow run does not decide (measured: means of three back-to-back runs
put two equally fast models 2.1x apart on a loaded machine, and halted a good release)."""


@dataclass(frozen=True)
class SmokeOutcome:
    stats: SmokeStats
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures


def check_case(
    case: GoldenCase, number: int, top: int | None, scores: Sequence[float] | None
) -> str | None:
    """Why a golden case failed (None: it passed). ``scores`` are indexed by class."""
    if top is None:
        return f"golden input {number}: the model gave no classes"
    if top != case.expected_index:
        return f"golden input {number}: expected class {case.expected_index}, got {top}"
    if case.expected_scores is not None:
        if scores is None or len(scores) != len(case.expected_scores):
            have = "none" if scores is None else str(len(scores))
            return f"golden input {number}: expected {len(case.expected_scores)} scores, got {have}"
        worst, at = max(
            (abs(s - e), i)
            for i, (s, e) in enumerate(zip(scores, case.expected_scores, strict=True))
        )
        if worst > case.tolerance:
            return (
                f"golden input {number}: score of class {at} is {scores[at]:.4f}, expected "
                f"{case.expected_scores[at]:.4f} within {case.tolerance}"
            )
    return None


def all_scores(
    output: InferenceOutput, release: Release, served: ServedModel
) -> list[float] | None:
    """Every class's score, by index, as the release's post-processing defines them."""
    post = release.postprocess
    if not isinstance(post, ClassificationPostprocess):
        return None
    name = post.output or release.outputs[0].name
    spec = next((s for s in served.outputs if s.name == name), None)
    tensor = output.outputs.get(name)
    if spec is None or tensor is None:
        return None
    classes = classify(tensor, spec.quantization, k=tensor.size, apply_softmax=post.softmax)
    if classes is None:
        return None
    scores = [0.0] * len(classes)
    for c in classes:
        scores[c.index] = c.score
    return scores


async def smoke_test(
    candidate: ServedModel, release: Release, incumbent: ServedModel | None
) -> SmokeOutcome:
    """Run the golden cases on ``candidate`` and time both models on them."""
    failures: list[str] = []
    inputs: list[bytes] = []
    passed = 0
    for number, case in enumerate(release.golden, start=1):
        try:
            data = base64.b64decode(case.input, validate=True)
        except (binascii.Error, ValueError):
            failures.append(f"golden input {number}: not base64")
            continue
        try:
            output = await candidate.infer_image(data)
        except AgentError as exc:
            failures.append(f"golden input {number}: inference failed: {exc}")
            continue
        inputs.append(data)
        classes = output.result.classes
        top = classes[0].index if classes else None
        why = check_case(case, number, top, all_scores(output, release, candidate))
        if why is None:
            passed += 1
        else:
            failures.append(why)
    candidate_ms, incumbent_ms = await _median_ms(candidate, incumbent, inputs)
    stats = SmokeStats(
        passed=passed,
        total=len(release.golden),
        candidate_ms=candidate_ms,
        incumbent_ms=incumbent_ms,
    )
    return SmokeOutcome(stats, failures)


async def _median_ms(
    candidate: ServedModel, incumbent: ServedModel | None, inputs: Sequence[bytes]
) -> tuple[float | None, float | None]:
    """Median latency of each model on ``inputs``, the two taking turns."""
    models = [m for m in (candidate, incumbent) if m is not None and m.accepts_images]
    if not inputs or candidate not in models:
        return None, None
    times: dict[int, list[float]] = {id(m): [] for m in models}
    try:
        for _ in range(TIMING_ROUNDS):
            for data in inputs:
                for served in models:
                    times[id(served)].append((await served.infer_image(data)).result.latency_ms)
    except AgentError:
        return None, None

    def median(served: ServedModel | None) -> float | None:
        if served is None or id(served) not in times:
            return None
        return round(statistics.median(times[id(served)]), 4)

    return median(candidate), median(incumbent)
