"""The CPU fallback artifact of a deployed release, on a real agent, broker and artifact server.

The Edge TPU device is faked as the supervisor's tests fake it: the ``test-abort`` backend (a real
worker process that really aborts while the "accelerator" is unplugged) stands first in the
device's ``backends``, with ``EDGEFLEET_TEST_BACKENDS=1``. The release's ``edgetpu`` artifact is
the digits fp32 model; its ``cpu`` artifact is a different real model (``models/rollout/
good.tflite``), so the hash and the scores of every answer say which file produced it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.daemon import Agent
from agent.deploy.slots import ModelSlots, slot_name
from agent.diagnostics import diagnose
from agent.errors import BackendUnavailable
from agent.inference import InferenceOutput
from agent.runtimes.faulty import FAULT_FILE_ENV, TEST_BACKENDS_ENV
from protocol.release import DeploymentReport, Release, ReleaseArtifact, seal_desired, seal_release
from protocol.topics import Channel, device_topic
from tests.agent.deploy.conftest import DeployEnv
from tests.agent.deploy.releases import FP32, MODEL, make_release
from tests.agent.deploy.test_kill import agent_process, wait_file
from tests.agent.supervisor.test_fallback_artifact import answer, answers_of
from tests.agent.supervisor.test_supervised import replug, unplug
from tests.e2e.processes import digit_pngs

ROOT = Path(__file__).resolve().parents[3]
GOOD = ROOT / "models" / "rollout" / "good.tflite"
SWAP = ROOT / "models" / "rollout" / "swap.tflite"
"""Another model of good.tflite's very size: tampered bytes that download in full."""
FAST = {"restart_backoff_s": 0.05, "retry_s": 30.0, "retry_max_s": 60.0, "timeout_s": 2.0}


def artifact(path: Path) -> ReleaseArtifact:
    data = path.read_bytes()
    return ReleaseArtifact(sha256=hashlib.sha256(data).hexdigest(), size=len(data), format="tflite")


def edgetpu_release(*, cpu: Path | None, version: str = "2.0.0", seq: int = 2) -> Release:
    """The fp32 digits model as the ``edgetpu`` artifact, with ``cpu`` beside it (or not)."""
    artifacts = {"edgetpu": artifact(FP32)} | ({"cpu": artifact(cpu)} if cpu else {})
    base = make_release(FP32, version=version, seq=seq)
    return base.model_copy(update={"artifacts": artifacts})


EDGETPU_SHA = artifact(FP32).sha256
GOOD_SHA = artifact(GOOD).sha256
WITH_CPU = edgetpu_release(cpu=GOOD)
WITHOUT_CPU = edgetpu_release(cpu=None)


async def publish(env: DeployEnv, generation: int, release: Release) -> None:
    """A desired document naming the ``edgetpu`` target, as the control plane sends an Edge TPU
    device, with the URL of the release's cpu artifact beside it."""
    entry = {
        "model": MODEL,
        "rollout_id": "r-1",
        "rollback": False,
        "release": seal_release(env.key, release),
        "target": "edgetpu",
        "artifact_url": f"{env.server.url}/artifacts/{release.artifacts['edgetpu'].sha256}",
    }
    if "cpu" in release.artifacts:  # as the control plane adds it for an accelerator target
        entry["fallback_artifact_url"] = (
            f"{env.server.url}/artifacts/{release.artifacts['cpu'].sha256}"
        )
    body = {
        "device_id": env.device_id,
        "generation": generation,
        "issued_at": time.time(),
        "models": [entry],
    }
    await env.publisher.publish(
        device_topic(env.device_id, Channel.DESIRED),
        seal_desired(env.key, body),
        qos=1,
        retain=True,
    )


def final(generation: int) -> Callable[[DeploymentReport], bool]:
    return lambda r: r.generation == generation and r.state in ("active", "failed")


