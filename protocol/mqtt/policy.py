"""The MQTT client's decisions and the values it is configured with, free of paho.

Pure functions (reconnect backoff, protocol-version negotiation, what a PUBACK reason code means)
with table-driven tests, and the plain values callers build (:class:`BrokerURL`, :class:`Will`).
:mod:`protocol.mqtt` applies them to real connections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from protocol.errors import MQTTError, NoSubscribers, PublishRefused

ProtocolMode = Literal["auto", "5", "3.1.1"]


# --- pure decisions ----------------------------------------------------------------------


def backoff_delay(attempt: int, minimum: float, maximum: float, rand: float) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0 = the first retry).

    Full jitter between ``minimum`` and a ceiling that doubles each attempt, capped at
    ``maximum``: ``rand`` (uniform in [0, 1)) picks the point, so the caller owns the randomness.
    """
    ceiling = min(maximum, minimum * 2.0 ** min(attempt + 1, 64))
    return minimum + rand * max(0.0, ceiling - minimum)


Outcome = Literal["session", "unsupported", "refused", "closed", "silent", "unreachable"]
"""How a connection attempt ended: a session; CONNACK "unsupported protocol version"; another
refusal; closed before any CONNACK; no CONNACK in time; no TCP connection at all."""


@dataclass(frozen=True)
class Negotiation:
    """Which MQTT version to try next. ``trial``: 3.1.1 on trial, kept only if it connects."""

    version: Literal["5", "3.1.1"]
    trial: bool = False
    closes: int = 0  # closes before CONNACK in a row, under v5


def negotiate(mode: ProtocolMode, state: Negotiation, outcome: Outcome) -> Negotiation:
    """The version for the next attempt, given how the last one ended (see the module docstring)."""
    if mode != "auto" or (state.version == "3.1.1" and not state.trial):
        return state
    if state.trial:  # 3.1.1 on trial: keep it if it connected, else v5 was not the problem
        return Negotiation("3.1.1") if outcome == "session" else Negotiation("5")
    if outcome == "unsupported":
        return Negotiation("3.1.1")
    if outcome == "silent" or (outcome == "closed" and state.closes >= 1):
        return Negotiation("3.1.1", trial=True)
    return Negotiation("5", closes=state.closes + 1 if outcome == "closed" else 0)


NO_MATCHING_SUBSCRIBERS = 0x10


def puback_error(
    topic: str, reason_code: int, reason: str, require_subscribers: bool = False
) -> MQTTError | None:
    """The error for a PUBACK reason code, or None when the publish succeeded.

    Codes from 0x80 are failures. 0x10, "no matching subscribers", is a success for MQTT, and a
    failure only for a caller that needs someone to receive the message.
    """
    if reason_code >= 0x80:
        return PublishRefused(
            f"the broker refused the publish on {topic!r}: {reason} "
            f"(reason code {reason_code:#04x})",
            reason_code,
        )
    if reason_code == NO_MATCHING_SUBSCRIBERS and require_subscribers:
        return NoSubscribers(f"no subscriber for {topic!r}: nobody received the message")
    return None


# --- values ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerURL:
    """Where the broker is: ``mqtt://[user[:password]@]host[:port]`` or ``mqtts://...``."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        expected = "expected mqtt://host:port or mqtts://host:port"
        try:
            parts = urlsplit(url)
            port = parts.port
        except (ValueError, TypeError) as exc:
            raise ValueError(f"invalid broker URL {_redact(url)!r}: {exc}; {expected}") from None
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"invalid broker URL {_redact(url)!r}: {expected}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"invalid broker URL {_redact(url)!r}: no path or query; {expected}")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=port or (8883 if tls else 1883),
            tls=tls,
            username=parts.username or None,
            password=parts.password,
        )

    def __str__(self) -> str:
        """The URL without its password, for logs."""
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}"


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{hostpart}"


@dataclass(frozen=True)
class ConnectionEvent:
    """One entry of a client's connection history: ``connected``, ``disconnected`` (the
    connection was lost) or ``failed`` (an attempt that got no session), with why."""

    at: float
    """Unix time, seconds."""
    event: str
    detail: str


@dataclass(frozen=True)
class Will:
    """The message the broker publishes for a client that vanishes without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True
