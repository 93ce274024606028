"""MQTT v5 properties: the ones a PUBLISH is given (request/response, expiry) and the ones read
back from a received message. Under 3.1.1 there are none: callers put what the receiver needs in
the payload too (protocol/commands.py does). Only
protocol/mqtt imports paho."""

from __future__ import annotations

import math
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def check_publish_properties(response_topic: str | None, message_expiry_s: float | None) -> None:
    """ValueError for a response topic that is empty or has wildcards, or a non-positive expiry."""
    if response_topic is not None and (
        not response_topic or "+" in response_topic or "#" in response_topic
    ):
        raise ValueError(f"invalid response topic {response_topic!r}")
    if message_expiry_s is not None and not message_expiry_s > 0:
        raise ValueError(f"message_expiry_s must be positive, not {message_expiry_s!r}")


def connect_properties(session_expiry_s: int) -> Properties:
    """The CONNECT properties: a session kept that long after a disconnect (0: none)."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if session_expiry_s > 0:
        properties.SessionExpiryInterval = session_expiry_s
    return properties


def publish_properties(
    response_topic: str | None,
    correlation_data: bytes | None,
    message_expiry_s: float | None,
    user_properties: dict[str, str] | None,
) -> Properties | None:
    """The PUBLISH properties for MQTT v5, or None when there are none."""
    if (response_topic, correlation_data, message_expiry_s) == (None, None, None) and not (
        user_properties
    ):
        return None
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if response_topic is not None:
        properties.ResponseTopic = response_topic
    if correlation_data is not None:
        properties.CorrelationData = correlation_data
    if message_expiry_s is not None:
        properties.MessageExpiryInterval = max(1, math.ceil(message_expiry_s))
    if user_properties:
        properties.UserProperty = list(user_properties.items())
    return properties


def received_properties(msg: paho.MQTTMessage) -> dict[str, Any]:
    """The v5 request/response properties of a received message, as Message's fields."""
    props = getattr(msg, "properties", None)
    if props is None:
        return {}
    correlation = getattr(props, "CorrelationData", None)
    expiry = getattr(props, "MessageExpiryInterval", None)
    return {
        "response_topic": getattr(props, "ResponseTopic", None) or None,
        "correlation_data": bytes(correlation) if correlation is not None else None,
        "message_expiry_s": int(expiry) if expiry is not None else None,
    }
