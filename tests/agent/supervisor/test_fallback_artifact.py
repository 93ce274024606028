"""The CPU fallback artifact under the real supervisor: a model whose "accelerator" is the
``test-abort`` backend (a real worker process that really aborts) and whose fallback artifact is a
DIFFERENT real model, ``models/rollout/good.tflite`` (the digits CNN trained with another seed),
run by the real LiteRT on the CPU.

Honesty of the simulation: the test backend runs the primary file on LiteRT, so the primary could
in fact run on the CPU here; what the tests check is that the CPU backend never opens it when
there is a fallback artifact. The answers prove it: they are good.tflite's, score for score, and
they differ from the primary's scores; and each result carries good.tflite's SHA-256.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.config import validate
from agent.daemon import load_models
from agent.errors import BackendUnavailable, ModelLoadError
from agent.inference import ServedModel
from agent.runtimes.faulty import FAULT_FILE_ENV, TEST_BACKENDS_ENV
from agent.supervisor.config import SupervisorConfig
from protocol.messages import InferenceResult
from tests.agent.supervisor.test_supervised import (
    DIGITS,
    FAST,
    MANIFEST,
    eventually,
    replug,
    unplug,
)
from tests.e2e.processes import digit_pngs

ROOT = Path(__file__).resolve().parents[3]
GOOD = ROOT / "models" / "rollout" / "good.tflite"
INT8 = ROOT / "models" / "digits" / "edge_int8.tflite"
PRIMARY_SHA = hashlib.sha256(DIGITS.read_bytes()).hexdigest()
GOOD_SHA = hashlib.sha256(GOOD.read_bytes()).hexdigest()
Answer = list[tuple[int, float]]


def answers_of(path: Path, pngs: list[bytes]) -> list[Answer]:
    """Each image's top classes and scores from ``path`` served plainly on LiteRT."""
    plain = ServedModel.load(path, manifest=MANIFEST, priority=["litert"])
    try:
        return [answer(asyncio.run(plain.infer_image(png)).result) for png in pngs]
    finally:
        plain.close()


def answer(result: InferenceResult) -> Answer:
    assert result.classes
    return [(c.index, c.score) for c in result.classes]


