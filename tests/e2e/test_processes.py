"""The e2e harness itself: a wait that times out shows where each process was stuck."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.e2e.processes import Process, wait_until


def test_a_timed_out_wait_shows_the_stacks_of_the_processes(tmp_path: Path) -> None:
    code = (
        "import time\ndef stuck_here():\n    time.sleep(60)\nprint('up', flush=True)\nstuck_here()"
    )
    proc = Process("sleeper", [sys.executable, "-c", code], tmp_path)
    proc.start()
    try:
        wait_until("it to say it is up", lambda: "up" in proc.log(), 20, proc)
        with pytest.raises(AssertionError, match="(?s)timed out waiting for never.*in stuck_here"):
            wait_until("never", lambda: False, 0.5, proc)
        assert not proc.alive()
    finally:
        proc.kill()
