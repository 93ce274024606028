"""The real agent process logs JSON lines on stdout, and SIGUSR1/SIGUSR2 change its level."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.processes import ROOT, AgentProcess, wait_until

pytestmark = [pytest.mark.e2e]

NOT_AN_IMAGE = "/v1/models/digits-edge/image"


class SplitAgent(AgentProcess):
    """The agent with stdout in a file of its own: native libraries may write to stderr, but
    every stdout line must be JSON."""

    def start(self) -> None:
        self.out_path = self.log_path.with_suffix(".out")
        with self.out_path.open("ab") as out, self.log_path.open("ab") as err:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=ROOT
            )
        wait_until(
            "agent ready",
            lambda: httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200,
            60,
            self,
        )

    def lines(self) -> list[dict[str, Any]]:
        text = self.out_path.read_text()
        assert text.endswith("\n"), "a partial line on stdout"
        return [json.loads(line) for line in text.splitlines()]

    def log(self) -> str:
        out = self.out_path.read_text(errors="replace") if self.out_path.exists() else ""
        return out + super().log()

    def bad_request(self) -> None:
        assert httpx.post(self.url + NOT_AN_IMAGE, content=b"plain text").status_code == 400


def _debug_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["level"] == "DEBUG"]


def _bad_request_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        line
        for line in _debug_lines(lines)
        if line["logger"] == "agent.api" and "400" in line["msg"]
    ]


def _changed_to(level: str, lines: list[dict[str, Any]]) -> bool:
    return any(line.get("log_level") == level for line in lines)


def test_json_lines_and_level_changed_by_signal(
    broker_url: str, tmp_path: Path, unique: str
) -> None:
    device_id = f"logs-{unique}"
    agent = SplitAgent(broker_url, device_id, tmp_path)
    agent.start()
    try:
        assert agent.proc is not None
        agent.bad_request()  # logged at DEBUG: not shown at INFO
        wait_until("the listening line", lambda: agent.lines(), 30, agent)
        lines = agent.lines()
        assert not _debug_lines(lines)
        for line in lines:
            assert {"ts", "level", "logger", "msg", "device_id"} <= line.keys()
            assert line["device_id"] == device_id
        assert any(line["msg"].startswith("listening on") for line in lines)

        agent.proc.send_signal(signal.SIGUSR1)
        wait_until("level DEBUG", lambda: _changed_to("DEBUG", agent.lines()), 30, agent)
        agent.bad_request()
        wait_until("the DEBUG line of a 400", lambda: _bad_request_lines(agent.lines()), 30, agent)

        agent.proc.send_signal(signal.SIGUSR2)
        wait_until("level INFO", lambda: _changed_to("INFO", agent.lines()), 30, agent)
        agent.bad_request()
        assert httpx.get(agent.url + "/v2/health/ready").status_code == 200
        assert len(_bad_request_lines(agent.lines())) == 1
    finally:
        assert agent.stop() == 0
    assert all(isinstance(line, dict) for line in agent.lines())  # the shutdown lines too
