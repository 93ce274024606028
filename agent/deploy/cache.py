"""Loaded models, reference-counted, so that a swap closes the old model only when nobody uses it.

One agent has one cache of its own. The simulator gives all its agents one shared cache: a
thousand simulated devices that install the same release then share one interpreter (keyed by
release and artifact SHA-256), while each still downloads and verifies its own copy of the file.
A model whose last user lets go is closed after ``grace`` seconds: a request that looked the old
model up just before the swap still finishes on it (its executor drains), so none fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from agent.inference import ServedModel

log = logging.getLogger(__name__)

CLOSE_GRACE_S = 2.0


@dataclass
class _Entry:
    served: ServedModel
    refs: int


class ModelCache:
    def __init__(self, grace: float = CLOSE_GRACE_S) -> None:
        self._grace = grace
        self._entries: dict[str, _Entry] = {}
        self._keys: dict[int, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def adopt(self, key: str, served: ServedModel, refs: int = 1) -> None:
        """Count an already loaded model (the configured ones) as used ``refs`` times."""
        entry = self._entries.get(key)
        if entry is not None and entry.served is served:
            entry.refs += refs
            return
        self._entries[key] = _Entry(served, refs)
        self._keys[id(served)] = key

    async def acquire(self, key: str, load: Callable[[], ServedModel]) -> ServedModel:
        """The model under ``key``, loading it with ``load`` (in a thread) the first time."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._entries.get(key)
            if entry is None:
                served = await asyncio.to_thread(load)
                entry = self._entries[key] = _Entry(served, 0)
                self._keys[id(served)] = key
            entry.refs += 1
            return entry.served

    def release(self, served: ServedModel) -> None:
        """One user fewer; the last one's release closes the model after the grace period."""
        key = self._keys.get(id(served))
        entry = self._entries.get(key) if key is not None else None
        if entry is None or entry.served is not served:
            self._close_later(served)
            return
        entry.refs -= 1
        if entry.refs <= 0:
            del self._entries[key]  # type: ignore[arg-type]
            self._keys.pop(id(served), None)
            self._close_later(served)

    def _close_later(self, served: ServedModel) -> None:
        async def close() -> None:
            await asyncio.sleep(self._grace)
            await asyncio.to_thread(served.close)
            log.debug("closed model %s %s", served.name, served.version)

        task = asyncio.create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def drain(self) -> None:
        """Wait for the models being closed (at shutdown)."""
        await asyncio.gather(*self._closing, return_exceptions=True)

    def close_all(self) -> None:
        """Close every model still held (at shutdown). Idempotent."""
        for entry in list(self._entries.values()):
            entry.served.close()
        self._entries.clear()
        self._keys.clear()
