"""The fleet's PKI directory, as ``edgefleet provision init`` lays it out (``reissue`` renews it).

::

    DIR/ca.pem, ca.key, crl.pem             the fleet CA (provisioning/ca.py)
    DIR/broker/server.pem, server.key       the broker's TLS certificate (SANs: --broker-host)
    DIR/broker/mosquitto.conf, acl          its configuration (provisioning/broker_config.py)
    DIR/broker/data/                        its persistence (sessions survive a restart)
    DIR/controlplane/NAME.pem, NAME.key     the control plane's MQTT client certificate (CN NAME)
    DIR/controlplane/https.pem, https.key   the control plane's HTTPS certificate (--api-host)

:func:`init` writes all of it and refuses a directory that already holds a CA (a new CA would
cut off every device). The release-signing key is not here: it lives in the control plane's data
directory (``keys/release-ed25519.pem``), because it protects something else (docs/security.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioning.broker_config import (
    ACL_FILE,
    BROKER_DIR,
    CONFIG_FILE,
    PID_FILE,
    SERVER_CERT,
    SERVER_KEY,
    BrokerFiles,
    write_broker_config,
)
from provisioning.ca import FleetCA, new_key
from provisioning.errors import InvalidName
from provisioning.files import cert_pem, write_atomic, write_key
from provisioning.names import BROKER_CN, CONTROL_PLANE_CN, check_service_name, host_problem

CONTROL_PLANE_DIR = "controlplane"
HTTPS_NAME = "https"
SERVER_LIFETIME = dt.timedelta(days=825)
CLIENT_LIFETIME = dt.timedelta(days=825)


@dataclass(frozen=True)
class Layout:
    """The paths of one PKI directory (absolute)."""

    root: Path

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.pem"

    @property
    def crl_file(self) -> Path:
        return self.root / "crl.pem"

    @property
    def broker_dir(self) -> Path:
        return self.root / BROKER_DIR

    @property
    def broker_config(self) -> Path:
        return self.broker_dir / CONFIG_FILE

    @property
    def broker_pid_file(self) -> Path:
        return self.broker_dir / PID_FILE

    def control_plane_cert(self, name: str = CONTROL_PLANE_CN) -> tuple[Path, Path]:
        """The (certificate, key) files of a control plane's MQTT identity."""
        base = self.root / CONTROL_PLANE_DIR
        return base / f"{name}.pem", base / f"{name}.key"

    @property
    def https_cert(self) -> tuple[Path, Path]:
        base = self.root / CONTROL_PLANE_DIR
        return base / f"{HTTPS_NAME}.pem", base / f"{HTTPS_NAME}.key"

    def broker_files(self, persistence: bool = True) -> BrokerFiles:
        return BrokerFiles(
            ca_file=self.ca_file,
            cert_file=self.broker_dir / SERVER_CERT,
            key_file=self.broker_dir / SERVER_KEY,
            crl_file=self.crl_file,
            acl_file=self.broker_dir / ACL_FILE,
            pid_file=self.broker_pid_file,
            persistence_dir=self.broker_dir / "data" if persistence else None,
        )


def init(
    directory: Path,
    *,
    broker_hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    api_hosts: Sequence[str] | None = None,
    port: int = 8883,
    bind: str = "0.0.0.0",
    control_planes: Sequence[str] = (CONTROL_PLANE_CN,),
    persistence: bool = True,
    run_as: str | None = None,
    now: dt.datetime | None = None,
) -> Layout:
    """Create the CA, the broker's and the control plane's certificates and the broker config."""
    for name in control_planes:
        check_service_name(name)
    _check_hosts([*broker_hosts, *(api_hosts or ())])  # before anything is written
    if not broker_hosts:
        raise InvalidName("the broker's certificate needs at least one --broker-host")
    layout = Layout(directory.resolve())
    ca = FleetCA.create(layout.root, now=now)
    files = layout.broker_files(persistence)
    _server(ca, BROKER_CN, broker_hosts, files.cert_file, files.key_file, now)
    https_cert, https_key = layout.https_cert
    _server(ca, "edgefleet-api", api_hosts or broker_hosts, https_cert, https_key, now)
    for name in control_planes:
        _client(ca, layout, name, now)
    if files.persistence_dir is not None:
        files.persistence_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_broker_config(
        layout.broker_dir, files, tuple(control_planes), port=port, bind=bind, run_as=run_as
    )
    return layout


def reissue(
    directory: Path,
    *,
    broker_hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    api_hosts: Sequence[str] | None = None,
    control_planes: Sequence[str] = (CONTROL_PLANE_CN,),
    now: dt.datetime | None = None,
) -> Layout:
    """New keys and certificates for the broker, the HTTPS API and the control planes, from the
    CA already in ``directory`` (rotation: docs/security.md). The CA, the CRL and the broker's
    configuration stay; Mosquitto picks its new certificate up on SIGHUP, the control plane on a
    restart. The old certificates stay valid until they expire."""
    for name in control_planes:
        check_service_name(name)
    _check_hosts([*broker_hosts, *(api_hosts or ())])
    if not broker_hosts:
        raise InvalidName("the broker's certificate needs at least one --broker-host")
    layout = Layout(directory.resolve())
    ca = FleetCA.load(layout.root)
    files = layout.broker_files()
    _server(ca, BROKER_CN, broker_hosts, files.cert_file, files.key_file, now)
    https_cert, https_key = layout.https_cert
    _server(ca, "edgefleet-api", api_hosts or broker_hosts, https_cert, https_key, now)
    for name in control_planes:
        _client(ca, layout, name, now)
    return layout


def _check_hosts(hosts: Sequence[str]) -> None:
    for host in hosts:
        problem = host_problem(host)
        if problem is not None:
            raise InvalidName(problem)


def _client(ca: FleetCA, layout: Layout, name: str, now: dt.datetime | None) -> None:
    cert_path, key_path = layout.control_plane_cert(name)
    key = new_key()
    cert = ca.issue_service_client(name, key.public_key(), CLIENT_LIFETIME, now=now)
    write_key(key_path, key)
    write_atomic(cert_path, cert_pem(cert))


def _server(
    ca: FleetCA,
    name: str,
    hosts: Sequence[str],
    cert_path: Path,
    key_path: Path,
    now: dt.datetime | None,
) -> None:
    key = new_key()
    cert = ca.issue_server(name, list(hosts), key.public_key(), SERVER_LIFETIME, now=now)
    write_key(key_path, key)
    write_atomic(cert_path, cert_pem(cert))
