"""Waiting for an ``asyncio.Event`` with a timeout, without ever losing a cancellation.

Every background loop here sleeps the same way: until it is woken (a put, a report, a stop) or
its interval is up. ``asyncio.wait_for(event.wait(), timeout)`` does that, but on Python 3.11 it
can swallow the cancellation of the task that waits when the event is set in the same moment
(CPython gh-86296, fixed in 3.12): the loop then runs on, and whoever cancelled it to stop it
waits for ever. That hung a test's teardown in CI. :func:`wait_event` uses ``asyncio.wait``,
which never returns normally once its caller is cancelled.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until ``event`` is set (True) or ``timeout`` seconds pass (False)."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
    return bool(done)
