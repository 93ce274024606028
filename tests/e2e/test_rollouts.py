"""End to end: releases pushed with the CLI roll out over the real broker to real (simulated)
agents, run by the real control plane; bad releases halt in the canary wave and roll back by
themselves.

One fleet (a control plane and a simulator of six devices tagged with the test's own token) serves
the module; each test starts from whatever release the fleet is on and checks that it is back there
(or on the new one) at the end, so the tests do not depend on their order.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from protocol.messages import decode
from protocol.mqtt import Message, MQTTClient
from protocol.release import DeploymentReport
from protocol.topics import Channel, device_topic
from tests.e2e.processes import ROOT, ControlPlane, Simulator, cli, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "digits-edge"
ROLLOUT = ROOT / "models" / "rollout"
DEVICES = 6
FAST = ("--bake", "0", "--min-sample", "3", "--device-timeout", "2m", "--wait", "--json")


@dataclass
class Fleet:
    cp: ControlPlane
    sim: Simulator
    token: str
    prefix: str
    workdir: Path
    key: Path

    @property
    def ids(self) -> list[str]:
        return [f"{self.prefix}-{i:03d}" for i in range(DEVICES)]

    def versions(self) -> dict[str, str | None]:
        """Each device's digits-edge version, as its latest birth message says."""
        out: dict[str, str | None] = {}
        for device_id in self.ids:
            device = self.cp.device(device_id) or {}
            models = {m["name"]: m["version"] for m in device.get("models") or []}
            out[device_id] = models.get(MODEL)
        return out

    def wait_all_on(self, version: str, timeout: float = 90) -> None:
        wait_until(
            f"every device on {version}",
            lambda: set(self.versions().values()) == {version},
            timeout,
            self.cp,
            self.sim,
        )

    def push(self, file: str, version: str) -> None:
        done = cli(
            self.cp.url, "models", "push", MODEL, version,
            "--artifact", f"cpu={ROLLOUT / file}.tflite",
            "--manifest", str(ROLLOUT / f"{file}.json"),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

    def rollout(self, version: str, *flags: str) -> tuple[int, dict[str, Any]]:
        """``edgefleet rollout start ... --wait --json``: its exit status and the final rollout."""
        done = cli(
            self.cp.url, "rollout", "start", f"{MODEL}:{version}", "--select", f"run={self.token}",
            *flags,
        )  # fmt: skip
        assert done.stdout, done.stderr
        return done.returncode, json.loads(done.stdout)

    def status(self, rollout_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.cp.get(f"/api/v1/rollouts/{rollout_id}").json()
        return body


def _start_fleet(broker_url: str, workdir: Path, token: str) -> Fleet:
    cp = ControlPlane(broker_url, workdir)
    cp.start()
    key = workdir / "release.pub"
    key.write_text(cp.get("/api/v1/keys/release").json()["public_key"] + "\n")
    prefix = f"ro-{token}"
    sim = Simulator(broker_url, prefix, DEVICES, workdir, key, "--tag", f"run={token}")
    sim.start()
    fleet = Fleet(cp, sim, token, prefix, workdir, key)
    fleet.wait_all_on("1.0.0", 60)  # the configured model: every device has said hello
    return fleet


@pytest.fixture(scope="module")
def fleet(broker_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("rollouts")
    token = workdir.name.replace("_", "")[-8:] + str(int(time.time()) % 10_000)
    f = _start_fleet(broker_url, workdir, token)
    try:
        for file, version in (
            ("good", "2.0.0"), ("broken", "2.2.0-broken"), ("slow", "2.3.0-slow"),
            ("swap", "2.1.0-swap"),
        ):  # fmt: skip
            f.push(file, version)
        yield f
    finally:
        f.sim.stop()
        f.cp.stop()


def _on_release(fleet: Fleet, version: str) -> None:
    """Make sure the fleet runs ``version`` (rolling it out when it does not yet)."""
    if set(fleet.versions().values()) != {version}:
        code, rollout = fleet.rollout(version, "--waves", "100%", *FAST)
        assert code == 0, rollout
    fleet.wait_all_on(version)


def test_a_good_release_goes_through_every_wave(fleet: Fleet) -> None:
    code, rollout = fleet.rollout("2.0.0", "--waves", "16%,50%,100%", *FAST)
    assert code == 0 and rollout["state"] == "completed", rollout.get("halt")
    status = fleet.status(rollout["id"])
    waves = [w["devices"] for w in status["waves_detail"]]
    assert waves == [1, 2, 3], waves  # 16 % of 6 is one canary, then the rest in two waves
    assert {d["state"] for d in status["deployments"]} == {"active"}
    fleet.wait_all_on("2.0.0")
    # every result names the release that answered it
    wait_until(
        "results from 2.0.0",
        lambda: all(
            any(r["model_version"] == "2.0.0" for r in fleet.cp.results(d)[:50]) for d in fleet.ids
        ),
        60,
        fleet.cp,
    )


@pytest.mark.parametrize(
    ("version", "flags", "gate"),
    [
        pytest.param("2.2.0-broken", (), "failure_rate", id="golden-test-fails"),
        pytest.param("2.3.0-slow", (), "latency_ratio", id="much-slower"),
        pytest.param(
            "2.1.0-swap", ("--shadow", "15", "--shadow-share", "1"), "agreement",
            id="disagrees-in-shadow",
        ),
    ],
)  # fmt: skip
def test_a_bad_release_halts_in_the_canary_and_the_fleet_goes_back(
    fleet: Fleet, version: str, flags: tuple[str, ...], gate: str
) -> None:
    _on_release(fleet, "2.0.0")
    code, rollout = fleet.rollout(version, "--waves", "16%,50%,100%", *flags, *FAST)
    assert code != 0
    assert rollout["state"] == "rolled_back", rollout
    halt = rollout["halt"]
    assert halt["wave"] == 0 and halt["gate"].startswith(gate), halt
    status = fleet.status(rollout["id"])
    touched = [d for d in status["deployments"] if d["state"] not in ("pending",)]
    assert len(touched) == 1, touched  # only the canary ever got the bad release
    fleet.wait_all_on("2.0.0")


async def test_a_tampered_artifact_is_refused_on_the_device(fleet: Fleet, broker_url: str) -> None:
    _on_release(fleet, "2.0.0")
    # a release whose stored artifact is changed on the control plane's disk after the push
    fleet.push("big", "3.0.0")
    release = fleet.cp.get(f"/api/v1/models/{MODEL}/releases/3.0.0").json()
    sha = release["sealed"]["release"]["artifacts"]["cpu"]["sha256"]
    stored = next((fleet.workdir / "cp").rglob(sha))
    stored.chmod(0o644)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    async with _reports(broker_url, fleet.ids) as reports:
        code, rollout = await asyncio.to_thread(
            fleet.rollout, "3.0.0", "--waves", "16%,100%", "--gate", "failure_rate<=0.1", *FAST
        )
    assert code != 0 and rollout["state"] == "rolled_back", rollout
    assert rollout["halt"]["gate"].startswith("failure_rate"), rollout["halt"]
    failed = [r for r in reports if r.state == "failed" and r.version == "3.0.0"]
    assert failed and "sha-256" in (failed[0].detail or "").lower(), reports
    fleet.wait_all_on("2.0.0")


async def test_a_replayed_older_desired_state_is_refused(fleet: Fleet, broker_url: str) -> None:
    _on_release(fleet, "2.0.0")
    before = {d: await _retained(broker_url, device_topic(d, Channel.DESIRED)) for d in fleet.ids}
    # a halted rollout moves its canary on twice (the bad release, then the signed rollback) ...
    code, rollout = fleet.rollout("2.2.0-broken", "--waves", "16%,100%", *FAST)
    assert code != 0 and rollout["state"] == "rolled_back", rollout
    deployments = fleet.status(rollout["id"])["deployments"]
    canary = next(d["device_id"] for d in deployments if d["state"] != "pending")
    fleet.wait_all_on("2.0.0")
    # ... so its older document, replayed by someone with access to the broker, is refused
    async with _reports(broker_url, [canary]) as reports:
        publisher = MQTTClient(broker_url, f"p-{uuid.uuid4().hex[:8]}")
        await publisher.start()
        try:
            await publisher.wait_connected(10)
            await publisher.publish(device_topic(canary, Channel.DESIRED), before[canary])
        finally:
            await publisher.stop()
        deadline = time.monotonic() + 30
        while not any(r.state == "failed" for r in reports) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    failed = [r for r in reports if r.state == "failed"]
    assert failed and "replayed" in (failed[0].detail or ""), reports
    assert fleet.versions()[canary] == "2.0.0"  # still serving what it had


def test_a_control_plane_restart_mid_rollout_carries_on(
    broker_url: str, tmp_path: Path, unique: str
) -> None:
    f = _start_fleet(broker_url, tmp_path, unique)
    try:
        f.push("good", "2.0.0")
        done = cli(
            f.cp.url, "rollout", "start", f"{MODEL}:2.0.0", "--select", f"run={unique}",
            "--waves", "16%,50%,100%", "--bake", "3s", "--min-sample", "0", "--json",
            "--gate", "failure_rate<=0.1",  # what it tests is the restart, not the gates
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        rollout_id = json.loads(done.stdout)["id"]
        wait_until(
            "the canary wave done",
            lambda: f.status(rollout_id)["waves_detail"][0]["states"].get("active") == 1,
            60,
            f.cp,
        )
        f.cp.stop(signal.SIGKILL)
        f.cp.start()  # the same data directory and port
        wait_until(
            "the rollout completed after the restart",
            lambda: f.status(rollout_id)["state"] == "completed",
            120,
            f.cp,
            f.sim,
        )
        f.wait_all_on("2.0.0")
    finally:
        f.sim.stop()
        f.cp.stop()


def test_a_device_offline_during_its_wave_converges_when_it_returns(
    broker_url: str, tmp_path: Path, unique: str
) -> None:
    f = _start_fleet(broker_url, tmp_path, unique)
    try:
        f.push("good", "2.0.0")
        f.sim.stop()  # every device goes away (the broker's will marks them offline)
        wait_until(
            "devices offline",
            lambda: all((f.cp.device(d) or {}).get("state") == "offline" for d in f.ids),
            60,
            f.cp,
        )
        done = cli(
            f.cp.url, "rollout", "start", f"{MODEL}:2.0.0", "--select", f"run={unique}",
            "--waves", "100%", "--bake", "0", "--min-sample", "0", "--json",
            "--gate", "failure_rate<=0.1",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        rollout_id = json.loads(done.stdout)["id"]
        time.sleep(2)
        assert f.status(rollout_id)["state"] == "running"
        f.sim.start()  # back: the retained desired state is waiting for them
        wait_until(
            "the rollout completed", lambda: f.status(rollout_id)["state"] == "completed", 120,
            f.cp, f.sim,
        )  # fmt: skip
        f.wait_all_on("2.0.0")
    finally:
        f.sim.stop()
        f.cp.stop()


# -- helpers ---------------------------------------------------------------------------------------


@asynccontextmanager
async def _reports(broker_url: str, device_ids: list[str]) -> AsyncIterator[list[DeploymentReport]]:
    """The deployment reports the devices send while the block runs."""
    reports: list[DeploymentReport] = []
    watcher = MQTTClient(
        broker_url, f"w-{uuid.uuid4().hex[:8]}",
        on_message=lambda m: reports.append(decode(DeploymentReport, m.payload)),
    )  # fmt: skip
    for device_id in device_ids:
        await watcher.subscribe(device_topic(device_id, Channel.DEPLOYMENT))
    await watcher.start()
    try:
        await watcher.wait_connected(10)
        yield reports
    finally:
        await watcher.stop()


async def _retained(broker_url: str, topic: str) -> bytes:
    """The message retained on ``topic`` (what the device got last)."""
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def on_message(message: Message) -> None:
        if not got.done():
            got.set_result(message.payload)

    client = MQTTClient(broker_url, f"r-{uuid.uuid4().hex[:8]}", on_message=on_message)
    await client.subscribe(topic)
    await client.start()
    try:
        return await asyncio.wait_for(got, 10)
    finally:
        await client.stop()
