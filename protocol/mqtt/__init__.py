"""The MQTT boundary: the only package in the project that imports paho-mqtt.

The agent and the control plane both use :class:`MQTTClient` (``protocol/mqtt/client.py``); one
network connection is a :class:`~protocol.mqtt.connection.Connection`; the client's decisions
(backoff, version negotiation, PUBACK outcomes) are pure functions in ``policy.py``. No paho type
or error crosses this boundary: failures are the ``MQTTError`` tree of :mod:`protocol.errors`.
"""

from protocol.errors import MQTTError, NoSubscribers, NotConnected, PublishRefused, PublishTimeout
from protocol.mqtt.client import MQTTClient
from protocol.mqtt.connection import Message
from protocol.mqtt.policy import BrokerURL, ConnectionEvent, ProtocolMode, Will, backoff_delay
from protocol.mqtt.tls import TLSFiles

__all__ = [
    "BrokerURL",
    "ConnectionEvent",
    "Message",
    "MQTTClient",
    "MQTTError",
    "NoSubscribers",
    "NotConnected",
    "PublishRefused",
    "PublishTimeout",
    "ProtocolMode",
    "TLSFiles",
    "Will",
    "backoff_delay",
]
