"""A real agent deploys real signed releases from a real broker and a real HTTP server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.deploy.slots import ModelSlots, slot_name
from protocol.release import DeploymentReport, Release
from tests.agent.deploy.conftest import DeployEnv
from tests.agent.deploy.releases import (
    FP32,
    INT8,
    MODEL,
    desired_payload,
    golden_cases,
    make_release,
)
from tests.e2e.processes import digit_pngs

V11 = make_release(FP32, version="1.1.0", seq=1)
V2 = make_release(INT8, version="2.0.0", seq=2)


def final(generation: int) -> Callable[[DeploymentReport], bool]:
    return lambda r: r.generation == generation and r.state in ("active", "failed", "rolled_back")


async def test_deploys_a_release(env: DeployEnv) -> None:
    env.server.add(INT8)
    agent = await env.agent()
    assert agent.models[MODEL].version == "1.0.0"
    await env.publish(1, V2)
    done = await env.collector.wait_for("active", final(1))
    assert done.state == "active", done.detail
    assert env.collector.states(1)[:4] == ["queued", "downloading", "verifying", "active"] or (
        env.collector.states(1)[0] == "queued" and "verifying" in env.collector.states(1)
    )
    assert done.version == "2.0.0" and done.seq == 2 and done.rollout_id == "r-1"
    assert done.artifact_sha256 == V2.artifacts["cpu"].sha256
    assert done.smoke is not None and done.smoke.passed == done.smoke.total == 3
    assert done.smoke.candidate_ms and done.smoke.incumbent_ms
    served = agent.models[MODEL]
    assert served.version == "2.0.0" and served.artifact_sha256 == V2.artifacts["cpu"].sha256
    # results carry the new release; the birth lists it with its seq
    output = await agent.infer_image(MODEL, digit_pngs(1)[0][0])
    assert output.result.model_version == "2.0.0"
    assert any(m.seq == 2 and m.version == "2.0.0" for b in env.collector.births for m in b.models)
    # on disk: the slot, and the state naming it active
    slots = ModelSlots(agent.settings.data_dir / "models", MODEL)
    state = slots.load()
    assert state.active == slot_name(2, V2.artifacts["cpu"].sha256) and state.previous is None
    assert slots.complete(state.active) is not None
    # the same document again (a reconnect) changes nothing and says so
    count = len(env.collector.reports)
    agent.deployer.receive(
        json.dumps(json.loads(_retained(env, 1, V2))).encode()  # same generation
    )
    await env.collector.wait_for("re-report", lambda r: True, after=count)
    assert env.collector.reports[-1].state == "active"
    assert len(env.server.ranges) == 1  # downloaded once


def _retained(env: DeployEnv, generation: int, release: Release) -> bytes:
    return desired_payload(env.key, env.device_id, generation, release, base_url=env.server.url)


@pytest.mark.parametrize(
    ("case", "detail"),
    [
        ("bad signature", "trusts key"),
        ("other device", "is for device"),
        ("no key", "no release key configured"),
    ],
)
async def test_refused_documents_keep_serving(env: DeployEnv, case: str, detail: str) -> None:
    env.server.add(INT8)
    settings = env.settings()
    if case == "no key":
        settings = env.settings(deploy={})
    agent = await env.agent(settings)
    kwargs: dict[str, object] = {}
    if case == "bad signature":
        kwargs["key"] = Ed25519PrivateKey.generate()
    if case == "other device":
        kwargs["device_id"] = "someone-else"
    await env.publish(5, V2, **kwargs)
    report = await env.collector.wait_for("failed", lambda r: r.state == "failed")
    assert detail in (report.detail or ""), report.detail
    assert report.model == MODEL and report.generation == 5
    assert agent.models[MODEL].version == "1.0.0"
    assert (await agent.infer_image(MODEL, digit_pngs(1)[0][0])).result.model_version == "1.0.0"
    assert env.server.ranges == []


async def test_tampered_bad_golden_lower_generation_and_replayed_seq(env: DeployEnv) -> None:
    env.server.add(INT8)
    env.server.add(FP32)
    agent = await env.agent()
    # a tampered artifact: the server gives other bytes under the release's hash
    tampered = make_release(INT8, version="2.0.1", seq=3)
    claimed = tampered.artifacts["cpu"].model_copy(
        update={"sha256": "e" * 64, "size": FP32.stat().st_size}
    )
    tampered = tampered.model_copy(update={"artifacts": {"cpu": claimed}})
    env.server.files["e" * 64] = FP32
    await env.publish(10, tampered)
    report = await env.collector.wait_for("tampered", final(10))
    assert report.state == "failed" and "artifact check failed" in (report.detail or "")
    # a release whose golden test fails
    bad = make_release(INT8, version="2.0.2", seq=4, golden=golden_cases(wrong_index=True))
    await env.publish(11, bad)
    report = await env.collector.wait_for("golden", final(11))
    assert report.state == "failed" and "golden test failed" in (report.detail or "")
    assert report.smoke is not None and report.smoke.passed == 0
    assert agent.models[MODEL].version == "1.0.0"
    # a good one goes through
    await env.publish(12, V2)
    assert (await env.collector.wait_for("v2", final(12))).state == "active"
    # an older generation is refused
    await env.publish(9, V11)
    report = await env.collector.wait_for("old generation", final(9))
    assert report.state == "failed" and "older than the accepted generation 12" in (
        report.detail or ""
    )
    # a replayed older release (seq 1 < active seq 2) in a newer document, without rollback
    await env.publish(13, V11)
    report = await env.collector.wait_for("replayed seq", final(13))
    assert report.state == "failed" and "older than the active seq 2" in (report.detail or "")
    assert agent.models[MODEL].version == "2.0.0"
    # the generation is kept across a restart: the old document is still refused
    await env.stop_agent(agent)
    agent = await env.agent()
    await env.publish(8, V11)
    report = await env.collector.wait_for("old generation after restart", final(8))
    assert report.state == "failed"
    assert agent.models[MODEL].version == "2.0.0"


async def test_rollback_from_disk_and_back_to_configured(env: DeployEnv) -> None:
    env.server.add(INT8)
    env.server.add(FP32)
    agent = await env.agent()
    await env.publish(1, V11)
    assert (await env.collector.wait_for("v1.1", final(1))).state == "active"
    await env.publish(2, V2)
    assert (await env.collector.wait_for("v2", final(2))).state == "active"
    requests = len(env.server.ranges)
    await env.publish(3, V11, rollback=True)
    report = await env.collector.wait_for("rollback", final(3))
    assert report.state == "rolled_back" and report.detail == "swapped from disk", report.detail
    assert len(env.server.ranges) == requests  # no download
    assert agent.models[MODEL].version == "1.1.0"
    state = ModelSlots(agent.settings.data_dir / "models", MODEL).load()
    assert state.active == slot_name(1, V11.artifacts["cpu"].sha256)
    assert state.previous == slot_name(2, V2.artifacts["cpu"].sha256)
    await env.publish(4, None, rollback=True)
    report = await env.collector.wait_for("configured", final(4))
    assert report.state == "rolled_back" and report.version == "1.0.0"
    assert agent.models[MODEL].version == "1.0.0" and agent.deployer.seq_of(MODEL) is None


async def test_restart_serves_the_active_slot_and_falls_back(env: DeployEnv) -> None:
    env.server.add(INT8)
    env.server.add(FP32)
    agent = await env.agent()
    await env.publish(1, V11)
    await env.collector.wait_for("v1.1", final(1))
    await env.publish(2, V2)
    await env.collector.wait_for("v2", final(2))
    await env.stop_agent(agent)
    agent = await env.agent()
    assert agent.models[MODEL].version == "2.0.0"  # the active slot, not the configured file
    assert agent.deployer.seq_of(MODEL) == 2
    await env.stop_agent(agent)
    # corrupt the active slot's artifact: the agent falls back to the previous and says so
    slots = ModelSlots(agent.settings.data_dir / "models", MODEL)
    state = slots.load()
    assert state.active is not None
    artifact = slots.complete(state.active)
    assert artifact is not None
    artifact.write_bytes(artifact.read_bytes()[:-10] + b"0123456789")
    count = len(env.collector.reports)
    agent = await env.agent()
    assert agent.models[MODEL].version == "1.1.0"
    report = await env.collector.wait_for("fallback report", lambda r: True, after=count)
    assert report.state == "failed" and "does not check out" in (report.detail or "")
    assert "serving 1-" in (report.detail or "")


async def test_swap_under_concurrent_requests(env: DeployEnv) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from agent.api import create_app

    env.server.add(INT8)
    agent = await env.agent()
    app = create_app(
        agent.models, record=agent.record, stats=agent.stats, on_inferred=agent.observe
    )
    pngs = [p for p, _ in digit_pngs(20)]
    versions: list[str] = []
    failures: list[str] = []
    stop = asyncio.Event()
    async with TestClient(TestServer(app)) as client:

        async def hammer(i: int) -> None:
            while not stop.is_set():
                response = await client.post(f"/v1/models/{MODEL}/image", data=pngs[i % 20])
                if response.status != 200:
                    failures.append(f"{response.status} {await response.text()}")
                else:
                    versions.append((await response.json())["model_version"])
                i += 1

        tasks = [asyncio.create_task(hammer(i)) for i in range(4)]
        await asyncio.sleep(0.3)
        await env.publish(1, V2)
        assert (await env.collector.wait_for("v2", final(1))).state == "active"
        seen = len(versions)
        for _ in range(400):  # let some requests run on the new model
            if len(versions) >= seen + 20:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*tasks)
    assert failures == []
    assert versions[0] == "1.0.0" and versions[-1] == "2.0.0"
    assert set(versions) == {"1.0.0", "2.0.0"}


async def test_shadow_then_swap(env: DeployEnv) -> None:
    env.server.add(INT8)
    agent = await env.agent()
    await env.publish(1, V2, shadow={"share": 1.0, "samples": 15})
    await env.collector.wait_for("shadow", lambda r: r.state == "shadow")
    assert agent.models[MODEL].version == "1.0.0"  # still the incumbent while in shadow
    pngs = [p for p, _ in digit_pngs(60)]
    i = 0
    while agent.models[MODEL].version == "1.0.0" and i < 600:
        await agent.infer_image(MODEL, pngs[i % 60])
        await asyncio.sleep(0.005)
        i += 1
    report = await env.collector.wait_for("active", final(1))
    assert report.state == "active"
    assert report.shadow is not None and report.shadow.samples >= 15
    assert report.shadow.agreement is not None and report.shadow.agreement > 0.8
    assert report.shadow.candidate_p95_ms and report.shadow.incumbent_p95_ms


async def test_a_newer_document_cancels_the_shadow(env: DeployEnv) -> None:
    env.server.add(INT8)
    agent = await env.agent()
    await env.publish(1, V2, shadow={"share": 1.0, "samples": 10_000})
    await env.collector.wait_for("shadow", lambda r: r.state == "shadow")
    await env.publish(2, None)
    report = await env.collector.wait_for("configured", final(2))
    assert report.state == "active" and report.detail == "already serving it"
    assert agent.deployer.shadows == {}
    assert agent.models[MODEL].version == "1.0.0"


async def test_unsent_reports_are_kept_and_flushed(env: DeployEnv) -> None:
    """A report the broker could not take is persisted, and sent on the next connect."""
    env.server.add(INT8)
    agent = await env.agent()
    sent: list[DeploymentReport] = []
    real = agent.deployer._reporter._publish
    broken = True

    async def publish(report: DeploymentReport) -> None:
        if broken:
            from protocol.mqtt import NotConnected

            raise NotConnected("test: the broker is away")
        sent.append(report)
        await real(report)

    agent.deployer._reporter._publish = publish
    await env.publish(1, V2)
    for _ in range(600):
        if (
            agent.models[MODEL].version == "2.0.0"
            and ModelSlots(agent.settings.data_dir / "models", MODEL).load().unsent
        ):
            break
        await asyncio.sleep(0.05)
    state = ModelSlots(agent.settings.data_dir / "models", MODEL).load()
    assert state.unsent and state.report is not None and state.report["state"] == "active"
    broken = False
    await agent.deployer.flush()
    assert [r.state for r in sent] == ["active"]
    assert not ModelSlots(agent.settings.data_dir / "models", MODEL).load().unsent
