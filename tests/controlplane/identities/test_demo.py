"""``scripts/demo --secure``: the whole demo over mutual TLS, every part a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.simulator import device_ids
from controlplane.broker import find_mosquitto
from controlplane.demo import free_port
from controlplane.identities.demo import fleet_ids

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("count", [1, 20, 1000, 1001])
def test_the_demo_issues_certificates_for_the_simulators_ids(count: int) -> None:
    assert fleet_ids("demo", count) == device_ids("demo", count)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
def test_the_secure_demo_runs_the_fleet_and_a_rollout_over_mutual_tls(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    argv = [
        sys.executable, "-m", "controlplane.demo", "--secure", "--devices", "10",
        "--duration", "10", "--workdir", str(workdir), "--listen", f"127.0.0.1:{free_port()}",
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "mqtts://localhost:" in out and "mutual TLS, per-device ACL" in out, out
    assert "certificates:  10 devices" in out and "10 simulated devices online" in out, out
    assert out.rstrip().endswith("stopped."), out
    config = (workdir / "pki" / "broker" / "mosquitto.conf").read_text()
    assert "require_certificate true" in config and "use_username_as_clientid true" in config
    # the fleet really was on mutual TLS: each device under its own certificate's name
    log = (workdir / "broker.log").read_text()
    assert "as demo-000 (p5" in log and "u'demo-000'" in log, log[-2000:]
    # the rollout's desired documents reached the devices through the ACL
    states = [
        json.loads(p.read_text())
        for p in (workdir / "fleet").glob("demo-*/models/digits-edge/state.json")
    ]
    assert any(st.get("active") for st in states), states
