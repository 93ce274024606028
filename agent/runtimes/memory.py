"""An in-memory runtime: a Python function as the model, for fast tests of the core.

It keeps the :class:`agent.runtimes.base.Runtime` contract, including "one inference at a time":
a call that overlaps another raises :class:`agent.errors.RuntimeBackendError`, so a test shows
that the caller serialises. It is not in the backend registry (it loads no file).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

import numpy as np

from agent.errors import RuntimeBackendError
from protocol.manifest import TensorSpec

Model = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


class MemoryRuntime:
    def __init__(
        self,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        model: Model,
        *,
        name: str = "memory",
    ) -> None:
        self.name = name
        self.inputs = inputs
        self.outputs = outputs
        self.calls = 0
        self._model: Model | None = model
        self._busy = threading.Lock()

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._model is None:
            raise RuntimeBackendError(f"{self.name}: the model is closed")
        if not self._busy.acquire(blocking=False):
            raise RuntimeBackendError(f"{self.name}: used by two threads at once")
        try:
            self.calls += 1
            return self._model(inputs)
        except RuntimeBackendError:
            raise
        except Exception as exc:
            raise RuntimeBackendError(f"{self.name}: inference failed: {exc}") from None
        finally:
            self._busy.release()

    def close(self) -> None:
        self._model = None
