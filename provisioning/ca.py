"""The fleet CA: one EC P-256 key that signs the broker's, the control plane's and every device's
certificate, and the list of revoked ones (the CRL).

The CA is self-signed with ``pathLength 0``: it signs leaf certificates only, never another CA.
Every leaf says what it is for (``extendedKeyUsage``: serverAuth for the broker and the control
plane's HTTPS, clientAuth for devices and the control plane's MQTT identity) and carries the
subject and authority key identifiers that OpenSSL's strict mode asks for.

Files in the CA directory (``edgefleet provision init`` writes them; docs/provisioning.md):

- ``ca.pem``: the CA certificate, public: every device and the broker trust it.
- ``ca.key``: the CA private key, mode 0600. Whoever holds it can mint any identity: it stays on
  the control plane's host and never travels. It is *not* the release-signing key (Ed25519, in the
  control plane's data directory): a stolen CA key lets one talk on the broker as anyone, not swap
  a model (docs/security.md).
- ``crl.pem``: the revoked certificates, which the broker reads (``crlfile``).

Leaves are backdated by a little (clock skew between a device and the broker) and live for the
lifetime they are issued with. A CSR is signed only after its signature checks out, its key is EC
P-256 or P-384, and its one CN is the name the caller expected (:meth:`FleetCA.sign_csr`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisioning.errors import CertificateRefused, InvalidName, MalformedPEM, PKIError
from provisioning.files import cert_pem, read_cert, read_key, write_atomic, write_key
from provisioning.names import CA_CN, check_device_id, check_service_name, host_problem

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
CRL_FILE = "crl.pem"

CA_LIFETIME = dt.timedelta(days=3650)
CRL_LIFETIME = dt.timedelta(days=365)
"""How long a CRL stays valid. OpenSSL refuses *every* client once the CRL's nextUpdate has
passed, so it is long, and the control plane writes a fresh one at start and on each revocation."""
MAX_BACKDATE = dt.timedelta(minutes=5)
CURVES = (ec.SECP256R1, ec.SECP384R1)


def key_usage(*, ca: bool) -> x509.KeyUsage:
    """Signatures only (ECDSA: no key encipherment); a CA also signs certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 key (about a millisecond)."""
    return ec.generate_private_key(ec.SECP256R1())


def serial_hex(serial: int) -> str:
    """A serial number as the registry and the CLI show it: lower-case hex, no leading zeros."""
    return format(serial, "x")


def backdate(lifetime: dt.timedelta) -> dt.timedelta:
    """How far before now a certificate starts: a tenth of its life, at most five minutes."""
    return min(MAX_BACKDATE, lifetime / 10)


@dataclass(frozen=True)
class Revoked:
    """One CRL entry."""

    serial: int
    revoked_at: dt.datetime


@dataclass(frozen=True)
class FleetCA:
    """The CA's key and certificate; load one with :meth:`load`, make one with :meth:`create`."""

    key: ec.EllipticCurvePrivateKey = field(repr=False)
    cert: x509.Certificate
    directory: Path

    # -- files -------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        lifetime: dt.timedelta = CA_LIFETIME,
        now: dt.datetime | None = None,
    ) -> FleetCA:
        """A new CA in ``directory`` (created 0700); PKIError if one is there already."""
        now = now or utcnow()
        if (directory / CA_KEY).exists() or (directory / CA_CERT).exists():
            raise PKIError(
                f"{directory} already holds a CA ({CA_KEY}, {CA_CERT}): a second one would cut "
                "every device off; pass another --dir"
            )
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise PKIError(f"cannot create {directory}: {exc.strerror or exc}") from None
        key = new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_CN)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - MAX_BACKDATE)
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(key_usage(ca=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        write_key(directory / CA_KEY, key)
        write_atomic(directory / CA_CERT, cert_pem(cert))
        ca = cls(key=key, cert=cert, directory=directory)
        ca.write_crl([], now=now)
        return ca

    @classmethod
    def load(cls, directory: Path) -> FleetCA:
        """The CA in ``directory``; PKIError when it is missing, unsafe or inconsistent."""
        if not (directory / CA_CERT).exists():
            raise PKIError(
                f"no fleet CA in {directory} (no {CA_CERT}): run `edgefleet provision init "
                f"--dir {directory}` first"
            )
        cert = read_cert(directory / CA_CERT)
        key = read_key(directory / CA_KEY)
        if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
            raise PKIError(f"{directory / CA_KEY} is not the key of {directory / CA_CERT}")
        return cls(key=key, cert=cert, directory=directory)

    @property
    def cert_path(self) -> Path:
        return self.directory / CA_CERT

    @property
    def crl_path(self) -> Path:
        return self.directory / CRL_FILE

    @property
    def cert_pem(self) -> bytes:
        return cert_pem(self.cert)

    # -- issuing -----------------------------------------------------------------------------

    def issue_device(
        self, device_id: str, public_key: ec.EllipticCurvePublicKey, lifetime: dt.timedelta,
        *, now: dt.datetime | None = None,
    ) -> x509.Certificate:  # fmt: skip
        """A device's client certificate: CN = the device id (checked), clientAuth."""
        check_device_id(device_id)
        return self._issue(device_id, public_key, lifetime, client=True, now=now)

    def issue_service_client(
        self, name: str, public_key: ec.EllipticCurvePublicKey, lifetime: dt.timedelta,
        *, now: dt.datetime | None = None,
    ) -> x509.Certificate:  # fmt: skip
        """A service's MQTT client certificate (the control plane): CN = ``edgefleet-...``."""
        check_service_name(name)
        return self._issue(name, public_key, lifetime, client=True, now=now)

    def issue_server(
        self, name: str, hosts: Sequence[str], public_key: ec.EllipticCurvePublicKey,
        lifetime: dt.timedelta, *, now: dt.datetime | None = None,
    ) -> x509.Certificate:  # fmt: skip
        """A server certificate (the broker, the control plane's HTTPS) for ``hosts``: each a DNS
        name or an IP address, in the subject alternative names that clients check."""
        check_service_name(name)
        if not hosts:
            raise InvalidName("a server certificate needs at least one host name or address")
        return self._issue(name, public_key, lifetime, client=False, now=now, hosts=hosts)

    def sign_csr(
        self, csr_pem: bytes | str, expected_cn: str, lifetime: dt.timedelta,
        *, now: dt.datetime | None = None,
    ) -> x509.Certificate:  # fmt: skip
        """A device certificate for a CSR that asks for ``expected_cn`` and nothing else.

        :class:`CertificateRefused` when the CSR does not parse, its signature (the proof that
        its sender holds the key) fails, its key is not EC P-256/P-384, or its CN is not exactly
        ``expected_cn``; :class:`InvalidName` when ``expected_cn`` may not be a device id.
        """
        check_device_id(expected_cn)
        csr = parse_csr(csr_pem)
        cn = single_cn(csr.subject, "the CSR")
        if cn != expected_cn:
            raise CertificateRefused(
                f"the CSR asks for {cn!r} but this request is for {expected_cn!r}"
            )
        key = _ec_key(csr.public_key(), "the CSR")
        return self.issue_device(expected_cn, key, lifetime, now=now)

    def _issue(
        self, cn: str, public_key: ec.EllipticCurvePublicKey, lifetime: dt.timedelta, *,
        client: bool, now: dt.datetime | None, hosts: Sequence[str] = (),
    ) -> x509.Certificate:  # fmt: skip
        if lifetime <= dt.timedelta(0):
            raise CertificateRefused(f"a certificate needs a positive lifetime, not {lifetime}")
        now = now or utcnow()
        not_after = min(now + lifetime, self.cert.not_valid_after_utc)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - backdate(lifetime))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if hosts:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False
            )
        return builder.sign(self.key, hashes.SHA256())

    # -- checking ----------------------------------------------------------------------------

    def verify_device_cert(
        self, cert_pem_data: bytes | str, *, now: dt.datetime | None = None
    ) -> tuple[x509.Certificate, str]:
        """A device certificate this CA issued and that is valid now, with its device id.

        :class:`CertificateRefused` for one from another CA, one outside its validity, one that is
        not a client certificate, or one whose CN is not a device id. Revocation is the caller's
        to check (the registry knows which serials are revoked).
        """
        cert = parse_cert(cert_pem_data)
        if cert.issuer != self.cert.subject:
            raise CertificateRefused("the certificate was not issued by this fleet's CA")
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            raise CertificateRefused("the certificate was not issued by this fleet's CA") from None
        now = now or utcnow()
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise CertificateRefused(
                f"the certificate is not valid now (valid from {_when(cert.not_valid_before_utc)} "
                f"to {_when(cert.not_valid_after_utc)})"
            )
        try:
            usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usages = None
        if usages is None or ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
            raise CertificateRefused("the certificate is not a device (client) certificate")
        cn = single_cn(cert.subject, "the certificate")
        try:
            check_device_id(cn)
        except InvalidName as exc:
            raise CertificateRefused(f"the certificate does not name a device: {exc}") from None
        return cert, cn

    # -- the CRL -----------------------------------------------------------------------------

    def crl(
        self, revoked: Iterable[Revoked], *, now: dt.datetime | None = None,
        lifetime: dt.timedelta = CRL_LIFETIME,
    ) -> x509.CertificateRevocationList:  # fmt: skip
        """A CRL listing ``revoked``, valid from now for ``lifetime``."""
        now = now or utcnow()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - dt.timedelta(minutes=1))
            .next_update(now + lifetime)
            .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        for entry in sorted(revoked, key=lambda r: r.serial):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(entry.serial)
                .revocation_date(entry.revoked_at)
                .build()
            )
        return builder.sign(self.key, hashes.SHA256())

    def write_crl(self, revoked: Iterable[Revoked], *, now: dt.datetime | None = None) -> Path:
        """Write ``crl.pem`` atomically (the broker never reads half a CRL) and return its path."""
        crl = self.crl(revoked, now=now)
        write_atomic(self.crl_path, crl.public_bytes(serialization.Encoding.PEM))
        return self.crl_path


