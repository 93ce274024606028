"""``scripts/demo --secure``: the demo over mutual TLS, with a CA made for the run.

The demo's CA directory (``WORKDIR/pki``) is what ``edgefleet provision init`` writes; Mosquitto
runs its generated configuration (TLS, per-device ACL, CRL) on 127.0.0.1; the control plane
connects with its client certificate and holds the CA (``--pki-dir``, so ``edgefleet provision
revoke`` works on the demo fleet) and takes only signed device requests (``--device-auth
required``: a device's artifact downloads are signed by its key); and every simulated device gets
a certificate of its own. The devices' keys are made here and their CSRs signed by the control
plane (``POST /api/v1/devices/{id}/certificate``), so the registry knows every serial: about a
millisecond each, so a fleet of a thousand is ready in a few seconds.

The API stays plain HTTP on 127.0.0.1: the simulated devices download artifacts from it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import httpx

from protocol.enrollment import build_csr, new_device_key
from provisioning import pki
from provisioning.files import key_pem, write_atomic

SIMULATOR_PREFIX = "demo"


def fleet_ids(prefix: str, count: int) -> list[str]:
    """The simulator's device ids (``agent.simulator.device_ids``: zero-padded to a common width;
    the control plane does not import the agent, so the rule is repeated here and tested)."""
    width = max(3, len(str(count - 1)))
    return [f"{prefix}-{i:0{width}d}" for i in range(count)]


@dataclass(frozen=True)
class SecureDemo:
    layout: pki.Layout
    port: int

    @property
    def url(self) -> str:
        return f"mqtts://localhost:{self.port}"

    @property
    def certs(self) -> Path:
        return self.layout.root.parent / "fleet-certs"

    def broker_argv(self, mosquitto: str) -> list[str]:
        return [mosquitto, "-c", str(self.layout.broker_config)]

    def serve_flags(self) -> list[str]:
        cert, key = self.layout.control_plane_cert()
        return [
            "--pki-dir", str(self.layout.root),
            "--broker-pid-file", str(self.layout.broker_pid_file),
            "--mqtt-ca-file", str(self.layout.ca_file),
            "--mqtt-cert-file", str(cert),
            "--mqtt-key-file", str(key),
            "--device-auth", "required",
        ]  # fmt: skip

    def fleet_flags(self) -> list[str]:
        return ["--tls-ca-file", str(self.layout.ca_file), "--tls-cert-dir", str(self.certs)]

    def issue_fleet(
        self, api: str, count: int, headers: dict[str, str], prefix: str = SIMULATOR_PREFIX
    ) -> int:
        """A certificate for each simulated device, signed by the control plane at ``api``
        (``headers``: an admin's ``Authorization``)."""
        with httpx.Client(base_url=api, timeout=30, headers=headers) as http:
            for device_id in fleet_ids(prefix, count):
                key = new_device_key()
                response = http.post(
                    f"/api/v1/devices/{device_id}/certificate",
                    json={"csr": build_csr(device_id, key)},
                )
                if response.status_code != 201:
                    raise RuntimeError(f"no certificate for {device_id}: {response.text[:300]}")
                write_atomic(self.certs / f"{device_id}.key", key_pem(key), 0o600)
                write_atomic(
                    self.certs / f"{device_id}.pem", response.json()["certificate"].encode()
                )
        return count


def setup(workdir: Path, port: int) -> SecureDemo:
    """The demo's CA directory and broker configuration, for a broker on 127.0.0.1:``port``
    (a new CA each run, even with ``--keep``: the broker's port changes between runs)."""
    shutil.rmtree(workdir / "pki", ignore_errors=True)
    shutil.rmtree(workdir / "fleet-certs", ignore_errors=True)
    layout = pki.init(
        workdir / "pki", broker_hosts=["localhost", "127.0.0.1"], port=port, bind="127.0.0.1"
    )
    return SecureDemo(layout, port)
