"""End to end: ``edgefleet devices exec`` as a real process against a real ``edgefleet serve`` and a
real ``edgefleet-agent``, over the session's Mosquitto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.controlplane.auth_helpers import make_token
from tests.e2e.processes import TOKENS, AgentProcess, ControlPlane, cli, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@dataclass
class Pair:
    cp: ControlPlane
    agent: AgentProcess
    device_id: str


@pytest.fixture(scope="module")
def pair(broker_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    workdir = tmp_path_factory.mktemp("commands")
    device_id = f"exec-{workdir.name.replace('_', '')[-8:]}"
    cp = ControlPlane(broker_url, workdir)
    agent = AgentProcess(broker_url, device_id, workdir)
    cp.start()
    try:
        agent.start()
        wait_until("the agent's birth", lambda: cp.device(device_id), 60, cp, agent)
        yield Pair(cp, agent, device_id)
    finally:
        agent.stop()
        cp.stop()


def test_diag_prints_a_readable_block(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    # with auth on, the sender recorded is the user of the CLI's token (EDGEFLEET_TOKEN)
    ops_bot = make_token(pair.cp.data_dir, "ops-bot", "operator")
    monkeypatch.setitem(TOKENS, pair.cp.url, ops_bot)
    done = cli(pair.cp.url, "devices", "exec", pair.device_id, "diag", "--as", "ops-bot")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith(f"device        {pair.device_id} (agent ")
    for label in ("runtime", "packages", "clock", "model", "accelerators", "outbox", "disk",
                  "memory", "mqtt"):  # fmt: skip
        assert f"\n{label} " in out, label
    assert "digits-edge" in out and "on litert from configured file" in out
    assert "connected to mqtt://" in out and "(MQTT 5)" in out
    records = pair.cp.get(f"/api/v1/devices/{pair.device_id}/commands").json()["commands"]
    assert records[0]["command"] == "diag" and records[0]["sender"] == "ops-bot"


def test_json_prints_the_record(pair: Pair) -> None:
    done = cli(pair.cp.url, "devices", "exec", pair.device_id, "logs", "--tail", "5", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["status"] == "ok" and record["command"] == "logs"
    assert record["args"] == {"tail": 5} and 1 <= record["result"]["count"] <= 5
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in record["result"]["lines"])


def test_unknown_device_and_bad_arguments_are_clear_errors(pair: Pair) -> None:
    done = cli(pair.cp.url, "devices", "exec", "no-such-device", "ping")
    assert done.returncode == 1
    assert "unknown device 'no-such-device' (HTTP 404" in done.stderr
    assert "Traceback" not in done.stderr
    shell = cli(pair.cp.url, "devices", "exec", pair.device_id, "shell")
    assert shell.returncode == 2 and "invalid choice: 'shell'" in shell.stderr
    level = cli(pair.cp.url, "devices", "exec", pair.device_id, "set-log-level", "LOUD")
    assert level.returncode == 1 and "set-log-level: argument level" in level.stderr
    error = cli(pair.cp.url, "devices", "exec", pair.device_id, "reload-model", "nope")
    assert error.returncode == 1
    assert f"{pair.device_id} answered reload-model with an error: " in error.stderr


def test_a_silent_device_times_out(pair: Pair, tmp_path: Path, broker_url: str) -> None:
    pair.agent.stop()
    try:
        done = cli(pair.cp.url, "devices", "exec", pair.device_id, "ping", "--timeout", "1")
        assert done.returncode == 1
        assert f"device {pair.device_id} did not answer within 1s" in done.stderr
        assert "(HTTP 504 from POST" in done.stderr
    finally:
        pair.agent.start()
