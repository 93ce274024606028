"""Delivering alert notifications to webhooks, from the durable queue (``alert_notifications``).

The engine writes a notification per webhook in the same transaction that fires or resolves the
alert, and wakes the :class:`Notifier`; the notifier is a task of its own, so a slow or dead
webhook never delays a tick. It takes the due rows, POSTs each (``httpx.AsyncClient``, a timeout
per request, several at once) and records the outcome:

- a 2xx answer: ``delivered``;
- a connection error, a timeout, 408, 425, 429 or 5xx: retried after :func:`backoff` (a capped,
  jittered exponential delay; a 429 or 503 with ``Retry-After`` waits what the server asked, up to
  an hour), until ``alert_max_attempts`` attempts, then ``failed``;
- any other answer (a 404, a 400 of a receiver that refuses the body): ``failed`` at once; it
  would fail the same way again.

Each outcome is logged (by the webhook's :attr:`~controlplane.alerts.webhook.Webhook.name`,
never its URL) and counted in ``edgefleet_alert_notifications_total{outcome}``. A control plane
stopped with notifications pending (or in flight) sends them after its restart: delivery is at
least once, and the body's ``alert_id`` and ``state`` let a receiver drop a repeat.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx

from controlplane.alerts import queries
from controlplane.alerts.queries import Outcome, Queued
from controlplane.alerts.webhook import Webhook, body
from controlplane.errors import StoreClosed
from controlplane.metrics import Metrics
from controlplane.store import Store
from protocol.wakeup import wait_event

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 300.0
RETRY_AFTER_MAX_S = 3600.0
RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})
HONOUR_RETRY_AFTER = frozenset({429, 503})
BATCH = 50  # notifications taken per pass
POLL_S = 5.0  # the longest the loop sleeps without being woken

Verdict = Literal["delivered", "retry", "failed"]


# -- decisions (pure) ------------------------------------------------------------------------------


def backoff(
    attempts: int, retry_after: float | None, jitter: float, *, base: float = BACKOFF_BASE_S,
    cap: float = BACKOFF_CAP_S,
) -> float:  # fmt: skip
    """Seconds to wait after ``attempts`` failed attempts: the server's ``Retry-After`` when it
    gave one (up to an hour), else ``base * 2**(attempts - 1)`` capped at ``cap``, scaled by a
    jitter in [0.5, 1] (``jitter`` in [0, 1]) so that many alerts do not retry in step."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), RETRY_AFTER_MAX_S)
    ceiling = min(cap, base * 2.0 ** max(attempts - 1, 0))
    return ceiling * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if absent or bad."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def verdict(status: int | None) -> Verdict:
    """What an answer means (None: no answer, a connection error or a timeout)."""
    if status is None or status in RETRYABLE or 500 <= status < 600:
        return "retry"
    if 200 <= status < 300:
        return "delivered"
    return "failed"


def outcome(
    item: Queued, status: int | None, error: str | None, retry_after: float | None,
    now: float, max_attempts: int, jitter: float,
) -> Outcome:  # fmt: skip
    """The queue row's next state after one attempt."""
    attempts = item.attempts + 1
    v = verdict(status)
    if v == "delivered":
        return Outcome(item.id, "delivered", attempts, now, None)
    if v == "retry" and attempts < max_attempts:
        wait = backoff(attempts, retry_after if status in HONOUR_RETRY_AFTER else None, jitter)
        return Outcome(item.id, "pending", attempts, now + wait, error)
    return Outcome(item.id, "failed", attempts, now, error)


# -- the task --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    status: int | None
    error: str | None
    retry_after: float | None


