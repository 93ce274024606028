"""A runtime whose accelerator runs in supervised worker processes, with a fallback chain.

:func:`agent.supervisor.loading.open_supervised` walks the model's backend priority list like
:func:`agent.runtimes.open_runtime`, but opens each backend where
:func:`~agent.supervisor.decisions.isolation_for` says: a CPU backend in this process (as
before, unsupervised), an accelerator in a :class:`~agent.supervisor.process.WorkerProcess`. The
latter comes back as a :class:`SupervisedRuntime` over the chain "that backend, then the rest of
the priority list": it implements the :class:`agent.runtimes.base.Runtime` protocol, so the served
model calls it from its worker thread exactly as it calls an in-process engine.

What it does when a worker crashes or hangs (the decisions are pure, in
:mod:`agent.supervisor.decisions`):

- the request in flight is **retried once on the next backend of the chain** (opened then, if it
  was not already: the CPU fallback loads in milliseconds), else it gets
  :class:`agent.errors.BackendUnavailable` (503 with ``Retry-After``); it never waits longer than
  the inference limit plus the fallback's own time;
- the failure is counted; a background thread (one per model) starts a new worker after the
  backoff and smoke-tests it on a zero input before it takes requests again; meanwhile requests go
  to the first backend of the chain that is up (the fallback), or get the 503;
- the ``max_failures``-th failure within the window demotes the backend: it is retried
  ``retry_s`` later (doubling while retries fail), and promoted back when its smoke test passes;
- a worker that dies while idle is noticed within a second (``LIVENESS_POLL_S``).

The fallback, once loaded, stays loaded until the model is closed. With a fallback artifact
(:mod:`agent.supervisor.artifacts`), the fallback backends open that file instead of the model's:
the CPU build of a model compiled for the Edge TPU.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from agent.errors import ModelLoadError, RuntimeBackendError
from agent.runtimes import Backend
from agent.supervisor.artifacts import artifact_for
from agent.supervisor.chain import Chain, Slot
from agent.supervisor.decisions import Policy, after_failure, after_start, exit_description
from agent.supervisor.engines import RESTARTS, Engine, failure_text, open_engine, smoke_inputs
from agent.supervisor.process import PIPELINE, WorkerFailed, WorkerProcess
from protocol.manifest import TensorSpec

log = logging.getLogger(__name__)

LIVENESS_POLL_S = 1.0
JOIN_TIMEOUT_S = 10.0


class SupervisedRuntime:
    """A model on a chain of backends, the first in a supervised worker process."""

    def __init__(
        self,
        path: Path,
        chain: Sequence[tuple[str, bool]],
        first: WorkerProcess,
        *,
        threads: int,
        policy: Policy,
        start_timeout_s: float,
        skipped: Sequence[tuple[str, str]] = (),
        registry: Mapping[str, Backend] | None = None,
        clock: Callable[[], float] = time.monotonic,
        fallback: Path | None = None,
    ) -> None:
        self.inputs: list[TensorSpec] = first.inputs
        self.outputs: list[TensorSpec] = first.outputs
        self.concurrency = PIPELINE
        """Callers that may infer at once (the served model's threads): a worker holds the next
        request while it runs one."""
        self.restarts = 0
        self._answered = threading.local()
        self._first = first.backend
        self._path = path
        self._fallback_path = fallback
        """The fallback artifact the non-accelerator backends open (None: ``path``)."""
        self._label = path.name
        self._threads = threads
        self._policy = policy
        self._start_timeout = start_timeout_s
        self._skipped = list(skipped)
        self._registry = registry
        self._clock = clock
        self._chain = Chain(chain, policy)
        self._chain[0].engine = first
        self._lock = threading.Condition()
        """Guards the chain; never held during an inference (telemetry reads under it)."""
        self._stopped = False
        self._starting: WorkerProcess | None = None
        self._thread = threading.Thread(
            target=self._supervise, name=f"supervise-{path.stem}", daemon=True
        )
        self._thread.start()

    # --- what the agent reports -------------------------------------------------------------

    @property
    def name(self) -> str:
        """The backend serving now (the first of the chain when none is)."""
        with self._lock:
            return self._chain.serving()

    @property
    def answered_by(self) -> str:
        """The backend that answered this thread's last inference."""
        return str(getattr(self._answered, "backend", self._first))

    @property
    def fallback_reason(self) -> str | None:
        """Why earlier backends are not serving (skipped at load, restarting, demoted), or None."""
        with self._lock:
            return self._chain.fallback_reason(self._skipped)

    @property
    def demoted(self) -> list[str]:
        """Backends demoted after repeated failures (waiting for their retry)."""
        with self._lock:
            return self._chain.demoted()

    @property
    def busy_workers(self) -> int:
        """Requests in flight in worker processes now."""
        with self._lock:
            return sum(worker.busy for worker in self._chain.workers())

    @property
    def worker_pids(self) -> list[int]:
        """The pids of the live worker processes (for diagnostics and tests)."""
        with self._lock:
            workers = [*self._chain.workers(), *([self._starting] if self._starting else [])]
            return [w.pid for w in workers if w.alive()]

    # --- the request path (the served model's threads) --------------------------------------

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            i = self._chain.route()
            taken = self._take(i) if i is not None else None
        if i is not None and taken is not None:
            return self._run(i, *taken, inputs, retry=True)
        # Nothing is up (a worker died while idle): open a fallback for this request if one can.
        fallback = self._fallback(-1)
        if fallback is None:
            with self._lock:
                raise self._chain.unavailable(None, self._clock())
        return self._run(*fallback, inputs, retry=False)

    def _run(
        self,
        index: int,
        slot: Slot,
        engine: Engine,
        inputs: Mapping[str, np.ndarray],
        *,
        retry: bool,
    ) -> dict[str, np.ndarray]:
        if not isinstance(engine, WorkerProcess):
            with slot.serial:
                outputs = engine.infer(inputs)
            self._answered.backend = slot.name
            return outputs
        started = time.perf_counter()
        try:
            outputs = engine.infer(inputs, slot.limit)
        except WorkerFailed as exc:
            self._failed(slot, engine, exc.what)
            fallback = self._fallback(index) if retry else None
            if fallback is None:
                with self._lock:
                    unavailable = self._chain.unavailable(f"{slot.name}: {exc.what}", self._clock())
                raise unavailable from None
            j, other, other_engine = fallback
            log.info("%s: the request in flight is answered by %s", self._label, other.name)
            return self._run(j, other, other_engine, inputs, retry=False)
        finally:
            with self._lock:
                engine.busy -= 1
        slot.timed(time.perf_counter() - started, self._policy)
        self._answered.backend = slot.name
        return outputs

    def _take(self, i: int) -> tuple[Slot, Engine]:
        """Under the lock: slot ``i`` and its engine, counted busy."""
        slot = self._chain[i]
        engine = slot.engine
        assert engine is not None
        if isinstance(engine, WorkerProcess):
            engine.busy += 1
        return slot, engine

    def _fallback(self, index: int) -> tuple[int, Slot, Engine] | None:
        """The first backend after ``index`` that can answer, opening it if it is not yet."""
        for j in range(index + 1, len(self._chain)):
            slot = self._chain[j]
            with slot.opening:  # a second caller waits for the first one's opening
                with self._lock:
                    if slot.state == "up":
                        return (j, *self._take(j))
                    if slot.state is not None or slot.unusable is not None or self._stopped:
                        continue
                engine = self._open(slot)
                if engine is None:
                    continue
                with self._lock:
                    if not self._stopped:
                        slot.engine = engine
                        return (j, *self._take(j))
            engine.close()
        return None

    def _open(self, slot: Slot) -> Engine | None:
        """Open a fallback backend (None, with ``slot.unusable`` set, when it cannot serve)."""
        path = artifact_for(slot.name, self._path, self._fallback_path)
        try:
            engine = open_engine(
                slot.name,
                slot.isolated,
                path,
                self._threads,
                self._start_timeout,
                self._registry,
            )
        except (ModelLoadError, WorkerFailed) as exc:
            why = failure_text(exc)
            log.warning("%s: fallback %s cannot serve: %s", self._label, slot.name, why)
            with self._lock:
                slot.unusable = why
            return None
        if (engine.inputs, engine.outputs) != (self.inputs, self.outputs):
            engine.close()
            with self._lock:
                slot.unusable = "its tensors differ from the first backend's"
            return None
        log.warning("%s: fallback %s loaded (%s)", self._label, slot.name, path.name)
        return engine

    def _failed(self, slot: Slot, engine: WorkerProcess, what: str) -> None:
        """The worker of ``slot`` failed: count it, decide (restart or demote), wake the thread."""
        engine.kill()  # already gone when it died or hung; make sure
        with self._lock:
            if slot.engine is not engine:  # noticed twice (two requests, or the liveness check)
                return
            slot.engine = None
            self._count_failure(slot, what)

    def _count_failure(self, slot: Slot, what: str) -> None:
        """Under the lock: the health after a failure, logged; the supervisor thread is woken."""
        now = self._clock()
        was = slot.health.state
        slot.health = after_failure(slot.health, now, what, self._policy)
        self._chain.log_failure(self._label, slot, was, what, now)
        self._lock.notify_all()

    # --- the supervisor thread --------------------------------------------------------------

    def _supervise(self) -> None:
        while True:
            dead: list[tuple[Slot, WorkerProcess]] = []
            with self._lock:
                if self._stopped:
                    return
                due = self._chain.due(self._clock())
                if due is None:
                    self._lock.wait(self._chain.wait(self._clock(), LIVENESS_POLL_S))
                    if self._stopped:
                        return
                    dead = self._chain.dead_idle()
                    for slot, engine in dead:
                        slot.engine = None
                        what = f"worker {exit_description(engine.returncode)} while idle"
                        self._count_failure(slot, what)
            for _, engine in dead:
                engine.kill()
            if due is not None:
                self._start(due)

    def _start(self, i: int) -> None:
        """Start a worker for slot ``i`` (a restart, or a retry of a demoted backend), smoke-test
        it, and put it in service; a failure counts like any other."""
        slot = self._chain[i]
        retry = slot.health.state == "demoted"
        action = "retrying demoted backend" if retry else "restarting"
        log.info("%s: %s %s", self._label, action, slot.name)
        RESTARTS.add()
        self.restarts += 1
        worker: WorkerProcess | None = None
        try:
            path = artifact_for(slot.name, self._path, self._fallback_path)
            worker = WorkerProcess.spawn(slot.name, path, self._threads)
            with self._lock:
                if self._stopped:
                    worker.kill()
                    return
                self._starting = worker
            worker.wait_ready(self._start_timeout)
            if (worker.inputs, worker.outputs) != (self.inputs, self.outputs):
                raise ModelLoadError("its tensors differ from before")
            worker.infer(smoke_inputs(self.inputs), self._policy.timeout_s)
        except (WorkerFailed, ModelLoadError, RuntimeBackendError) as exc:
            if worker is not None:
                worker.kill()
            what = exc.what if isinstance(exc, WorkerFailed) else f"worker failed to start: {exc}"
            with self._lock:
                self._starting = None
                if not self._stopped:
                    self._count_failure(slot, what)
            return
        with self._lock:
            self._starting = None
            if not self._stopped:
                slot.engine = worker
                slot.health = after_start(slot.health, self._clock())
                worker = None
        if worker is not None:  # closed meanwhile
            worker.kill()
        elif retry:
            log.warning("%s: %s works again: promoted back", self._label, slot.name)
        else:
            log.info("%s: %s restarted", self._label, slot.name)

    # --- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop supervising, close every backend (workers quit, or are killed). Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            starting = self._starting
            self._lock.notify_all()
        if starting is not None:
            starting.kill()
        self._thread.join(JOIN_TIMEOUT_S)
        for slot in self._chain:
            engine, slot.engine = slot.engine, None
            if engine is not None:
                engine.close()
