"""The real agent process with an accelerator that really aborts (the ``test-abort`` backend in a
supervised worker, LiteRT on the CPU as the fallback), a real control plane and Mosquitto: the
agent survives, every request is answered correctly, the backend is demoted, telemetry and the
birth say so, and the accelerator is promoted back once it works again."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from agent.runtimes.faulty import FAULT_FILE_ENV, TEST_BACKENDS_ENV
from tests.e2e.processes import AgentProcess, ControlPlane, digit_pngs, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "digits-edge"


def _workers(agent: AgentProcess) -> list[psutil.Process]:
    assert agent.proc is not None
    return [
        child
        for child in psutil.Process(agent.proc.pid).children()
        if "agent.supervisor.worker" in " ".join(child.cmdline())
    ]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_an_aborting_accelerator_is_survived_demoted_reported_and_promoted_back(
    broker_url: str, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fault = tmp_path / "accelerator-unplugged"
    monkeypatch.setenv(TEST_BACKENDS_ENV, "1")  # inherited by the agent and its workers
    monkeypatch.setenv(FAULT_FILE_ENV, str(fault))
    device = f"sup-{unique}"
    cp = ControlPlane(broker_url, tmp_path)
    agent = AgentProcess(
        broker_url, device, tmp_path,
        "--backends", "test-abort,litert",
        "--supervisor-restart-backoff-s", "0.2",
        "--supervisor-retry-s", "2",
        "--supervisor-retry-max-s", "4",
    )  # fmt: skip
    cp.start()
    agent.start()
    pngs = digit_pngs(8)
    image_url = f"{agent.url}/v1/models/{MODEL}/image"

    def answers() -> list[tuple[int, str]]:
        out = []
        for png, _ in pngs:
            r = httpx.post(image_url, content=png, timeout=30)
            assert r.status_code == 200, r.text
            body = r.json()
            out.append((body["classes"][0]["index"], body["backend"]))
        return out

    def telemetry() -> dict[str, Any]:
        view = cp.device(device) or {}
        return view.get("telemetry") or {}

    try:
        healthy = answers()
        assert {backend for _, backend in healthy} == {"test-abort"}
        (worker,) = _workers(agent)

        fault.touch()  # the accelerator falls off the bus
        during = answers()  # the first one was in flight when the worker aborted
        assert during == [(index, "litert") for index, _ in healthy], "the CPU answers the same"
        assert _gone(worker.pid) and agent.alive()

        demoted = wait_until(
            "demotion in telemetry",
            lambda: (t := telemetry()).get("demoted_backends") == ["test-abort"] and t,
            60, cp, agent,
        )  # fmt: skip
        assert demoted["backend"] == "litert"
        assert demoted["backend_restarts_total"] >= 2
        assert "test-abort: demoted after repeated failures" in demoted["fallback_reason"]
        assert "SIGABRT" in demoted["fallback_reason"]
        assert answers() == [(index, "litert") for index, _ in healthy]
        birth = wait_until(
            "the birth re-published",
            lambda: (d := cp.device(device)) and d["models"][0]["backend"] == "litert" and d,
            30, cp, agent,
        )  # fmt: skip
        assert "demoted" in json.dumps(birth["models"][0]["fallback_reason"])
        assert "demoted after 3 failures" in agent.log()

        fault.unlink()  # plugged back in: the next retry promotes it
        promoted = wait_until(
            "promotion in telemetry",
            lambda: (t := telemetry()).get("backend") == "test-abort" and t,
            60, cp, agent,
        )  # fmt: skip
        assert promoted.get("demoted_backends", []) == []
        assert promoted.get("fallback_reason") is None
        assert answers() == healthy
        assert "promoted back" in agent.log()
        workers = [w.pid for w in _workers(agent)]
    finally:
        agent.stop(signal.SIGTERM)
        cp.stop()
    assert all(_gone(pid) for pid in workers), "a worker outlived the agent"
