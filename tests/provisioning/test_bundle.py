"""Device bundles: what they hold, with which modes, and that the agent accepts their config."""

from __future__ import annotations

import datetime as dt
import stat
import tarfile
import tomllib
from pathlib import Path

import pytest

from agent.config import validate
from protocol.enrollment import build_csr, new_device_key
from provisioning.bundle import Bundle, agent_config, write_bundle
from provisioning.ca import FleetCA
from provisioning.errors import BundleError, InvalidName
from provisioning.files import cert_pem, key_pem


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    ca = FleetCA.create(tmp_path / "ca")
    key = new_device_key()
    cert = ca.sign_csr(build_csr("cam-1", key), "cam-1", dt.timedelta(days=30))
    return Bundle(
        device_id="cam-1",
        broker_url="mqtts://broker.example.com:8883",
        cert_pem=cert_pem(cert),
        key_pem=key_pem(key),
        ca_pem=ca.cert_pem,
        release_key="ed25519:" + "A" * 43 + "=",
        tags={"site": "lobby", "odd key": 'quote " here'},
        renew_url="https://cp.example.com:8443",
    )


def test_the_agent_accepts_the_bundles_config(bundle: Bundle) -> None:
    data = tomllib.loads(agent_config(bundle))
    settings = validate(data, "bundle")
    assert settings.device_id == "cam-1"
    assert settings.broker == "mqtts://broker.example.com:8883"
    assert settings.tags == {"site": "lobby", "odd key": 'quote " here'}
    assert str(settings.tls.cert_file) == "/etc/edgefleet/device.pem"
    assert str(settings.tls.key_file) == "/etc/edgefleet/device.key"
    assert str(settings.tls.ca_file) == "/etc/edgefleet/ca.pem"
    assert settings.tls.renew_url == "https://cp.example.com:8443"
    assert settings.deploy.public_key == bundle.release_key


def test_a_directory_bundle_keeps_the_key_private(bundle: Bundle, tmp_path: Path) -> None:
    out = write_bundle(bundle, tmp_path / "out")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["agent.toml", "ca.pem", "device.key", "device.pem", "release.pub"]
    assert stat.S_IMODE((out / "device.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert (out / "release.pub").read_text().strip() == bundle.release_key
    with pytest.raises(BundleError, match="exists"):
        write_bundle(bundle, out)


def test_a_tar_bundle(bundle: Bundle, tmp_path: Path) -> None:
    out = write_bundle(bundle, tmp_path / "cam-1.tar.gz")
    with tarfile.open(out) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["cam-1/device.key"].mode == 0o600
        key = tar.extractfile("cam-1/device.key")
        assert key is not None and key.read() == bundle.key_pem
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"device_id": "a/b"}, InvalidName),
        ({"broker_url": "mqtt://plain:1883"}, BundleError),
        ({"release_key": "not-a-key"}, BundleError),
        ({"install_dir": "relative/dir"}, BundleError),
        ({"tags": {"": "x"}}, BundleError),
    ],
)
def test_a_bad_bundle_is_refused(bundle: Bundle, change: dict[str, object], error: type) -> None:
    fields = {**bundle.__dict__, **change}
    with pytest.raises(error):
        Bundle(**fields)  # type: ignore[arg-type]
