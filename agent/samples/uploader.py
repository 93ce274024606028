"""The upload of kept inputs to the control plane: a background task, never on the inference path.

It takes the spool's oldest inputs and ``PUT``s each to
``/api/v1/samples/{device_id}/{result_id}`` (the bytes as the body; model, version, reason and
time as query parameters), signed by the device's key when it has an identity
(:mod:`agent.identity.signer`). The control plane files an input by its result id, so a retry
after a lost answer or a restart of the agent stores nothing twice: the spool is the resume point.
A 2xx removes the input (``uploaded_total``); a 4xx other than 401, 408 and 429 is a refusal that
the same request would get again (too large, a bad id, a revoked device: 403), so the input is
dropped and counted (``rejected_total``); anything else (no answer, 401, 408, 429, 5xx) waits with
capped, jittered exponential backoff (a ``Retry-After`` is a floor) and tries the same input
again. A 401 is a signature the control plane did not take, which a later try may fix: a device
clock that NTP has not set yet, a certificate renewed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import aiohttp
from yarl import URL

from agent.errors import AgentError
from agent.identity.signer import Sign
from agent.offload.retry import Backoff, backoff_delay, parse_retry_after
from agent.samples.store import SampleSpool, SpooledInput
from protocol.wakeup import wait_event

log = logging.getLogger(__name__)

Outcome = Literal["uploaded", "rejected", "retry"]
BACKOFF = Backoff(base_s=0.5, cap_s=60.0)
IDLE_S = 30.0
"""How long an idle uploader sleeps before it looks at the spool again (a put wakes it)."""
BATCH = 32


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no HTTP answer (connection error, timeout)
    retry_after_s: float | None = None
    detail: str = ""


def outcome(status: int | None) -> Outcome:
    """What an answer means for the input: done, dropped for good, or tried again later."""
    if status is not None and 200 <= status < 300:
        return "uploaded"
    if status is not None and 400 <= status < 500 and status not in (401, 408, 429):
        return "rejected"
    return "retry"


def wait_s(failures: int, rand: float, retry_after_s: float | None) -> float:
    """The pause after ``failures`` consecutive failures (1-based): jittered and capped, at
    least ``BACKOFF.base_s`` so that a dead control plane is not polled in a tight loop, and at
    least what ``Retry-After`` asked."""
    delay = max(backoff_delay(failures - 1, rand, BACKOFF), BACKOFF.base_s)
    return max(delay, retry_after_s or 0.0)


class Uploader:
    """``run()`` as a task; ``wake()`` when something was spooled; cancel the task to stop."""

    def __init__(
        self,
        spool: SampleSpool,
        *,
        base_url: str,
        device_id: str,
        timeout_s: float = 30.0,
        rand: Callable[[], float] = random.random,
        sign: Sign | None = None,
    ) -> None:
        self.spool = spool
        self.sign = sign
        self.base_url = base_url.rstrip("/")
        self.device_id = device_id
        self.timeout_s = timeout_s
        self._rand = rand
        self._wake = asyncio.Event()
        self.failures = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                self._wake.clear()
                pending = await self.spool.oldest(BATCH)
                if not pending:
                    await self._sleep(IDLE_S)
                    continue
                for spooled in pending:
                    answer = await self.upload(session, spooled)
                    verdict = outcome(answer.status)
                    if verdict == "retry":
                        self.failures += 1
                        delay = wait_s(self.failures, self._rand(), answer.retry_after_s)
                        log.info(
                            "samples: upload of %s failed (%s); retrying in %.1fs",
                            spooled.item.result_id, answer.detail or answer.status, delay,
                        )  # fmt: skip
                        await asyncio.sleep(delay)
                        break
                    self.failures = 0
                    if verdict == "rejected":
                        log.warning(
                            "samples: the control plane refused %s for good (HTTP %s: %s); "
                            "dropped", spooled.item.result_id, answer.status, answer.detail,
                        )  # fmt: skip
                        await self.spool.done(spooled.rowid, "rejected_total")
                    else:
                        await self.spool.done(spooled.rowid, "uploaded_total")

    async def upload(self, session: aiohttp.ClientSession, spooled: SpooledInput) -> Answer:
        """One PUT of one input; every failure is an :class:`Answer`, never an exception."""
        item = spooled.item
        url = URL(f"{self.base_url}/api/v1/samples/{self.device_id}/{item.result_id}").with_query(
            model=item.model,
            model_version=item.model_version,
            reason=item.reason,
            created_at=repr(item.created_at),
        )  # the whole URL before signing: what is sent is what was signed
        headers = {"Content-Type": item.content_type}
        try:
            if self.sign is not None:
                headers.update(await self.sign("PUT", url, item.data))
            async with session.put(url, data=item.data, headers=headers) as response:
                detail = ""
                if response.status >= 300:
                    detail = (await response.text())[:200]
                return Answer(
                    response.status, parse_retry_after(response.headers.get("Retry-After")), detail
                )
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, AgentError) as exc:
            return Answer(None, None, f"{type(exc).__name__}: {exc}")

    async def _sleep(self, seconds: float) -> None:
        await wait_event(self._wake, seconds)
