"""The production broker's configuration: Mosquitto 2.0 syntax, as Debian 12's 2.0.11 reads it.

One listener, mutual TLS:

- ``require_certificate true``: a client without a certificate from the fleet CA (``cafile``) does
  not get past the TLS handshake, and one listed in the CRL (``crlfile``) neither.
- ``use_identity_as_username true``: the certificate's CN is the MQTT username; no passwords.
- ``use_username_as_clientid true``: the client id is that username too, whatever the client
  asks for. Without it a device with a valid certificate could connect with another device's
  client id and knock that device off the broker (MQTT's session takeover).
- ``allow_anonymous false``: belt and braces (no client reaches the broker without an identity).
- ``acl_file``: ``pattern`` lines give every device, by its username (``%u``, its CN, which is its
  device id), exactly its own topics under ``edgefleet/v1/devices/{id}/``: it publishes what a
  device sends and subscribes to what it is sent, nothing else; the control plane's users read
  every device's outgoing topics and write their ``desired`` and ``commands``.

The ACL is derived from :mod:`protocol.topics` (which channels a device sends), so a new channel
there is covered here without an edit. One listener means ``per_listener_settings`` can stay
false: the security settings are global and apply to it (2.0.11 also has a crash on SIGHUP with
per-listener settings, mosquitto#2167).

Mosquitto re-reads the CRL, the certificates and the ACL on ``SIGHUP`` (``pid_file`` says whom to
signal); what that does and does not do to live connections is in docs/provisioning.md.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from pathlib import Path

from protocol.topics import DEVICES, FROM_DEVICE, Channel
from provisioning.files import write_atomic
from provisioning.names import check_service_name

BROKER_DIR = "broker"
CONFIG_FILE = "mosquitto.conf"
ACL_FILE = "acl"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
PID_FILE = "mosquitto.pid"

DEVICE_SENDS: tuple[Channel, ...] = tuple(c for c in Channel if c in FROM_DEVICE)
DEVICE_RECEIVES: tuple[Channel, ...] = tuple(c for c in Channel if c not in FROM_DEVICE)


@dataclass(frozen=True)
class BrokerFiles:
    """Where the broker's files are (absolute paths go into the config)."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    crl_file: Path
    acl_file: Path
    pid_file: Path
    persistence_dir: Path | None = None


def acl(control_planes: tuple[str, ...]) -> str:
    """The ACL file: devices confined to their own prefix, control planes reading all of them."""
    lines = [
        "# edgefleet broker ACL, written by `edgefleet provision init` (docs/provisioning.md).",
        "# %u is the MQTT username, which is the client certificate's CN: for a device, its id.",
        "",
        "# every device: only its own topics",
    ]
    lines += [f"pattern write {DEVICES}/%u/{c.value}" for c in DEVICE_SENDS]
    lines += [f"pattern read {DEVICES}/%u/{c.value}" for c in DEVICE_RECEIVES]
    for name in control_planes:
        check_service_name(name)
        lines += ["", f"# the control plane {name}: every device's topics", f"user {name}"]
        lines += [f"topic read {DEVICES}/+/{c.value}" for c in DEVICE_SENDS]
        lines += [f"topic write {DEVICES}/+/{c.value}" for c in DEVICE_RECEIVES]
    return "\n".join(lines) + "\n"


def mosquitto_conf(
    files: BrokerFiles,
    *,
    port: int = 8883,
    bind: str = "0.0.0.0",
    max_queued_messages: int = 100_000,
    max_inflight_messages: int = 100,
    run_as: str | None = None,
) -> str:
    """The broker's ``mosquitto.conf``.

    ``max_queued_messages`` is large because Mosquitto silently drops QoS 1 messages for a
    subscriber that falls further behind (the default, 1000, loses a burst; docs/DESIGN). With
    ``persistence_dir`` sessions survive a broker restart; Mosquitto started as root switches to
    ``run_as`` (default: the user who runs this, who can read the key).
    """
    if not 0 < port < 65536:
        raise ValueError(f"port must be between 1 and 65535, not {port}")
    persistence = (
        ["persistence true", f"persistence_location {files.persistence_dir}/"]
        if files.persistence_dir is not None
        else ["persistence false"]
    )
    return "\n".join(
        [
            "# edgefleet broker, written by `edgefleet provision init` (docs/provisioning.md).",
            "# Mosquitto 2.0 syntax. SIGHUP re-reads the CRL, the certificates and the ACL.",
            "per_listener_settings false",
            f"user {run_as or getpass.getuser()}",
            f"pid_file {files.pid_file}",
            *persistence,
            f"max_queued_messages {max_queued_messages}",
            f"max_inflight_messages {max_inflight_messages}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages true",
            "",
            "allow_anonymous false",
            f"acl_file {files.acl_file}",
            "",
            "# mutual TLS: a client certificate from the fleet CA, not revoked, is the identity",
            f"listener {port} {bind}",
            f"cafile {files.ca_file}",
            f"certfile {files.cert_file}",
            f"keyfile {files.key_file}",
            f"crlfile {files.crl_file}",
            "tls_version tlsv1.2",
            "require_certificate true",
            "use_identity_as_username true",
            "use_username_as_clientid true",
            "",
        ]
    )


def write_broker_config(
    directory: Path,
    files: BrokerFiles,
    control_planes: tuple[str, ...],
    **options: object,
) -> Path:
    """Write ``mosquitto.conf`` and the ACL into ``directory``; return the config's path."""
    write_atomic(files.acl_file, acl(control_planes).encode(), 0o644)
    config = directory / CONFIG_FILE
    write_atomic(config, mosquitto_conf(files, **options).encode(), 0o644)  # type: ignore[arg-type]
    return config
