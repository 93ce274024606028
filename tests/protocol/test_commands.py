"""protocol.commands: the request/response wire and the decisions taken before a command runs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol.commands import (
    COMMANDS,
    MAX_REPLY_BYTES,
    CommandReply,
    CommandRequest,
    LogsArgs,
    ReloadModelArgs,
    RequestAddress,
    SetLogLevelArgs,
    correlation_id,
    expiry_problem,
    fit_reply,
    parse_args,
    reply_topic,
    reply_topic_problem,
    split_correlation,
)
from protocol.errors import InvalidMessage
from protocol.messages import decode, encode


def test_the_six_commands_and_nothing_else() -> None:
    assert COMMANDS == ("ping", "diag", "logs", "resync", "reload-model", "set-log-level")


def request(**change: Any) -> CommandRequest:
    fields: dict[str, Any] = {
        "device_id": "cam-1", "command": "logs", "args": {"tail": 5}, "sender": "ana",
        "sent_at": 1000.0, "expires_at": 1010.0,
        "reply_to": "edgefleet/v1/devices/cam-1/commands/reply", "correlation_id": "cp-a:r1",
    }  # fmt: skip
    return CommandRequest(**(fields | change))


def test_request_payload_fields_round_trip() -> None:
    sent = request()
    body = json.loads(encode(sent))
    assert body["type"] == "command"
    assert body["schema_version"] == 1
    for key in ("request_id", "device_id", "command", "args", "sender", "sent_at", "expires_at",
                "reply_to", "correlation_id"):  # fmt: skip
        assert key in body, key
    assert decode(CommandRequest, encode(sent)) == sent


def test_readers_ignore_unknown_fields() -> None:
    body = json.loads(encode(request()))
    body["from_the_future"] = 1
    assert decode(CommandRequest, json.dumps(body)).command == "logs"


@pytest.mark.parametrize("command", ["shell", "exec", "sh -c reboot", ""])
def test_an_unknown_command_does_not_validate_but_its_address_does(command: str) -> None:
    body = json.loads(encode(request()))
    body["command"] = command
    with pytest.raises(InvalidMessage, match="command"):
        decode(CommandRequest, json.dumps(body))
    address = decode(RequestAddress, json.dumps(body))
    assert address.command == command and address.correlation_id == "cp-a:r1"


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        ("ping", {}, None),
        ("ping", None, None),
        ("diag", {}, None),
        ("logs", {}, LogsArgs(tail=100)),
        ("logs", {"tail": 1000}, LogsArgs(tail=1000)),
        ("reload-model", {}, ReloadModelArgs(model=None)),
        ("reload-model", {"model": "digits-edge"}, ReloadModelArgs(model="digits-edge")),
        ("set-log-level", {"level": "debug"}, SetLogLevelArgs(level="DEBUG")),
        ("resync", {}, None),
    ],
)
def test_valid_args(command: str, args: Any, expected: Any) -> None:
    parsed = parse_args(command, args)
    if expected is not None:
        assert parsed == expected


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("shell", {}, "unknown command 'shell': the commands are ping, diag"),
        ("ping", {"x": 1}, "ping: unknown argument 'x' (it takes: none)"),
        ("logs", {"tail": 0}, "logs: argument tail"),
        ("logs", {"tail": 1001}, "logs: argument tail"),
        ("logs", {"lines": 3}, "unknown argument 'lines' (it takes: tail)"),
        ("logs", [1], "logs: args must be an object"),
        ("set-log-level", {}, "set-log-level: argument level: Field required"),
        ("set-log-level", {"level": "LOUD"}, "set-log-level: argument level"),
        ("reload-model", {"model": "../etc"}, "reload-model: argument model"),
    ],
)
def test_bad_args_are_refused_by_name(command: str, args: Any, message: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_args(command, args)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("expires_at", "now", "remaining", "expired"),
    [
        (1010.0, 1000.0, None, False),  # in time, 3.1.1 (no broker expiry)
        (1010.0, 1000.0, 7, False),  # in time, v5
        (1010.0, 1011.5, None, False),  # within the clock tolerance
        (1010.0, 1013.0, None, True),  # past it: a persistent 3.1.1 session delivered it late
        (1010.0, 1000.0, 0, True),  # the broker says it is over
        (1010.0, 5000.0, 9, True),  # the broker says it lives, the clock says hours late
        (None, 1000.0, 5, True),  # no expiry at all: refused
    ],
)
def test_expiry_decision(
    expires_at: float | None, now: float, remaining: int | None, expired: bool
) -> None:
    assert (expiry_problem(expires_at, now, remaining) is not None) is expired


def test_expired_message_says_how_late() -> None:
    why = expiry_problem(1000.0, 1100.0, None)
    assert why is not None and "100.0s" in why and why.startswith("expired")


@pytest.mark.parametrize(
    ("requested", "allowed"),
    [
        (None, True),
        ("edgefleet/v1/devices/cam-1/commands/reply", True),
        ("edgefleet/v1/devices/cam-2/commands/reply", False),  # another device's prefix
        ("edgefleet/v1/devices/cam-1/status", False),  # its own, but another channel
        ("edgefleet/v1/devices/cam-1/commands/reply/x", False),
        ("other/topic", False),
    ],
)
def test_a_device_answers_only_on_its_own_reply_topic(requested: str | None, allowed: bool) -> None:
    assert (reply_topic_problem(requested, "cam-1") is None) is allowed
    assert reply_topic("cam-1") == "edgefleet/v1/devices/cam-1/commands/reply"


def test_correlation_ids() -> None:
    value = correlation_id("cp-a:zone", "abc123")
    assert split_correlation(value) == ("cp-a:zone", "abc123")
    assert split_correlation(value.encode()) == ("cp-a:zone", "abc123")
    for bad in (None, "", b"\xff\xfe", "no-colon", ":r", "cp:"):
        assert split_correlation(bad) is None


def reply(result: dict[str, Any]) -> CommandReply:
    return CommandReply(
        device_id="cam-1", request_id="r1", command="logs", ok=True, result=result,
        received_at=1.0, agent_time=2.0,
    )  # fmt: skip


def test_a_small_reply_is_sent_as_it_is() -> None:
    small = reply({"pong": True})
    assert fit_reply(small) == encode(small)


def test_logs_keep_the_newest_lines_that_fit_and_say_so() -> None:
    lines = [{"msg": f"line {i} " + "x" * 200} for i in range(1000)]
    payload = fit_reply(reply({"lines": lines, "count": 1000}))
    assert len(payload) <= MAX_REPLY_BYTES
    sent = decode(CommandReply, payload)
    kept = sent.result["lines"]
    assert sent.ok and sent.truncated
    assert kept[-1] == lines[-1]  # the newest stay
    assert sent.result["lines_dropped"] == 1000 - len(kept)
    # the fewest dropped: one more line would not fit
    one_more = reply({"lines": lines[-len(kept) - 1 :], "count": 1000, "lines_dropped": 0})
    assert len(encode(one_more.model_copy(update={"truncated": True}))) > MAX_REPLY_BYTES


def test_any_other_answer_past_the_cap_becomes_an_error() -> None:
    payload = fit_reply(reply({"blob": "y" * (MAX_REPLY_BYTES + 1)}))
    sent = decode(CommandReply, payload)
    assert len(payload) <= MAX_REPLY_BYTES
    assert not sent.ok and sent.truncated and "over the 65536-byte cap" in (sent.error or "")
