"""Runtime backends and the choice between them.

:data:`BACKENDS` is the explicit registry: a backend's name, the file types it loads and the
function that opens a model on it. :func:`open_runtime` walks a priority list and returns the
first backend that loads the model, with the reason the ones before it were skipped (a missing
Edge TPU falls back to the CPU and says so). Which backends to try is a pure decision
(:func:`candidates`); only the openers touch the engines, and each is imported lazily, so a device
without ONNX Runtime (or without LiteRT) can still run the other.

:func:`backends` is the registry in force: :data:`BACKENDS`, plus the test backends that really
crash or hang (:mod:`agent.runtimes.faulty`) when ``EDGEFLEET_TEST_BACKENDS=1``; asking for a test
backend without it is refused with an error that says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from agent.errors import ModelLoadError
from agent.runtimes.base import Runtime
from agent.runtimes.faulty import TEST_BACKENDS_ENV, open_test_abort, open_test_hang
from agent.runtimes.litert import open_edgetpu, open_litert, open_tflite_runtime
from agent.runtimes.onnx import open_onnxruntime

log = logging.getLogger(__name__)

Opener = Callable[[Path, int], Runtime]


@dataclass(frozen=True)
class Backend:
    suffixes: tuple[str, ...]
    """File types it loads, e.g. ``(".tflite",)``."""
    open: Opener
    """Open a model file with a number of threads; ModelLoadError with the reason if it cannot."""


BACKENDS: Mapping[str, Backend] = MappingProxyType(
    {
        "edgetpu": Backend((".tflite",), open_edgetpu),
        "litert": Backend((".tflite",), open_litert),
        "tflite-runtime": Backend((".tflite",), open_tflite_runtime),
        "onnxruntime": Backend((".onnx",), open_onnxruntime),
    }
)

TEST_BACKENDS: Mapping[str, Backend] = MappingProxyType(
    {
        "test-abort": Backend((".tflite",), open_test_abort),
        "test-hang": Backend((".tflite",), open_test_hang),
    }
)
"""Backends for tests only: registered by :func:`backends` when ``EDGEFLEET_TEST_BACKENDS=1``."""


def backends() -> Mapping[str, Backend]:
    """The registry in force: the test backends join :data:`BACKENDS` only with the test switch."""
    if os.environ.get(TEST_BACKENDS_ENV) == "1":
        return MappingProxyType({**BACKENDS, **TEST_BACKENDS})
    return BACKENDS


DEFAULT_PRIORITY: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {".tflite": ("edgetpu", "litert", "tflite-runtime"), ".onnx": ("onnxruntime",)}
)


@dataclass(frozen=True)
class Opened:
    runtime: Runtime
    fallback_reason: str | None
    """Why backends earlier in the priority list were skipped, or None if the first one loaded."""


def candidates(
    suffix: str, priority: Sequence[str] | None, registry: Mapping[str, Backend] | None = None
) -> list[str]:
    """The backends of ``priority`` (default: by file type) that load ``suffix`` files, in order.

    Raises ModelLoadError for a name that is no backend, or when none loads that file type.
    """
    registry = backends() if registry is None else registry
    suffix = suffix.lower()
    names = list(priority) if priority is not None else list(DEFAULT_PRIORITY.get(suffix, ()))
    unknown = [name for name in names if name not in registry]
    if unknown and unknown[0] in TEST_BACKENDS:
        raise ModelLoadError(
            f"backend {unknown[0]!r} is a test backend: it exists only when "
            f"{TEST_BACKENDS_ENV}=1 is set (tests only, never on a device)"
        )
    if unknown:
        raise ModelLoadError(
            f"unknown backend {unknown[0]!r}; the backends are {', '.join(registry)}"
        )
    usable = [name for name in names if suffix in registry[name].suffixes]
    if not usable:
        loaders = [name for name, backend in registry.items() if suffix in backend.suffixes]
        raise ModelLoadError(
            f"no backend in [{', '.join(names)}] loads {suffix or 'extensionless'} files"
            + (f" (try {', '.join(loaders)})" if loaders else "")
        )
    return usable


def fallback_reason(skipped: Sequence[tuple[str, str]], chosen: str) -> str | None:
    """``"edgetpu: libedgetpu.so.1 not found; using litert"``, or None when nothing was skipped."""
    if not skipped:
        return None
    return "; ".join(f"{name}: {why}" for name, why in skipped) + f"; using {chosen}"


def open_runtime(
    model_path: Path,
    priority: Sequence[str] | None,
    threads: int,
    *,
    registry: Mapping[str, Backend] | None = None,
) -> Opened:
    """Open ``model_path`` on the first backend of ``priority`` that loads it, in this process.

    Logs a warning for each backend skipped; raises ModelLoadError naming every attempt if none
    works. (:func:`agent.supervisor.supervised.open_supervised` is the same walk with the
    accelerators in supervised worker processes.)
    """
    registry = backends() if registry is None else registry
    if not model_path.is_file():
        raise ModelLoadError(f"model file not found: {model_path}")
    skipped: list[tuple[str, str]] = []
    for name in candidates(model_path.suffix, priority, registry):
        try:
            runtime = registry[name].open(model_path, threads)
        except ModelLoadError as exc:
            log.warning("backend %s cannot serve %s: %s", name, model_path.name, exc)
            skipped.append((name, str(exc)))
            continue
        return Opened(runtime, fallback_reason(skipped, name))
    tried = "; ".join(f"{name}: {why}" for name, why in skipped)
    raise ModelLoadError(f"no backend could load {model_path}: {tried}")
