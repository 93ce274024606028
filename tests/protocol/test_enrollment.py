"""The enrollment wire: CSRs, the renewal proof, when to renew."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from protocol.enrollment import (
    EnrollmentError,
    build_csr,
    new_device_key,
    renew_at,
    renewal_payload,
    sign_renewal,
    verify_renewal,
)
from protocol.errors import InvalidDeviceId


def _self_signed(key: object) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "cam-1")])
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )  # fmt: skip


def test_a_csr_names_the_device_and_refuses_a_bad_id() -> None:
    csr = x509.load_pem_x509_csr(build_csr("cam-1", new_device_key()).encode())
    assert csr.subject.rfc4514_string() == "CN=cam-1" and csr.is_signature_valid
    for bad in ["+", "#", "a/b", ""]:
        with pytest.raises(InvalidDeviceId):
            build_csr(bad, new_device_key())


def test_the_renewal_proof_binds_the_current_key_to_the_csr() -> None:
    current, new = new_device_key(), new_device_key()
    cert = _self_signed(current)
    csr = build_csr("cam-1", new)
    signature = sign_renewal(current, csr)
    verify_renewal(cert, csr, signature)
    with pytest.raises(EnrollmentError, match="not made by the current"):
        verify_renewal(cert, build_csr("cam-1", new_device_key()), signature)  # another CSR
    with pytest.raises(EnrollmentError, match="not made by the current"):
        verify_renewal(cert, csr, sign_renewal(new_device_key(), csr))  # another key
    with pytest.raises(EnrollmentError, match="base64"):
        verify_renewal(cert, csr, "***")
    assert renewal_payload(csr).startswith(b"edgefleet-renew-v1\n")


@pytest.mark.parametrize(
    ("nb", "na", "share", "due"),
    [(0, 300, 2 / 3, 200), (100, 100, 0.5, 100), (1000, 4000, 0.5, 2500)],
)
def test_renew_at(nb: float, na: float, share: float, due: float) -> None:
    assert renew_at(nb, na, share) == pytest.approx(due)


@pytest.mark.parametrize("share", [0, 1, -0.5])
def test_renew_at_refuses_a_share_outside_0_1(share: float) -> None:
    with pytest.raises(ValueError):
        renew_at(0, 10, share)
