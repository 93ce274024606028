"""Device identity end to end, every part a real process: Mosquitto with the generated mTLS
configuration, ``edgefleet serve`` over HTTPS and mqtts://, the ``edgefleet provision`` CLI,
``edgefleet-agent enroll`` and the agent itself.

The agent enrolls with a one-time token (its key never leaves its data directory), connects with
its new certificate, renews it before it expires (a 12 s lifetime here), reconnects with the
renewed one after the first has expired, and is cut off by ``edgefleet provision revoke``: its
live session is closed and its reconnects are refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import tarfile
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from controlplane.broker import find_mosquitto
from controlplane.cli import serve_argv
from protocol.mqtt import MQTTClient, TLSFiles
from protocol.topics import Channel, device_topic
from tests.controlplane.auth_helpers import make_token
from tests.e2e.processes import AgentProcess, Process, wait_until
from tests.mosquitto import free_port
from tests.provisioning.secure_broker import SecureBroker

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]
ROOT = Path(__file__).resolve().parents[2]
LIFETIME_S = 12


class SecureControlPlane(Process):
    def __init__(self, broker: SecureBroker, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"https://localhost:{self.port}"
        layout = broker.layout
        cp_cert, cp_key = layout.control_plane_cert()
        https_cert, https_key = layout.https_cert
        self.ca = layout.ca_file
        self.data_dir = workdir / "cp"
        self.token = ""
        super().__init__(
            "controlplane",
            serve_argv(
                broker.url, f"127.0.0.1:{self.port}", workdir / "cp",
                "--pki-dir", str(layout.root),
                "--broker-pid-file", str(layout.broker_pid_file),
                "--mqtt-ca-file", str(layout.ca_file),
                "--mqtt-cert-file", str(cp_cert), "--mqtt-key-file", str(cp_key),
                "--tls-cert-file", str(https_cert), "--tls-key-file", str(https_key),
                "--device-cert-lifetime-s", str(LIFETIME_S),
                "--offline-after-s", "30",
            ),
            workdir,
        )  # fmt: skip

    def start(self) -> None:
        super().start()
        wait_until("control plane connected", lambda: self.get("/healthz").is_success, 60, self)
        if not self.token:  # an admin's token (tests/controlplane/auth_helpers.py), once
            self.token = make_token(self.data_dir)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(
            self.url + path,
            headers={"Authorization": f"Bearer {self.token}"} if self.token else None,
            verify=ssl.create_default_context(cafile=self.ca),
        )

    def device(self, device_id: str) -> dict[str, Any] | None:
        response = self.get(f"/api/v1/devices/{device_id}")
        return response.json() if response.status_code == 200 else None  # type: ignore[no-any-return]


def edgefleet(cp: SecureControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    # the CLI checks the API's certificate, and sends an admin's token
    env = {**os.environ, "SSL_CERT_FILE": str(cp.ca), "EDGEFLEET_TOKEN": cp.token}
    return subprocess.run(
        [sys.executable, "-m", "controlplane", *args, "--server", cp.url, "--json"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip


def enroll(cp: SecureControlPlane, device_id: str, data_dir: Path, token: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "enroll", "--server", cp.url, "--server-ca", str(cp.ca),
         "--device-id", device_id, "--data-dir", str(data_dir)],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
        env={**os.environ, "EDGEFLEET_ENROLL_TOKEN": token},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def serial_of(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def test_enroll_connect_renew_reconnect_and_revoke(tmp_path: Path) -> None:
    device_id = f"cam-{uuid.uuid4().hex[:6]}"
    broker = SecureBroker(tmp_path / "secure")
    broker.start()
    cp = SecureControlPlane(broker, tmp_path)
    agent: AgentProcess | None = None
    try:
        cp.start()
        made = edgefleet(cp, "provision", "token", device_id, "--ttl", "5m")
        assert made.returncode == 0, made.stderr
        token = json.loads(made.stdout)["token"]

        data_dir = tmp_path / device_id
        out = enroll(cp, device_id, data_dir, token)
        assert "enrolled" in out
        identity = data_dir / "identity"
        assert (identity / "device.key").stat().st_mode & 0o777 == 0o600
        # the token worked once
        again = subprocess.run(
            [sys.executable, "-m", "agent", "enroll", "--server", cp.url, "--server-ca",
             str(cp.ca), "--device-id", device_id, "--data-dir", str(tmp_path / "other"),
             "--token", token],
            capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
        )  # fmt: skip
        assert again.returncode == 2 and "already been used" in again.stderr, again.stderr

        tls = [
            "--tls-ca-file", str(identity / "ca.pem"),
            "--tls-cert-file", str(identity / "device.pem"),
            "--tls-key-file", str(identity / "device.key"),
            "--tls-renew-url", cp.url, "--tls-renew-at", "0.5",
        ]  # fmt: skip
        agent = AgentProcess(broker.url, device_id, tmp_path, *tls)
        first_serial = serial_of(identity / "device.pem")
        enrolled_at = time.time()
        agent.start()
        wait_until(
            "the device online over mTLS",
            lambda: (cp.device(device_id) or {}).get("state") == "online",
            60, agent, cp,
        )  # fmt: skip

        # renewal, at half of the certificate's life
        wait_until(
            "a renewed certificate",
            lambda: serial_of(identity / "device.pem") != first_serial,
            3 * LIFETIME_S, agent, cp,
        )  # fmt: skip
        certs = cp.get(f"/api/v1/devices/{device_id}/identity").json()["certificates"]
        assert [c["via"] for c in certs][:2] == ["enroll", "renew"]

        # once the first certificate has expired, a fresh connection can only be the renewed one's
        time.sleep(max(0.0, enrolled_at + LIFETIME_S + 1 - time.time()))
        agent.stop()
        seen = (cp.device(device_id) or {}).get("last_seen", 0)
        agent.start()
        wait_until(
            "the device back online with its renewed certificate",
            lambda: (cp.device(device_id) or {}).get("last_seen", 0) > seen
            and (cp.device(device_id) or {}).get("state") == "online",
            60, agent, cp,
        )  # fmt: skip

        # revocation: the live session is cut and reconnects are refused
        revoked = edgefleet(cp, "provision", "revoke", device_id, "--reason", "e2e")
        assert revoked.returncode == 0, revoked.stdout + revoked.stderr
        body = json.loads(revoked.stdout)
        assert body["broker_reloaded"] and body["session_cut"], body
        wait_until(
            "the revoked device offline",
            lambda: (cp.device(device_id) or {}).get("state") == "offline",
            30, agent, cp,
        )  # fmt: skip
        device = cp.device(device_id)
        assert device is not None and device["revoked"] is True
        time.sleep(3)  # the agent keeps trying: every try is refused
        assert (cp.device(device_id) or {}).get("state") == "offline"
        assert "certificate" in broker.log.read_text() or "verify failed" in broker.log.read_text()
    finally:
        if agent is not None:
            agent.stop()
        cp.stop()
        broker.stop()


def test_a_bundle_made_by_the_cli_connects_and_show_lists_it(tmp_path: Path) -> None:
    broker = SecureBroker(tmp_path / "secure")
    broker.start()
    cp = SecureControlPlane(broker, tmp_path)
    try:
        cp.start()
        out = tmp_path / "cam-b.tar.gz"
        made = edgefleet(cp, "provision", "device", "cam-b", "--broker", broker.url,
                         "--tag", "site=lab", "--out", str(out))  # fmt: skip
        assert made.returncode == 0, made.stderr
        with tarfile.open(out) as tar:
            tar.extractall(tmp_path / "bundle", filter="data")
        bundle = tmp_path / "bundle" / "cam-b"
        config = tomllib.loads((bundle / "agent.toml").read_text())
        assert config["broker"] == broker.url and config["tags"] == {"site": "lab"}
        release = cp.get("/api/v1/keys/release").json()["public_key"]
        assert config["deploy"]["public_key"] == release
        files = TLSFiles(bundle / "ca.pem", bundle / "device.pem", bundle / "device.key")

        async def connects() -> bool:
            client = MQTTClient(broker.url, "cam-b", protocol="5", tls=files)
            await client.start()
            try:
                await client.wait_connected(10)
                await client.publish(device_topic("cam-b", Channel.STATUS), b"{}")
                return True
            finally:
                await client.stop()

        assert asyncio.run(connects())
        shown = edgefleet(cp, "provision", "show", "cam-b")
        assert shown.returncode == 0, shown.stderr
        body = json.loads(shown.stdout)
        assert body["revoked"] is False and [c["via"] for c in body["certificates"]] == ["operator"]
        refused = edgefleet(cp, "provision", "device", "cam+b", "--broker", broker.url)
        assert refused.returncode == 1 and "invalid device id 'cam+b'" in refused.stderr
    finally:
        cp.stop()
        broker.stop()
