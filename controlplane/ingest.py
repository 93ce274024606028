"""MQTT ingestion: device status, telemetry and result batches into the store, at least once.

One MQTT client with a persistent session (``clean_start=False`` and a session expiry, so the
broker queues what arrives while the control plane restarts) and manual acknowledgements. Each
message is parsed and validated once, in the event loop, then queued to the store's writer thread;
its PUBACK is sent from the writer thread only after the commit that holds it. A control plane that
dies between receipt and commit therefore gets the message again, and the store's unique
``(device_id, result_id)`` turns the redelivery into a counted duplicate instead of a second row.

A malformed message (bad JSON, a failed validation, a payload naming another device than its
topic) is counted, logged at most once per interval per channel, acknowledged and dropped: it
would fail the same way on every redelivery, and it must never stop ingestion. An empty status
payload is how an operator deletes a retained status from the broker: acknowledged and ignored.

With ``shared_subscription_group`` set, results and telemetry are subscribed as
``$share/GROUP/...`` so that several replicas split them; status stays a plain subscription on
every replica, because brokers do not send retained messages to shared subscriptions.

Deployment reports (``deployment`` channel) are subscribed when a handler is set
(:attr:`Ingestor.on_deployment`, the rollout controller): each is decoded here and handed over
with its acknowledgement, which the handler calls after the commit that records it. Command
replies (``commands/reply``) go as they are to :attr:`Ingestor.on_command_reply` (the command
requester, which subscribes to them on this client and acknowledges them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias

from controlplane.errors import StoreClosed
from controlplane.metrics import Metrics
from controlplane.records import Incoming
from controlplane.settings import Settings
from controlplane.store import Store
from protocol.errors import InvalidMessage, InvalidTopic
from protocol.messages import ResultBatch, Status, Telemetry, decode
from protocol.mqtt import Message, MQTTClient
from protocol.release import DeploymentReport
from protocol.topics import Channel, device_filter, parse, shared_filter

log = logging.getLogger(__name__)

# One client, not a fleet: no herd to spread out after a broker restart, so come back quickly.
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 5.0

KINDS: dict[Channel, type[Status] | type[Telemetry] | type[ResultBatch]] = {
    Channel.STATUS: Status,
    Channel.TELEMETRY: Telemetry,
    Channel.RESULTS: ResultBatch,
}


def subscriptions(group: str | None) -> list[str]:
    """The topic filters ingestion subscribes to (see the module docstring for the shared case)."""
    filters = [device_filter(Channel.STATUS)]
    for channel in (Channel.TELEMETRY, Channel.RESULTS):
        topic_filter = device_filter(channel)
        filters.append(shared_filter(group, topic_filter) if group else topic_filter)
    return filters


DeploymentHandler: TypeAlias = Callable[[str, DeploymentReport, Callable[[], None]], None]
"""``(device_id, report, ack)``: called in the event loop; calls ``ack`` after its commit."""


def deployment_filter(group: str | None) -> str:
    topic_filter = device_filter(Channel.DEPLOYMENT)
    return shared_filter(group, topic_filter) if group else topic_filter


def channel_label(topic: str) -> str:
    """The metrics label of a topic that may not even parse: its channel, or ``unknown``."""
    for channel in KINDS:
        if topic.endswith("/" + channel.value):
            return channel.value
    return "unknown"


@dataclass
class RateLimitedLog:
    """Log a kind of problem at most once per ``interval`` s, saying how many were not logged."""

    interval: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _last: dict[str, float] = field(default_factory=dict)
    _suppressed: dict[str, int] = field(default_factory=dict)

    def should_log(self, key: str) -> tuple[bool, int]:
        """(log now?, how many of this kind were suppressed since the last logged one)."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False, 0
        self._last[key] = now
        return True, self._suppressed.pop(key, 0)