class Notifier:
    """``start`` it, ``wake`` it after queueing, ``stop`` it; :meth:`run_once` is one pass."""

    def __init__(
        self, store: Store, webhooks: Sequence[Webhook], metrics: Metrics, *,
        max_attempts: int = 8, timeout_s: float = 10.0, clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:  # fmt: skip
        self.store = store
        self.webhooks: Mapping[str, Webhook] = {w.key: w for w in webhooks}
        self.metrics = metrics
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self.clock = clock
        self.jitter = jitter
        self._transport = transport
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._redact = RedactWebhooks(webhooks)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="alert-notifier")

    async def stop(self) -> None:
        """Stop at once: a notification in flight stays pending and is sent after a restart."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
            logging.getLogger("httpx").removeFilter(self._redact)

    def wake(self) -> None:
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            self._wakeup.clear()
            try:
                while await self.run_once() == BATCH:
                    pass
                wait = POLL_S
                next_at = await self.store.read(queries.next_due)
                if next_at is not None:
                    wait = min(POLL_S, max(0.0, next_at - self.clock()))
            except StoreClosed:
                return
            except Exception:
                log.exception("alert notifications: a pass failed; trying again")
                wait = POLL_S
            await wait_event(self._wakeup, wait)

    async def run_once(self) -> int:
        """Send every due notification (up to BATCH) once; return how many were tried."""
        items = await self.store.read(queries.due, self.clock(), BATCH)
        if not items:
            return 0
        attempts = await asyncio.gather(*(self._send(item) for item in items))
        now = self.clock()
        outcomes = []
        for item, attempt in zip(items, attempts, strict=True):
            if item.webhook not in self.webhooks:
                result = Outcome(item.id, "failed", item.attempts, now, "webhook not configured")
            else:
                result = outcome(
                    item, attempt.status, attempt.error, attempt.retry_after, now,
                    self.max_attempts, self.jitter(),
                )  # fmt: skip
            outcomes.append(result)
            self._report(item, result)
        await self.store.transact(queries.record, outcomes, now)
        return len(items)

    async def _send(self, item: Queued) -> Attempt:
        webhook = self.webhooks.get(item.webhook)
        if webhook is None:
            return Attempt(None, "webhook not configured", None)
        if self._client is None:
            logging.getLogger("httpx").addFilter(self._redact)  # it logs each request's URL
            self._client = httpx.AsyncClient(
                timeout=self.timeout_s, follow_redirects=False, transport=self._transport,
                headers={"User-Agent": "edgefleet-alerts"},
            )  # fmt: skip
        url = webhook.url.get_secret_value()
        try:
            response = await self._client.post(url, json=body(webhook.format, item.payload))
        except httpx.TimeoutException:
            return Attempt(None, "no answer in time", None)
        except httpx.HTTPError as exc:
            return Attempt(None, _redact(f"{type(exc).__name__}: {exc}", url, webhook), None)
        error = None if response.is_success else f"HTTP {response.status_code}"
        retry_after = parse_retry_after(response.headers.get("Retry-After"), self.clock())
        return Attempt(response.status_code, error, retry_after)

    def _report(self, item: Queued, result: Outcome) -> None:
        webhook = self.webhooks.get(item.webhook)
        name = webhook.name if webhook is not None else f"webhook {item.webhook} (gone)"
        what = f"alert {item.alert_id} {item.event} to {name}"
        if result.state == "delivered":
            self.metrics.alert_notifications.inc(1, "delivered")
            log.info("notified %s (attempt %d)", what, result.attempts)
        elif result.state == "pending":
            self.metrics.alert_notifications.inc(1, "retried")
            log.info(
                "notifying %s failed (%s, attempt %d); retrying in %.0fs",
                what, result.error, result.attempts, result.next_at - self.clock(),
            )  # fmt: skip
        else:
            self.metrics.alert_notifications.inc(1, "failed")
            log.warning(
                "gave up notifying %s after %d attempt(s): %s", what, result.attempts, result.error
            )


class RedactWebhooks(logging.Filter):
    """Put on httpx's logger while the notifier's client lives: httpx logs every request's URL
    at INFO (``HTTP Request: POST https://...``), and a webhook's URL is a secret."""

    def __init__(self, webhooks: Sequence[Webhook]) -> None:
        super().__init__()
        self.names: dict[str, str] = {}
        for w in webhooks:
            secret = w.url.get_secret_value()
            self.names[secret] = w.name
            self.names[str(httpx.URL(secret))] = w.name  # as httpx prints it

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._clean(a) for a in record.args)
        record.msg = self._clean(record.msg)
        return True

    def _clean(self, value: object) -> object:
        if not isinstance(value, str | httpx.URL):
            return value
        text = str(value)
        found = False
        for secret, name in sorted(self.names.items(), key=lambda kv: -len(kv[0])):
            if secret in text:
                text, found = text.replace(secret, name), True
        return text if found else value


def _redact(text: str, url: str, webhook: Webhook) -> str:
    """An error message without the URL (some errors quote it, token and all)."""
    return text.replace(url, webhook.name)
