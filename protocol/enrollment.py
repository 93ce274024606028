"""Enrollment and renewal on the wire: a device gets its certificate without a private key ever
travelling (see docs/provisioning.md).

**Enroll.** The device generates its own EC P-256 key, builds a CSR whose one CN is its device id,
and posts ``{token, csr}`` (:class:`EnrollRequest`) to ``POST /api/v1/enroll``. The one-time token
an operator gave it says which id it may have; the answer is :class:`IssuedCertificate`.

**Renew.** Before its certificate expires the device posts :class:`RenewRequest` to
``POST /api/v1/enroll/renew``: its current certificate, a CSR for a *new* key, and a signature by
its *current* key over :func:`renewal_payload` (a context string and the CSR's DER bytes). The
CSR's own signature proves that the sender holds the new key; this one proves that it holds the
key of a certificate the fleet CA issued, not revoked, not expired, for the same id. A replayed
request gains an attacker nothing: the certificate it yields is bound to a key only the device
has. A device whose certificate has expired (switched off for too long) needs a new token.

Only pydantic and ``cryptography`` here: both the agent and the control plane import it.
"""

from __future__ import annotations

import base64
import binascii

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ConfigDict, Field

from protocol.errors import ProtocolError
from protocol.topics import validate_device_id

RENEWAL_CONTEXT = b"edgefleet-renew-v1\n"
"""Prefixed to what a renewal signature covers, so it can never be mistaken for another one."""


class EnrollmentError(ProtocolError):
    """A renewal signature that does not verify, or a key or certificate that does not parse."""


class EnrollRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    token: str = Field(min_length=1, max_length=200, description="The one-time enrollment token.")
    csr: str = Field(min_length=1, max_length=16_384, description="PEM CSR, CN = the device id.")


class RenewRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    certificate: str = Field(min_length=1, max_length=16_384, description="The current PEM cert.")
    csr: str = Field(min_length=1, max_length=16_384, description="PEM CSR for the new key.")
    signature: str = Field(
        min_length=1, max_length=1024, description="base64 ECDSA-SHA256 by the current key"
    )


class IssuedCertificate(BaseModel):
    """The answer to an enrollment or a renewal."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    device_id: str
    serial: str = Field(description="The certificate's serial number, hex.")
    certificate: str = Field(description="The device's certificate, PEM.")
    ca: str = Field(description="The fleet CA's certificate, PEM (the broker's chains to it).")
    chain: str = Field(description="certificate followed by ca, PEM.")
    not_before: float = Field(description="Unix seconds.")
    not_after: float = Field(description="Unix seconds.")


# -- the device's side ---------------------------------------------------------------------------


def new_device_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def build_csr(device_id: str, key: ec.EllipticCurvePrivateKey) -> str:
    """A PEM CSR for ``device_id`` (validated), signed by ``key``."""
    validate_device_id(device_id)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def renewal_payload(csr_pem: str) -> bytes:
    """What a renewal signature covers: the context string and the CSR's DER bytes."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise EnrollmentError("the CSR is not a PEM certificate signing request") from None
    return RENEWAL_CONTEXT + csr.public_bytes(serialization.Encoding.DER)


def sign_renewal(current_key: ec.EllipticCurvePrivateKey, csr_pem: str) -> str:
    """The base64 signature of :func:`renewal_payload` by the device's current key."""
    signature = current_key.sign(renewal_payload(csr_pem), ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode()


def verify_renewal(certificate: x509.Certificate, csr_pem: str, signature: str) -> None:
    """Check that ``signature`` over the CSR was made by ``certificate``'s key; EnrollmentError."""
    public_key = certificate.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise EnrollmentError("the certificate does not carry an EC key")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise EnrollmentError("the renewal signature is not base64") from None
    try:
        public_key.verify(raw, renewal_payload(csr_pem), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise EnrollmentError(
            "the renewal signature was not made by the current certificate's key"
        ) from None


def renew_at(not_before: float, not_after: float, share: float) -> float:
    """When a certificate valid from ``not_before`` to ``not_after`` is due for renewal: once
    ``share`` of its life has passed (2/3 by default in the agent's settings)."""
    if not 0 < share < 1:
        raise ValueError(f"share must be between 0 and 1, not {share}")
    return not_before + share * max(0.0, not_after - not_before)
