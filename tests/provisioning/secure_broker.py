"""A real Mosquitto with the configuration ``edgefleet provision init`` writes (mutual TLS, the
per-device ACL, the CRL), on a free port, and device certificates issued for tests."""

from __future__ import annotations

import datetime as dt
import signal
from pathlib import Path

from protocol.mqtt import TLSFiles
from provisioning import pki
from provisioning.ca import FleetCA, Revoked, new_key, utcnow
from provisioning.files import cert_pem, write_atomic, write_key
from tests.mosquitto import Mosquitto, free_port


class SecureBroker(Mosquitto):
    """The generated broker config, bound to 127.0.0.1; ``url`` is ``mqtts://localhost:PORT``."""

    def __init__(self, workdir: Path) -> None:
        (workdir / "run").mkdir(parents=True, exist_ok=True)
        super().__init__(workdir / "run")  # writes a plain config there, which we do not use
        self.layout = pki.init(
            workdir / "pki",
            broker_hosts=["localhost", "127.0.0.1"],
            port=self.port,
            bind="127.0.0.1",
            persistence=False,
        )
        self.config = self.layout.broker_config
        self.ca = FleetCA.load(self.layout.root)
        self.certs = workdir / "certs"

    @property
    def url(self) -> str:
        return f"mqtts://localhost:{self.port}"

    def device(
        self,
        device_id: str,
        *,
        lifetime: dt.timedelta = dt.timedelta(days=1),
        now: dt.datetime | None = None,
        ca: FleetCA | None = None,
        name: str | None = None,
    ) -> tuple[TLSFiles, int]:
        """A device certificate (this fleet's CA unless ``ca``) as TLS files, and its serial."""
        key = new_key()
        cert = (ca or self.ca).issue_device(device_id, key.public_key(), lifetime, now=now)
        stem = self.certs / (name or f"{device_id}-{cert.serial_number:x}")
        write_key(stem.with_suffix(".key"), key)
        write_atomic(stem.with_suffix(".pem"), cert_pem(cert))
        files = TLSFiles(self.layout.ca_file, stem.with_suffix(".pem"), stem.with_suffix(".key"))
        return files, cert.serial_number

    def control_plane(self) -> TLSFiles:
        cert, key = self.layout.control_plane_cert()
        return TLSFiles(self.layout.ca_file, cert, key)

    def revoke(self, *serials: int) -> None:
        """Write a CRL listing ``serials`` (the broker reads it on SIGHUP or at start)."""
        self.ca.write_crl([Revoked(s, utcnow()) for s in serials])

    def hup(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)


__all__ = ["SecureBroker", "free_port"]
