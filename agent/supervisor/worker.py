"""The worker process: one model on one backend, answering inference requests from the agent.

Started by :class:`agent.supervisor.process.WorkerProcess` as
``python -m agent.supervisor.worker --backend NAME --model PATH --threads N --sock FD
--arena FD --arena-size BYTES``. It imports only the runtime modules (NumPy, the engine, the
tensor specs), opens the model, says ``ready`` with its tensor specs (or why it could not load),
then answers requests one at a time, in the order they came, until the agent says ``quit`` or
closes the socket. The agent may send the next request before the answer to the last one (two in
flight, each in its own region of the arena), so the worker never waits for the agent between
two inferences.

The protocol (messages of :mod:`agent.supervisor.channel`):

    worker -> agent  ("r", pid, inputs, outputs)   ready; specs as dicts
                     ("l", message)                the model does not load on this backend
    agent -> worker  ("i", entries, out_offset, out_limit)
                                                   infer the inputs in the arena; outputs go
                                                   between out_offset and out_limit
                     ("a", size) + descriptor      use this (larger) arena from now on
                     ("q",)                        quit
    worker -> agent  ("o", entries, out_bytes)     the outputs (in the arena from out_offset)
                     ("e", message)                the engine raised: this request failed

It ignores SIGINT and SIGTERM (a Ctrl-C or a service stop reaches the whole process group; the
agent closes its workers itself) and exits on its own within a second when the agent is gone
(its parent changes), even while an inference hangs.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from agent.errors import AgentError, ModelLoadError
from agent.runtimes import backends
from agent.runtimes.base import Runtime
from agent.supervisor import channel

PARENT_POLL_S = 0.5


def open_backend(name: str, path: Path, threads: int) -> Runtime:
    registry = backends()
    if name not in registry:
        raise ModelLoadError(f"unknown backend {name!r} in the worker")
    return registry[name].open(path, threads)


def serve(sock: socket.socket, arena: channel.Arena, runtime: Runtime) -> None:
    """Answer requests until ``quit`` or the end of the stream."""
    while True:
        try:
            message, fds = channel.recv(sock, None)
        except (channel.ChannelClosed, OSError):
            return
        op = message[0]
        if op == "i":
            _, entries, out_offset, out_limit = message
            inputs = channel.unpack(entries, arena, copy=False)
            try:
                outputs = runtime.infer(inputs)
            except AgentError as exc:
                channel.send(sock, ("e", str(exc)))
                continue
            except Exception as exc:  # a backend that let a foreign exception through
                channel.send(sock, ("e", f"{runtime.name}: inference failed: {exc}"))
                continue
            finally:
                del inputs
            packed, end = channel.pack(outputs, arena, out_offset, out_limit)
            channel.send(sock, ("o", packed, end - out_offset + _inline_bytes(packed)))
        elif op == "a":
            old, arena = arena, channel.Arena.attach(fds[0], message[1])
            old.close()
        elif op == "q":
            return


def _inline_bytes(entries: Sequence[channel.Entry]) -> int:
    """Bytes of outputs that did not fit, so the agent can size the next arena for them."""
    return sum(channel.aligned(len(w)) for _, _, _, w in entries if isinstance(w, bytes))


def _watch_parent(parent: int) -> None:
    """Exit when the agent is gone (re-parented), even while the main thread hangs in C."""
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent:
            os._exit(70)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.supervisor.worker")
    p.add_argument("--backend", required=True)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sock", type=int, required=True)
    p.add_argument("--arena", type=int, required=True)
    p.add_argument("--arena-size", type=int, required=True)
    p.add_argument("--parent", type=int, required=True)
    args = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(args.parent,), daemon=True).start()
    sock = socket.socket(fileno=args.sock)
    arena = channel.Arena.attach(args.arena, args.arena_size)
    try:
        runtime = open_backend(args.backend, args.model, args.threads)
    except ModelLoadError as exc:
        channel.send(sock, ("l", str(exc)))
        return 3
    inputs = [spec.model_dump() for spec in runtime.inputs]
    outputs = [spec.model_dump() for spec in runtime.outputs]
    channel.send(sock, ("r", os.getpid(), inputs, outputs))
    try:
        serve(sock, arena, runtime)
    finally:
        runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