@pytest.fixture
def fault(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The test switch on; the "Edge TPU" (test-abort) fails while the returned file exists."""
    monkeypatch.setenv(TEST_BACKENDS_ENV, "1")
    trigger = tmp_path / "accelerator-unplugged"
    monkeypatch.setenv(FAULT_FILE_ENV, str(trigger))
    return trigger


async def edgetpu_device(env: DeployEnv, backends: list[str]) -> Agent:
    env.server.add(FP32)
    env.server.add(GOOD)
    return await env.agent(env.settings(backends=backends, supervisor=FAST))


async def demote(agent: Agent, pngs: list[bytes], answered: Callable[[Any], None]) -> None:
    """Send requests until the supervisor has demoted test-abort; ``answered`` checks each."""
    i = 0
    while agent.models[MODEL].demoted_backends != ["test-abort"]:
        try:
            answered(await asyncio.wait_for(agent.infer_image(MODEL, pngs[i % len(pngs)]), 30))
        except BackendUnavailable as exc:
            answered(exc)
        i += 1
        assert i < 2000, "never demoted"
        await asyncio.sleep(0.01)


async def test_an_edgetpu_release_installs_its_cpu_artifact_and_falls_back_to_it(
    env: DeployEnv, fault: Path
) -> None:
    agent = await edgetpu_device(env, ["test-abort", "litert"])
    await publish(env, 1, WITH_CPU)
    done = await env.collector.wait_for("active", final(1))
    assert done.state == "active", done.detail
    assert done.artifact_sha256 == EDGETPU_SHA  # the deployment is the edgetpu artifact's
    assert len(env.server.ranges) == 2  # both artifacts fetched, once each

    # the slot keeps both, checked against the release; nothing half-written is left
    slot = slot_name(2, EDGETPU_SHA)
    slot_dir = agent.settings.data_dir / "models" / MODEL / slot
    assert (slot_dir / "model.tflite").read_bytes() == FP32.read_bytes()
    assert (slot_dir / "fallback.tflite").read_bytes() == GOOD.read_bytes()
    assert not list(slot_dir.glob("*.part"))

    served = agent.models[MODEL]
    assert served.version == "2.0.0" and served.backend == "test-abort"
    assert served.artifact_sha256 == EDGETPU_SHA and served.fallback_sha256 == GOOD_SHA
    diag = (await diagnose(agent, time.time()))["models"][0]
    assert diag["fallback_artifact"] == {
        "path": str(slot_dir / "fallback.tflite"),
        "sha256": GOOD_SHA,
        "serving": False,
    }
    assert diag["demoted_backends"] == [] and diag["backend_restarts_total"] == 0
    assert diag["slots"]["on_disk"] == [
        {"slot": slot, "version": "2.0.0", "sha256": EDGETPU_SHA, "fallback": True}
    ]

    pngs = [png for png, _ in digit_pngs(12)]
    ok = await agent.infer_image(MODEL, pngs[0])
    assert (ok.result.backend, ok.result.artifact_sha256) == ("test-abort", EDGETPU_SHA)

    unplug(fault)  # the Edge TPU falls off the bus: every request is answered by the CPU artifact
    results: list[InferenceOutput] = []
    await demote(agent, pngs, results.append)
    assert results and all(
        (r.result.backend, r.result.artifact_sha256) == ("litert", GOOD_SHA) for r in results
    )
    expected = await asyncio.to_thread(answers_of, GOOD, pngs)  # good.tflite's, score for score
    assert [answer(r.result) for r in results] == [expected[i % 12] for i in range(len(results))]

    # the birth, the telemetry and diag say the CPU artifact serves
    (info,) = agent.birth().models
    assert (info.backend, info.artifact_sha256) == ("litert", GOOD_SHA)
    assert agent.telemetry().demoted_backends == ["test-abort"]
    diag = (await diagnose(agent, time.time()))["models"][0]
    assert diag["demoted_backends"] == ["test-abort"] and diag["backend_restarts_total"] >= 2
    assert diag["fallback_artifact"]["serving"] is True
    assert diag["artifact_sha256"] == GOOD_SHA

    # after a restart the agent serves the slot with both files again
    replug(fault)
    await env.stop_agent(agent)
    agent = await env.agent(env.settings(backends=["test-abort", "litert"], supervisor=FAST))
    served = agent.models[MODEL]
    assert served.version == "2.0.0" and served.fallback_sha256 == GOOD_SHA
    assert served.backend == "test-abort" and served.artifact_sha256 == EDGETPU_SHA


async def test_a_tampered_cpu_artifact_fails_the_deployment(env: DeployEnv, fault: Path) -> None:
    agent = await edgetpu_device(env, ["test-abort", "litert"])
    env.server.files[GOOD_SHA] = SWAP  # the server hands out other bytes under the cpu hash
    await publish(env, 1, WITH_CPU)
    done = await env.collector.wait_for("failed", final(1))
    assert done.state == "failed"
    assert (done.detail or "").startswith("cpu fallback artifact check failed")
    assert "tampered or corrupted; discarded" in (done.detail or "")
    assert agent.models[MODEL].version == "1.0.0"  # still serving what it served
    slots = ModelSlots(agent.settings.data_dir / "models", MODEL)
    assert slots.load().active is None
    assert not (slots.slot_dir(slot_name(2, EDGETPU_SHA)) / "fallback.tflite").exists()


async def test_a_release_without_a_cpu_artifact_installs_as_before_and_503s_while_demoted(
    env: DeployEnv, fault: Path
) -> None:
    """No ``cpu`` artifact: only the edgetpu file is fetched and served, and while the Edge TPU is
    demoted its requests get 503. (The device lists only the accelerator: a real Edge TPU file
    does not load on LiteRT's CPU, while the test backend's file would.)"""
    agent = await edgetpu_device(env, ["test-abort"])
    await publish(env, 1, WITHOUT_CPU)
    done = await env.collector.wait_for("active", final(1))
    assert done.state == "active", done.detail
    assert len(env.server.ranges) == 1
    slot_dir = agent.settings.data_dir / "models" / MODEL / slot_name(2, EDGETPU_SHA)
    assert sorted(p.name for p in slot_dir.iterdir()) == ["model.tflite", "release.json"]
    served = agent.models[MODEL]
    assert served.fallback_sha256 is None and served.artifact_sha256 == EDGETPU_SHA
    diag = (await diagnose(agent, time.time()))["models"][0]
    assert diag["fallback_artifact"] is None

    unplug(fault)
    errors: list[Any] = []
    await demote(agent, [png for png, _ in digit_pngs(4)], errors.append)
    assert errors and all(isinstance(e, BackendUnavailable) for e in errors)
    with pytest.raises(BackendUnavailable, match="demoted after repeated failures") as demoted:
        await agent.infer_image(MODEL, digit_pngs(1)[0][0])
    assert demoted.value.retry_after_s >= 1


@pytest.mark.e2e
@pytest.mark.slow
async def test_sigkill_mid_fallback_download_resumes_and_installs_both(env: DeployEnv) -> None:
    """A real agent process on a CPU-only backend list, sent the ``edgetpu`` target: killed in
    the middle of the fallback's download, it restarts on its configured model, resumes that
    download with ``Range``, installs both files, and answers from the CPU artifact."""
    env.server.add(FP32)
    env.server.add(GOOD)
    env.server.stall_after = 8000
    agent = agent_process(env)  # backends: litert only
    await asyncio.to_thread(agent.start)
    slots = ModelSlots(agent.data_dir / "models", MODEL)
    slot_dir = slots.slot_dir(slot_name(2, EDGETPU_SHA))
    part = slot_dir / "fallback.tflite.part"
    try:
        await publish(env, 1, WITH_CPU)
        await wait_file(
            "a partial fallback", lambda: part.exists() and part.stat().st_size >= 8000, agent
        )
        agent.kill()
        assert slots.complete(slot_name(2, EDGETPU_SHA)) is None
        assert not (slot_dir / "fallback.tflite").exists()
        env.server.stall_after = None
        await asyncio.to_thread(agent.start)
        report = await env.collector.wait_for("active", final(1), 60)
        assert report.state == "active", report.detail
        assert env.server.ranges == [None, "bytes=8000-", None]  # fallback, its rest, the model
        assert (slot_dir / "fallback.tflite").read_bytes() == GOOD.read_bytes()
        assert (slot_dir / "model.tflite").read_bytes() == FP32.read_bytes()
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"{agent.url}/v1/models/{MODEL}/image", content=digit_pngs(1)[0][0], timeout=10
            )
        body = response.json()
        assert response.status_code == 200, body
        assert (body["model_version"], body["backend"]) == ("2.0.0", "litert")
        assert body["artifact_sha256"] == GOOD_SHA  # the CPU serves the CPU artifact
    finally:
        agent.stop()
