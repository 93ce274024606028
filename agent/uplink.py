"""The uplink: drains the outbox to the broker in result batches, and sends status and telemetry.

**Results** travel as :class:`~protocol.messages.ResultBatch` messages, QoS 1, on the device's
``results`` topic. A row leaves the outbox only after the broker's PUBACK for the batch that
carried it; a failed publish (disconnected, no PUBACK in time, refused) deletes nothing, backs off
and sends the rows again later. Delivery is therefore at least once: a crash between the PUBACK and
the delete sends a batch twice, and the control plane deduplicates on each result's id.

**Pipelining.** Up to ``max_in_flight`` batches wait for their PUBACK at once, so the round trip
and the delete's commit overlap the next publish. Rows in flight are remembered by rowid and left
out of later peeks; they return to the pool only when their batch fails. Batches grow by
themselves under load: while the pipeline is full, new rows accumulate for the next peek.

**Batch bytes.** Each outbox row already holds an encoded ``InferenceResult``; the batch is the
encoded envelope with those bytes spliced into its ``results`` array, not a decode and re-encode
of every result (about 45 times faster for 200 results; ``tests/agent/test_uplink.py`` checks the
bytes equal what :func:`protocol.messages.encode` gives).

**Nobody listening.** With MQTT v5 a PUBACK can say "no matching subscribers": the broker
took the batch and nobody will get it (a broker restarted without persistence has forgotten the
control plane's subscription, or the control plane has never subscribed). The rows then stay,
and until a batch is delivered again the uplink probes with one result at a time, backing off,
so an absent control plane costs little traffic. ``require_subscribers=False`` turns this off
for brokers where something other than a subscription consumes the results (a rule engine).
Over MQTT 3.1.1 the broker cannot say so.

**Status and telemetry.** At every (re)connect the birth (``state=online``) is published retained
with QoS 1 on ``status``; the MQTT will (:func:`make_will`) is a retained ``state=offline`` that
the broker publishes if the agent vanishes, and :meth:`Uplink.stop` publishes the same offline
status itself before a clean disconnect. Telemetry goes out every ``telemetry_interval`` seconds
with QoS 0 from its own task, so a device that returns after a day keeps reporting on schedule
while its outbox drains.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence

from agent.errors import OutboxError
from agent.outbox import Outbox, OutboxRow
from protocol.messages import ResultBatch, Status, Telemetry, encode
from protocol.mqtt import MQTTClient, MQTTError, NoSubscribers, NotConnected, Will, backoff_delay
from protocol.topics import Channel, device_topic
from protocol.wakeup import wait_event

log = logging.getLogger(__name__)

RETRY_MIN = 0.5
RETRY_MAX = 30.0
IDLE_WAIT_S = 1.0
"""How long an idle drain loop sleeps between safety checks when no put has woken it."""


def make_will(device_id: str) -> Will:
    """The MQTT will of a device: its retained ``state=offline`` status."""
    payload = encode(Status(device_id=device_id, state="offline"))
    return Will(topic=device_topic(device_id, Channel.STATUS), payload=payload, qos=1, retain=True)


_RESULTS_TAIL = b'"results":[]}'


def batch_payload(device_id: str, payloads: Sequence[bytes]) -> bytes:
    """A ResultBatch message carrying already-encoded InferenceResults, byte for byte."""
    if not payloads:
        raise ValueError("a result batch needs at least one result")
    head = encode(ResultBatch.model_construct(device_id=device_id, results=[]))
    if not head.endswith(_RESULTS_TAIL):  # the envelope's last field must stay `results`
        raise AssertionError(f"unexpected ResultBatch encoding: {head!r}")
    return b"".join((head[:-2], b",".join(payloads), b"]}"))


def looks_encoded(payload: bytes) -> bool:
    """A cheap check that a row holds a JSON object, so one bad row cannot spoil a whole batch."""
    return payload[:1] == b"{" and payload[-1:] == b"}"


class Uplink:
    """Drains one device's outbox to the broker and keeps its status and telemetry current."""

    def __init__(
        self,
        *,
        device_id: str,
        client: MQTTClient,
        outbox: Outbox,
        birth: Callable[[], Status],
        telemetry: Callable[[], Telemetry],
        telemetry_interval: float = 10.0,
        batch_size: int = 200,
        ack_timeout: float = 10.0,
        idle_poll: float = 0.05,
        max_in_flight: int = 4,
        linger: float = 0.05,
        require_subscribers: bool = True,
    ) -> None:
        for name, value in (("telemetry_interval", telemetry_interval), ("batch_size", batch_size),
                            ("ack_timeout", ack_timeout), ("idle_poll", idle_poll),
                            ("max_in_flight", max_in_flight)):  # fmt: skip
            if value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
        self.device_id = device_id
        self._client = client
        self._outbox = outbox
        self._birth = birth
        self._telemetry = telemetry
        self._telemetry_interval = telemetry_interval
        self._batch_size = batch_size
        self._ack_timeout = ack_timeout
        self._idle_poll = idle_poll
        self._max_in_flight = max_in_flight
        if linger < 0:
            raise ValueError(f"linger must not be negative, not {linger}")
        self._linger = linger
        self._require_subscribers = require_subscribers
        self._probing = False  # nobody subscribed at the last try: send one result at a time
        self._results_topic = device_topic(device_id, Channel.RESULTS)
        self._status_topic = device_topic(device_id, Channel.STATUS)
        self._telemetry_topic = device_topic(device_id, Channel.TELEMETRY)
        self._wake = asyncio.Event()
        self._retry = asyncio.Event()  # ends a backoff early (drain_now)
        self._stopped = asyncio.Event()
        self._in_flight: set[int] = set()
        self._batches: set[asyncio.Task[None]] = set()
        self._failures = 0
        self.sent_total = 0
        """Results acknowledged by the broker (and deleted from the outbox)."""
        self.dropped_total = 0
        """Rows deleted unsent because they did not hold an encoded result (corrupt)."""
        self.errors_total = 0
        """Batches that failed other than by a disconnect (no PUBACK in time, refused, outbox)."""
        previous = client.on_connect

        async def on_connect() -> None:
            if previous is not None:
                await previous()
            await self._announce()

        client.on_connect = on_connect

    @property
    def no_subscriber(self) -> bool:
        """True while the broker says nobody subscribes to the results (the rows wait)."""
        return self._probing

    async def run(self) -> None:
        """Drain the outbox and send telemetry until cancelled or stopped."""
        tasks = {
            asyncio.create_task(self._drain(), name=f"drain-{self.device_id}"),
            asyncio.create_task(self._send_telemetry(), name=f"telemetry-{self.device_id}"),
            asyncio.create_task(self._stopped.wait()),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a loop that died re-raises here
        finally:
            for task in tasks | self._batches:
                task.cancel()
            await asyncio.gather(*tasks, *self._batches, return_exceptions=True)

    def wake(self) -> None:
        """Nudge the drain loop: a result was just put in the outbox."""
        self._wake.set()

    def drain_now(self) -> None:
        """Send now (the ``resync`` command): end the backoff after failures and wake the loop."""
        self._failures = 0
        self._retry.set()
        self._wake.set()

    async def stop(self) -> None:
        """Publish a clean offline status (retained) if connected, then stop :meth:`run`."""
        try:
            if self._client.connected:
                offline = encode(Status(device_id=self.device_id, state="offline"))
                await self._client.publish(
                    self._status_topic, offline, qos=1, retain=True, timeout=self._ack_timeout
                )
        except MQTTError as exc:
            log.warning("%s: could not publish the offline status: %s", self.device_id, exc)
        finally:
            self._stopped.set()

    # --- status and telemetry ----------------------------------------------------------------

    async def _announce(self) -> None:
        if self._stopped.is_set():  # a reconnect while stopping must not undo the offline status
            return
        payload = encode(self._birth())
        await self._client.publish(
            self._status_topic, payload, qos=1, retain=True, timeout=self._ack_timeout
        )
        log.info("%s: published birth (online)", self.device_id)

    async def _send_telemetry(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self._telemetry_interval
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due += self._telemetry_interval
            if loop.time() > due:  # fell behind (a suspended laptop): skip, never burst
                due = loop.time() + self._telemetry_interval
            if not self._client.connected:
                continue  # counts accumulate in the next message's interval
            try:
                payload = encode(self._telemetry())
            except Exception:
                log.exception("%s: building telemetry failed", self.device_id)
                continue
            try:
                await self._client.publish(self._telemetry_topic, payload, qos=0)
            except MQTTError as exc:
                log.debug("%s: telemetry not sent: %s", self.device_id, exc)

    # --- results -------------------------------------------------------------------------------

    async def _drain(self) -> None:
        while True:
            if self._failures:
                self._retry.clear()
                delay = backoff_delay(self._failures - 1, RETRY_MIN, RETRY_MAX, random.random())
                await wait_event(self._retry, delay)
            if not self._client.connected:
                try:
                    await self._client.wait_connected()
                except NotConnected:  # the client was stopped; so are we, shortly
                    await asyncio.sleep(self._idle_poll)
                continue
            free = self._max_in_flight - len(self._batches)
            if self._probing:
                free = 0 if self._batches else 1
            self._wake.clear()
            waiting = self._outbox.stats().depth - len(self._in_flight)
            if free > 0 and waiting > 0:
                if self._linger and waiting < self._batch_size and not self._probing:
                    # Let a batch fill: at low load this turns a publish and an outbox commit
                    # per result into one per batch, which the request path would feel.
                    await asyncio.sleep(self._linger)
                rows = await self._peek(1 if self._probing else free * self._batch_size)
                for start in range(0, len(rows), self._batch_size):
                    self._start_batch(rows[start : start + self._batch_size])
            # The pipeline is full or the outbox empty: wait for a put or a finished batch. When
            # nothing waits and nothing is in flight only a put (which wakes us) brings work, so
            # an idle device does not poll its outbox.
            idle = waiting <= 0 and not self._batches
            await wait_event(self._wake, IDLE_WAIT_S if idle else self._idle_poll)

    async def _peek(self, limit: int) -> list[OutboxRow]:
        try:
            rows = await self._outbox.peek(limit + len(self._in_flight))
        except OutboxError as exc:
            log.error("%s: cannot read the outbox: %s", self.device_id, exc)
            self._failures += 1
            return []
        fresh = [r for r in rows if r.rowid not in self._in_flight][:limit]
        bad = [r for r in fresh if not looks_encoded(r.payload)]
        if bad:
            await self._drop(bad)
            fresh = [r for r in fresh if looks_encoded(r.payload)]
        return fresh

    async def _drop(self, rows: list[OutboxRow]) -> None:
        log.error("%s: deleting %d outbox rows that hold no encoded result (first: %s)",
                  self.device_id, len(rows), rows[0].result_id)  # fmt: skip
        try:
            await self._outbox.delete([r.rowid for r in rows])
            self.dropped_total += len(rows)
        except OutboxError as exc:
            log.error("%s: cannot delete corrupt rows: %s", self.device_id, exc)

    def _start_batch(self, rows: list[OutboxRow]) -> None:
        rowids = [r.rowid for r in rows]
        self._in_flight.update(rowids)
        task = asyncio.create_task(self._send_batch(rows, rowids))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _send_batch(self, rows: list[OutboxRow], rowids: list[int]) -> None:
        try:
            payload = batch_payload(self.device_id, [r.payload for r in rows])
            await self._client.publish(
                self._results_topic,
                payload,
                qos=1,
                timeout=self._ack_timeout,
                require_subscribers=self._require_subscribers,
            )
            await self._outbox.delete(rowids)
        except NoSubscribers:
            self._failures += 1
            if not self._probing:
                log.warning("%s: nobody subscribes to %s (is the control plane running?); results "
                            "stay in the outbox", self.device_id, self._results_topic)  # fmt: skip
            self._probing = True
        except NotConnected as exc:  # the drain loop waits for the reconnect; no backoff
            log.debug("%s: %d results not sent, will retry: %s", self.device_id, len(rows), exc)
        except (MQTTError, OutboxError) as exc:
            self._failures += 1
            self.errors_total += 1
            log.warning("%s: %d results not sent, will retry: %s",
                        self.device_id, len(rows), exc)  # fmt: skip
        else:
            if self._probing:
                log.info("%s: %s has a subscriber again", self.device_id, self._results_topic)
            self._failures = 0
            self._probing = False
            self.sent_total += len(rows)
        finally:
            self._in_flight.difference_update(rowids)
            self._wake.set()
