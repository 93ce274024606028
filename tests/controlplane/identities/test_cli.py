"""``edgefleet provision``: init on files, and the ids it refuses before any request (the
commands that talk to a control plane run against a real one in tests/e2e/test_enrollment.py)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from controlplane.cli import main
from provisioning.ca import FleetCA


def test_init_writes_the_ca_the_broker_and_the_control_plane(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = tmp_path / "pki"
    code = main(["provision", "init", "--dir", str(pki), "--broker-host", "broker.example.com",
                 "--port", "18883", "--json"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    body = json.loads(out.out)
    assert FleetCA.load(pki).cert.subject.rfc4514_string() == "CN=edgefleet fleet CA"
    config = Path(body["broker_config"]).read_text()
    assert "listener 18883 0.0.0.0" in config and f"crlfile {pki.resolve()}/crl.pem" in config
    assert stat.S_IMODE(Path(body["controlplane_key"]).stat().st_mode) == 0o600
    assert Path(body["https_cert"]).exists() and Path(body["crl"]).exists()


def test_init_refuses_to_replace_a_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["provision", "init", "--dir", str(tmp_path / "pki")]) == 0
    assert "edgefleet serve --broker mqtts://" in capsys.readouterr().out
    assert main(["provision", "init", "--dir", str(tmp_path / "pki")]) == 1
    assert "already holds a CA" in capsys.readouterr().err


def test_init_refuses_a_bad_host_before_writing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["provision", "init", "--dir", str(tmp_path / "pki"), "--broker-host", "a b"]) == 1
    assert "invalid host 'a b'" in capsys.readouterr().err
    assert not (tmp_path / "pki").exists()


@pytest.mark.parametrize("device_id", ["+", "#", "a/b", "$SYS", "edgefleet-controlplane", ""])
@pytest.mark.parametrize("action", ["device", "token", "revoke", "show"])
def test_ids_outside_the_allowed_set_are_refused_with_a_message(
    action: str, device_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["--broker", "mqtts://broker:8883"] if action == "device" else []
    # no control plane listens there: the id is refused before any request
    code = main(["provision", action, device_id, *extra, "--server", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 1
    assert "invalid device id" in err and "Traceback" not in err


def test_serve_names_a_tls_file_it_cannot_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["serve", "--broker", "mqtts://localhost:1", "--data-dir", str(tmp_path / "cp")]
    assert main([*base, "--mqtt-ca-file", str(tmp_path / "nope.pem")]) == 1
    err = capsys.readouterr().err
    assert "cannot load the CA file" in err and "nope.pem" in err and "Traceback" not in err
    assert main([*base, "--tls-cert-file", str(tmp_path / "c.pem")]) == 1
    assert "set both tls_cert_file and tls_key_file" in capsys.readouterr().err
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    key.write_text("not a key")
    cert.write_text("not a cert")
    assert main([*base, "--tls-cert-file", str(cert), "--tls-key-file", str(key)]) == 1
    assert "tls_cert_file/tls_key_file: cannot load" in capsys.readouterr().err


def test_serve_refuses_a_pki_dir_without_a_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--broker", "mqtt://127.0.0.1:1", "--data-dir", str(tmp_path / "cp"),
            "--pki-dir", str(tmp_path / "empty"), "--listen", "127.0.0.1:0"]  # fmt: skip
    assert main(argv) == 1
    assert "pki_dir: no fleet CA in" in capsys.readouterr().err
