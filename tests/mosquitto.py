"""Run a private ``mosquitto`` broker for tests: a free port, a generated config, a temp dir.

Never the machine's own broker on 1883: tests must not depend on it being there or clean.
The broker can be stopped and started again on the same port (outage tests).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from controlplane.broker import find_mosquitto, mosquitto_config
from controlplane.demo import free_port

__all__ = ["Mosquitto", "free_port"]


class Mosquitto:
    """A mosquitto process bound to 127.0.0.1 on a free port."""

    def __init__(self, workdir: Path, port: int | None = None, max_queued: int = 100_000) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.config = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.config.write_text(
            mosquitto_config(self.port, max_queued_messages=max_queued, persistence_dir=workdir)
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.config)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
