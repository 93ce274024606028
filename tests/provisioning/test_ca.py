"""The fleet CA: its files, what it issues, what it refuses to sign, the CRL."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID

from protocol.enrollment import build_csr, new_device_key
from provisioning.ca import CA_KEY, FleetCA, Revoked, new_key, utcnow
from provisioning.errors import CertificateRefused, InvalidName, MalformedPEM, PKIError
from provisioning.files import cert_pem

DAY = dt.timedelta(days=1)


@pytest.fixture
def ca(tmp_path: Path) -> FleetCA:
    return FleetCA.create(tmp_path / "ca")


def test_the_ca_is_ec_p256_path_length_0_and_its_key_is_private(ca: FleetCA) -> None:
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey) and ca.key.curve.name == "secp256r1"
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert stat.S_IMODE((ca.directory / CA_KEY).stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.directory.stat().st_mode) == 0o700
    assert ca.crl_path.exists()  # the broker needs one from the start
    assert "key" not in repr(ca).lower().replace("directory", "")


def test_create_refuses_an_existing_ca_and_load_finds_it(ca: FleetCA) -> None:
    with pytest.raises(PKIError, match="already holds a CA"):
        FleetCA.create(ca.directory)
    again = FleetCA.load(ca.directory)
    assert again.cert == ca.cert


def test_load_refuses_a_key_others_can_read_and_a_missing_ca(ca: FleetCA, tmp_path: Path) -> None:
    os.chmod(ca.directory / CA_KEY, 0o644)
    with pytest.raises(PKIError, match="chmod 600"):
        FleetCA.load(ca.directory)
    with pytest.raises(PKIError, match="provision init"):
        FleetCA.load(tmp_path / "nowhere")


def test_a_device_certificate_names_the_device_for_client_auth(ca: FleetCA) -> None:
    key = new_key()
    cert = ca.issue_device("cam-1", key.public_key(), 30 * DAY)
    assert cert.subject.rfc4514_string() == "CN=cam-1"
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(ca.cert)
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 30 * DAY <= life <= 30 * DAY + dt.timedelta(minutes=5)  # backdated for clock skew


def test_a_server_certificate_carries_its_hosts(ca: FleetCA) -> None:
    cert = ca.issue_server(
        "edgefleet-broker", ["broker.example.com", "10.0.0.5"], new_key().public_key(), DAY
    )
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["broker.example.com"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    with pytest.raises(InvalidName):
        ca.issue_server("edgefleet-broker", ["a b"], new_key().public_key(), DAY)


def test_sign_csr_checks_the_name_the_signature_and_the_key(ca: FleetCA) -> None:
    key = new_device_key()
    cert = ca.sign_csr(build_csr("cam-1", key), "cam-1", DAY)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    with pytest.raises(CertificateRefused, match="asks for 'cam-1'.*'cam-2'"):
        ca.sign_csr(build_csr("cam-1", key), "cam-2", DAY)
    with pytest.raises(InvalidName):
        ca.sign_csr(build_csr("cam-1", key), "#", DAY)
    with pytest.raises(MalformedPEM):
        ca.sign_csr("not a csr", "cam-1", DAY)
    ed = ed25519.Ed25519PrivateKey.generate()
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "cam-1")])
    )
    ed_csr = builder.sign(ed, None).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CertificateRefused, match="EC P-256"):
        ca.sign_csr(ed_csr, "cam-1", DAY)


def test_verify_device_cert_refuses_foreign_expired_and_service_certificates(
    ca: FleetCA, tmp_path: Path
) -> None:
    key = new_key().public_key()
    good = ca.issue_device("cam-1", key, DAY)
    assert ca.verify_device_cert(cert_pem(good))[1] == "cam-1"
    other = FleetCA.create(tmp_path / "other")
    with pytest.raises(CertificateRefused, match="not issued by this fleet's CA"):
        ca.verify_device_cert(cert_pem(other.issue_device("cam-1", key, DAY)))
    old = ca.issue_device("cam-1", key, dt.timedelta(hours=1), now=utcnow() - 2 * DAY)
    with pytest.raises(CertificateRefused, match="not valid now"):
        ca.verify_device_cert(cert_pem(old))
    server = ca.issue_server("edgefleet-broker", ["localhost"], key, DAY)
    with pytest.raises(CertificateRefused, match="not a device"):
        ca.verify_device_cert(cert_pem(server))


def test_the_crl_lists_what_is_revoked_and_is_signed_by_the_ca(ca: FleetCA) -> None:
    now = utcnow()
    ca.write_crl([Revoked(12345, now), Revoked(678, now)])
    crl = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
    assert crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
    assert sorted(r.serial_number for r in crl) == [678, 12345]
    assert crl.next_update_utc is not None and crl.next_update_utc > now + 300 * DAY
