"""One network connection: a fresh paho client and its thread, and the messages it receives.

Part of the MQTT boundary (:mod:`protocol.mqtt`): paho's callbacks run on paho's thread and only
post to the event loop; everything else runs in the loop. A connection is never reused.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho

from protocol.errors import (
    NotConnected,
)
from protocol.mqtt.policy import (
    puback_error,
)
from protocol.mqtt.properties import received_properties

log = logging.getLogger(__name__)


class Acker:
    """Send one PUBACK for one received message, once, from any thread."""

    def __init__(self, client: paho.Client, mid: int, qos: int) -> None:
        self._client, self._mid, self._qos = client, mid, qos
        self._lock = threading.Lock()
        self._done = False

    def __call__(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._client.ack(self._mid, self._qos)


@dataclass
class Message:
    """A message received on a subscription."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    _acker: Acker | None = field(default=None, repr=False, compare=False)
    # MQTT v5 properties of the PUBLISH (None when absent, and always None under 3.1.1)
    response_topic: str | None = field(default=None, kw_only=True)
    correlation_data: bytes | None = field(default=None, kw_only=True)
    message_expiry_s: int | None = field(default=None, kw_only=True)
    """What is left of the message's lifetime as the broker delivers it (v5 message expiry)."""

    def ack(self) -> None:
        """With ``manual_ack`` clients, send the PUBACK now (else a no-op); thread-safe, idempotent.

        An unacknowledged QoS 1 message is redelivered by the broker when the session resumes.
        """
        if self._acker is not None:
            self._acker()


# --- one connection ----------------------------------------------------------------------


class Connection:
    """One paho client and its thread, for one network connection; never reused.

    The ``_paho_*`` methods run on paho's thread and only post to the loop; the ``_on_*``
    methods run in the loop.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        client: paho.Client,
        deliver: Callable[[Message], None],
        manual_ack: bool,
    ) -> None:
        self.loop = loop
        self.client = client
        self.deliver = deliver
        self.manual_ack = manual_ack
        self.connack: asyncio.Future[int | None] = loop.create_future()
        self.closed: asyncio.Future[str] = loop.create_future()
        self.connected = False
        self.connack_reason = ""
        self.thread: threading.Thread | None = None
        self.publishes: dict[int, tuple[asyncio.Future[None], str, bool]] = {}
        self.subscribes: dict[int, asyncio.Future[list[int]]] = {}
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_publish = self._paho_publish
        client.on_subscribe = self._paho_subscribe
        client.on_message = self._paho_message

    def start_thread(self) -> None:
        self.client.loop_start()
        self.thread = self.client._thread  # paho clears its own reference as the thread ends

    def release(self) -> None:
        """Close paho's sockets now, once its thread is gone.

        paho closes them only in ``__del__``, which runs in no set order when the client sits in
        a reference cycle (its callbacks are our bound methods): Python then warns of unclosed
        sockets.
        """
        if self.thread is None or not self.thread.is_alive():
            self.client._reset_sockets()

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody waits for this event any more
            pass

    def _paho_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._post(self._on_connack, int(reason.value), str(reason))

    def _paho_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._post(self._on_closed, str(reason))

    def _paho_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        self._post(self._on_puback, mid, int(reason.value), str(reason))

    def _paho_subscribe(self, _c: Any, _u: Any, mid: int, reasons: list[Any], _p: Any) -> None:
        self._post(self._on_suback, mid, [int(r.value) for r in reasons])

    def _paho_message(self, client: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        acker = Acker(client, msg.mid, msg.qos) if self.manual_ack and msg.qos > 0 else None
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            log.warning("dropped a message whose topic is not UTF-8: %r", msg._topic)
            if acker is not None:
                acker()
            return
        message = Message(
            topic, bytes(msg.payload), msg.qos, bool(msg.retain), acker, **received_properties(msg)
        )
        self._post(self.deliver, message)

    def _on_connack(self, code: int, reason: str) -> None:
        self.connected = code == 0
        self.connack_reason = reason
        if not self.connack.done():
            self.connack.set_result(code)

    def _on_closed(self, reason: str) -> None:
        self.connected = False
        if not self.connack.done():
            self.connack.set_result(None)
        if not self.closed.done():
            self.closed.set_result(reason)
        for future, topic, _ in self.publishes.values():
            if not future.done():
                future.set_exception(
                    NotConnected(f"the connection closed ({reason}) before the PUBACK on {topic!r}")
                )
        for sub in self.subscribes.values():
            if not sub.done():
                sub.set_exception(NotConnected(f"the connection closed ({reason}) before SUBACK"))

    def _on_puback(self, mid: int, code: int, reason: str) -> None:
        entry = self.publishes.get(mid)
        if entry is None or entry[0].done():
            return  # its publish() timed out or was cancelled
        future, topic, require_subscribers = entry
        error = puback_error(topic, code, reason, require_subscribers)
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    def _on_suback(self, mid: int, codes: list[int]) -> None:
        future = self.subscribes.get(mid)
        if future is not None and not future.done():
            future.set_result(codes)
