"""Remote commands: the request/response wire of the ``commands`` topics (see docs/protocol.md).

The control plane publishes a :class:`CommandRequest` on a device's ``commands`` topic; the agent
runs it and publishes a :class:`CommandReply` on its own ``commands/reply`` topic. Under MQTT v5
the request carries the response topic, the correlation data and a message expiry as properties;
the same travel in the payload too (``reply_to``, ``correlation_id``, ``expires_at``), because a
3.1.1 broker, or a 3.1.1 client on a v5 broker, never sees the properties.

Only the commands of :data:`COMMANDS` exist. Each has a pydantic model of its arguments that
refuses unknown ones; an unknown command is answered with an error and never run: there is no
remote shell. The decisions the agent takes before running a request (has it expired, may it
answer on that topic, does the answer fit) are pure functions here, tested by table.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from protocol import SCHEMA_VERSION
from protocol.errors import InvalidMessage
from protocol.messages import DeviceId, _Wire, encode, new_id
from protocol.topics import Channel, device_topic

CommandName = Literal["ping", "diag", "logs", "resync", "reload-model", "set-log-level"]
COMMANDS: tuple[str, ...] = get_args(CommandName)
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)

MAX_REPLY_BYTES = 64 * 1024
"""The largest reply payload: an agent shortens ``logs`` to fit and refuses any other answer
past it, so one command can never flood the broker or the control plane's store."""
CLOCK_TOLERANCE_S = 2.0
"""How far past ``expires_at`` (by the agent's clock) a request still runs: small, because the
control plane has stopped waiting by then; large enough for a clock kept by NTP."""
REQUEST_ID = r"^[A-Za-z0-9_.-]{1,64}$"
MAX_SENDER = 128
MAX_LOG_TAIL = 1000


# --- arguments ---------------------------------------------------------------------------


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoArgs(_Args):
    """``ping``, ``diag`` and ``resync`` take no arguments."""


class LogsArgs(_Args):
    tail: int = Field(100, ge=1, le=MAX_LOG_TAIL, description="How many of the last lines.")


class ReloadModelArgs(_Args):
    model: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="The model to reload; absent: every model the agent serves.",
    )


class SetLogLevelArgs(_Args):
    level: LogLevel

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value


ARGS: dict[str, type[_Args]] = {
    "ping": NoArgs,
    "diag": NoArgs,
    "logs": LogsArgs,
    "resync": NoArgs,
    "reload-model": ReloadModelArgs,
    "set-log-level": SetLogLevelArgs,
}


def unknown_command(name: object) -> str:
    return f"unknown command {name!r}: the commands are {', '.join(COMMANDS)}"


def parse_args(command: str, args: Any) -> _Args:
    """The validated arguments of ``command``, or :class:`InvalidMessage` naming the problem."""
    model = ARGS.get(command)
    if model is None:
        raise InvalidMessage(unknown_command(command))
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise InvalidMessage(f"{command}: args must be an object, not {type(args).__name__}")
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "args"
        if first["type"] == "extra_forbidden":
            known = ", ".join(model.model_fields) or "none"
            raise InvalidMessage(
                f"{command}: unknown argument {where!r} (it takes: {known})"
            ) from None
        raise InvalidMessage(f"{command}: argument {where}: {first['msg']}") from None


# --- the messages ------------------------------------------------------------------------


class CommandRequest(_Wire):
    """A command for one device, published on its ``commands`` topic (QoS 1)."""

    schema_version: int = SCHEMA_VERSION
    type: Literal["command"] = "command"
    request_id: str = Field(default_factory=new_id, pattern=REQUEST_ID)
    device_id: DeviceId = Field(description="The device that is to run it.")
    command: CommandName
    args: dict[str, Any] = Field(default_factory=dict)
    sender: str = Field(
        max_length=MAX_SENDER, description="Who sent it (the user the control plane names)."
    )
    sent_at: float = Field(default_factory=time.time, description="Unix time, control plane.")
    expires_at: float = Field(
        description="Unix time (the control plane's clock) after which it must not run."
    )
    reply_to: str | None = Field(
        None, description="Where to answer, for 3.1.1 (v5: the response topic property)."
    )
    correlation_id: str | None = Field(
        None, description="What to answer with, for 3.1.1 (v5: the correlation data property)."
    )


class RequestAddress(_Wire):
    """The parts of a request needed to answer it, read leniently: a request that fails to
    validate as :class:`CommandRequest` (an unknown command) still gets its error reply."""

    request_id: str | None = None
    command: Any = None
    expires_at: float | None = None
    reply_to: str | None = None
    correlation_id: str | None = None


