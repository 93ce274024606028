"""protocol.wakeup.wait_event: woken, timed out, and never a lost cancellation."""

from __future__ import annotations

import asyncio

import pytest

from protocol.wakeup import wait_event


async def test_it_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_soon(event.set)
    assert await wait_event(event, 5) is True
    assert await wait_event(event, 0) is True  # already set


async def sleeper(event: asyncio.Event, woken: list[int]) -> None:
    """A background loop as the agent has them: sleep until woken or the interval is up."""
    while True:
        event.clear()
        await wait_event(event, 30)
        woken.append(1)


@pytest.mark.parametrize("rounds", [50])
async def test_a_cancel_in_the_moment_the_event_is_set_still_stops_the_loop(rounds: int) -> None:
    """The race asyncio.wait_for loses on Python 3.11: set and cancel in the same loop turn."""
    for _ in range(rounds):
        event = asyncio.Event()
        task = asyncio.create_task(sleeper(event, []))
        await asyncio.sleep(0)  # it is waiting now
        event.set()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        assert done == {task} and task.cancelled()
