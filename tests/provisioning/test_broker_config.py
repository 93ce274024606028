"""The broker's configuration text: what Mosquitto 2.0.11 is told (the real broker runs it in
test_broker.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.broker_config import BrokerFiles, acl, mosquitto_conf
from provisioning.errors import InvalidName

FILES = BrokerFiles(
    ca_file=Path("/pki/ca.pem"),
    cert_file=Path("/pki/broker/server.pem"),
    key_file=Path("/pki/broker/server.key"),
    crl_file=Path("/pki/crl.pem"),
    acl_file=Path("/pki/broker/acl"),
    pid_file=Path("/pki/broker/mosquitto.pid"),
    persistence_dir=Path("/pki/broker/data"),
)


def test_the_listener_is_mutual_tls_with_identities_from_certificates() -> None:
    lines = mosquitto_conf(FILES, port=8883, bind="0.0.0.0", run_as="mosquitto").splitlines()
    for line in [
        "listener 8883 0.0.0.0",
        "cafile /pki/ca.pem",
        "certfile /pki/broker/server.pem",
        "keyfile /pki/broker/server.key",
        "crlfile /pki/crl.pem",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "allow_anonymous false",
        "acl_file /pki/broker/acl",
        "per_listener_settings false",
        "pid_file /pki/broker/mosquitto.pid",
        "persistence_location /pki/broker/data/",
        "user mosquitto",
        "max_queued_messages 100000",
    ]:
        assert line in lines, line
    assert lines.index("listener 8883 0.0.0.0") < lines.index("cafile /pki/ca.pem")


def test_a_bad_port_is_refused() -> None:
    with pytest.raises(ValueError, match="port"):
        mosquitto_conf(FILES, port=0)


def test_the_acl_confines_devices_and_opens_every_device_to_the_control_plane() -> None:
    text = acl(("edgefleet-controlplane",))
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines == [
        "pattern write edgefleet/v1/devices/%u/status",
        "pattern write edgefleet/v1/devices/%u/telemetry",
        "pattern write edgefleet/v1/devices/%u/results",
        "pattern write edgefleet/v1/devices/%u/deployment",
        "pattern write edgefleet/v1/devices/%u/commands/reply",
        "pattern read edgefleet/v1/devices/%u/desired",
        "pattern read edgefleet/v1/devices/%u/commands",
        "user edgefleet-controlplane",
        "topic read edgefleet/v1/devices/+/status",
        "topic read edgefleet/v1/devices/+/telemetry",
        "topic read edgefleet/v1/devices/+/results",
        "topic read edgefleet/v1/devices/+/deployment",
        "topic read edgefleet/v1/devices/+/commands/reply",
        "topic write edgefleet/v1/devices/+/desired",
        "topic write edgefleet/v1/devices/+/commands",
    ]


def test_the_acl_refuses_a_control_plane_name_that_could_be_a_device() -> None:
    with pytest.raises(InvalidName):
        acl(("cam-1",))
    with pytest.raises(InvalidName):
        acl(("edgefleet-cp\nuser x",))
