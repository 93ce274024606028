"""``scripts/demo`` end to end: a broker, the control plane and 20 simulated devices, all real
processes; the API lists 20 online devices and their results, a release rolls out to its canary
wave; everything stops cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.demo import free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_demo_brings_twenty_devices_online_and_stops_cleanly(tmp_path: Path, broker: str) -> None:
    argv = [
        sys.executable,
        "-m",
        "controlplane.demo",
        "--devices",
        "20",
        "--duration",
        "12",
        "--workdir",
        str(tmp_path / "demo"),
        "--listen",
        f"127.0.0.1:{free_port()}",
    ]
    if broker == "embedded":
        argv.append("--embedded-broker")
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "20 simulated devices online" in out, out
    assert "20 devices online" in out and "results stored" in out, out
    stored = [int(line.split(", ")[1].split()[0]) for line in out.splitlines() if "stored" in line]
    assert stored and stored[-1] > 0, out
    assert out.rstrip().endswith("stopped."), out
    # the demo pushed digits-edge 2.0.0 and its canary wave took it (over the real broker)
    assert "rollout:       digits-edge 2.0.0 pushed" in out, out
    states = [
        json.loads(p.read_text())
        for p in (tmp_path / "demo" / "fleet").glob("demo-*/models/digits-edge/state.json")
    ]
    assert any(st.get("active") for st in states), states
    expected = "mosquitto" if broker == "mosquitto" else "embedded amqtt broker"
    assert expected in out
    if broker == "embedded":
        # the demo tells both sides that amqtt speaks 3.1.1 (the negotiation is tested elsewhere)
        log = (tmp_path / "demo" / "controlplane.log").read_text()
        assert "(MQTT 3.1.1)" in log and "no CONNACK" not in log, log[-3000:]
        assert "no CONNACK" not in (tmp_path / "demo" / "fleet.log").read_text()
