"""Build and parse the MQTT topics of the wire (see docs/protocol.md).

Every topic lives under one versioned prefix, ``edgefleet/v1``, and every device topic
under ``edgefleet/v1/devices/{id}/``, so a broker ACL can confine a device to its own
prefix. This module is the only place that knows the topic strings.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from protocol.errors import InvalidDeviceId, InvalidTopic

PREFIX = "edgefleet/v1"
DEVICES = f"{PREFIX}/devices"
DEVICE_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class Channel(str, enum.Enum):
    """The per-device channels. Direction, QoS and retain are documented in docs/protocol.md."""

    STATUS = "status"  # device -> cp, QoS 1, retained; the MQTT will says offline
    TELEMETRY = "telemetry"  # device -> cp, QoS 0
    RESULTS = "results"  # device -> cp, QoS 1
    DESIRED = "desired"  # cp -> device, QoS 1, retained
    DEPLOYMENT = "deployment"  # device -> cp, QoS 1
    COMMANDS = "commands"  # cp -> device, QoS 1
    COMMAND_REPLY = "commands/reply"  # device -> cp, QoS 1


QOS: dict[Channel, int] = {
    Channel.STATUS: 1,
    Channel.TELEMETRY: 0,
    Channel.RESULTS: 1,
    Channel.DESIRED: 1,
    Channel.DEPLOYMENT: 1,
    Channel.COMMANDS: 1,
    Channel.COMMAND_REPLY: 1,
}
RETAIN: frozenset[Channel] = frozenset({Channel.STATUS, Channel.DESIRED})
FROM_DEVICE: frozenset[Channel] = frozenset(
    {Channel.STATUS, Channel.TELEMETRY, Channel.RESULTS, Channel.DEPLOYMENT, Channel.COMMAND_REPLY}
)


def validate_device_id(device_id: str) -> str:
    """Return ``device_id`` unchanged, or raise :class:`InvalidDeviceId`.

    The allowed set excludes ``/``, ``+``, ``#`` and ``$`` so an id can never widen a
    topic filter or an ACL pattern.
    """
    if not isinstance(device_id, str) or not DEVICE_ID_PATTERN.fullmatch(device_id):
        raise InvalidDeviceId(
            f"invalid device id {device_id!r}: use 1 to 64 characters from A-Z a-z 0-9 _ . -"
        )
    return device_id


def device_topic(device_id: str, channel: Channel) -> str:
    """The topic of ``channel`` for one device, e.g. ``edgefleet/v1/devices/cam-1/results``."""
    return f"{DEVICES}/{validate_device_id(device_id)}/{channel.value}"


def device_filter(channel: Channel, device_id: str | None = None) -> str:
    """A subscription filter for ``channel`` of one device, or of every device (``+``)."""
    segment = "+" if device_id is None else validate_device_id(device_id)
    return f"{DEVICES}/{segment}/{channel.value}"


def shared_filter(group: str, topic_filter: str) -> str:
    """An MQTT v5 shared subscription (``$share/group/filter``) so replicas split the load."""
    if not group or any(c in group for c in "/+#"):
        raise InvalidTopic(f"invalid shared-subscription group {group!r}")
    return f"$share/{group}/{topic_filter}"


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    device_id: str
    channel: Channel


_CHANNELS_BY_SUFFIX = {c.value: c for c in Channel}


def parse(topic: str) -> DeviceTopic:
    """Parse a device topic back into its device id and channel, or raise :class:`InvalidTopic`."""
    head = DEVICES + "/"
    if not topic.startswith(head):
        raise InvalidTopic(f"not an edgefleet device topic: {topic!r}")
    device_id, sep, suffix = topic[len(head) :].partition("/")
    channel = _CHANNELS_BY_SUFFIX.get(suffix) if sep else None
    if channel is None:
        raise InvalidTopic(f"unknown channel in topic {topic!r}")
    try:
        validate_device_id(device_id)
    except InvalidDeviceId as exc:
        raise InvalidTopic(f"{exc} (in topic {topic!r})") from None
    return DeviceTopic(device_id, channel)