# -- parsing (pure) ------------------------------------------------------------------------------


def parse_csr(data: bytes | str) -> x509.CertificateSigningRequest:
    """A PEM CSR whose self-signature checks out; CertificateRefused otherwise."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        csr = x509.load_pem_x509_csr(raw)
    except ValueError:
        raise MalformedPEM("the CSR is not a PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise CertificateRefused("the CSR's signature does not verify")
    _ec_key(csr.public_key(), "the CSR")
    return csr


def parse_cert(data: bytes | str) -> x509.Certificate:
    raw = data.encode() if isinstance(data, str) else data
    try:
        return x509.load_pem_x509_certificate(raw)
    except ValueError:
        raise MalformedPEM("the certificate is not a PEM certificate") from None


def single_cn(name: x509.Name, what: str) -> str:
    """The one common name of ``name``; CertificateRefused when there is none or several."""
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(values) != 1 or not isinstance(values[0].value, str):
        raise CertificateRefused(f"{what} must name exactly one common name (the device id)")
    return values[0].value


def _ec_key(key: object, what: str) -> ec.EllipticCurvePublicKey:
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, CURVES):
        raise CertificateRefused(f"{what} must carry an EC P-256 or P-384 key")
    return key


def _when(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _general_name(host: str) -> x509.GeneralName:
    problem = host_problem(host)
    if problem is not None:
        raise InvalidName(problem)
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)
