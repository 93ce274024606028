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

TIMING_ROUNDS = 3
"""Times each golden input runs on each model for the latency means (after the checked run)."""


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
    stats = SmokeStats(
        passed=passed,
        total=len(release.golden),
        candidate_ms=await _mean_ms(candidate, inputs),
        incumbent_ms=await _mean_ms(incumbent, inputs) if incumbent is not None else None,
    )
    return SmokeOutcome(stats, failures)


async def _mean_ms(served: ServedModel, inputs: Sequence[bytes]) -> float | None:
    if not inputs or not served.accepts_images:
        return None
    times = []
    try:
        for _ in range(TIMING_ROUNDS):
            for data in inputs:
                times.append((await served.infer_image(data)).result.latency_ms)
    except AgentError:
        return None
    return round(statistics.fmean(times), 4)
