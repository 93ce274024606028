"""The supervised accelerator (agent/supervisor/supervised.py) under a served model and the local
API: real worker processes running the test backends that really abort (SIGABRT) and really hang,
the real LiteRT on the CPU as the fallback, the real digits model and its test images."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil
import pytest
from aiohttp.test_utils import TestServer
from PIL import Image

from agent.api import create_app
from agent.errors import BackendUnavailable, ModelLoadError
from agent.inference import ServedModel
from agent.main import main as agent_main
from agent.runtimes.faulty import FAULT_FILE_ENV, TEST_BACKENDS_ENV
from agent.supervisor.config import SupervisorConfig
from agent.supervisor.engines import restarts_total
from agent.telemetry import InferenceStats
from protocol.manifest import ModelManifest
from protocol.messages import InferenceResult

ROOT = Path(__file__).resolve().parents[3]
DIGITS = ROOT / "models" / "digits" / "edge_fp32.tflite"
MANIFEST = ModelManifest.load(DIGITS.with_suffix(".json"))
FAST = {
    "restart_backoff_s": 0.05,
    "retry_s": 0.5,
    "retry_max_s": 1.0,
    "timeout_s": 2.0,
    "timeout_floor_s": 0.5,
}


@pytest.fixture
def fault(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The test switch on; the test backends fail while the returned file exists."""
    monkeypatch.setenv(TEST_BACKENDS_ENV, "1")
    trigger = tmp_path / "accelerator-unplugged"
    monkeypatch.setenv(FAULT_FILE_ENV, str(trigger))
    return trigger


@pytest.fixture
def images() -> list[tuple[bytes, int]]:
    with np.load(ROOT / "models" / "digits" / "testset.npz") as data:
        pairs = list(zip(data["images"][:12], data["labels"][:12], strict=True))
    out = []
    for image, label in pairs:
        buf = io.BytesIO()
        Image.fromarray(np.asarray(image, np.uint8), mode="L").save(buf, format="PNG")
        out.append((buf.getvalue(), int(label)))
    return out


@pytest.fixture
def expected(images: list[tuple[bytes, int]]) -> Iterator[list[int]]:
    """The top class of each image on the plain in-process CPU model: what a fallback must give."""
    plain = ServedModel.load(DIGITS, manifest=MANIFEST, priority=["litert"])
    try:
        tops = [asyncio.run(plain.infer_image(png)).result.classes[0].index for png, _ in images]  # type: ignore[index]
    finally:
        plain.close()
    yield tops


def unplug(fault: Path) -> None:
    """The test backends fail from now on (the accelerator fell off the bus)."""
    fault.touch()


def replug(fault: Path) -> None:
    """The test backends work again."""
    fault.unlink()


def load(priority: list[str], **settings: Any) -> ServedModel:
    return ServedModel.load(
        DIGITS,
        manifest=MANIFEST,
        priority=priority,
        supervision=SupervisorConfig(**{**FAST, **settings}),
    )


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def ours() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith(("supervise-", "infer-"))}


