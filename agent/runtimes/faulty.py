"""Test-only backends that really fail: ``test-abort`` and ``test-hang``.

Each runs a real ``.tflite`` model on LiteRT (so its answers, when it gives them, are real) and
fails the way a Coral Edge TPU does: ``test-abort`` calls ``os.abort()`` (libedgetpu aborts its
whole process on a USB transfer error), ``test-hang`` sleeps for ever in the inference (a hung
delegate never returns). They fail on every inference, or, when ``EDGEFLEET_TEST_FAULT_FILE``
names a file, only while that file exists (a test "unplugs" and "replugs" the accelerator).

They exist only when ``EDGEFLEET_TEST_BACKENDS=1`` (see :func:`agent.runtimes.backends`); asking
for one without it is refused with an error that says so. Never set it on a device.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from agent.runtimes.litert import LiteRTRuntime, open_litert

TEST_BACKENDS_ENV = "EDGEFLEET_TEST_BACKENDS"
FAULT_FILE_ENV = "EDGEFLEET_TEST_FAULT_FILE"


class FaultyRuntime:
    """LiteRT on a real model, failing with ``fault`` while armed."""

    def __init__(
        self, inner: LiteRTRuntime, *, name: str, fault: Callable[[], None], trigger: Path | None
    ) -> None:
        self.name = name
        self.inputs = inner.inputs
        self.outputs = inner.outputs
        self._inner = inner
        self._fault = fault
        self._trigger = trigger

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._trigger is None or self._trigger.exists():
            self._fault()
        return self._inner.infer(inputs)

    def close(self) -> None:
        self._inner.close()


def _abort() -> None:
    os.abort()


def _hang() -> None:
    while True:
        time.sleep(3600)


def _trigger() -> Path | None:
    value = os.environ.get(FAULT_FILE_ENV)
    return Path(value) if value else None


def open_test_abort(path: Path, threads: int) -> FaultyRuntime:
    """``path`` on LiteRT; ``os.abort()`` on each inference (while the fault file exists)."""
    return FaultyRuntime(
        open_litert(path, threads), name="test-abort", fault=_abort, trigger=_trigger()
    )


def open_test_hang(path: Path, threads: int) -> FaultyRuntime:
    """``path`` on LiteRT; each inference (while the fault file exists) never returns."""
    return FaultyRuntime(
        open_litert(path, threads), name="test-hang", fault=_hang, trigger=_trigger()
    )