@pytest.fixture
def fault(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The test switch on; the test backends fail while the returned file exists."""
    monkeypatch.setenv(TEST_BACKENDS_ENV, "1")
    trigger = tmp_path / "accelerator-unplugged"
    monkeypatch.setenv(FAULT_FILE_ENV, str(trigger))
    return trigger


@pytest.fixture
def images() -> list[tuple[bytes, int]]:
    return digit_pngs(12)


@pytest.fixture
def pngs(images: list[tuple[bytes, int]]) -> list[bytes]:
    return [png for png, _ in images]


@pytest.fixture
def good(pngs: list[bytes]) -> Iterator[list[Answer]]:
    yield answers_of(GOOD, pngs)


@pytest.fixture
def primary(pngs: list[bytes]) -> Iterator[list[Answer]]:
    yield answers_of(DIGITS, pngs)


def load(priority: list[str], fallback: Path | None = GOOD, **settings: Any) -> ServedModel:
    return ServedModel.load(
        DIGITS,
        manifest=MANIFEST,
        priority=priority,
        supervision=SupervisorConfig(**{**FAST, **settings}),
        fallback=fallback,
    )


async def ask(served: ServedModel, png: bytes) -> InferenceResult:
    return (await asyncio.wait_for(served.infer_image(png), 30)).result


def test_the_two_models_really_differ(
    images: list[tuple[bytes, int]],
    good: list[Answer],
    primary: list[Answer],
) -> None:
    """What the other tests rely on: good.tflite answers the digits right, with other scores."""
    labels = [label for _, label in images]
    right = sum(a[0][0] == label for a, label in zip(good, labels, strict=True))
    assert right >= len(labels) - 1
    assert all(g != p for g, p in zip(good, primary, strict=True))
    assert GOOD_SHA != PRIMARY_SHA


async def test_after_a_demotion_the_fallback_artifact_answers_and_the_results_say_so(
    fault: Path,
    pngs: list[bytes],
    good: list[Answer],
    primary: list[Answer],
) -> None:
    served = load(["test-abort", "litert"])
    try:
        assert served.fallback_sha256 == GOOD_SHA and served.primary_sha256 == PRIMARY_SHA
        first = await ask(served, pngs[0])  # the accelerator, on the model's own file
        assert (first.backend, first.artifact_sha256) == ("test-abort", PRIMARY_SHA)
        assert answer(first) == primary[0]
        assert served.artifact_sha256 == PRIMARY_SHA

        unplug(fault)
        in_flight = await ask(served, pngs[1])  # retried on the CPU: the fallback artifact
        assert (in_flight.backend, in_flight.artifact_sha256) == ("litert", GOOD_SHA)
        assert answer(in_flight) == good[1]

        i = 0
        while served.demoted_backends != ["test-abort"]:
            result = await ask(served, pngs[i % len(pngs)])
            assert (result.backend, result.artifact_sha256) == ("litert", GOOD_SHA)
            assert answer(result) == good[i % len(pngs)]
            i += 1
            assert i < 2000, "never demoted"
            await asyncio.sleep(0.01)
        # demoted: every request is answered by good.tflite, and the model says so
        assert served.backend == "litert" and served.artifact_sha256 == GOOD_SHA
        assert served.backend_restarts >= 2
        for png, want in zip(pngs, good, strict=True):
            result = await ask(served, png)
            assert (result.backend, result.artifact_sha256) == ("litert", GOOD_SHA)
            assert answer(result) == want

        replug(fault)  # promoted back: the model's own file again
        await eventually("promotion", lambda: served.backend == "test-abort")
        result = await ask(served, pngs[2])
        assert (result.backend, result.artifact_sha256) == ("test-abort", PRIMARY_SHA)
        assert answer(result) == primary[2]
    finally:
        served.close()


async def test_without_a_fallback_artifact_the_cpu_opens_the_same_file(
    fault: Path,
    pngs: list[bytes],
    primary: list[Answer],
) -> None:
    """As before this change: no fallback artifact, the fallback runs the model's own file."""
    served = load(["test-abort", "litert"], fallback=None)
    try:
        unplug(fault)
        result = await ask(served, pngs[0])
        assert (result.backend, result.artifact_sha256) == ("litert", PRIMARY_SHA)
        assert answer(result) == primary[0] and served.fallback_sha256 is None
    finally:
        served.close()


async def test_absent_accelerator_at_load_serves_the_fallback_artifact(
    pngs: list[bytes], good: list[Answer]
) -> None:
    """The real ``edgetpu`` backend (no libedgetpu on this machine): the CPU serves the fallback
    artifact from the start, supervised or not."""
    for supervision in (SupervisorConfig(), None):
        served = ServedModel.load(
            DIGITS,
            manifest=MANIFEST,
            priority=["edgetpu", "litert"],
            supervision=supervision,
            fallback=GOOD,
        )
        try:
            assert served.supervised is None and served.backend == "litert"
            assert (served.fallback_reason or "").startswith("edgetpu: libedgetpu.so.1 not found")
            assert served.artifact_sha256 == GOOD_SHA
            result = await ask(served, pngs[0])
            assert (result.backend, result.artifact_sha256) == ("litert", GOOD_SHA)
            assert answer(result) == good[0]
        finally:
            served.close()


async def test_a_fallback_artifact_with_other_tensors_is_not_used(fault: Path) -> None:
    """An int8 fallback for an fp32 model: the CPU backend refuses it (its tensors differ), so a
    crash leaves the request with a 503, not with a wrong model."""
    served = load(["test-abort", "litert"], fallback=INT8, restart_backoff_s=5.0)
    zeros = {"input": np.zeros((1, 8, 8, 1), np.float32)}
    try:
        unplug(fault)
        with pytest.raises(BackendUnavailable, match="worker killed by SIGABRT"):
            await asyncio.wait_for(served.infer(zeros), 30)
        assert "litert: its tensors differ" in (served.fallback_reason or "")
    finally:
        served.close()


@pytest.mark.parametrize(
    ("fallback", "error"),
    [
        (GOOD.with_name("missing.tflite"), "fallback artifact file not found: .*missing.tflite"),
        (ROOT / "models" / "digits" / "cloud.onnx", r"needs a \.tflite fallback"),
    ],
)
def test_a_bad_fallback_artifact_is_a_clear_load_error(fallback: Path, error: str) -> None:
    with pytest.raises(ModelLoadError, match=error):
        load(["litert"], fallback=fallback)


def test_a_configured_model_takes_its_fallback_path(
    fault: Path,
    tmp_path: Path,
) -> None:
    settings = validate(
        {
            "device_id": "dev-1",
            "data_dir": str(tmp_path),
            "backends": ["test-abort", "litert"],
            "supervisor": FAST,
            "models": [{"path": str(DIGITS), "fallback_path": str(GOOD)}],
        }
    )
    models = load_models(settings)
    try:
        (served,) = models.values()
        assert served.fallback_path == GOOD and served.fallback_sha256 == GOOD_SHA
        assert served.backend == "test-abort" and served.artifact_sha256 == PRIMARY_SHA
    finally:
        for served in models.values():
            served.close()


def test_a_configured_model_with_a_bad_fallback_path_names_it(tmp_path: Path) -> None:
    settings = validate(
        {
            "device_id": "dev-1",
            "data_dir": str(tmp_path),
            "backends": ["litert"],
            "models": [{"path": str(DIGITS), "fallback_path": str(tmp_path / "nope.tflite")}],
        }
    )
    with pytest.raises(ModelLoadError, match="fallback artifact file not found: .*nope.tflite"):
        load_models(settings)
