"""Loading a model under supervision: the priority walk with accelerators in worker processes.

:func:`open_supervised` is :func:`agent.runtimes.open_runtime` with one difference: each backend
opens where :func:`~agent.supervisor.decisions.isolation_for` says. The first that loads serves:
a CPU backend comes back as the plain in-process runtime (nothing to supervise), an accelerator as
a :class:`~agent.supervisor.supervised.SupervisedRuntime` over it and the backends after it (its
fallbacks). Backends skipped on the way are the load-time ``fallback_reason``, as before.

With a ``fallback`` artifact (:mod:`agent.supervisor.artifacts`), the accelerators open the
model's file and the other backends open the fallback: so a model compiled for the Edge TPU is
served from its CPU artifact when the delegate is absent at load, and after a demotion.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from agent.errors import ModelLoadError
from agent.runtimes import Opened, backends, candidates, fallback_reason
from agent.runtimes.onnx import gpu_available
from agent.supervisor.artifacts import artifact_for, check_fallback
from agent.supervisor.config import SupervisorConfig
from agent.supervisor.decisions import Policy, isolation_for
from agent.supervisor.engines import failure_text, open_engine
from agent.supervisor.process import WorkerFailed, WorkerProcess
from agent.supervisor.supervised import SupervisedRuntime

log = logging.getLogger(__name__)


def open_supervised(
    model_path: Path,
    priority: Sequence[str] | None,
    threads: int,
    config: SupervisorConfig,
    *,
    fallback: Path | None = None,
) -> Opened:
    """Open ``model_path`` on the first backend of ``priority`` that loads it, accelerators in a
    supervised worker process; the non-accelerator backends open ``fallback`` instead, when
    given. ModelLoadError naming every attempt when none works."""
    registry = backends()
    if not model_path.is_file():
        raise ModelLoadError(f"model file not found: {model_path}")
    if fallback is not None:
        if not fallback.is_file():
            raise ModelLoadError(f"fallback artifact file not found: {fallback}")
        check_fallback(model_path, fallback)
    names = candidates(model_path.suffix, priority, registry)
    gpu = config.isolation == "auto" and "onnxruntime" in names and gpu_available()
    chain = [(name, isolation_for(name, config.isolation, gpu) == "process") for name in names]
    skipped: list[tuple[str, str]] = []
    for k, (name, isolated) in enumerate(chain):
        path = artifact_for(name, model_path, fallback)
        try:
            engine = open_engine(name, isolated, path, threads, config.start_timeout_s, registry)
        except (ModelLoadError, WorkerFailed) as exc:
            why = failure_text(exc)
            log.warning("backend %s cannot serve %s: %s", name, path.name, why)
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
            fallback=fallback,
        )
        return Opened(supervised, fallback_reason(skipped, name))
    tried = "; ".join(f"{name}: {why}" for name, why in skipped)
    also = f" or its fallback artifact {fallback}" if fallback is not None else ""
    raise ModelLoadError(f"no backend could load {model_path}{also}: {tried}")
