"""Send a command to a device over MQTT and await its reply (request/response, MQTT v5 style).

A request goes out on the device's ``commands`` topic, QoS 1, with three v5 properties: the
response topic is the device's OWN ``commands/reply`` topic (so a broker ACL keeps every device
inside its own prefix, replies included), the correlation data is ``INSTANCE:REQUEST_ID``, and the
message expiry is the timeout, so a request for an offline device expires on the broker instead
of running hours later. The payload carries the same (``reply_to``, ``correlation_id``,
``expires_at``) for 3.1.1 brokers and clients, which never see properties.

Every control plane instance subscribes to ``edgefleet/v1/devices/+/commands/reply`` (not a
shared subscription: the reply must reach the instance that waits for it) and ignores the
correlation ids it did not send. A reply counts only from the device the request went to: it
must arrive on that device's topic and name it.

The clock offset is NTP's: with t0 the send and t3 the receipt (control plane clock), t1 the
request's receipt and t2 the reply (device clock), offset = ((t1 - t0) + (t2 - t3)) / 2 and the
round trip (t3 - t0) - (t2 - t1).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from controlplane.commands import records
from controlplane.errors import BadRequest, Refused
from controlplane.store import Store
from protocol.commands import (
    COMMANDS,
    CommandName,
    CommandReply,
    CommandRequest,
    correlation_id,
    parse_args,
    reply_topic,
    split_correlation,
)
from protocol.errors import InvalidMessage, MQTTError
from protocol.messages import decode, encode, new_id
from protocol.mqtt import Message, MQTTClient
from protocol.topics import Channel, device_filter, device_topic

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
MAX_TIMEOUT_S = 300.0
PUBLISH_TIMEOUT_S = 10.0


class CommandTimeout(Refused):
    """504: the device did not answer within the timeout (the record says ``timeout``)."""

    status = 504

    def __init__(self, message: str, record: dict[str, Any]) -> None:
        super().__init__(message)
        self.record = record


class CommandsUnavailable(Refused):
    """503: no MQTT here, or the broker did not take the request."""

    status = 503


def clock_offset(
    sent: float, device_received: float, device_answered: float, received: float
) -> tuple[float, float]:
    """``(offset, round_trip)`` in seconds, NTP-style (see the module docstring); a positive
    offset means the device's clock is ahead of the control plane's."""
    offset = ((device_received - sent) + (device_answered - received)) / 2
    round_trip = (received - sent) - (device_answered - device_received)
    return offset, max(0.0, round_trip)


@dataclass
class _Pending:
    device_id: str
    future: asyncio.Future[tuple[CommandReply, float]] = field(repr=False)


class CommandRequester:
    """Sends commands with :meth:`run`; :meth:`on_reply` takes the replies from ingestion."""

    def __init__(
        self,
        client: MQTTClient,
        store: Store,
        *,
        instance: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.store = store
        self.instance = instance
        self._clock = clock
        self._pending: dict[str, _Pending] = {}

    async def start(self) -> None:
        """Subscribe to every device's reply topic (renewed after every reconnect)."""
        await self.client.subscribe(device_filter(Channel.COMMAND_REPLY), qos=1)

    async def stop(self) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.cancel()

    def on_reply(self, device_id: str, message: Message) -> None:
        """A message on a device's reply topic (from ingestion, in the loop): never raises."""
        received = self._clock()
        message.ack()  # a reply is not data to keep: whoever waits for it takes it now or never
        try:
            reply = decode(CommandReply, message.payload)
        except InvalidMessage as exc:
            log.warning("dropped a malformed command reply from %s: %s", device_id, exc)
            return
        key = split_correlation(message.correlation_data) or split_correlation(reply.correlation_id)
        if key is None or key[0] != self.instance:
            return  # another instance's request, or none at all
        pending = self._pending.get(key[1])
        if pending is None:
            log.info("a reply from %s to request %s came after its timeout", device_id, key[1])
            return
        if device_id != pending.device_id or reply.device_id != device_id:
            log.warning("ignored a reply to request %s from %s: it was sent to %s",
                        key[1], device_id, pending.device_id)  # fmt: skip
            return
        if not pending.future.done():
            pending.future.set_result((reply, received))

    async def run(
        self,
        device_id: str,
        command: str,
        args: dict[str, Any] | None,
        *,
        sender: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> dict[str, Any]:
        """Send ``command`` and return its record once answered; :class:`CommandTimeout` when
        no reply came within ``timeout_s``, :class:`BadRequest` for an unknown command or bad
        arguments, :class:`CommandsUnavailable` when the broker did not take it."""
        try:
            parsed = parse_args(command, args)
        except InvalidMessage as exc:
            raise BadRequest("command" if command not in COMMANDS else "args", str(exc)) from None
        request_id = new_id()
        now = self._clock()
        request = CommandRequest(
            request_id=request_id, device_id=device_id, command=cast(CommandName, command),
            args=parsed.model_dump(exclude_none=True), sender=sender, sent_at=now,
            expires_at=now + timeout_s, reply_to=reply_topic(device_id),
            correlation_id=correlation_id(self.instance, request_id),
        )  # fmt: skip
        sent = records.Sent(
            request_id, device_id, command, request.args, sender, self.instance, now,
            request.expires_at,
        )  # fmt: skip
        await self.store.transact(records.insert, sent)
        future: asyncio.Future[tuple[CommandReply, float]] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[request_id] = _Pending(device_id, future)
        try:
            return await self._exchange(request, future, timeout_s)
        finally:
            self._pending.pop(request_id, None)

    async def _exchange(
        self,
        request: CommandRequest,
        future: asyncio.Future[tuple[CommandReply, float]],
        timeout_s: float,
    ) -> dict[str, Any]:
        request_id, device_id = request.request_id, request.device_id
        deadline = request.sent_at + timeout_s
        sent_at = self._clock()
        try:
            await self.client.publish(
                device_topic(device_id, Channel.COMMANDS),
                encode(request),
                qos=1,
                timeout=min(PUBLISH_TIMEOUT_S, timeout_s),
                response_topic=request.reply_to,
                correlation_data=(request.correlation_id or "").encode(),
                message_expiry_s=timeout_s,
            )
        except MQTTError as exc:
            error = f"not sent: the broker did not take the request ({exc})"
            await self._complete(request_id, records.Outcome("error", error=error))
            raise CommandsUnavailable(error) from None
        try:
            reply, received = await asyncio.wait_for(future, max(0.0, deadline - self._clock()))
        except asyncio.TimeoutError:
            error = f"device {device_id} did not answer within {timeout_s:g}s"
            record = await self._complete(request_id, records.Outcome("timeout", error=error))
            raise CommandTimeout(error, record) from None
        offset, round_trip = clock_offset(sent_at, reply.received_at, reply.agent_time, received)
        outcome = records.Outcome(
            "ok" if reply.ok else "error",
            answered_at=received,
            error=None if reply.ok else (reply.error or "the device gave no reason"),
            result=reply.result,
            truncated=reply.truncated,
            clock_offset_s=round(offset, 6),
            round_trip_s=round(round_trip, 6),
        )
        return await self._complete(request_id, outcome)

    async def _complete(self, request_id: str, outcome: records.Outcome) -> dict[str, Any]:
        return await self.store.transact(records.complete, request_id, outcome)