class Ingestor:
    """Subscribes, validates, hands messages to the store, acknowledges after the commit."""

    def __init__(self, settings: Settings, store: Store, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self._closing = False
        self._log = RateLimitedLog()
        self.on_deployment: DeploymentHandler | None = None  # set before start()
        self.on_command_reply: Callable[[str, Message], None] | None = None
        self.client = MQTTClient(
            settings.broker,
            settings.client_id,
            protocol=settings.mqtt_protocol,
            clean_start=False,
            session_expiry=settings.session_expiry_s,
            manual_ack=True,
            reconnect_min=RECONNECT_MIN_S,
            reconnect_max=RECONNECT_MAX_S,
            on_message=self.on_message,
            tls=settings.mqtt_tls,
        )

    @property
    def connected(self) -> bool:
        return self.client.connected

    async def start(self) -> None:
        """Start connecting (in the background) and register the subscriptions."""
        await self.client.start()
        for topic_filter in subscriptions(self.settings.shared_subscription_group):
            await self.client.subscribe(topic_filter, qos=1)
        if self.on_deployment is not None:
            group = self.settings.shared_subscription_group
            await self.client.subscribe(deployment_filter(group), qos=1)
        log.info("ingesting from %s as %s", self.client.url, self.settings.client_id)

    async def stop(self) -> None:
        """Take no new messages, let the queued ones commit (and be acknowledged), disconnect.

        Messages that arrive after this point are not acknowledged, so the broker keeps them
        in the session for the next start.
        """
        self._closing = True
        try:
            await self.store.flush()
        except StoreClosed:
            pass
        await self.client.stop()

    def on_message(self, message: Message) -> None:
        """Called in the event loop for each message; never raises, never blocks."""
        received_at = time.time()
        if self._closing:
            return  # not acknowledged: delivered again after the restart
        try:
            topic = parse(message.topic)
        except InvalidTopic as exc:
            self._malformed(message, channel_label(message.topic), str(exc))
            return
        if topic.channel is Channel.DEPLOYMENT:
            self._deployment(message, topic.device_id)
            return
        if topic.channel is Channel.COMMAND_REPLY and self.on_command_reply is not None:
            self.on_command_reply(topic.device_id, message)
            return
        kind = KINDS.get(topic.channel)
        if kind is None:
            message.ack()  # not ours (a broker that sends more than we asked for)
            return
        channel = topic.channel.value
        self.metrics.messages_received.inc(1, channel)
        if not message.payload and topic.channel is Channel.STATUS:
            message.ack()  # an empty retained message: someone cleared the device's status
            return
        try:
            decoded = decode(kind, message.payload)
        except InvalidMessage as exc:
            self._malformed(message, channel, f"{exc} (topic {message.topic})")
            return
        if decoded.device_id != topic.device_id:
            why = f"device_id {decoded.device_id!r} differs from the topic's {topic.device_id!r}"
            self._malformed(message, channel, why)
            return
        try:
            self.store.submit(Incoming(topic.device_id, received_at, decoded), message.ack)
        except StoreClosed:
            log.debug("store closed: leaving a message on %s unacknowledged", message.topic)

    def _deployment(self, message: Message, device_id: str) -> None:
        channel = Channel.DEPLOYMENT.value
        self.metrics.messages_received.inc(1, channel)
        try:
            report = decode(DeploymentReport, message.payload)
        except InvalidMessage as exc:
            self._malformed(message, channel, f"{exc} (topic {message.topic})")
            return
        if report.device_id != device_id:
            why = f"device_id {report.device_id!r} differs from the topic's {device_id!r}"
            self._malformed(message, channel, why)
            return
        if self.on_deployment is None:
            message.ack()  # nobody runs rollouts here
            return
        self.on_deployment(device_id, report, message.ack)

    def _malformed(self, message: Message, channel: str, why: str) -> None:
        self.metrics.messages_malformed.inc(1, channel)
        message.ack()
        now, suppressed = self._log.should_log(channel)
        if now:
            more = f" ({suppressed} more since the last report)" if suppressed else ""
            log.warning("dropped a malformed %s message: %s%s", channel, why, more)
