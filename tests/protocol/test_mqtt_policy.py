"""Table-driven tests of the MQTT client's pure decisions and values (no broker)."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.errors import NoSubscribers, PublishRefused
from protocol.mqtt.policy import BrokerURL, Negotiation, backoff_delay, negotiate, puback_error

# --- ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (0, 0.0, 0.5),  # the floor
        (0, 0.5, 0.75),  # first retry: between 0.5 and 1.0
        (0, 0.999, 0.9995),
        (1, 1.0, 2.0),  # ceiling doubles: 0.5 * 2**2
        (2, 1.0, 4.0),
        (5, 1.0, 30.0),  # capped at the maximum
        (5, 0.0, 0.5),  # full jitter: the floor is still possible
        (10_000, 0.5, 15.25),  # no overflow
    ],
)
def test_backoff_delay(attempt: int, rand: float, expected: float) -> None:
    assert backoff_delay(attempt, 0.5, 30.0, rand) == pytest.approx(expected)


def test_backoff_delay_when_min_equals_max() -> None:
    assert backoff_delay(3, 2.0, 2.0, 0.7) == 2.0


V5, V311, TRIAL = Negotiation("5"), Negotiation("3.1.1"), Negotiation("3.1.1", trial=True)


@pytest.mark.parametrize(
    ("mode", "state", "outcome", "expected"),
    [
        ("auto", V5, "session", V5),
        ("auto", V5, "unreachable", V5),  # no broker at all says nothing about versions
        ("auto", V5, "refused", V5),  # e.g. not authorized
        ("auto", V5, "unsupported", V311),  # an explicit refusal: 3.1.1 for good
        ("auto", V5, "silent", TRIAL),  # amqtt never answers a v5 CONNECT with properties
        ("auto", V5, "closed", Negotiation("5", closes=1)),  # maybe a restart: not yet
        ("auto", Negotiation("5", closes=1), "closed", TRIAL),  # twice in a row: try 3.1.1
        ("auto", Negotiation("5", closes=1), "unreachable", V5),  # the count restarts
        ("auto", TRIAL, "session", V311),  # 3.1.1 connects: keep it
        ("auto", TRIAL, "silent", V5),  # 3.1.1 fails too: v5 was not the problem
        ("auto", TRIAL, "unreachable", V5),
        ("auto", V311, "silent", V311),  # settled
        ("auto", V311, "unsupported", V311),
        ("5", V5, "unsupported", V5),  # v5 asked for explicitly
        ("5", V5, "silent", V5),
        ("3.1.1", V311, "closed", V311),
    ],
)
def test_negotiate(mode: Any, state: Negotiation, outcome: Any, expected: Negotiation) -> None:
    assert negotiate(mode, state, outcome) == expected


@pytest.mark.parametrize(
    ("code", "require", "error"),
    [
        (0x00, False, None),
        (0x00, True, None),
        (0x10, False, None),  # no matching subscribers: a success for MQTT...
        (0x10, True, NoSubscribers),  # ...not for a sender that needs a receiver
        (0x80, False, PublishRefused),
        (0x87, True, PublishRefused),
        (0x97, False, PublishRefused),
    ],
)
def test_puback_error(code: int, require: bool, error: type[Exception] | None) -> None:
    got = puback_error("a/b", code, "Some reason", require)
    assert type(got) is error if error else got is None
    if isinstance(got, PublishRefused):
        assert got.reason_code == code
        assert "a/b" in str(got) and f"{code:#04x}" in str(got)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1884", BrokerURL("127.0.0.1", 1884, False)),
        ("mqtt://broker.local", BrokerURL("broker.local", 1883, False)),
        ("mqtts://broker.local", BrokerURL("broker.local", 8883, True)),
        ("mqtts://h:9999/", BrokerURL("h", 9999, True)),
        ("mqtt://dev:s3cret@h:1", BrokerURL("h", 1, False, "dev", "s3cret")),
        ("mqtt://[::1]:1883", BrokerURL("::1", 1883, False)),
    ],
)
def test_broker_url_parse(url: str, expected: BrokerURL) -> None:
    assert BrokerURL.parse(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://h:1883",
        "tcp://h:1883",
        "h:1883",
        "mqtt://",
        "mqtt://h:notaport",
        "mqtt://h:70000",
        "mqtt://h:1883/path",
        "mqtt://h:1883?x=1",
        "",
    ],
)
def test_broker_url_rejects(url: str) -> None:
    with pytest.raises(ValueError, match="mqtt://host:port or mqtts://host:port") as info:
        BrokerURL.parse(url)
    assert repr(url) in str(info.value)


def test_broker_url_never_shows_the_password() -> None:
    url = BrokerURL.parse("mqtt://dev:s3cret@h:1883")
    assert "s3cret" not in repr(url) and "s3cret" not in str(url)
    assert str(url) == "mqtt://dev@h:1883"
    with pytest.raises(ValueError) as info:
        BrokerURL.parse("http://dev:s3cret@h:1883")
    assert "s3cret" not in str(info.value)
