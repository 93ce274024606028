"""The real ``edgefleet offload serve`` process: tritonclient against it (JSON and binary), the
graceful drain on SIGTERM, and the command line's errors."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from controlplane.offload.command import offload_argv
from tests.controlplane.offload.conftest import CLOUD, ROOT, OffloadServer
from tests.e2e.processes import wait_until

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_json_and_binary(
    offload_process: OffloadServer, digits: tuple[np.ndarray, np.ndarray], binary: bool
) -> None:
    import tritonclient.http as triton

    images, labels = digits
    client = triton.InferenceServerClient(url=f"127.0.0.1:{offload_process.port}")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("digits-cloud") and client.is_model_ready("digits-cloud", "1")
        meta = client.get_model_metadata("digits-cloud", "1")
        assert meta["inputs"][0]["shape"] == [-1, 8, 8, 1]
        assert client.get_server_metadata()["name"] == "edgefleet-offload"
        tensor = triton.InferInput("input", [5, 8, 8, 1], "FP32")
        tensor.set_data_from_numpy(images[:5], binary_data=binary)
        result = client.infer(
            "digits-cloud",
            [tensor],
            request_id="tc-1",
            outputs=[triton.InferRequestedOutput("probabilities", binary_data=binary)],
        )
        assert result.get_response()["id"] == "tc-1"
        probs = result.as_numpy("probabilities")
        assert probs is not None and probs.shape == (5, 10)
        assert probs.argmax(axis=1).tolist() == labels[:5].tolist()
        bad = triton.InferInput("input", [1, 8, 8], "FP32")
        bad.set_data_from_numpy(images[:1, :, :, 0], binary_data=binary)
        with pytest.raises(triton.InferenceServerException, match="shape"):
            client.infer("digits-cloud", [bad])
    finally:
        client.close()


def test_sigterm_drains_queued_work_refuses_new_and_exits_0(
    tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    # A batch that never fills and a long delay: a request stays queued until the drain runs it.
    server = OffloadServer(
        tmp_path,
        "--max-batch",
        "8",
        "--max-queue-delay-ms",
        "600000",
        "--drain-grace",
        "5",
        "--threads",
        "1",
    )
    server.start()
    url = server.url + "/v2/models/digits-cloud/infer"
    tensor = {
        "name": "input",
        "shape": [1, 8, 8, 1],
        "datatype": "FP32",
        "data": digits[0][0].ravel().tolist(),
    }
    answers: list[httpx.Response] = []
    queued = threading.Thread(
        target=lambda: answers.append(
            httpx.post(url, json={"id": "q", "inputs": [tensor]}, timeout=60)
        )
    )
    try:
        queued.start()
        wait_until(
            "a queued request",
            lambda: (
                "nv_inference_pending_request_count{model="
                '"digits-cloud",version="1"} 1' in httpx.get(server.url + "/metrics").text
            ),
            30,
            server,
        )
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        queued.join(60)
        assert answers and answers[0].status_code == 200, answers
        assert answers[0].json()["id"] == "q"
        # Still listening while it drains, but not ready, and new work is refused.
        ready = httpx.get(server.url + "/v2/health/ready", timeout=10)
        assert ready.status_code == 503
        refused = httpx.post(url, json={"inputs": [tensor]}, timeout=10)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert server.proc.wait(60) == 0
    finally:
        server.stop()
    assert "draining" in server.log()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    argv = offload_argv("127.0.0.1:0", {}, *args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--model", "digits=/nonexistent.onnx"], "no such file /nonexistent.onnx"),
        (["--model", "digits"], "expected NAME=path.onnx"),
        (["--model", f"bad name={CLOUD}"], "must be letters"),
        (["--model", f"d={ROOT / 'models' / 'digits' / 'labels.txt'}"], "cannot load"),
        (["--model", f"d={CLOUD}", "--listen", "nowhere"], "expected HOST:PORT"),
        (["--model", f"d={CLOUD}", "--model", f"d={CLOUD}"], "given twice"),
    ],
)
def test_cli_errors_are_one_line(args: list[str], words: str) -> None:
    done = run_cli(*args)
    assert done.returncode == 1
    assert words in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("edgefleet offload: error: ")


def test_cli_busy_port_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = offload_argv(f"127.0.0.1:{port}", {"d": str(CLOUD)})
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr


def test_cli_bad_number_is_a_usage_error() -> None:
    done = run_cli("--model", f"d={CLOUD}", "--max-batch", "0")
    assert done.returncode == 2 and "--max-batch" in done.stderr