class CommandReply(_Wire):
    """A device's answer, published on its own ``commands/reply`` topic (QoS 1)."""

    schema_version: int = SCHEMA_VERSION
    type: Literal["command_reply"] = "command_reply"
    device_id: DeviceId
    request_id: str | None = None
    correlation_id: str | None = Field(
        None, description="The request's correlation id, echoed (3.1.1; v5 also sets the property)."
    )
    command: str | None = None
    ok: bool
    error: str | None = Field(None, description="Why it failed (ok is false).")
    result: dict[str, Any] = Field(default_factory=dict)
    received_at: float = Field(description="Unix time, the agent's clock, when the request came.")
    agent_time: float = Field(
        default_factory=time.time,
        description="Unix time, the agent's clock, when it answered (for the clock offset).",
    )
    truncated: bool = Field(False, description="The result was shortened to fit the size cap.")


# --- decisions (pure) --------------------------------------------------------------------


def correlation_id(instance: str, request_id: str) -> str:
    """What a control plane instance sends as correlation data: ``INSTANCE:REQUEST_ID``."""
    return f"{instance}:{request_id}"


def split_correlation(value: str | bytes | None) -> tuple[str, str] | None:
    """``(instance, request_id)`` from :func:`correlation_id`'s value, or None if it is not one."""
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            return None
    if not value:
        return None
    instance, sep, request_id = value.rpartition(":")
    if not sep or not instance or not request_id:
        return None
    return instance, request_id


def expiry_problem(
    expires_at: float | None,
    now: float,
    remaining_s: int | None,
    tolerance_s: float = CLOCK_TOLERANCE_S,
) -> str | None:
    """Why a request must not run because it is too old, or None when it may run.

    ``remaining_s`` is the message expiry the broker delivered (v5: what is left of the
    lifetime; None when absent). ``expires_at`` is checked against the agent's clock as well:
    a 3.1.1 broker or a persistent session can deliver a request long after its sender gave up.
    """
    if remaining_s is not None and remaining_s <= 0:
        return "expired: the broker says its lifetime is over"
    if expires_at is None:
        return "refused: the request has no expires_at"
    late = now - expires_at
    if late > tolerance_s:
        return (
            f"expired: expires_at is {late:.1f}s before the device's clock (the request waited "
            "that long, or the clocks differ by that much)"
        )
    return None


def reply_topic(device_id: str) -> str:
    """The only topic a device answers on: its own ``commands/reply``."""
    return device_topic(device_id, Channel.COMMAND_REPLY)


def reply_topic_problem(requested: str | None, device_id: str) -> str | None:
    """Why a device must not answer on ``requested`` (None: it may). A device answers only on
    its own reply topic, so a request can never make it publish under another device's prefix
    or on one of its own other channels; absent, the reply goes there anyway."""
    if requested is None or requested == reply_topic(device_id):
        return None
    return f"refused: the reply topic {requested!r} is not this device's {reply_topic(device_id)!r}"


def fit_reply(reply: CommandReply, max_bytes: int = MAX_REPLY_BYTES) -> bytes:
    """The encoded reply, at most ``max_bytes``: a ``lines`` result (``logs``) keeps its newest
    lines that fit and says how many it dropped; any other answer too large becomes an error."""
    payload = encode(reply)
    if len(payload) <= max_bytes:
        return payload
    lines = reply.result.get("lines")
    if isinstance(lines, list) and lines:
        lo, hi = 0, len(lines) - 1  # the most lines dropped that still fits is hi at worst
        best: bytes | None = None
        while lo <= hi:  # the fewest oldest lines to drop so that the rest fits
            drop = (lo + hi) // 2
            candidate = encode(_with_lines(reply, lines, drop))
            if len(candidate) <= max_bytes:
                best, hi = candidate, drop - 1
            else:
                lo = drop + 1
        if best is not None:
            return best
    error = (
        f"the answer is {len(payload)} bytes, over the {max_bytes}-byte cap of a reply"
        " (nothing was left out: ask for less)"
    )
    small = reply.model_copy(update={"ok": False, "error": error, "result": {}, "truncated": True})
    return encode(small)


def _with_lines(reply: CommandReply, lines: list[Any], drop: int) -> CommandReply:
    result = {**reply.result, "lines": lines[drop:], "lines_dropped": drop}
    return reply.model_copy(update={"result": result, "truncated": True})


def result_size(result: dict[str, Any]) -> int:
    """The bytes of a result as JSON (what the control plane bounds before storing it)."""
    return len(json.dumps(result, separators=(",", ":")))
