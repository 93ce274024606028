"""Smoke test and shadow evaluation on the real digits models (LiteRT)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest

from agent.deploy.shadow import Pair, Shadow, p95, shadow_stats
from agent.deploy.smoke import check_case, smoke_test
from agent.inference import ServedModel
from protocol.release import GoldenCase
from tests.agent.deploy.releases import FP32, INT8, golden_cases, make_release
from tests.e2e.processes import digit_pngs


@pytest.fixture
def fp32() -> Iterator[ServedModel]:
    release = make_release(FP32, version="1.0.0", seq=1)
    served = ServedModel.load(FP32, manifest=release.manifest("cpu", FP32.name))
    yield served
    served.close()


@pytest.fixture
def int8() -> Iterator[ServedModel]:
    release = make_release(INT8, version="2.0.0", seq=2)
    served = ServedModel.load(INT8, manifest=release.manifest("cpu", INT8.name))
    yield served
    served.close()


async def test_smoke_passes_and_times_both(fp32: ServedModel, int8: ServedModel) -> None:
    release = make_release(INT8, version="2.0.0", seq=2)
    outcome = await smoke_test(int8, release, fp32)
    assert outcome.passed, outcome.failures
    assert outcome.stats.passed == outcome.stats.total == 3
    assert outcome.stats.candidate_ms is not None and outcome.stats.candidate_ms > 0
    assert outcome.stats.incumbent_ms is not None and outcome.stats.incumbent_ms > 0


async def test_smoke_fails_on_a_wrong_expected_index(int8: ServedModel) -> None:
    release = make_release(INT8, version="2.0.0", seq=2, golden=golden_cases(wrong_index=True))
    outcome = await smoke_test(int8, release, None)
    assert not outcome.passed and outcome.stats.passed == 0 and outcome.stats.total == 3
    assert "golden input 1: expected class" in outcome.failures[0]
    assert outcome.stats.incumbent_ms is None


async def test_smoke_checks_scores_within_tolerance(fp32: ServedModel) -> None:
    good = golden_cases()[0]
    scores = [0.0] * 10
    scores[good.expected_index] = 1.0  # a confident model: near one-hot
    release = make_release(
        FP32,
        version="1",
        seq=1,
        golden=[good.model_copy(update={"expected_scores": scores, "tolerance": 0.5})],
    )
    assert (await smoke_test(fp32, release, None)).passed
    far = [1.0 - s for s in scores]
    release = make_release(
        FP32,
        version="1",
        seq=1,
        golden=[good.model_copy(update={"expected_scores": far, "tolerance": 0.1})],
    )
    outcome = await smoke_test(fp32, release, None)
    assert not outcome.passed and "within 0.1" in outcome.failures[0]


@pytest.mark.parametrize(
    ("top", "scores", "failure"),
    [
        (3, None, None),
        (4, None, "expected class 3, got 4"),
        (None, None, "gave no classes"),
        (3, [0.0, 0.0, 0.0, 0.9], None),
        (3, [0.0, 0.0, 0.3, 0.5], "score of class 3 is 0.5000"),
        (3, [0.9], "expected 4 scores, got 1"),
    ],
)
def test_check_case(top: int | None, scores: list[float] | None, failure: str | None) -> None:
    case = GoldenCase(input="", expected_index=3)
    if scores is not None:
        case = case.model_copy(update={"expected_scores": [0.0, 0.0, 0.0, 1.0], "tolerance": 0.2})
    why = check_case(case, 1, top, scores)
    assert why is None if failure is None else (why is not None and failure in why)


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], None), ([5.0], 5.0), (list(range(1, 21)), 19), (list(range(1, 101)), 95)],
)
def test_p95(values: list[float], expected: float | None) -> None:
    assert p95(values) == expected


def test_shadow_stats() -> None:
    pairs = [Pair(True, 1.0, 2.0)] * 3 + [Pair(False, 1.0, 4.0)]
    stats = shadow_stats(pairs)
    assert stats.samples == 4 and stats.agreement == 0.75
    assert stats.candidate_p95_ms == 4.0 and stats.incumbent_p95_ms == 1.0
    assert shadow_stats([]).agreement is None


async def test_shadow_on_real_inferences(fp32: ServedModel, int8: ServedModel) -> None:
    shadow = Shadow(int8, share=1.0, samples=20, rng=random.Random(1))
    for png, _label in digit_pngs(40):
        live = await fp32.infer_image(png)
        shadow.offer(png, live)  # returns at once; the candidate runs in the background
        await asyncio.sleep(0)
        if shadow.done.is_set():
            break
    await asyncio.wait_for(shadow.done.wait(), 30)
    stats = shadow.stats()
    assert stats.samples >= 20
    assert stats.agreement is not None and stats.agreement >= 0.8  # int8 agrees with fp32
    assert stats.candidate_p95_ms is not None and stats.incumbent_p95_ms is not None
    await shadow.close()


async def test_shadow_disagreement_is_measured(fp32: ServedModel) -> None:
    """A candidate that answers differently (here: the same model fed other images) disagrees."""
    shadow = Shadow(fp32, share=1.0, samples=10, rng=random.Random(1))
    pngs = digit_pngs(40)
    for i, (png, _) in enumerate(pngs[:20]):
        live = await fp32.infer_image(pngs[(i + 7) % 40][0])
        shadow.offer(png, live)
        await asyncio.sleep(0.01)
    await asyncio.wait_for(shadow.done.wait(), 30)
    stats = shadow.stats()
    assert stats.agreement is not None and stats.agreement < 0.5
    await shadow.close()


async def test_shadow_share_zero_point_something_samples_some(fp32: ServedModel) -> None:
    shadow = Shadow(fp32, share=0.25, samples=1000, rng=random.Random(7), max_in_flight=1000)
    png = digit_pngs(1)[0][0]
    live = await fp32.infer_image(png)
    for _ in range(400):
        shadow.offer(png, live)
    await asyncio.sleep(0)
    offered = len(shadow._tasks)
    assert 60 <= offered <= 140  # about a quarter of 400
    await shadow.close()
