"""Opening one backend of a chain, in this process or in a worker, and what engines share.

An *engine* is what answers a request for one backend: an in-process
:class:`agent.runtimes.base.Runtime` (a CPU backend) or a :class:`WorkerProcess` (an accelerator).
Both have ``inputs``, ``outputs`` and ``close()``; only the worker's ``infer`` takes a time limit.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from agent.errors import ModelLoadError
from agent.runtimes import Backend, backends
from agent.runtimes.base import Runtime
from agent.supervisor.process import WorkerFailed, WorkerProcess
from protocol.manifest import TensorSpec
from protocol.tensors import NUMPY_BY_DATATYPE

Engine = Runtime | WorkerProcess


def open_engine(
    name: str,
    isolated: bool,
    path: Path,
    threads: int,
    start_timeout_s: float,
    registry: Mapping[str, Backend] | None = None,
) -> Engine:
    """``path`` on backend ``name``: in a worker process (``isolated``) or in this one.

    ModelLoadError when it does not load there; WorkerFailed when the worker died or took longer
    than ``start_timeout_s``. (A worker always resolves ``name`` in :func:`backends`.)"""
    if not isolated:
        registry = backends() if registry is None else registry
        return registry[name].open(path, threads)
    worker = WorkerProcess.spawn(name, path, threads)
    try:
        worker.wait_ready(start_timeout_s)
    except BaseException:
        worker.kill()
        raise
    return worker


def failure_text(exc: ModelLoadError | WorkerFailed) -> str:
    """Why opening failed, without the backend's name in front (the caller adds it)."""
    return exc.what if isinstance(exc, WorkerFailed) else str(exc)


def smoke_inputs(specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """A zero input of each tensor (dynamic dimensions 1): the smoke test of a new worker."""
    inputs: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = tuple(1 if d < 0 else d for d in spec.shape)
        if spec.datatype == "BYTES":
            inputs[spec.name] = np.full(shape, b"", dtype=object)
        else:
            inputs[spec.name] = np.zeros(shape, NUMPY_BY_DATATYPE[spec.datatype])
    return inputs


class Restarts:
    """Worker starts after a failure (restarts and retries) in this process: a counter that
    survives model swaps, reported as ``backend_restarts_total``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = 0

    def add(self) -> None:
        with self._lock:
            self._total += 1

    @property
    def total(self) -> int:
        return self._total


RESTARTS = Restarts()


def restarts_total() -> int:
    """Worker restarts (and retries of demoted backends) in this process since it started."""
    return RESTARTS.total
