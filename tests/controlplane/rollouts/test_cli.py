"""``edgefleet rollout ...`` and ``edgefleet devices tag`` against a real control plane (uvicorn
on a free port, its store seeded with a release and three devices)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controlplane.records import Incoming
from controlplane.registry.keys import ReleaseKey
from controlplane.settings import Settings
from controlplane.store import Store
from tests.controlplane.rollouts.devices import PlayedDevice, add_release
from tests.live import headers, live_control_plane, run_cli


async def _seed(data_dir: Path) -> None:
    store = Store(data_dir / "controlplane.db")
    store.open()
    try:
        key = ReleaseKey.load_or_create(data_dir)
        await add_release(store, key, "2")
        births = [PlayedDevice("mqtt://h:1", f"cam-{i}", key.public).status() for i in range(3)]
        await store.write(*[Incoming(b.device_id, time.time(), b) for b in births])
    finally:
        store.close()


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(logging, "raiseExceptions", False)  # the seed logs too: see tests/live.py
    data_dir = tmp_path / "data"
    asyncio.run(_seed(data_dir))

    def settings(listen: str) -> Settings:
        return Settings(broker="mqtt://127.0.0.1:1", data_dir=data_dir, listen=listen)

    with live_control_plane(settings, monkeypatch) as url:
        yield url


def test_start_list_status_and_actions(capsys: pytest.CaptureFixture[str], server: str) -> None:
    code, out, err = run_cli(
        capsys, "rollout", "start", "digits:2", "--server", server, "--select", "site=lab",
        "--waves", "34%,100%", "--bake", "0", "--gate", "error_rate<0.02", "--min-sample", "0",
        "--on-halt", "pause", "--device-timeout", "5m", "--max-per-minute", "10",
        "--shadow", "20",
    )  # fmt: skip
    assert code == 0, err
    assert "started: digits:2 to 3 devices in 2 waves" in out
    rid = out.split()[1]
    stored = httpx.get(f"{server}/api/v1/rollouts/{rid}", headers=headers()).json()
    # the failure-rate gate is kept beside explicit gates (docs/rollouts.md says why)
    assert stored["gates"] == ["failure_rate<=0.1", "error_rate<0.02"]
    assert stored["on_halt"] == "pause"
    assert stored["device_timeout_s"] == 300 and stored["max_per_minute"] == 10
    assert stored["shadow"] == {"samples": 20, "share": 0.2}

    code, out, _ = run_cli(capsys, "rollout", "list", "--server", server)
    assert code == 0
    header, line = out.splitlines()
    assert header.split()[:4] == ["ID", "RELEASE", "STATE", "WAVE"]
    assert line.split()[:4] == [rid, "digits:2", "running", "1/2"]

    code, out, _ = run_cli(capsys, "rollout", "status", rid, "--server", server)
    assert code == 0
    assert f"rollout {rid}: digits:2 (seq 1) to site=lab" in out
    assert "error_rate<0.02" in out and "cam-0" in out and "pending" in out
    code, out, _ = run_cli(capsys, "rollout", "status", rid, "--server", server, "--json")
    assert code == 0 and len(json.loads(out)["deployments"]) == 3

    code, out, _ = run_cli(capsys, "rollout", "pause", rid, "--server", server)
    assert code == 0 and out.strip() == f"rollout {rid}: paused"
    code, _, err = run_cli(capsys, "rollout", "pause", rid, "--server", server)
    assert code == 1 and "cannot pause" in err and "HTTP 409" in err and len(err.splitlines()) == 1
    code, out, _ = run_cli(capsys, "rollout", "resume", rid, "--server", server, "--json")
    assert code == 0 and json.loads(out)["state"] == "running"
    code, _, err = run_cli(capsys, "rollout", "start", "digits:2", "--server", server)
    assert code == 1 and "one rollout per model" in err
    code, out, _ = run_cli(capsys, "rollout", "abort", rid, "--server", server)
    assert code == 0 and "aborted" in out
    code, _, err = run_cli(capsys, "rollout", "rollback", "nope", "--server", server)
    assert code == 1 and "no rollout 'nope'" in err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["digits"], ["NAME:VERSION"]),
        (["digits:9"], ["no release digits:9", "HTTP 404"]),
        (["digits:2", "--waves", "50%"], ["waves", "100%"]),
        (["digits:2", "--gate", "speed<1"], ["unknown metric"]),
        (["digits:2", "--bake", "soon"], ["bake"]),
        (["digits:2", "--select", "site"], ["TAG=VALUE"]),
    ],
    ids=["no-version", "unknown-release", "waves", "gate", "bake", "select"],
)
def test_start_mistakes_are_one_line(
    capsys: pytest.CaptureFixture[str], server: str, argv: list[str], words: list[str]
) -> None:
    code, _, err = run_cli(capsys, "rollout", "start", *argv, "--server", server)
    assert code == 1 and len(err.splitlines()) == 1
    for word in words:
        assert word in err, (word, err)


def test_wait_follows_until_the_end_and_fails_unless_completed(
    capsys: pytest.CaptureFixture[str], server: str
) -> None:
    auth = headers()

    def abort_when_running() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            running = httpx.get(
                f"{server}/api/v1/rollouts", params={"state": "running"}, headers=auth
            ).json()
            if running["rollouts"]:
                rid = running["rollouts"][0]["id"]
                httpx.post(f"{server}/api/v1/rollouts/{rid}/abort", headers=auth)
                return
            time.sleep(0.05)

    operator = threading.Thread(target=abort_when_running)
    operator.start()
    code, out, err = run_cli(capsys, "rollout", "start", "digits:2", "--server", server, "--wait")
    operator.join()
    assert code == 1, "aborted is not completed"
    assert "started" in err and ": aborted" in err and "state aborted" in out


def test_devices_tag(capsys: pytest.CaptureFixture[str], server: str) -> None:
    code, out, err = run_cli(capsys, "devices", "tag", "cam-1", "hw=coral", "--server", server)
    assert code == 0, err
    assert out.strip() == "cam-1: tags hw=coral,site=lab"
    code, out, _ = run_cli(
        capsys, "devices", "tag", "cam-1", "--remove", "site", "--server", server, "--json"
    )
    body = json.loads(out)
    assert code == 0 and body["tags"] == {"hw": "coral"} and body["reported_tags"]["site"] == "lab"
    code, _, err = run_cli(capsys, "devices", "tag", "cam-1", "hw", "--server", server)
    assert code == 1 and "KEY=VALUE" in err
    code, _, err = run_cli(capsys, "devices", "tag", "cam-1", "--server", server)
    assert code == 1 and "nothing to do" in err
    code, _, err = run_cli(capsys, "devices", "tag", "ghost", "a=b", "--server", server)
    assert code == 1 and "unknown device 'ghost'" in err