async def eventually(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    """Poll ``check`` until it is truthy (a guard against hanging, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def top(served: ServedModel, png: bytes) -> tuple[int, str]:
    output = await asyncio.wait_for(served.infer_image(png), 30)
    result = output.result
    assert result.classes
    return result.classes[0].index, result.backend


# --- the happy path and the choice of process ------------------------------------------------


async def test_the_accelerator_runs_in_a_worker_and_answers_like_the_cpu(
    fault: Path, images: list[tuple[bytes, int]], expected: list[int]
) -> None:
    before = children()
    served = load(["test-abort", "litert"])
    try:
        assert served.supervised is not None and served.backend == "test-abort"
        assert served.fallback_reason is None and served.demoted_backends == []
        (pid,) = served.supervised.worker_pids
        assert pid in children() - before
        for (png, _), want in zip(images, expected, strict=True):
            assert await top(served, png) == (want, "test-abort")
    finally:
        served.close()
    assert gone(pid) and children() <= before


@pytest.mark.parametrize(
    ("isolation", "supervised"), [("auto", False), ("thread", False), ("process", True)]
)
def test_isolation_decides_where_the_cpu_backend_runs(isolation: str, supervised: bool) -> None:
    served = load(["litert"], isolation=isolation)
    try:
        assert (served.supervised is not None) is supervised
        assert served.backend == "litert"
    finally:
        served.close()


# --- a crash -----------------------------------------------------------------------------------


async def test_a_crash_is_answered_by_the_fallback_then_demoted_then_promoted_back(
    fault: Path, images: list[tuple[bytes, int]], expected: list[int]
) -> None:
    threads_before = ours()  # another test's model may still be closing: judge only ours
    served = load(["test-abort", "litert"])
    restarts_before = restarts_total()
    try:
        assert served.supervised is not None
        (first_pid,) = served.supervised.worker_pids
        unplug(fault)  # the accelerator falls off the bus
        png, _ = images[0]
        assert await top(served, png) == (expected[0], "litert")  # the request in flight
        assert gone(first_pid)
        reason = served.fallback_reason or ""
        assert reason.startswith("test-abort: restarting after worker killed by SIGABRT")
        assert reason.endswith("; using litert")

        # Each restart's smoke inference aborts too: the third failure demotes the backend.
        # Requests meanwhile are all answered, correctly, by the CPU.
        i = 0
        while served.demoted_backends != ["test-abort"]:
            png, _ = images[i % len(images)]
            assert await top(served, png) == (expected[i % len(images)], "litert")
            i += 1
            assert i < 2000, "never demoted"
            await asyncio.sleep(0.01)
        assert served.backend == "litert"
        assert "test-abort: demoted after repeated failures" in (served.fallback_reason or "")
        assert restarts_total() - restarts_before >= 2
        for (png, _), want in zip(images, expected, strict=True):
            assert await top(served, png) == (want, "litert")

        replug(fault)  # the next retry promotes it back
        await eventually("promotion", lambda: served.backend == "test-abort")
        assert served.demoted_backends == [] and served.fallback_reason is None
        png, _ = images[1]
        assert await top(served, png) == (expected[1], "test-abort")
    finally:
        served.close()
    assert ours() <= threads_before, "a thread was left behind"


async def test_concurrent_requests_through_a_crash_are_all_answered_correctly(
    fault: Path, images: list[tuple[bytes, int]], expected: list[int]
) -> None:
    """Several requests at once (two held by the worker, the rest queued) when it aborts: each
    one gets its own right answer, from the accelerator or from the CPU."""
    served = load(["test-abort", "litert"])
    try:
        pngs = [png for png, _ in images]
        assert [a for a, _ in await asyncio.gather(*(top(served, png) for png in pngs))] == expected
        unplug(fault)
        answers = await asyncio.gather(*(top(served, png) for png in pngs * 2))
        assert [index for index, _ in answers] == expected * 2
        assert {backend for _, backend in answers} == {"litert"}
    finally:
        served.close()


async def test_without_a_fallback_the_request_gets_a_retry_after(fault: Path) -> None:
    served = load(["test-abort"], restart_backoff_s=2.0)
    image = {"input": np.zeros((1, 8, 8, 1), np.float32)}
    try:
        unplug(fault)
        with pytest.raises(BackendUnavailable, match="worker killed by SIGABRT") as crashed:
            await asyncio.wait_for(served.infer(image), 30)
        assert crashed.value.retry_after_s >= 1
        with pytest.raises(BackendUnavailable, match="test-abort: restarting after") as waiting:
            await asyncio.wait_for(served.infer(image), 30)
        assert waiting.value.retry_after_s >= 1
        replug(fault)
        await eventually("restart", lambda: served.fallback_reason is None)
        out = await asyncio.wait_for(served.infer(image), 30)
        assert out.result.backend == "test-abort"
    finally:
        served.close()


async def test_a_worker_that_dies_while_idle_is_restarted(fault: Path) -> None:
    served = load(["test-abort", "litert"])
    restarts_before = restarts_total()
    try:
        assert served.supervised is not None
        (pid,) = served.supervised.worker_pids
        os.kill(pid, signal.SIGKILL)  # e.g. the OOM killer, with no request in flight
        await eventually(
            "the restart",
            lambda: restarts_total() > restarts_before and served.fallback_reason is None,
        )
        assert gone(pid)
        assert served.supervised.worker_pids and pid not in served.supervised.worker_pids
        out = await served.infer({"input": np.zeros((1, 8, 8, 1), np.float32)})
        assert out.result.backend == "test-abort"
    finally:
        served.close()


async def test_a_request_while_nothing_is_up_opens_the_fallback(
    fault: Path, images: list[tuple[bytes, int]], expected: list[int]
) -> None:
    served = load(["test-abort", "litert"], restart_backoff_s=30.0)
    try:
        assert served.supervised is not None
        (pid,) = served.supervised.worker_pids
        os.kill(pid, signal.SIGKILL)
        await eventually(
            "the death noticed", lambda: "while idle" in (served.fallback_reason or "")
        )
        png, _ = images[3]
        assert await top(served, png) == (expected[3], "litert")  # not a 503
        assert served.backend == "litert"
    finally:
        served.close()


# --- a hang ------------------------------------------------------------------------------------


async def test_a_hang_is_cut_at_the_limit_answered_by_the_fallback_and_nothing_leaks(
    fault: Path, images: list[tuple[bytes, int]], expected: list[int]
) -> None:
    before_children, before_threads = children(), ours()
    served = load(["test-hang", "litert"], timeout_s=1.0)
    try:
        assert served.supervised is not None
        (hung_pid,) = served.supervised.worker_pids
        unplug(fault)
        png, _ = images[2]
        assert await top(served, png) == (expected[2], "litert")  # not waiting for ever
        assert gone(hung_pid), "the hung worker was killed"
        assert "test-hang: restarting after inference hung" in (served.fallback_reason or "")
        replug(fault)
        await eventually("restart", lambda: served.backend == "test-hang")
        assert await top(served, png) == (expected[2], "test-hang")
    finally:
        served.close()
    assert children() <= before_children, "a worker process was left behind"
    assert ours() <= before_threads, "a thread was left behind"


async def test_the_status_can_be_read_while_an_inference_hangs(fault: Path) -> None:
    """Telemetry and the birth read ``backend`` and ``fallback_reason`` on the event loop: they
    must not wait for an inference in flight (here one that would hang for a minute)."""
    served = load(["test-hang"], timeout_s=60.0, timeout_floor_s=1.0)
    try:
        assert served.supervised is not None
        (pid,) = served.supervised.worker_pids
        unplug(fault)
        hanging = asyncio.ensure_future(served.infer({"input": np.zeros((1, 8, 8, 1), np.float32)}))
        await eventually("the worker holds the request", lambda: served.supervised.busy_workers)
        status = await asyncio.wait_for(
            asyncio.to_thread(lambda: (served.backend, served.fallback_reason)), 20
        )
        assert status == ("test-hang", None) and not hanging.done()
        os.kill(pid, signal.SIGKILL)  # end the test without waiting out the limit
        with pytest.raises(BackendUnavailable, match="SIGKILL"):
            await asyncio.wait_for(hanging, 30)
    finally:
        served.close()


# --- through the local API ---------------------------------------------------------------------


@pytest.fixture
async def api_with(fault: Path) -> AsyncIterator[tuple[str, ServedModel, list[InferenceResult]]]:
    served = load(["test-abort"], restart_backoff_s=2.0)
    kept: list[InferenceResult] = []

    async def record(result: InferenceResult) -> None:
        kept.append(result)

    app = create_app({served.name: served}, record=record, stats=InferenceStats())
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield str(server.make_url("")), served, kept
    finally:
        await server.close()
        served.close()


async def test_the_api_answers_503_with_retry_after_while_the_worker_restarts(
    fault: Path, api_with: tuple[str, ServedModel, list[InferenceResult]]
) -> None:
    url, served, kept = api_with
    body = {
        "inputs": [{"name": "input", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": [0.0] * 64}]
    }
    infer = f"{url}/v2/models/{served.name}/infer"
    async with aiohttp.ClientSession() as session:
        async with session.post(infer, json=body) as ok:
            assert ok.status == 200
        unplug(fault)
        for expected_text in ("worker killed by SIGABRT", "restarting after"):
            async with session.post(infer, json=body) as failed:
                assert failed.status == 503
                assert int(failed.headers["Retry-After"]) >= 1
                error = (await failed.json())["error"]
                assert expected_text in error and "retry in" in error
    assert len(kept) == 1  # only the answered request was kept


# --- the test switch ---------------------------------------------------------------------------


def test_the_test_backends_are_refused_without_the_switch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(TEST_BACKENDS_ENV, raising=False)
    with pytest.raises(ModelLoadError, match="'test-abort' is a test backend.*BACKENDS=1"):
        load(["test-abort", "litert"])
    with pytest.raises(ModelLoadError, match="'test-hang' is a test backend"):
        ServedModel.load(DIGITS, priority=["test-hang"])  # unsupervised too
    argv = ["--device-id", "x", "--model", str(DIGITS), "--backends", "test-hang,litert"]
    code = agent_main([*argv, "--data-dir", str(tmp_path), "--log-format", "text"])
    err = capsys.readouterr().err
    assert code == 2 and "'test-hang' is a test backend" in err and "Traceback" not in err
