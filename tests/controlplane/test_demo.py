"""``scripts/demo`` end to end: a broker, the control plane and 20 simulated devices, all real
processes; the API lists 20 online devices and their results; everything stops cleanly."""

from __future__ import annotations

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
        "3",
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
    expected = "mosquitto" if broker == "mosquitto" else "embedded amqtt broker"
    assert expected in out
    if broker == "embedded":
        log = (tmp_path / "demo" / "controlplane.log").read_text()
        assert "falling back to MQTT 3.1.1" in log
