"""Start the servers the compatibility tests talk to, each a real process on 127.0.0.1.

Foreign servers (PyTriton, KServe, MLServer) run from their own venvs (:mod:`tests.compat.envs`)
and serve ``models/digits/cloud.onnx`` as ``digits-cloud`` with ONNX Runtime inside that stack;
ours is ``edgefleet offload serve`` from the project's venv. Every server gets the same dynamic
batching settings where it has them (max batch 32, 2 ms queue delay), so the benchmark compares
like with like.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from controlplane.offload.command import offload_argv
from tests.compat import envs
from tests.e2e.processes import Process, wait_until
from tests.mosquitto import free_port

ROOT = envs.ROOT
SCRIPTS = Path(__file__).resolve().parent / "scripts"
CLOUD_MODEL = ROOT / "models" / "digits" / "cloud.onnx"
MODEL_NAME = "digits-cloud"
FOREIGN = ("pytriton", "kserve", "mlserver")
STARTUP_S = 180
"""Triton loads its Python backend on first start: generous, since the CI machine is shared."""


@dataclass(frozen=True)
class Batching:
    max_batch: int = 32
    max_queue_delay_ms: float = 2.0


class Server(Process):
    """An OIP server process; ``url`` is its REST base, started once its model answers ready.

    Server readiness is not enough: PyTriton starts Triton first and loads the model after.
    """

    def __init__(
        self, name: str, argv: list[str], port: int, workdir: Path, metrics_port: int | None = None
    ) -> None:
        super().__init__(name, argv, workdir)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.metrics_url = f"http://127.0.0.1:{metrics_port or port}/metrics"
        self.model = argv[argv.index("--model") + 1].partition("=")[0]

    def start(self) -> None:
        super().start()
        wait_until(f"{self.name} ready", self._ready, STARTUP_S, self)

    def _ready(self) -> bool:
        ready = httpx.get(f"{self.url}/v2/models/{self.model}/ready", timeout=2)
        return ready.status_code == 200


def foreign_server(
    stack: str,
    workdir: Path,
    model: Path = CLOUD_MODEL,
    batching: Batching = Batching(),
    name: str = MODEL_NAME,
    threads: int = 1,
) -> Server:
    """A PyTriton, KServe or MLServer process serving ``model`` as ``name``."""
    python = str(envs.python(stack))
    spec = f"{name}={model}"
    http, grpc, metrics = free_port(), free_port(), free_port()
    script = str(SCRIPTS / f"{stack}_server.py")
    if stack == "pytriton":
        argv = [python, script, "--model", spec, "--http-port", str(http),
                "--grpc-port", str(grpc), "--metrics-port", str(metrics),
                "--max-batch-size", str(batching.max_batch),
                "--max-queue-delay-us", str(int(batching.max_queue_delay_ms * 1000)),
                "--threads", str(threads)]  # fmt: skip
    elif stack == "kserve":
        argv = [python, script, "--model", spec, "--http_port", str(http),
                "--grpc_port", str(grpc)]  # fmt: skip
    elif stack == "mlserver":
        argv = [python, script, "--model", spec, "--workdir", str(workdir / "mlserver"),
                "--http-port", str(http), "--grpc-port", str(grpc),
                "--metrics-port", str(metrics)]  # fmt: skip
    else:
        raise ValueError(f"unknown stack {stack!r}")
    return Server(stack, argv, http, workdir, metrics if stack == "pytriton" else None)


def offload_server(
    workdir: Path,
    model: Path = CLOUD_MODEL,
    batching: Batching = Batching(),
    name: str = MODEL_NAME,
    threads: int = 1,
) -> Server:
    """``edgefleet offload serve`` from the project's venv."""
    port = free_port()
    argv = offload_argv(
        f"127.0.0.1:{port}", {name: str(model)},
        "--max-batch", str(batching.max_batch),
        "--max-queue-delay-ms", str(batching.max_queue_delay_ms),
        "--threads", str(threads), "--log-level", "WARNING",
    )  # fmt: skip
    return Server("edgefleet-offload", argv, port, workdir)


def tritonclient(url: str, *args: str, timeout: float = 120) -> dict[str, Any]:
    """Run the tritonclient[http] driver in its own venv against ``url``; its JSON report."""
    host = url.removeprefix("http://")
    done = subprocess.run(
        [str(envs.python("tritonclient")), str(SCRIPTS / "tritonclient_driver.py"),
         "--url", host, *args],
        capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT,
    )  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(f"tritonclient driver failed ({done.returncode}):\n{done.stderr}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report
