"""The MQTT client: an asyncio client over paho-mqtt's network thread that reconnects forever.

The agent and the control plane both use :class:`MQTTClient`; nothing else imports paho, and no
paho type or error crosses this boundary: failures are the ``MQTTError`` tree of
:mod:`protocol.errors`. The decisions it makes (backoff, version negotiation, PUBACK codes) are pure
functions in :mod:`protocol.mqtt.policy`.

**Threads.** Each network connection is a *fresh* paho client run by its own thread
(``loop_start``); paho's callbacks hand their events to the event loop with
``call_soon_threadsafe``, so every future, counter and user callback lives in the loop. A new
client per connection means paho never re-sends, on its own, a publish that a caller has already
been told failed: paho keeps its session in memory only, and the durable record is the caller's
(the agent's SQLite outbox). Reconnecting is ours, not paho's: capped exponential backoff with full
jitter (:func:`backoff_delay`), so a fleet does not reconnect in lockstep after a broker restart.

**Versions.** MQTT v5 by default: under 3.1.1 Mosquitto acknowledges a publish that its ACL
forbids and drops it, while under v5 the PUBACK says "not authorized" and :meth:`publish` raises
:class:`PublishRefused`. With ``protocol="auto"`` a broker that refuses v5 makes the client fall
back to 3.1.1 for good, with a warning (:func:`negotiate`). Brokers refuse in more than one way:
amqtt (the embedded demo broker, 3.1.1 only) answers "unsupported protocol version" to a plain v5
CONNECT but never answers one that carries properties (a session expiry). Silence, or the
connection closed twice before any CONNACK, therefore earns 3.1.1 one try, kept only if it
connects; a broker restarting mid-handshake does not push a client off v5 for good.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from protocol.errors import (
    MQTTError,
    NotConnected,
    PublishTimeout,
)
from protocol.mqtt.connection import Connection, Message
from protocol.mqtt.policy import (
    BrokerURL,
    ConnectionEvent,
    Negotiation,
    Outcome,
    ProtocolMode,
    Will,
    backoff_delay,
    negotiate,
)
from protocol.mqtt.properties import (
    check_publish_properties,
    connect_properties,
    publish_properties,
)
from protocol.mqtt.tls import TLSFiles, tls_context
from protocol.wakeup import wait_event

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0
"""Seconds :meth:`MQTTClient.stop` waits for a clean DISCONNECT before it gives up."""
SUBACK_TIMEOUT = 10.0
UNSUPPORTED_VERSION = (0x84, 0x01)
"""CONNACK codes for "unsupported protocol version": v5's 0x84, and 3.1.1's 1 (what amqtt sends)."""
HISTORY_SIZE = 20
"""How many connection events :attr:`MQTTClient.history` keeps (a device's ``diag`` shows them)."""


# --- the client --------------------------------------------------------------------------


class MQTTClient:
    """An MQTT client that reconnects forever; see the module docstring.

    ``on_connect`` is awaited in the loop after every successful (re)connect and after the
    subscriptions are renewed; ``on_message`` is called in the loop for each message and must not
    block (Mosquitto drops QoS 1 messages for a subscriber that falls ``max_queued_messages``
    behind). With ``manual_ack`` the PUBACK for a message goes out only on :meth:`Message.ack`.
    """

    def __init__(
        self,
        url: BrokerURL | str,
        client_id: str,
        *,
        will: Will | None = None,
        protocol: ProtocolMode = "auto",
        keepalive: int = 30,
        clean_start: bool = True,
        session_expiry: int = 0,
        manual_ack: bool = False,
        reconnect_min: float = 0.5,
        reconnect_max: float = 30.0,
        on_connect: Callable[[], Awaitable[None]] | None = None,
        on_message: Callable[[Message], None] | None = None,
        max_inflight: int = 100,
        max_queued: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        tls: TLSFiles | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        if protocol not in ("auto", "5", "3.1.1"):
            raise ValueError(f"protocol must be 'auto', '5' or '3.1.1', not {protocol!r}")
        if not 0 < reconnect_min <= reconnect_max:
            raise ValueError(
                f"need 0 < reconnect_min <= reconnect_max, got {reconnect_min}, {reconnect_max}"
            )
        self.url = url if isinstance(url, BrokerURL) else BrokerURL.parse(url)
        self.client_id = client_id
        self._will = will
        self._mode: ProtocolMode = protocol
        self._negotiation = Negotiation("3.1.1" if protocol == "3.1.1" else "5")
        self._version: str = self._negotiation.version
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        self._clean_start = clean_start
        self._session_expiry = session_expiry
        self._manual_ack = manual_ack
        self._reconnect = (reconnect_min, reconnect_max)
        self._on_connect = on_connect
        self._on_message = on_message
        self._max_inflight = max_inflight
        self._max_queued = max_queued
        self._ssl_context = ssl_context
        self._tls = tls
        if self.url.tls and ssl_context is None:
            tls_context(tls)  # a missing or bad file is an MQTTError now, not at each connect
        self._subscriptions: dict[str, int] = {}
        self._conn: Connection | None = None
        self._ready = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._on_connect_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_error: str | None = None
        self._history: deque[ConnectionEvent] = deque(maxlen=HISTORY_SIZE)

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.connected

    @property
    def on_connect(self) -> Callable[[], Awaitable[None]] | None:
        """Awaited after every (re)connect; settable so that a collaborator can hook in later."""
        return self._on_connect

    @on_connect.setter
    def on_connect(self, callback: Callable[[], Awaitable[None]] | None) -> None:
        self._on_connect = callback

    @property
    def protocol_version(self) -> str:
        """``"5"`` or ``"3.1.1"``: what the last connection used (or the next one will)."""
        return self._version

    @property
    def history(self) -> list[ConnectionEvent]:
        """The last :data:`HISTORY_SIZE` connects, disconnects and failed attempts, oldest first."""
        return list(self._history)

    def _record(self, event: str, detail: str) -> None:
        self._history.append(ConnectionEvent(time.time(), event, detail))

    async def start(self) -> None:
        """Begin connecting in the background; returns at once."""
        if self._stopping:
            raise MQTTError(f"MQTT client {self.client_id} was stopped; make a new one")
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=f"mqtt-{self.client_id}")

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Return once connected with every subscription renewed; NotConnected on timeout.

        Before :meth:`start` this waits for it; after :meth:`stop` it raises at once.
        """
        if self._stopping:
            raise NotConnected(f"MQTT client {self.client_id} is stopped")
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            why = self._last_error or "no answer"
            raise NotConnected(f"not connected to {self.url} within {timeout}s: {why}") from None

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout: float = 10.0,
        require_subscribers: bool = False,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        message_expiry_s: float | None = None,
        user_properties: dict[str, str] | None = None,
    ) -> None:
        """Publish; with QoS 1 return only after the broker's PUBACK (see the module docstring).

        With ``require_subscribers`` (MQTT v5 only: 3.1.1 cannot tell) a PUBACK saying that no
        subscription matched raises :class:`NoSubscribers`. ``response_topic``,
        ``correlation_data``, ``message_expiry_s`` (rounded up to whole seconds) and
        ``user_properties`` become the PUBLISH's MQTT v5 properties; under 3.1.1 they are
        ignored (put what the receiver needs in the payload too).
        """
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
        if not topic or "+" in topic or "#" in topic:
            raise ValueError(f"cannot publish on {topic!r}: a topic is non-empty, without + or #")
        check_publish_properties(response_topic, message_expiry_s)
        conn = self._conn
        if conn is None or not conn.connected:
            raise NotConnected(f"not connected to {self.url}: cannot publish on {topic!r}")
        properties = None
        if self._version == "5":
            properties = publish_properties(
                response_topic, correlation_data, message_expiry_s, user_properties
            )
        try:
            info = conn.client.publish(topic, payload, qos, retain, properties)
        except ValueError as exc:  # paho's own checks, e.g. a payload over 256 MiB
            raise MQTTError(f"cannot publish on {topic!r}: {exc}") from None
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise _error_for(info.rc, f"publish on {topic!r}")
        if qos == 0:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # registered before any await: the PUBACK is posted to the loop, so it comes after this
        conn.publishes[info.mid] = (future, topic, require_subscribers)
        try:
            await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise PublishTimeout(
                f"no PUBACK from {self.url} within {timeout}s for the publish on {topic!r}"
            ) from None
        finally:
            conn.publishes.pop(info.mid, None)

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Subscribe now if connected (waiting for the SUBACK), and again after every reconnect."""
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
        if not topic_filter:
            raise ValueError("cannot subscribe to an empty topic filter")
        self._subscriptions[topic_filter] = qos
        conn = self._conn
        if conn is not None and conn.connected:
            await self._send_subscribe(conn, {topic_filter: qos})

    async def stop(self) -> None:
        """Disconnect cleanly (the broker does not send the will) and stop paho's thread."""
        self._stopping = True
        self._wakeup.set()
        conn = self._conn
        if conn is not None and conn.connected:
            conn.client.disconnect()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT)
            except asyncio.TimeoutError:
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._ready.clear()

    # --- the connection loop (in the event loop) -------------------------------------------

    async def _supervise(self) -> None:
        failures = 0  # attempts since the last session, for the backoff
        while not self._stopping:
            outcome = await self._connect_once()
            if self._stopping:
                break
            if outcome == "session":
                failures = 0
                continue
            before, self._negotiation = (
                self._negotiation,
                negotiate(self._mode, self._negotiation, outcome),
            )
            if self._negotiation.version != before.version:
                self._log_version_change(self._negotiation)
                continue  # try the other version at once
            delay = backoff_delay(failures, *self._reconnect, random.random())
            failures += 1
            self._wakeup.clear()
            await wait_event(self._wakeup, delay)

    def _log_version_change(self, after: Negotiation) -> None:
        if after.version == "5":
            log.info("%s: MQTT 3.1.1 did not connect either; back to MQTT v5", self.client_id)
        elif after.trial:
            log.info(
                "%s: no answer to MQTT v5 from %s; trying MQTT 3.1.1", self.client_id, self.url
            )
        else:
            log.warning(
                "%s: the broker %s does not take MQTT v5; falling back to MQTT 3.1.1 (a publish "
                "that its ACL forbids is then dropped without an error)",
                self.client_id,
                self.url,
            )

    async def _connect_once(self) -> Outcome:
        """One connection, from the TCP connect to its close."""
        self._version = self._negotiation.version
        loop = asyncio.get_running_loop()
        try:
            client = self._make_paho()
        except MQTTError as exc:  # a TLS file unreadable (being renewed?): retry after a backoff
            self._note_failure(str(exc))
            return "unreachable"
        conn = Connection(loop, client, self._deliver, self._manual_ack)
        self._conn = conn
        try:
            await asyncio.to_thread(
                conn.client.connect,
                self.url.host,
                self.url.port,
                self._keepalive,
                **self._connect_args(),
            )
        except OSError as exc:
            conn.release()
            self._note_failure(f"cannot connect to {self.url}: {exc}")
            return "unreachable"
        conn.start_thread()
        try:
            try:
                connack = await asyncio.wait_for(
                    asyncio.shield(conn.connack), self._connect_timeout
                )
            except asyncio.TimeoutError:
                self._note_failure(f"no CONNACK from {self.url} within {self._connect_timeout}s")
                return "silent"
            if connack == 0:
                if self._negotiation.trial:  # 3.1.1 connected where v5 got no answer: keep it
                    self._negotiation = negotiate(self._mode, self._negotiation, "session")
                    self._log_version_change(self._negotiation)
                await self._session(conn)
                return "session"
            if connack is None:
                self._note_failure(f"{self.url} closed the connection before its CONNACK")
                return "closed"
            why = f"{conn.connack_reason} (code {connack:#04x})"
            self._note_failure(f"{self.url} refused the connection: {why}")
            return "unsupported" if connack in UNSUPPORTED_VERSION else "refused"
        finally:
            await self._close(conn)

    async def _session(self, conn: Connection) -> None:
        """A connection with a session: renew subscriptions, run on_connect, wait for the end."""
        log.info("%s: connected to %s (MQTT %s)", self.client_id, self.url, self._version)
        self._record("connected", f"{self.url} (MQTT {self._version})")
        self._last_error = None
        if self._stopping:
            conn.client.disconnect()
        elif self._subscriptions:
            try:
                await self._send_subscribe(conn, dict(self._subscriptions))
            except MQTTError as exc:
                if conn.connected:  # else the connection is gone and the next one retries
                    log.error("%s: renewing subscriptions failed: %s", self.client_id, exc)
        if conn.connected and not self._stopping:
            self._ready.set()
            if self._on_connect is not None:
                self._on_connect_task = asyncio.create_task(self._run_on_connect(self._on_connect))
        reason = await asyncio.shield(conn.closed)
        if not self._stopping:
            log.warning("%s: lost the connection to %s: %s", self.client_id, self.url, reason)
            self._record("disconnected", reason)

    async def _close(self, conn: Connection) -> None:
        self._ready.clear()
        if self._on_connect_task is not None:
            self._on_connect_task.cancel()
            await asyncio.gather(self._on_connect_task, return_exceptions=True)
            self._on_connect_task = None
        if not conn.closed.done():
            conn.client.disconnect()
            try:
                await asyncio.wait_for(asyncio.shield(conn.closed), 5.0)
            except asyncio.TimeoutError:
                conn._on_closed("closed by the client")
        if conn.thread is not None:  # it ends by itself once the socket is closed
            await asyncio.to_thread(conn.thread.join, 5.0)
        conn.release()

    async def _run_on_connect(self, callback: Callable[[], Awaitable[None]]) -> None:
        try:
            await callback()
        except MQTTError as exc:
            log.warning("%s: on_connect failed: %s", self.client_id, exc)
        except Exception:
            log.exception("%s: on_connect failed", self.client_id)

    async def _send_subscribe(self, conn: Connection, filters: dict[str, int]) -> None:
        try:
            rc, mid = conn.client.subscribe(list(filters.items()))
        except ValueError as exc:
            raise MQTTError(f"cannot subscribe to {list(filters)}: {exc}") from None
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise _error_for(rc, f"subscribe to {list(filters)}")
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        conn.subscribes[mid] = future
        try:
            codes = await asyncio.wait_for(future, SUBACK_TIMEOUT)
        except asyncio.TimeoutError:
            raise MQTTError(f"no SUBACK from {self.url} within {SUBACK_TIMEOUT}s") from None
        finally:
            conn.subscribes.pop(mid, None)
        refused = [f for f, code in zip(filters, codes, strict=False) if code >= 0x80]
        if refused:
            raise MQTTError(f"the broker {self.url} refused the subscription to {refused}")

    def _deliver(self, message: Message) -> None:
        if self._on_message is None:
            message.ack()
            return
        try:
            self._on_message(message)
        except Exception:
            log.exception(
                "%s: on_message failed for a message on %s", self.client_id, message.topic
            )

    def _note_failure(self, why: str) -> None:
        self._record("failed", why)
        if self._last_error is None:
            log.warning("%s: %s", self.client_id, why)
        else:
            log.debug("%s: %s", self.client_id, why)
        self._last_error = why

    # --- paho configuration ----------------------------------------------------------------

    def _make_paho(self) -> paho.Client:
        v5 = self._version == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=None if v5 else self._clean_start,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,
            manual_ack=self._manual_ack,
        )
        paho_log = logging.getLogger(f"{__name__}.paho")
        if paho_log.isEnabledFor(logging.DEBUG):  # else quiet: paho logs a clean stop as an ERROR
            client.enable_logger(paho_log)
        client.connect_timeout = self._connect_timeout
        client.max_inflight_messages_set(self._max_inflight)
        client.max_queued_messages_set(self._max_queued)
        if self.url.username is not None:
            client.username_pw_set(self.url.username, self.url.password)
        if self.url.tls:
            # fresh each connection: a certificate renewed on disk is used from the next one on
            client.tls_set_context(self._ssl_context or tls_context(self._tls))
        if self._will is not None:
            w = self._will
            client.will_set(w.topic, w.payload, w.qos, w.retain)
        return client

    def _connect_args(self) -> dict[str, Any]:
        if self._version != "5":
            return {}
        return {
            "clean_start": self._clean_start,
            "properties": connect_properties(self._session_expiry),
        }


def _error_for(rc: MQTTErrorCode | int, what: str) -> MQTTError:
    """Translate a paho error code from a call that did not even reach the broker."""
    if rc in (MQTTErrorCode.MQTT_ERR_NO_CONN, MQTTErrorCode.MQTT_ERR_CONN_LOST):
        return NotConnected(f"not connected: cannot {what}")
    if rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
        return MQTTError(f"cannot {what}: the client's outgoing queue is full (max_queued)")
    return MQTTError(f"cannot {what}: {paho.error_string(int(rc))}")
