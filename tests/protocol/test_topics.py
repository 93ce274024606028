from __future__ import annotations

import pytest

from protocol import topics
from protocol.errors import InvalidDeviceId, InvalidTopic
from protocol.topics import Channel


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        (Channel.STATUS, "edgefleet/v1/devices/cam-1/status"),
        (Channel.TELEMETRY, "edgefleet/v1/devices/cam-1/telemetry"),
        (Channel.RESULTS, "edgefleet/v1/devices/cam-1/results"),
        (Channel.DESIRED, "edgefleet/v1/devices/cam-1/desired"),
        (Channel.DEPLOYMENT, "edgefleet/v1/devices/cam-1/deployment"),
        (Channel.COMMANDS, "edgefleet/v1/devices/cam-1/commands"),
        (Channel.COMMAND_REPLY, "edgefleet/v1/devices/cam-1/commands/reply"),
    ],
)
def test_device_topic_round_trips(channel: Channel, expected: str) -> None:
    assert topics.device_topic("cam-1", channel) == expected
    assert topics.parse(expected) == topics.DeviceTopic("cam-1", channel)


@pytest.mark.parametrize(
    "bad", ["", "a/b", "+", "#", "dev+1", "dev#", "$SYS", "x" * 65, "dév", "a b", "a\x00"]
)
def test_device_ids_outside_the_allowed_set_are_refused(bad: str) -> None:
    with pytest.raises(InvalidDeviceId, match="invalid device id"):
        topics.device_topic(bad, Channel.STATUS)


@pytest.mark.parametrize("good", ["a", "A-Z_0.9", "x" * 64, "jetson-nano.lab_3"])
def test_allowed_device_ids(good: str) -> None:
    assert topics.validate_device_id(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "edgefleet/v2/devices/a/status",
        "edgefleet/v1/devices/a",
        "edgefleet/v1/devices/a/unknown",
        "edgefleet/v1/devices/a/status/extra",
        "edgefleet/v1/devices/+/status",
        "other/topic",
    ],
)
def test_parse_rejects_foreign_topics(bad: str) -> None:
    with pytest.raises(InvalidTopic):
        topics.parse(bad)


def test_filters() -> None:
    assert topics.device_filter(Channel.RESULTS) == "edgefleet/v1/devices/+/results"
    assert topics.device_filter(Channel.DESIRED, "d1") == "edgefleet/v1/devices/d1/desired"
    assert (
        topics.shared_filter("cp", topics.device_filter(Channel.RESULTS))
        == "$share/cp/edgefleet/v1/devices/+/results"
    )
    with pytest.raises(InvalidTopic):
        topics.shared_filter("a/b", "x")


def test_every_channel_has_a_qos() -> None:
    assert set(topics.QOS) == set(Channel)
    assert topics.QOS[Channel.TELEMETRY] == 0
    assert topics.RETAIN == {Channel.STATUS, Channel.DESIRED}
