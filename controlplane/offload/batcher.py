"""The dynamic batcher: concurrent requests for one model merged into one execution.

Requests wait in a bounded queue. The scheduler takes a batch when the queue holds ``max_batch``
rows or when the oldest request has waited ``max_delay`` seconds, whichever comes first (Triton's
``max_queue_delay_microseconds``), concatenates the rows of its requests on the batch dimension,
runs the model once on a worker thread (never on the event loop), and splits the outputs back, so
each request gets exactly its own rows. While one batch runs, the next one fills up.

Refusals: a full queue raises :class:`Unavailable` (503 + Retry-After) at once, and so does a
batcher that is draining; a request whose deadline passes while it waits is taken out of the queue
and raises :class:`DeadlineExceeded` without running (a request that has started runs to the end).
:meth:`Batcher.drain` stops taking requests, runs what is queued at once (no more waiting for a
batch to fill) and returns when the last batch is answered.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from controlplane.offload.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidRequest,
    OffloadError,
    Unavailable,
)
from controlplane.offload.metrics import OffloadMetrics
from protocol.wakeup import wait_event

Arrays = dict[str, np.ndarray]


class Model(Protocol):
    name: str
    version: str
    batched: bool

    def run(self, inputs: Mapping[str, np.ndarray]) -> Arrays: ...


@dataclass(frozen=True)
class BatchPolicy:
    max_batch: int = 32
    max_delay: float = 0.002
    """Seconds the oldest queued request may wait for the batch to fill."""
    max_queue: int = 256
    """Requests that may wait; one more is refused with 503."""
    retry_after: int = 1
    """Seconds a refused client is told to wait (``Retry-After``)."""


@dataclass(eq=False)
class _Pending:
    inputs: Arrays
    rows: int
    enqueued: float
    future: asyncio.Future[Arrays]
    started: bool = field(default=False)


class Batcher:
    def __init__(self, model: Model, policy: BatchPolicy, metrics: OffloadMetrics) -> None:
        self.model = model
        self.max_batch = policy.max_batch if model.batched else 1
        self.policy = policy
        self._metrics = metrics
        self._labels = (model.name, model.version)
        metrics.add_model(*self._labels)
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{model.name}")

    @property
    def pending(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._schedule())

    async def infer(self, inputs: Arrays, rows: int, timeout: float | None = None) -> Arrays:
        """The model's outputs for these inputs (``rows`` on the batch dimension)."""
        if self._closing:
            raise Unavailable(
                "the server is shutting down; retry on another replica", self.policy.retry_after
            )
        if rows > self.max_batch:
            raise InvalidRequest(
                f"the request has {rows} rows but model {self.model.name!r} "
                f"takes at most {self.max_batch} per batch"
            )
        if len(self._queue) >= self.policy.max_queue:
            raise Unavailable(
                f"the queue of model {self.model.name!r} is full "
                f"({self.policy.max_queue} requests); retry later",
                self.policy.retry_after,
            )
        loop = asyncio.get_running_loop()
        item = _Pending(inputs, rows, loop.time(), loop.create_future())
        self._queue.append(item)
        self._queued_rows += rows
        self._pending_changed()
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(item.future), timeout)
        except TimeoutError:
            assert timeout is not None
            if item.started:  # too late to refuse: it is running, so let it finish
                return await item.future
            self._remove(item)
            item.future.cancel()
            raise DeadlineExceeded(
                f"the request's timeout ({timeout * 1e3:.0f} ms) passed while it waited in the "
                f"queue of model {self.model.name!r}; it did not run"
            ) from None

    async def drain(self) -> None:
        """Refuse new requests, run the queued ones now, and return when all are answered."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        await self.drain()
        self._executor.shutdown(wait=True)

    # -- the scheduler ------------------------------------------------------------------------

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            fire_at = self._queue[0].enqueued + self.policy.max_delay
            while self._queue and self._queued_rows < self.max_batch and not self._closing:
                remaining = fire_at - loop.time()
                if remaining <= 0:
                    break
                self._wake.clear()
                if not await wait_event(self._wake, remaining):
                    break
            batch = self._take(loop.time())
            if batch:
                await self._execute(batch)

    def _take(self, now: float) -> list[_Pending]:
        batch: list[_Pending] = []
        rows = 0
        while self._queue and rows + self._queue[0].rows <= self.max_batch:
            item = self._queue.popleft()
            self._queued_rows -= item.rows
            if item.future.done():  # its caller gave up
                continue
            item.started = True
            rows += item.rows
            self._metrics.queue_duration_us.inc(round((now - item.enqueued) * 1e6), *self._labels)
            batch.append(item)
        self._pending_changed()
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            outputs = await loop.run_in_executor(self._executor, self._run, batch)
            parts = split(outputs, [item.rows for item in batch])
        except OffloadError as exc:
            error: OffloadError = exc
        except Exception as exc:  # a bug or a shape the model refuses: answer it, keep serving
            error = InferenceFailed(f"model {self.model.name!r}: {exc}")
        else:
            compute_us = round((time.perf_counter() - started) * 1e6)
            rows = sum(item.rows for item in batch)
            self._metrics.exec_count.inc(1, *self._labels)
            self._metrics.inference_count.inc(rows, *self._labels)
            self._metrics.compute_infer_duration_us.inc(compute_us * len(batch), *self._labels)
            for item, result in zip(batch, parts, strict=True):
                if not item.future.done():
                    item.future.set_result(result)
            return
        for item in batch:
            if not item.future.done():
                item.future.set_exception(error)

    def _run(self, batch: list[_Pending]) -> Arrays:
        if len(batch) == 1:
            return self.model.run(batch[0].inputs)
        merged = {
            name: np.concatenate([item.inputs[name] for item in batch]) for name in batch[0].inputs
        }
        return self.model.run(merged)

    def _remove(self, item: _Pending) -> None:
        try:
            self._queue.remove(item)
        except ValueError:
            return
        self._queued_rows -= item.rows
        self._pending_changed()

    def _pending_changed(self) -> None:
        self._metrics.pending_request_count.set(len(self._queue), *self._labels)


def split(outputs: Mapping[str, np.ndarray], rows: list[int]) -> list[Arrays]:
    """Each request's share of a batch's outputs: consecutive slices of ``rows`` rows."""
    if len(rows) == 1:
        return [dict(outputs)]
    total = sum(rows)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise InferenceFailed(
                f"output {name!r} has shape {list(array.shape)}, not "
                f"{total} rows: the model does not batch on its first axis"
            )
    bounds = np.cumsum(rows)[:-1]
    parts: list[Arrays] = [{} for _ in rows]
    for name, array in outputs.items():
        for part, piece in zip(parts, np.split(array, bounds), strict=True):
            part[name] = piece
    return parts
