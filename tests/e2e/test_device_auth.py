"""Signed device requests end to end, every part a real process: Mosquitto with the generated
mTLS configuration, ``edgefleet serve`` over HTTPS with ``--device-auth required``, the
``edgefleet`` CLI, ``edgefleet-agent enroll`` and the agent itself.

The enrolled agent downloads a rolled-out release and uploads the inputs it keeps, every call
signed by its key (the control plane takes no unsigned device request). Then the device is
revoked while the broker cannot be signalled (no ``broker_pid_file``: the documented case where
its MQTT session goes on): the next release still reaches it over MQTT, but its download is
refused with 403 and so is its upload. HTTP does not depend on the broker's reload.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.broker import find_mosquitto
from controlplane.cli import serve_argv
from tests.controlplane.auth_helpers import make_token
from tests.e2e.processes import AgentProcess, Process, digit_pngs, wait_until
from tests.mosquitto import free_port
from tests.provisioning.secure_broker import SecureBroker

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]
ROOT = Path(__file__).resolve().parents[2]
MODEL = "digits-edge"
ROLLOUT = ROOT / "models" / "rollout"


class ControlPlane(Process):
    """``edgefleet serve`` with the fleet CA, over HTTPS, taking only signed device requests; the
    broker's pid file is left out on purpose (a revocation then cannot reload the broker)."""

    def __init__(self, broker: SecureBroker, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"https://localhost:{self.port}"
        self.data_dir = workdir / "cp"
        layout = broker.layout
        cp_cert, cp_key = layout.control_plane_cert()
        https_cert, https_key = layout.https_cert
        self.ca = layout.ca_file
        self.headers: dict[str, str] = {}
        super().__init__(
            "controlplane",
            serve_argv(
                broker.url, f"127.0.0.1:{self.port}", self.data_dir,
                "--pki-dir", str(layout.root), "--device-auth", "required",
                "--public-url", self.url,
                "--mqtt-ca-file", str(layout.ca_file),
                "--mqtt-cert-file", str(cp_cert), "--mqtt-key-file", str(cp_key),
                "--tls-cert-file", str(https_cert), "--tls-key-file", str(https_key),
                "--offline-after-s", "30", "--rollout-tick-s", "0.5", "--rollout-max-retries", "0",
            ),
            workdir,
        )  # fmt: skip

    def start(self) -> None:
        super().start()
        wait_until("control plane up", lambda: self.get("/healthz").is_success, 60, self)
        if not self.headers:
            self.headers = {"Authorization": f"Bearer {make_token(self.data_dir)}"}

    def get(self, path: str) -> httpx.Response:
        verify = ssl.create_default_context(cafile=self.ca)
        return httpx.get(self.url + path, headers=self.headers, verify=verify, timeout=10)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "EDGEFLEET_TOKEN": self.headers["Authorization"].split()[1]}
        return subprocess.run(
            [sys.executable, "-m", "controlplane", *args, "--server", self.url],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False,
        )  # fmt: skip

    def models(self, device_id: str) -> dict[str, str]:
        answer = self.get(f"/api/v1/devices/{device_id}")
        if answer.status_code != 200:
            return {}
        return {m["name"]: m["version"] for m in answer.json().get("models") or []}

    def deployment(self, rollout_id: str, device_id: str) -> dict[str, Any]:
        body = self.get(f"/api/v1/rollouts/{rollout_id}").json()
        found = [d for d in body.get("deployments", []) if d["device_id"] == device_id]
        return found[0] if found else {}


def infer(agent: AgentProcess, count: int) -> list[str]:
    """Ask the agent ``count`` times; the result ids (each input is kept: --samples-share 1)."""
    ids = []
    for png, _ in digit_pngs(count):
        answer = httpx.post(f"{agent.url}/v1/models/{MODEL}/image", content=png, timeout=10)
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["result_id"])
    return ids


