"""The control plane's identity service: the fleet CA (:mod:`provisioning.ca`) and the registry
(:mod:`controlplane.identities.registry`) together.

Every certificate it issues is recorded in the same transaction that authorised it (a token
consumed, a current certificate checked), so the registry knows every serial a revocation must
list. Signing an EC P-256 certificate takes about a millisecond, so it happens inside that
transaction, on the store's writer thread.

Revocations run one at a time (a lock): each writes the CRL, signals the broker and cuts the
device's live session (:mod:`controlplane.identities.broker`), and the next must not write a CRL
that refuses the one-off certificate the current one is about to connect with.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography import x509

from controlplane.errors import ConfigError, ControlPlaneError
from controlplane.identities import registry
from controlplane.identities.broker import (
    CANARY_CN,
    OneOff,
    Outcome,
    cut_session,
    reload_broker,
)
from controlplane.settings import Settings
from controlplane.store import Store
from protocol.enrollment import (
    EnrollmentError,
    EnrollRequest,
    IssuedCertificate,
    RenewRequest,
    verify_renewal,
)
from protocol.mqtt import BrokerURL
from provisioning.ca import FleetCA, new_key, parse_csr, serial_hex, single_cn
from provisioning.enrollment import check_ttl, new_token, token_hash
from provisioning.errors import CertificateRefused, PKIError, ProvisioningError
from provisioning.files import cert_pem, key_pem
from provisioning.names import check_device_id

log = logging.getLogger(__name__)

ONE_OFF_LIFETIME = dt.timedelta(minutes=5)


T = TypeVar("T")


class _Refusal(ControlPlaneError):
    """Carries a provisioning refusal out of a store transaction (see ``Identities._transact``)."""

    def __init__(self, error: ProvisioningError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class Revocation:
    device_id: str
    revoked_at: float
    serials: list[str]
    crl: str
    broker: Outcome
    session: Outcome

    def as_json(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "revoked": True,
            "revoked_at": self.revoked_at,
            "serials": self.serials,
            "crl": self.crl,
            "broker_reloaded": self.broker.ok,
            "broker": self.broker.detail,
            "session_cut": self.session.ok,
            "session": self.session.detail,
        }


class Identities:
    """Enrollment, renewal, operator-issued certificates, tokens and revocation."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        ca: FleetCA,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.ca = ca
        self.clock = clock
        self.lifetime = dt.timedelta(seconds=settings.device_cert_lifetime_s)
        self._revoking = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, store: Store) -> Identities | None:
        """None without ``pki_dir`` (the routes then answer 503); ConfigError for a bad CA."""
        if settings.pki_dir is None:
            return None
        try:
            ca = FleetCA.load(settings.pki_dir)
        except PKIError as exc:
            raise ConfigError(f"pki_dir: {exc}") from None
        return cls(settings, store, ca)

    async def _transact(self, fn: Callable[..., T], *args: Any) -> T:
        """``store.transact``, with a provisioning refusal raised as itself (the store logs any
        other exception of a transaction as a failure, with its traceback)."""

        def guarded(conn: sqlite3.Connection, *a: Any) -> T:
            try:
                return fn(conn, *a)
            except ProvisioningError as exc:
                raise _Refusal(exc) from None

        try:
            return await self.store.transact(guarded, *args)
        except _Refusal as refusal:
            raise refusal.error from None

    def _now(self) -> tuple[float, dt.datetime]:
        now = self.clock()
        return now, dt.datetime.fromtimestamp(now, dt.timezone.utc)

    # -- issuing -------------------------------------------------------------------------------

    async def enroll(self, request: EnrollRequest) -> IssuedCertificate:
        """Consume the token and sign the CSR, atomically; the token's errors say why not."""
        cn = single_cn(parse_csr(request.csr).subject, "the CSR")
        digest = token_hash(request.token)

        def work(conn: sqlite3.Connection) -> x509.Certificate:
            now, moment = self._now()
            device_id = registry.token_device(conn, digest, now)
            if cn != device_id:
                raise CertificateRefused(
                    f"the CSR asks for {cn!r} but the token is for {device_id!r}"
                )
            registry.ensure_not_revoked(conn, device_id)
            cert = self.ca.sign_csr(request.csr, device_id, self.lifetime, now=moment)
            registry.use_token(conn, digest, now)
            registry.add_certificate(conn, cert, device_id, "enroll", now)
            return cert

        cert = await self._transact(work)
        log.info("enrolled %s (certificate %s)", cn, serial_hex(cert.serial_number))
        return self.issued(cert, cn)

    async def renew(self, request: RenewRequest) -> IssuedCertificate:
        """A new certificate for the holder of a current one (see :mod:`protocol.enrollment`)."""
        _, moment = self._now()
        current, device_id = self.ca.verify_device_cert(request.certificate, now=moment)
        try:
            verify_renewal(current, request.csr, request.signature)
        except EnrollmentError as exc:
            raise CertificateRefused(str(exc)) from None

        def work(conn: sqlite3.Connection) -> x509.Certificate:
            now, moment = self._now()
            registry.ensure_certificate_current(conn, current)
            cert = self.ca.sign_csr(request.csr, device_id, self.lifetime, now=moment)
            registry.add_certificate(conn, cert, device_id, "renew", now)
            return cert

        cert = await self._transact(work)
        log.info(
            "renewed %s: certificate %s replaces %s",
            device_id,
            serial_hex(cert.serial_number),
            serial_hex(current.serial_number),
        )
        return self.issued(cert, device_id)

    async def issue(self, device_id: str, csr_pem: str) -> IssuedCertificate:
        """An operator's certificate for ``device_id`` (``edgefleet provision device``)."""
        check_device_id(device_id)

        def work(conn: sqlite3.Connection) -> x509.Certificate:
            now, moment = self._now()
            registry.ensure_not_revoked(conn, device_id)
            cert = self.ca.sign_csr(csr_pem, device_id, self.lifetime, now=moment)
            registry.add_certificate(conn, cert, device_id, "operator", now)
            return cert

        cert = await self._transact(work)
        log.info("issued certificate %s to %s", serial_hex(cert.serial_number), device_id)
        return self.issued(cert, device_id)

    def issued(self, cert: x509.Certificate, device_id: str) -> IssuedCertificate:
        leaf, ca = cert_pem(cert).decode(), self.ca.cert_pem.decode()
        return IssuedCertificate(
            device_id=device_id,
            serial=serial_hex(cert.serial_number),
            certificate=leaf,
            ca=ca,
            chain=leaf + ca,
            not_before=cert.not_valid_before_utc.timestamp(),
            not_after=cert.not_valid_after_utc.timestamp(),
        )

    async def create_token(self, device_id: str, ttl_s: float) -> dict[str, Any]:
        """A one-time token for ``device_id``; only its hash is stored."""
        check_device_id(device_id)
        check_ttl(ttl_s)
        token = new_token()
        now = self.clock()
        await self._transact(registry.add_token, token_hash(token), device_id, now, now + ttl_s)
        log.info("enrollment token created for %s (expires in %gs)", device_id, ttl_s)
        return {"device_id": device_id, "token": token, "expires_at": now + ttl_s}

    # -- revocation ----------------------------------------------------------------------------

    async def write_crl(self) -> str:
        """Write the CRL from the registry (at start, and after each revocation)."""
        revoked = await self.store.read(registry.revoked_certificates, self.clock())
        try:
            path = await asyncio.to_thread(self.ca.write_crl, revoked)
        except PKIError as exc:
            raise ConfigError(f"pki_dir: {exc}") from None
        return str(path)

    async def revoke(self, device_id: str, reason: str = "") -> Revocation:
        """Revoke the device: registry, CRL, broker reload, live session (module docstring)."""
        check_device_id(device_id)
        async with self._revoking:
            canary, takeover = self._one_off(CANARY_CN), self._one_off(device_id)

            def work(conn: sqlite3.Connection) -> tuple[float, list[str]]:
                now = self.clock()
                when, serials = registry.revoke_device(conn, device_id, now, reason)
                registry.add_certificate(conn, canary[0], CANARY_CN, "cut", now, revoked=now)
                return when, serials

            when, serials = await self._transact(work)
            crl = await self.write_crl()
            broker = reload_broker(self.settings.broker_pid_file)
            if broker.ok:
                session = await cut_session(
                    BrokerURL.parse(self.settings.broker),
                    self.settings.mqtt_ca_file,
                    device_id,
                    _one_off_pem(canary),
                    _one_off_pem(takeover),
                )
            else:
                session = Outcome(False, "not cut: the broker was not told to re-read the CRL")
            # the takeover certificate goes into the CRL too, now that it has done its job
            now = self.clock()
            await self._transact(registry.add_certificate, takeover[0], device_id, "cut", now, now)
            await self.write_crl()
            if broker.ok:
                reload_broker(self.settings.broker_pid_file)
        log.warning(
            "revoked %s (%d certificates); broker: %s; session: %s",
            device_id,
            len(serials),
            broker.detail,
            session.detail,
        )
        return Revocation(device_id, when, serials, crl, broker, session)

    def _one_off(self, name: str) -> tuple[x509.Certificate, bytes]:
        """A short-lived client certificate for ``name`` (a device id, or the canary's name)."""
        key = new_key()
        if name == CANARY_CN:
            cert = self.ca.issue_service_client(name, key.public_key(), ONE_OFF_LIFETIME)
        else:
            cert = self.ca.issue_device(name, key.public_key(), ONE_OFF_LIFETIME)
        return cert, key_pem(key)

    async def identity(self, device_id: str) -> dict[str, Any]:
        check_device_id(device_id)
        return await self.store.read(registry.identity, device_id)


def _one_off_pem(pair: tuple[x509.Certificate, bytes]) -> OneOff:
    return OneOff(cert_pem(pair[0]), pair[1])
