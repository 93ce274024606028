"""Loading a model under supervision: the priority walk with accelerators in worker processes.

:func:`open_supervised` is :func:`agent.runtimes.open_runtime` with one difference: each backend
opens where :func:`~agent.supervisor.decisions.isolation_for` says. The first that loads serves:
a CPU backend comes back as the plain in-process runtime (nothing to supervise), an accelerator as
a :class:`~agent.supervisor.supervised.SupervisedRuntime` over it and the backends after it (its
fallbacks). Backends skipped on the way are the load-time ``fallback_reason``, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from agent.errors import ModelLoadError
from agent.runtimes import Opened, backends, candidates, fallback_reason
from agent.runtimes.onnx import gpu_available
from agent.supervisor.config import SupervisorConfig
from agent.supervisor.decisions import Policy, isolation_for
from agent.supervisor.engines import failure_text, open_engine
from agent.supervisor.process import WorkerFailed, WorkerProcess
from agent.supervisor.supervised import SupervisedRuntime

log = logging.getLogger(__name__)


def open_supervised(
    model_path: Path, priority: Sequence[str] | None, threads: int, config: SupervisorConfig
) -> Opened:
    """Open ``model_path`` on the first backend of ``priority`` that loads it, accelerators in a
    supervised worker process. ModelLoadError naming every attempt when none works."""
    registry = backends()
    if not model_path.is_file():
        raise ModelLoadError(f"model file not found: {model_path}")
    names = candidates(model_path.suffix, priority, registry)
    gpu = config.isolation == "auto" and "onnxruntime" in names and gpu_available()
    chain = [(name, isolation_for(name, config.isolation, gpu) == "process") for name in names]
    skipped: list[tuple[str, str]] = []
    for k, (name, isolated) in enumerate(chain):
        try:
            engine = open_engine(
                name, isolated, model_path, threads, config.start_timeout_s, registry
            )
        except (ModelLoadError, WorkerFailed) as exc:
            why = failure_text(exc)
            log.warning("backend %s cannot serve %s: %s", name, model_path.name, why)
            skipped.append((name, why))
            continue
        if not isinstance(engine, WorkerProcess):
            return Opened(engine, fallback_reason(skipped, name))
        log.info(
            "%s: %s runs in a supervised worker process (pid %d)",
            model_path.name,
            name,
            engine.pid,
        )
        supervised = SupervisedRuntime(
            model_path,
            chain[k:],
            engine,
            threads=threads,
            policy=Policy.from_config(config),
            start_timeout_s=config.start_timeout_s,
            skipped=skipped,
            registry=registry,
        )
        return Opened(supervised, fallback_reason(skipped, name))
    tried = "; ".join(f"{name}: {why}" for name, why in skipped)
    raise ModelLoadError(f"no backend could load {model_path}: {tried}")
