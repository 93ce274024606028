"""A real control plane served by uvicorn on a free port, in a thread of the test's process.

For tests that drive the control plane over HTTP (the fleet CLI, the agent's uploader) without the
cost of a subprocess. No MQTT (``mqtt=False``); the store and the registry are the real ones under
the settings' ``data_dir``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import uvicorn

from controlplane.app import create_app
from controlplane.cli import main
from controlplane.settings import Settings
from tests.controlplane.auth_helpers import use_token
from tests.mosquitto import free_port


@contextmanager
def live_control_plane(
    settings: Callable[[str], Settings], monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Serve ``create_app(settings(listen))`` until the block ends; yields its base URL.
    ``settings`` gets the ``HOST:PORT`` it will listen on (a free port). EDGEFLEET_TOKEN is set to
    an admin's token for the CLI; :func:`headers` gives it to raw HTTP calls."""
    # An earlier test's `edgefleet serve` may have pointed the root logger at a captured stream
    # that is closed now: the server thread's log lines must not print a logging traceback.
    monkeypatch.setattr(logging, "raiseExceptions", False)
    port = free_port()
    chosen = settings(f"127.0.0.1:{port}")
    config = uvicorn.Config(
        create_app(chosen, mqtt=False), host="127.0.0.1", port=port,
        log_config=None, access_log=False, lifespan="on",
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    use_token(monkeypatch, chosen.store_path)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def headers() -> dict[str, str]:
    """The Authorization header of the token :func:`live_control_plane` set (EDGEFLEET_TOKEN)."""
    return {"Authorization": f"Bearer {os.environ['EDGEFLEET_TOKEN']}"}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``edgefleet ARGV...`` in this process: exit code, stdout, stderr (and never a traceback)."""
    code = main(list(argv))
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return code, out.out, out.err
