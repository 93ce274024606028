"""SIGKILL a real agent process mid-download, mid-verify and mid-swap: it always restarts on a
valid model and the deployment resumes from the retained desired document."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from agent.deploy.deployer import TEST_PAUSE_ENV
from agent.deploy.slots import ModelSlots, slot_name
from protocol.signing import public_key_text
from tests.agent.deploy.conftest import DeployEnv
from tests.agent.deploy.releases import INT8, MODEL, make_release
from tests.e2e.processes import AgentProcess, digit_pngs

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

V2 = make_release(INT8, version="2.0.0", seq=2)
SLOT = slot_name(2, V2.artifacts["cpu"].sha256)


def agent_process(env: DeployEnv) -> AgentProcess:
    return AgentProcess(
        env.broker_url,
        env.device_id,
        env.tmp,
        "--deploy-public-key",
        public_key_text(env.key.public_key()),
        "--backends",
        "litert",
    )


async def serving_version(agent: AgentProcess) -> str:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{agent.url}/v1/models/{MODEL}/image", content=digit_pngs(1)[0][0], timeout=10
        )
    response.raise_for_status()
    version: str = response.json()["model_version"]
    return version


async def wait_file(
    what: str, check: Callable[[], bool], agent: AgentProcess, timeout: float = 60
) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        assert agent.alive(), f"agent died waiting for {what}:\n{agent.log()[-3000:]}"
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}:\n{agent.log()[-3000:]}")


async def test_sigkill_mid_download_resumes_with_range(env: DeployEnv) -> None:
    env.server.add(INT8)
    env.server.stall_after = 8000
    agent = agent_process(env)
    await asyncio.to_thread(agent.start)
    slots = ModelSlots(agent.data_dir / "models", MODEL)
    part = slots.partial(SLOT, "tflite")
    try:
        await env.publish(1, V2)
        await wait_file(
            "a partial download", lambda: part.exists() and part.stat().st_size >= 8000, agent
        )
        agent.kill()
        assert slots.complete(SLOT) is None  # never a half-written model under its final name
        assert slots.load().active is None
        await asyncio.to_thread(agent.start)  # the configured model serves at once
        report = await env.collector.wait_for(
            "active", lambda r: r.state in ("active", "failed") and r.generation == 1, 60
        )
        assert report.state == "active", report.detail
        assert env.server.ranges[0] is None and "bytes=8000-" in env.server.ranges
        assert await serving_version(agent) == "2.0.0"
    finally:
        agent.stop()


@pytest.mark.parametrize("step", ["verifying", "swap"])
async def test_sigkill_mid_verify_and_mid_swap(
    env: DeployEnv, step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.server.add(INT8)
    agent = agent_process(env)
    monkeypatch.setenv(TEST_PAUSE_ENV, step)
    await asyncio.to_thread(agent.start)
    monkeypatch.delenv(TEST_PAUSE_ENV)
    slots = ModelSlots(agent.data_dir / "models", MODEL)
    try:
        await env.publish(1, V2)
        await wait_file(f"the pause at {step}", lambda: "paused at" in agent.log(), agent)
        assert await serving_version(agent) == "1.0.0"  # still the old model, serving
        agent.kill()
        assert slots.complete(SLOT) is not None
        assert slots.load().active == (SLOT if step == "swap" else None)
        count = len(env.collector.reports)
        await asyncio.to_thread(agent.start)
        if step == "swap":  # state.json already named the new slot: it serves from the start
            assert await serving_version(agent) == "2.0.0"
        report = await env.collector.wait_for(
            "active", lambda r: r.state in ("active", "failed"), 60, after=count
        )
        assert report.state == "active", report.detail
        assert await serving_version(agent) == "2.0.0"
        assert len(env.server.ranges) == 1  # the complete slot was not fetched again
    finally:
        agent.stop()
