"""The worker process (agent/supervisor/process.py, worker.py): real children, real LiteRT, the
test backends that really abort and really hang."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest

from agent.errors import ModelLoadError, RuntimeBackendError
from agent.runtimes.faulty import TEST_BACKENDS_ENV
from agent.runtimes.litert import open_litert
from agent.supervisor import process
from agent.supervisor.process import WorkerFailed, WorkerProcess

ROOT = Path(__file__).resolve().parents[3]
DIGITS = ROOT / "models" / "digits" / "edge_fp32.tflite"
CONVNET = ROOT / "models" / "bench" / "convnet224.tflite"


def start(backend: str, path: Path = DIGITS) -> WorkerProcess:
    worker = WorkerProcess.spawn(backend, path, 1)
    worker.wait_ready(60)
    return worker


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def digits(count: int) -> list[np.ndarray]:
    with np.load(ROOT / "models" / "digits" / "testset.npz") as data:
        images = data["images"][:count]
    return [(img.astype(np.float32) / 255.0).reshape(1, 8, 8, 1) for img in images]


def test_the_worker_answers_exactly_like_the_in_process_runtime() -> None:
    local = open_litert(DIGITS, 1)
    worker = start("litert")
    try:
        assert worker.inputs == local.inputs and worker.outputs == local.outputs
        name = local.inputs[0].name
        for image in digits(20):
            want = local.infer({name: image})
            got = worker.infer({name: image}, 10)
            assert got.keys() == want.keys()
            for key in want:
                np.testing.assert_array_equal(got[key], want[key])
    finally:
        worker.close()
        local.close()
    assert worker.returncode == 0  # it quit when asked


def test_a_larger_input_gets_a_larger_arena(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process, "INITIAL_ARENA", 1)  # 64 KiB: the 150 KB input does not fit
    local = open_litert(CONVNET, 1)
    worker = start("litert", CONVNET)
    try:
        spec = local.inputs[0]
        rng = np.random.default_rng(1)
        for _ in range(3):
            image = rng.integers(-128, 127, size=spec.shape, dtype=np.int8)
            want = local.infer({spec.name: image})
            got = worker.infer({spec.name: image}, 30)
            for key in want:
                np.testing.assert_array_equal(got[key], want[key])
    finally:
        worker.close()
        local.close()


def test_two_callers_at_once_each_get_their_own_answer() -> None:
    """Two in flight (the worker holds the next request while it runs one): every answer goes
    to the caller that asked, whatever the interleaving."""
    local = open_litert(DIGITS, 1)
    worker = start("litert")
    images = digits(40)
    name = local.inputs[0].name
    want = [local.infer({name: image}) for image in images]
    got: dict[int, dict[str, np.ndarray]] = {}

    def caller(indices: range) -> None:
        for i in indices:
            got[i] = worker.infer({name: images[i]}, 10)

    try:
        with ThreadPoolExecutor(process.PIPELINE) as pool:
            list(pool.map(caller, [range(0, 40, 2), range(1, 40, 2)]))
    finally:
        worker.close()
        local.close()
    assert sorted(got) == list(range(40))
    for i, expected in enumerate(want):
        for key in expected:
            np.testing.assert_array_equal(got[i][key], expected[key])


def test_when_the_worker_dies_every_request_in_flight_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(TEST_BACKENDS_ENV, "1")
    worker = start("test-abort")
    image = {worker.inputs[0].name: digits(1)[0]}
    with ThreadPoolExecutor(process.PIPELINE) as pool:
        futures = [pool.submit(worker.infer, image, 30) for _ in range(process.PIPELINE)]
        for future in futures:
            with pytest.raises(WorkerFailed, match="SIGABRT"):
                future.result(60)
    worker.kill()
    assert gone(worker.pid)


def test_an_engine_error_fails_the_request_and_the_worker_lives_on() -> None:
    worker = start("litert")
    try:
        with pytest.raises(RuntimeBackendError, match="missing input"):
            worker.infer({}, 10)
        assert worker.alive()
        image = digits(1)[0]
        out = worker.infer({worker.inputs[0].name: image}, 10)
        assert out[worker.outputs[0].name].shape == (1, 10)
    finally:
        worker.close()


def test_a_model_that_does_not_load_is_a_load_error_and_the_worker_is_gone(
    tmp_path: Path,
) -> None:
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"this is no flatbuffer" * 10)
    worker = WorkerProcess.spawn("litert", garbage, 1)
    with pytest.raises(ModelLoadError, match="cannot load"):
        worker.wait_ready(60)
    assert gone(worker.pid)


def test_test_backends_do_not_exist_in_a_worker_without_the_switch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(TEST_BACKENDS_ENV, raising=False)
    worker = WorkerProcess.spawn("test-abort", DIGITS, 1)
    with pytest.raises(ModelLoadError, match="unknown backend 'test-abort'"):
        worker.wait_ready(60)


def test_an_abort_is_a_worker_failure_with_its_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TEST_BACKENDS_ENV, "1")
    worker = start("test-abort")
    with pytest.raises(WorkerFailed, match="worker killed by SIGABRT during an inference") as err:
        worker.infer({worker.inputs[0].name: digits(1)[0]}, 30)
    assert not err.value.hung
    assert worker.returncode == -signal.SIGABRT
    assert gone(worker.pid) and not worker.alive()


def test_a_hang_is_cut_at_the_limit_and_the_worker_is_killed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(TEST_BACKENDS_ENV, "1")
    worker = start("test-hang")
    with pytest.raises(WorkerFailed, match=r"inference hung \(no answer within 0.5 s") as err:
        worker.infer({worker.inputs[0].name: digits(1)[0]}, 0.5)
    assert err.value.hung
    assert worker.returncode == -signal.SIGKILL
    assert gone(worker.pid)


HELPER = textwrap.dedent(
    """
    import sys, threading, time
    import numpy as np
    from agent.supervisor.process import WorkerProcess
    worker = WorkerProcess.spawn("test-hang", sys.argv[1], 1)
    worker.wait_ready(60)
    image = np.zeros((1, 8, 8, 1), np.float32)
    threading.Thread(target=worker.infer, args=({worker.inputs[0].name: image}, 3600)).start()
    print(worker.pid, flush=True)
    time.sleep(3600)
    """
)


def test_a_worker_exits_when_the_agent_is_killed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SIGKILL of the agent while its worker hangs in an inference: the worker follows."""
    monkeypatch.setenv(TEST_BACKENDS_ENV, "1")
    script = tmp_path / "agent_like.py"
    script.write_text(HELPER)
    agent = subprocess.Popen(
        [sys.executable, str(script), str(DIGITS)], stdout=subprocess.PIPE, cwd=ROOT
    )
    try:
        assert agent.stdout is not None
        pid = int(agent.stdout.readline())
        assert not gone(pid)
        agent.kill()
        agent.wait()
        deadline = time.monotonic() + 30  # it checks its parent every 0.5 s
        while not gone(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gone(pid), "the worker outlived the agent"
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        if agent.stdout is not None:
            agent.stdout.close()
        if "pid" in locals() and not gone(pid):
            os.kill(pid, signal.SIGKILL)
