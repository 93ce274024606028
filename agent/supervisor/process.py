"""The agent's handle on one worker process (:mod:`agent.supervisor.worker`).

:meth:`WorkerProcess.spawn` starts the child (a fresh interpreter running only the worker module,
in a session of its own so a terminal's Ctrl-C does not reach it) and returns at once;
:meth:`~WorkerProcess.wait_ready` waits until the model is loaded. :meth:`~WorkerProcess.infer`
writes the inputs into the shared arena, sends one small message and waits for the reply at most
``timeout`` seconds. Whatever goes wrong with the process becomes :class:`WorkerFailed`: the end
of the stream (it died: the exit status or signal says how) or no answer in time (it hung: it is
killed with SIGKILL here). An error the engine raised while the worker stays healthy is a plain
:class:`agent.errors.RuntimeBackendError`, as in-process.

**Two in flight.** Up to :data:`PIPELINE` threads may call :meth:`~WorkerProcess.infer` at once:
each request gets its own region of the arena and a ticket, the worker answers in order, and each
caller reads its own answer when its turn comes. So the worker starts on the next inference as soon
as it has answered one, instead of idling while the answer wakes the agent and the next request is
prepared (measured: 0.91x the in-process throughput with one in flight, see docs/benchmarks.md).
A request's time limit starts when its turn comes (the worker is then on it). When the worker
fails, every request in flight fails with it. Only the caller reading the socket closes it (a
:meth:`~WorkerProcess.kill` from elsewhere kills and reaps, and leaves the closing to the reader),
so no thread ever reads a closed descriptor.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from agent.errors import BackendUnavailable, ModelLoadError, RuntimeBackendError
from agent.supervisor import channel
from agent.supervisor.decisions import exit_description
from protocol.manifest import TensorSpec

INITIAL_ARENA = 1 << 20
PIPELINE = 2
"""Requests one worker may hold at once (the one it runs and the next)."""
REAP_TIMEOUT_S = 5.0
QUIT_TIMEOUT_S = 2.0


class WorkerFailed(BackendUnavailable):
    """The worker crashed, hung or could not start; it is gone (killed and reaped)."""

    def __init__(self, message: str, *, what: str, hung: bool = False) -> None:
        super().__init__(message)
        self.what = what
        """How it failed, for the log and ``fallback_reason``: ``worker killed by SIGABRT``."""
        self.hung = hung


class WorkerProcess:
    def __init__(
        self,
        backend: str,
        proc: subprocess.Popen[bytes],
        sock: socket.socket,
        arena: channel.Arena,
    ) -> None:
        self.backend = backend
        self.pid = proc.pid
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self.busy = 0
        """Requests in flight, counted by the supervisor (its liveness check skips a busy one)."""
        self._proc = proc
        self._sock = sock
        self._arena = arena
        self._region = _region(arena.size)
        self._out_need = 0
        self._reap_lock = threading.Lock()
        self._gone = False
        """The process is dead and reaped."""
        self._released = False
        """The socket and the arena are closed."""
        self._turns = threading.Condition()
        self._sent = 0
        self._answered = 0
        self._reading = False
        self._failure: WorkerFailed | None = None

    @classmethod
    def spawn(cls, backend: str, path: Path, threads: int) -> WorkerProcess:
        """Start a worker for ``path`` on ``backend``; it loads the model in the background."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        arena = channel.Arena.create(INITIAL_ARENA)
        assert arena.fd is not None
        argv = [
            sys.executable,
            "-m",
            "agent.supervisor.worker",
            "--backend",
            backend,
            "--model",
            str(Path(path).absolute()),
            "--threads",
            str(threads),
            "--sock",
            str(theirs.fileno()),
            "--arena",
            str(arena.fd),
            "--arena-size",
            str(arena.size),
            "--parent",
            str(os.getpid()),
        ]
        try:
            proc = subprocess.Popen(
                argv,
                pass_fds=(theirs.fileno(), arena.fd),
                stdin=subprocess.DEVNULL,
                stdout=2,  # the agent's stdout carries JSON log lines only
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            arena.close()
            raise WorkerFailed(
                f"{backend}: cannot start a worker: {exc}", what=f"worker did not start ({exc})"
            ) from None
        finally:
            theirs.close()
        arena.release_fd()
        return cls(backend, proc, ours, arena)

    def wait_ready(self, timeout: float) -> None:
        """Wait until the model is loaded. ModelLoadError when it does not load on this backend
        (the worker exits); WorkerFailed when the worker dies or takes longer than ``timeout``."""
        try:
            message, _ = channel.recv(self._sock, timeout)
        except TimeoutError:
            self.kill()
            what = f"worker did not load the model within {timeout:g} s"
            raise WorkerFailed(f"{self.backend}: {what}", what=what) from None
        except (channel.ChannelClosed, OSError):
            raise self._died("while loading the model") from None
        if message[0] == "l":
            self.kill()
            raise ModelLoadError(str(message[1]))
        if message[0] != "r":
            self.kill()
            what = f"worker sent {message[0]!r} instead of ready"
            raise WorkerFailed(f"{self.backend}: {what}", what=what)
        self.inputs = [TensorSpec.model_validate(d) for d in message[2]]
        self.outputs = [TensorSpec.model_validate(d) for d in message[3]]

    def infer(self, inputs: Mapping[str, np.ndarray], timeout: float) -> dict[str, np.ndarray]:
        """Run one inference in the worker, waiting at most ``timeout`` seconds for the answer
        once the worker is on it. Thread-safe up to :data:`PIPELINE` callers."""
        with self._turns:
            self._wait(lambda: self._sent - self._answered < PIPELINE)
            need = channel.layout_bytes(inputs) + self._out_need
            if need > self._region:  # a larger arena, once nothing is in flight
                self._wait(lambda: self._sent == self._answered)
                self._sending(lambda: self._grow(need * 2 * PIPELINE))
            ticket = self._sent
            start = (ticket % PIPELINE) * self._region
            entries, end = channel.pack(inputs, self._arena, start, start + self._region)
            message = ("i", entries, end, start + self._region)
            self._sending(lambda: channel.send(self._sock, message))
            self._sent += 1
            self._wait(lambda: self._answered == ticket)
            self._reading = True
        try:  # our turn: only this thread reads the socket until it has its answer
            reply, _ = channel.recv(self._sock, timeout)
        except TimeoutError:
            what = f"inference hung (no answer within {timeout:g} s; worker killed)"
            hung = self._failed(WorkerFailed(f"{self.backend}: {what}", what=what, hung=True))
            self._stop_reading(answered=False)
            self.kill()
            raise hung from None
        except (channel.ChannelClosed, OSError):
            self._stop_reading(answered=False)
            raise self._failed(self._died("during an inference")) from None
        try:
            if reply[0] == "e":
                raise RuntimeBackendError(str(reply[1]))
            self._out_need = max(self._out_need, int(reply[2]))
            return channel.unpack(reply[1], self._arena, copy=True)
        finally:
            self._stop_reading(answered=True)

    def alive(self) -> bool:
        return not self._gone and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def kill(self) -> None:
        """SIGKILL the worker and reap it; the requests in flight fail. Idempotent."""
        with self._reap_lock:
            if not self._gone:
                self._gone = True
                try:
                    self._proc.kill()
                except ProcessLookupError:  # already reaped
                    pass
                self._reap()
        what = f"worker {exit_description(self._proc.returncode)}"
        self._failed(WorkerFailed(f"{self.backend}: {what}", what=what))
        self._release()

    def close(self) -> None:
        """Ask the worker to quit (nothing in flight); kill it if it does not within 2 s."""
        with self._reap_lock:
            if not self._gone:
                self._gone = True
                try:
                    channel.send(self._sock, ("q",))
                    self._proc.wait(QUIT_TIMEOUT_S)
                except (OSError, subprocess.TimeoutExpired):
                    self._proc.kill()
                    self._reap()
        self._release()

    # --- internals ---------------------------------------------------------------------------

    def _wait(self, ready: Callable[[], bool]) -> None:
        """Under ``_turns``: wait until ``ready()``; WorkerFailed if the worker failed meanwhile."""
        while not ready() and self._failure is None:
            self._turns.wait()
        if self._failure is not None:
            failure = self._failure
            raise WorkerFailed(str(failure), what=failure.what, hung=failure.hung)

    def _sending(self, send: Callable[[], object]) -> None:
        """Under ``_turns``: ``send()``; a worker that is gone makes it WorkerFailed."""
        try:
            send()
        except OSError:
            raise self._failed(self._died("during an inference")) from None

    def _stop_reading(self, *, answered: bool) -> None:
        with self._turns:
            self._reading = False
            if answered:
                self._answered += 1
            self._turns.notify_all()
        if self._gone:  # killed while this thread read: closing was left to it
            self._release()

    def _failed(self, failure: WorkerFailed) -> WorkerFailed:
        """Record the first failure for the requests waiting their turn, and wake them."""
        with self._turns:
            if self._failure is None:
                self._failure = failure
            self._turns.notify_all()
        return failure

    def _grow(self, size: int) -> None:
        arena = channel.Arena.create(size)
        assert arena.fd is not None
        try:
            channel.send(self._sock, ("a", arena.size), fds=[arena.fd])
        finally:
            arena.release_fd()
        old, self._arena = self._arena, arena
        self._region = _region(arena.size)
        old.close()

    def _died(self, when: str) -> WorkerFailed:
        """The stream ended: reap the worker and say how it ended."""
        with self._reap_lock:
            if not self._gone:
                self._gone = True
                self._reap()
        self._release()
        what = f"worker {exit_description(self._proc.returncode)} {when}"
        return WorkerFailed(f"{self.backend}: {what}", what=what)

    def _reap(self) -> None:
        try:
            self._proc.wait(REAP_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # closed its end but lives on: make sure
            self._proc.kill()
            self._proc.wait()

    def _release(self) -> None:
        """Close the socket and the arena, unless a thread is reading (it closes them after)."""
        with self._turns:
            if self._released or self._reading:
                return
            self._released = True
        self._sock.close()
        self._arena.close()


def _region(size: int) -> int:
    """The bytes of each in-flight request's region of an arena of ``size`` bytes."""
    return size // PIPELINE // channel.ALIGN * channel.ALIGN
