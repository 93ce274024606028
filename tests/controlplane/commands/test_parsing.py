"""The command API's pure parts: the body, the sender header, the clock offset, the result bound."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.commands.api import parse_body, parse_sender
from controlplane.commands.records import MAX_RESULT_BYTES, bounded
from controlplane.commands.requester import clock_offset
from controlplane.errors import BadRequest


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"command": "ping"}, ("ping", {}, 10.0)),
        ({"command": "logs", "args": {"tail": 5}, "timeout_s": 3}, ("logs", {"tail": 5}, 3.0)),
        ({"command": "diag", "args": None, "timeout_s": 0.5}, ("diag", {}, 0.5)),
        ({"command": "reload-model", "timeout_s": 300}, ("reload-model", {}, 300.0)),
    ],
)
def test_good_bodies(body: Any, expected: tuple[str, dict[str, Any], float]) -> None:
    assert parse_body(body) == expected


@pytest.mark.parametrize(
    ("body", "parameter", "message"),
    [
        ([], "body", "expected a JSON object"),
        ({}, "command", "required: one of ping, diag, logs, resync, reload-model, set-log-level"),
        ({"command": "shell"}, "command", "unknown command 'shell'"),
        ({"command": "ping", "argz": {}}, "argz", "unknown field"),
        ({"command": "logs", "args": [1]}, "args", "expected an object"),
        ({"command": "ping", "timeout_s": 0}, "timeout_s", "above 0 and at most 300"),
        ({"command": "ping", "timeout_s": 301}, "timeout_s", "at most 300"),
        ({"command": "ping", "timeout_s": "10"}, "timeout_s", "expected seconds"),
        ({"command": "ping", "timeout_s": True}, "timeout_s", "expected seconds"),
        ({"command": "ping", "timeout_s": float("nan")}, "timeout_s", "expected seconds"),
    ],
)
def test_bad_bodies_name_the_field(body: Any, parameter: str, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_body(body)
    assert info.value.parameter == parameter and message in str(info.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, "anonymous"), ("ana", "ana"), ("  ana@example.com ", "ana@example.com")],
)
def test_sender(raw: str | None, expected: str) -> None:
    assert parse_sender(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "a\nb", "x" * 129, "bell\x07"])
def test_bad_sender(raw: str) -> None:
    with pytest.raises(BadRequest, match="X-Edgefleet-User"):
        parse_sender(raw)


@pytest.mark.parametrize(
    ("t0", "t1", "t2", "t3", "offset", "rtt"),
    [
        (100.0, 100.05, 100.06, 100.11, 0.0, 0.1),  # same clocks, 50 ms each way
        (100.0, 160.05, 160.06, 100.11, 60.0, 0.1),  # the device is a minute ahead
        (100.0, 40.05, 40.06, 100.11, -60.0, 0.1),  # a minute behind
        (100.0, 100.01, 102.01, 102.02, 0.0, 0.02),  # a slow handler does not bias it
    ],
)
def test_clock_offset_is_ntp_style(
    t0: float, t1: float, t2: float, t3: float, offset: float, rtt: float
) -> None:
    got_offset, got_rtt = clock_offset(t0, t1, t2, t3)
    assert got_offset == pytest.approx(offset, abs=1e-9)
    assert got_rtt == pytest.approx(rtt, abs=1e-9)


def test_results_are_bounded() -> None:
    assert bounded(None) is None
    assert bounded({"pong": True}) == {"pong": True}
    big = bounded({"x": "y" * MAX_RESULT_BYTES})
    assert big is not None and "over the 65536-byte cap" in big["omitted"]
