"""Run the real programs (control plane, agent) as subprocesses for end-to-end tests."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from controlplane.cli import serve_argv
from tests.controlplane.auth_helpers import make_token
from tests.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "models" / "digits"
EDGE_MODEL = DIGITS / "edge_fp32.tflite"


class Process:
    """A subprocess with its output in a log file, stopped by SIGTERM (or killed) at the end."""

    def __init__(self, name: str, argv: list[str], workdir: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
                env={**os.environ, "PYTHONFAULTHANDLER": "1"},  # SIGABRT dumps every thread's stack
            )  # fmt: skip

    def dump_stacks(self) -> None:
        """Abort a live process so that faulthandler writes every thread's stack to its log: what
        a timed-out wait needs to be understood (where was it stuck?)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def wait_until(what: str, check: Callable[[], Any], timeout: float = 60, *procs: Process) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        for p in procs:
            if not p.alive():
                raise AssertionError(f"{p.name} died while waiting for {what}:\n{p.log()[-3000:]}")
        try:
            last = check()
        except httpx.HTTPError:
            last = None
        if last:
            return last
        time.sleep(0.2)
    for p in procs:
        p.dump_stacks()
    logs = "\n".join(f"--- {p.name}\n{p.log()[-8000:]}" for p in procs)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})\n{logs}")


TOKENS: dict[str, str] = {}
"""An admin's API token per control plane URL, which :func:`cli` sends (auth_helpers.py)."""


class ControlPlane(Process):
    def __init__(self, broker_url: str, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = workdir / "cp"
        self.headers: dict[str, str] = {}
        super().__init__(
            "controlplane",
            # A client id of its own: a control plane of an earlier test leaves a persistent session
            # on the shared broker, and resuming it would replay that test's messages here.
            serve_argv(
                broker_url,
                f"127.0.0.1:{self.port}",
                workdir / "cp",
                "--client-id",
                f"cp-{uuid.uuid4().hex[:8]}",
            ),
            workdir,
        )

    def start(self) -> None:
        super().start()
        wait_until(
            "control plane health", lambda: self.get("/healthz").status_code == 200, 60, self
        )
        if not self.headers:  # an admin, once: a restarted control plane keeps its store
            self.headers = {"Authorization": f"Bearer {make_token(self.data_dir)}"}
        TOKENS[self.url] = self.headers["Authorization"].removeprefix("Bearer ")

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.url + path, params=params, headers=self.headers, timeout=10)

    def results(self, device_id: str) -> list[dict[str, Any]]:
        """Every stored result of a device, through the paged API."""
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"device_id": device_id, "limit": 1000}
            if cursor:
                params["cursor"] = cursor
            body = self.get("/api/v1/results", **params).json()
            out.extend(body["results"])
            cursor = body.get("next_cursor")
            if not cursor:
                return out

    def device(self, device_id: str) -> dict[str, Any] | None:
        response = self.get(f"/api/v1/devices/{device_id}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body


class AgentProcess(Process):
    def __init__(self, broker_url: str, device_id: str, workdir: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = workdir / device_id
        super().__init__(
            f"agent-{device_id}",
            [
                sys.executable,
                "-m",
                "agent",
                "--device-id",
                device_id,
                "--broker",
                broker_url,
                "--listen",
                f"127.0.0.1:{self.port}",
                "--data-dir",
                str(self.data_dir),
                "--model",
                str(EDGE_MODEL),
                "--uplink-telemetry-interval-s",
                "1",
                *extra,
            ],
            workdir,
        )

    def start(self) -> None:
        super().start()
        wait_until(
            "agent ready",
            lambda: httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200,
            60,
            self,
        )


def digit_pngs(count: int) -> list[tuple[bytes, int]]:
    with np.load(DIGITS / "testset.npz") as data:
        images, labels = data["images"][:count], data["labels"][:count]
    out = []
    for image, label in zip(images, labels, strict=True):
        buf = io.BytesIO()
        Image.fromarray(np.asarray(image, dtype=np.uint8), mode="L").save(buf, format="PNG")
        out.append((buf.getvalue(), int(label)))
    return out


class Simulator(Process):
    """``edgefleet simulate``: real agents in one process, with deployments turned on."""

    def __init__(
        self, broker_url: str, prefix: str, devices: int, workdir: Path, release_key: Path,
        *extra: str, rate: float = 4.0,
    ) -> None:  # fmt: skip
        super().__init__(
            f"simulator-{prefix}",
            [
                sys.executable, "-m", "agent.simulator",
                "--broker", broker_url,
                "--devices", str(devices),
                "--rate", str(rate),
                "--model", str(EDGE_MODEL),
                "--data-dir", str(workdir / f"sim-{prefix}"),
                "--id-prefix", prefix,
                "--release-key", str(release_key),
                "--telemetry-interval", "1",
                "--log-level", "INFO",
                *extra,
            ],
            workdir,
        )  # fmt: skip


def cli_env(server: str) -> dict[str, str]:
    """This environment, with the admin token of the control plane at ``server`` (if known)."""
    env = {k: v for k, v in os.environ.items() if k != "EDGEFLEET_TOKEN"}
    if server in TOKENS:
        env["EDGEFLEET_TOKEN"] = TOKENS[server]
    return env


def cli(server: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``edgefleet ARGS --server SERVER`` as a real process; its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "controlplane", *args, "--server", server],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        env=cli_env(server),
    )
