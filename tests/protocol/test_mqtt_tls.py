"""TLS for mqtts:// URLs: the files are checked when the client is made, with errors naming them
(a real TLS broker with client certificates is tests/provisioning/test_broker.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from protocol.errors import MQTTError
from protocol.mqtt import MQTTClient, TLSFiles
from protocol.mqtt.tls import tls_context
from provisioning.ca import FleetCA, new_key
from provisioning.files import cert_pem, write_atomic, write_key


@pytest.fixture
def files(tmp_path: Path) -> TLSFiles:
    ca = FleetCA.create(tmp_path / "ca")
    key = new_key()
    write_key(tmp_path / "d.key", key)
    write_atomic(
        tmp_path / "d.pem", cert_pem(ca.issue_device("d", key.public_key(), dt.timedelta(1)))
    )
    return TLSFiles(ca.cert_path, tmp_path / "d.pem", tmp_path / "d.key")


def test_a_context_with_a_client_certificate(files: TLSFiles) -> None:
    context = tls_context(files)
    assert context.check_hostname and context.get_ca_certs()


def test_bad_files_are_named(files: TLSFiles, tmp_path: Path) -> None:
    with pytest.raises(MQTTError, match="cannot load the CA file /nope"):
        tls_context(TLSFiles(ca_file=Path("/nope")))
    other = new_key()
    write_key(tmp_path / "other.key", other)
    mismatched = TLSFiles(files.ca_file, files.cert_file, tmp_path / "other.key")
    with pytest.raises(MQTTError, match="cannot load the client certificate"):
        tls_context(mismatched)
    with pytest.raises(ValueError, match="both cert_file and key_file"):
        TLSFiles(cert_file=files.cert_file)


def test_the_client_checks_its_files_when_made_and_only_for_mqtts(files: TLSFiles) -> None:
    bad = TLSFiles(ca_file=Path("/nope"))
    with pytest.raises(MQTTError, match="/nope"):
        MQTTClient("mqtts://localhost:8883", "d", tls=bad)
    MQTTClient("mqtt://localhost:1883", "d", tls=bad)  # plain MQTT: TLS files are not used
    MQTTClient("mqtts://localhost:8883", "d", tls=files)