def test_an_enrolled_agent_signs_its_calls_and_is_refused_once_revoked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    device_id = f"cam-{uuid.uuid4().hex[:6]}"
    run = uuid.uuid4().hex[:8]
    broker = SecureBroker(tmp_path / "secure")
    broker.start()
    cp = ControlPlane(broker, tmp_path)
    # the agent's downloads and uploads check the API's certificate against the system's CAs
    monkeypatch.setenv("SSL_CERT_FILE", str(cp.ca))
    agent: AgentProcess | None = None
    try:
        cp.start()
        made = cp.cli("provision", "token", device_id, "--ttl", "5m", "--json")
        assert made.returncode == 0, made.stderr
        data_dir = tmp_path / device_id
        enrolled = subprocess.run(
            [sys.executable, "-m", "agent", "enroll", "--server", cp.url, "--server-ca",
             str(cp.ca), "--device-id", device_id, "--data-dir", str(data_dir)],
            capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
            env={**os.environ, "EDGEFLEET_ENROLL_TOKEN": json.loads(made.stdout)["token"]},
        )  # fmt: skip
        assert enrolled.returncode == 0, enrolled.stderr
        # the CLI checks the artifacts it pushes with HEAD: an operator's token reads them
        for file, version in (("good", "2.0.0"), ("swap", "2.1.0-swap")):
            pushed = cp.cli(
                "models", "push", MODEL, version, "--artifact", f"cpu={ROLLOUT / file}.tflite",
                "--manifest", str(ROLLOUT / f"{file}.json"),
            )  # fmt: skip
            assert pushed.returncode == 0, pushed.stderr
        release_key = cp.get("/api/v1/keys/release").json()["public_key"]
        identity = data_dir / "identity"
        agent = AgentProcess(
            broker.url, device_id, tmp_path,
            "--tls-ca-file", str(identity / "ca.pem"),
            "--tls-cert-file", str(identity / "device.pem"),
            "--tls-key-file", str(identity / "device.key"),
            "--deploy-public-key", release_key, "--tag", f"run={run}",
            "--samples-control-plane-url", cp.url, "--samples-share", "1",
        )  # fmt: skip
        agent.start()
        wait_until("the agent online", lambda: cp.models(device_id).get(MODEL), 60, agent, cp)

        # a rollout: the agent's signed download is the only way it can get the release
        started = cp.cli(
            "rollout", "start", f"{MODEL}:2.0.0", "--select", f"run={run}", "--waves", "100%",
            "--bake", "0", "--min-sample", "1", "--device-timeout", "2m", "--json",
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        first = json.loads(started.stdout)["id"]
        wait_until(
            "the agent on 2.0.0",
            lambda: cp.models(device_id).get(MODEL) == "2.0.0",
            90, agent, cp,
        )  # fmt: skip
        kept = infer(agent, 3)  # results for the wave's gate, and inputs to upload

        def uploaded() -> bool:
            return all(
                cp.get(f"/api/v1/samples/{device_id}/{rid}").status_code == 200 for rid in kept
            )

        wait_until("the kept inputs uploaded (signed)", uploaded, 60, agent, cp)
        wait_until(
            "the first rollout over",
            lambda: cp.get(f"/api/v1/rollouts/{first}").json()["state"] == "completed",
            90, agent, cp,
        )  # fmt: skip

        revoked = cp.cli("provision", "revoke", device_id, "--reason", "stolen", "--json")
        assert revoked.returncode == 3, revoked.stdout + revoked.stderr  # broker not signalled
        assert json.loads(revoked.stdout)["session_cut"] is False
        # its MQTT session goes on (the broker was not reloaded): a new release still reaches it
        started = cp.cli(
            "rollout", "start", f"{MODEL}:2.1.0-swap", "--select", f"run={run}", "--waves",
            "100%", "--bake", "0", "--min-sample", "1", "--device-timeout", "2m",
            "--on-halt", "pause", "--json",
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        second = json.loads(started.stdout)["id"]
        failed = wait_until(
            "the revoked device's download refused",
            lambda: (d := cp.deployment(second, device_id)).get("state") == "failed" and d,
            90, agent, cp,
        )  # fmt: skip
        assert (
            "HTTP 403" in failed["detail"] and f"device {device_id} is revoked" in failed["detail"]
        ), failed
        assert cp.models(device_id).get(MODEL) == "2.0.0"  # still the release it had

        late = infer(agent, 1)[0]  # the agent still answers locally; its upload is refused
        wait_until(
            "the upload refused",
            lambda: f"refused {late} for good (HTTP 403" in agent.log(),
            60, agent, cp,
        )  # fmt: skip
        assert cp.get(f"/api/v1/samples/{device_id}/{late}").status_code == 404
    finally:
        if agent is not None:
            agent.stop()
        cp.stop()
        broker.stop()
