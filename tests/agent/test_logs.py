"""The agent's structured log lines and its run-time level changes."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent import logs


@pytest.fixture
def root() -> Iterator[logging.Logger]:
    """The root logger, put back as it was (handlers and level) after the test."""
    logger = logging.getLogger()
    handlers, level = logger.handlers[:], logger.level
    yield logger
    for handler in logger.handlers[:]:
        if handler not in handlers:
            logger.removeHandler(handler)
    logger.setLevel(level)


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_each_line_is_one_json_object(
    root: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("INFO", "json", device_id="dev-1")
    log = logging.getLogger("edgefleet.test")
    log.info("served %d requests", 3, extra={"model": "digits", "count": 3, "path": Path("/x")})
    log.warning("two\nlines")
    lines = _lines(capsys.readouterr().out)
    assert len(lines) == 2
    first = lines[0]
    assert first["level"] == "INFO"
    assert first["logger"] == "edgefleet.test"
    assert first["msg"] == "served 3 requests"
    assert first["device_id"] == "dev-1"
    assert first["model"] == "digits" and first["count"] == 3
    assert "path" not in first  # not JSON-able: left out rather than failing the line
    assert "exc" not in first
    ts = datetime.fromisoformat(first["ts"])
    assert ts.utcoffset() == timedelta(0)
    assert lines[1]["msg"] == "two\nlines"


def test_an_exception_is_carried_under_exc(
    root: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("INFO", "json")
    try:
        raise RuntimeError("the delegate is gone")
    except RuntimeError:
        logging.getLogger("edgefleet.test").exception("inference failed")
    (line,) = _lines(capsys.readouterr().out)
    assert line["level"] == "ERROR" and line["msg"] == "inference failed"
    assert "Traceback" in line["exc"] and "RuntimeError: the delegate is gone" in line["exc"]
    assert line["device_id"] is None


def test_a_record_device_id_wins(root: logging.Logger, capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "json", device_id="process-default")
    logging.getLogger("edgefleet.sim").info("hi", extra={"device_id": "sim-7"})
    (line,) = _lines(capsys.readouterr().out)
    assert line["device_id"] == "sim-7"


def test_text_format_goes_to_stderr(
    root: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("INFO", "text")
    logging.getLogger("edgefleet.test").info("plain")
    out, err = capsys.readouterr()
    assert out == "" and "INFO edgefleet.test: plain" in err


def test_configure_twice_keeps_one_handler(
    root: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("INFO", "json")
    logs.configure("INFO", "json")
    logging.getLogger("edgefleet.test").info("once")
    assert len(_lines(capsys.readouterr().out)) == 1


def test_level_change_takes_effect(
    root: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("INFO", "json")
    log = logging.getLogger("edgefleet.test")
    log.debug("hidden")
    assert logs.set_level("debug") == "INFO"
    log.debug("shown")
    assert logs.set_level("WARNING") == "DEBUG"
    log.info("hidden again")
    assert [line["msg"] for line in _lines(capsys.readouterr().out)] == ["shown"]


@pytest.mark.parametrize("bad", ["verbose", "", "CRITICAL", "10"])
def test_an_unknown_level_is_refused(root: logging.Logger, bad: str) -> None:
    logs.configure("INFO", "json")
    with pytest.raises(ValueError, match="DEBUG, INFO, WARNING, ERROR"):
        logs.set_level(bad)
    assert logs.current_level() == "INFO"


def test_configure_refuses_an_unknown_level(root: logging.Logger) -> None:
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        logs.configure("LOUD", "json")


@pytest.mark.parametrize(
    ("current", "steps", "expected"),
    [
        ("INFO", -1, "DEBUG"),
        ("DEBUG", -1, "DEBUG"),
        ("INFO", 1, "WARNING"),
        ("WARNING", 1, "ERROR"),
        ("ERROR", 1, "ERROR"),
        ("ERROR", -3, "DEBUG"),
        ("NOTSET", -1, "DEBUG"),
    ],
)
def test_stepped(current: str, steps: int, expected: str) -> None:
    assert logs.stepped(current, steps) == expected


@pytest.mark.parametrize(
    ("start", "steps", "shown_at"), [("INFO", -1, "INFO"), ("INFO", 1, "WARNING")]
)
def test_step_logs_the_change_where_it_shows(
    root: logging.Logger,
    capsys: pytest.CaptureFixture[str],
    start: str,
    steps: int,
    shown_at: str,
) -> None:
    logs.configure(start, "json")
    new = logs.step(steps, "SIGUSR1")
    (line,) = _lines(capsys.readouterr().out)
    assert line["level"] == shown_at
    assert line["previous_level"] == start and line["log_level"] == new == logs.current_level()
