"""``edgefleet devices exec``: its arguments (pure) and how the answers read (the real process
against a real control plane and agent is in tests/e2e/test_commands.py)."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.fleet.client import FleetError
from controlplane.fleet.remote import command_args, render


@pytest.mark.parametrize(
    ("command", "arg", "tail", "expected"),
    [
        ("ping", None, None, {}),
        ("diag", None, None, {}),
        ("logs", None, None, {}),
        ("logs", None, 20, {"tail": 20}),
        ("resync", None, None, {}),
        ("reload-model", None, None, {}),
        ("reload-model", "digits-edge", None, {"model": "digits-edge"}),
        ("set-log-level", "debug", None, {"level": "debug"}),
    ],
)
def test_command_args(command: str, arg: str | None, tail: int | None, expected: Any) -> None:
    assert command_args(command, arg, tail) == expected


@pytest.mark.parametrize(
    ("command", "arg", "tail", "message"),
    [
        ("ping", "x", None, "ping takes no ARG ('x')"),
        ("diag", None, 5, "--tail is for logs, not diag"),
        ("logs", "5", None, "logs takes no ARG ('5'): use --tail N"),
        ("set-log-level", None, None, "set-log-level needs LEVEL: one of DEBUG, INFO"),
    ],
)
def test_bad_command_lines(command: str, arg: str | None, tail: int | None, message: str) -> None:
    with pytest.raises(FleetError) as info:
        command_args(command, arg, tail)
    assert message in str(info.value)


def record(command: str, result: dict[str, Any]) -> dict[str, Any]:
    return {"device_id": "cam-1", "command": command, "status": "ok", "result": result,
            "clock_offset_s": -0.25, "round_trip_s": 0.012}  # fmt: skip


def test_answers_read_as_text() -> None:
    assert render(record("ping", {"pong": True})) == (
        "pong from cam-1: round trip 12 ms, clock offset -0.250 s"
    )
    logs = render(record("logs", {"lines": [
        {"ts": "2026-01-01T00:00:00.000+00:00", "level": "ERROR", "logger": "agent.x",
         "msg": "boom", "exc": "Traceback\n  line"},
    ], "lines_dropped": 3}))  # fmt: skip
    assert logs.startswith("(3 older lines left out")
    assert "ERROR   agent.x: boom\n    Traceback\n      line" in logs
    assert render(record("set-log-level", {"previous": "INFO", "level": "DEBUG"})) == (
        "cam-1: log level INFO -> DEBUG"
    )
    assert render({**record("diag", {}), "status": "error"}) == ""  # errors go to stderr


def test_diag_reads_as_a_block_even_with_parts_missing() -> None:
    text = render(record("diag", {"agent": {"version": "0.1.0", "uptime_s": 3725},
                                  "disk": {"path": "/d", "error": "No such file"}}))  # fmt: skip
    assert text.splitlines()[0] == (
        "device        cam-1 (agent 0.1.0, pid None, up 1h 2m, log level None)"
    )
    assert "disk          /d: No such file" in text
    assert "clock offset -0.250 s" in text
