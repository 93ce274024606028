"""Devices on the HTTP routes they call: signed requests checked, revoked devices refused.

The routes a device calls (``GET``/``HEAD /api/v1/artifacts/{sha256}``, ``PUT
/api/v1/samples/{device_id}/{result_id}``: the rows of :mod:`controlplane.auth.policy` marked
``device``) take a request signed by the device's key (:mod:`protocol.request_signing`). The
middleware asks :class:`DeviceGate` about each request to them, whether operator ``auth`` is on
or off; a signed request is admitted only when, in this order:

1. its four headers parse, and its timestamp is within ``MAX_SKEW_S`` of the clock (else 401);
2. its certificate was issued by the fleet CA, is valid now, and names the device the request
   says (else 401);
3. the signature over the method, path and query, timestamp, body and device id verifies with
   that certificate's key (else 401); the body is read ahead for it (at most
   ``max_sample_bytes``, else 413) and handed on to the route unchanged;
4. the registry (:func:`controlplane.identities.registry.standing`) says the device is not revoked
   and the certificate is neither revoked (403) nor replaced (401): a renewal replaces the
   device's certificate for HTTP at once (:func:`judge`), though the broker takes the old one
   until it expires;
5. a route that names a device (``{device_id}``) names the signer (else 403): no device files an
   input as another.

Every step reads the registry afresh, so a revocation refuses the device's very next request.
An unsigned request is what ``device_auth`` says (:func:`unsigned_access`): ``optional`` lets it
through as before; ``required`` refuses it (401), except a read by an operator whose token or
session allows ``viewer`` (the CLI checks and downloads artifacts). The admitted device is the
request's identity (``via`` ``device``, :class:`~controlplane.auth.identity.Identity`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.requests import Request
from starlette.types import Receive

from controlplane.auth.bodies import read_ahead, replay
from controlplane.auth.identity import Identity
from controlplane.auth.policy import SAFE_METHODS
from controlplane.auth.roles import Access
from controlplane.identities import registry
from protocol.request_signing import (
    RequestSignatureError,
    SignedRequest,
    body_sha256,
    check_fresh,
    parse_signed,
    request_target,
    verify_request,
)
from provisioning.ca import serial_hex
from provisioning.errors import CertificateRefused

if TYPE_CHECKING:
    from controlplane.identities.service import Identities

log = logging.getLogger(__name__)

DeviceAuth = Literal["optional", "required"]
UNSIGNED = (
    "this route takes requests signed by a device (device_auth = required): the agent signs "
    "them with the key of its [tls] certificate (docs/security.md); an operator reads with "
    "`Authorization: Bearer TOKEN`"
)


class DeviceRefusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- decisions (pure) ------------------------------------------------------------------------------


def unsigned_access(mode: DeviceAuth, method: str) -> Access | None:
    """What an unsigned request to a device route needs: ``open`` (optional), ``viewer`` for a
    read when signatures are required (operators read artifacts), None: refused."""
    if mode == "optional":
        return "open"
    return "viewer" if method in SAFE_METHODS else None


def judge(found: registry.Standing, device_id: str, serial: str) -> tuple[int, str] | None:
    """The refusal (status, message) the registry's ``found`` calls for, or None: admitted."""
    if found.device_revoked_at is not None:
        return 403, f"device {device_id} is revoked"
    if found.owner is None:
        return 401, f"certificate {serial} is not in the registry: it was not issued here"
    if found.owner != device_id:
        return 401, f"certificate {serial} was issued to {found.owner}, not {device_id}"
    if found.revoked_at is not None:
        return 403, f"certificate {serial} of device {device_id} is revoked"
    if found.current != serial:
        return 401, (
            f"certificate {serial} of device {device_id} was replaced by {found.current} (a "
            "renewal): sign with the current certificate's key"
        )
    return None


def check_subject(params: Mapping[str, Any], device_id: str) -> tuple[int, str] | None:
    """403 when the route names another device than the one that signed the request."""
    named = params.get("device_id")
    if named is not None and named != device_id:
        return 403, f"device {device_id} may not act for device {named}"
    return None


def target_of(request: Request) -> str:
    """The path and query as the client sent them (percent-encoded), as they were signed."""
    raw: bytes | None = request.scope.get("raw_path")
    path = raw.decode("latin-1").partition("?")[0] if raw else quote(request.scope["path"])
    query: bytes = request.scope.get("query_string", b"")
    return request_target(path, query.decode("latin-1"))


# -- the gate -------------------------------------------------------------------------------------


class DeviceGate:
    """The checks of the module docstring; one per app, used by the auth middleware."""

    def __init__(
        self, mode: DeviceAuth, max_body: int, identities: Callable[[], Identities | None]
    ) -> None:
        self.mode = mode
        self.max_body = max_body
        self._identities = identities
        self._warned = False

    async def admit(
        self, request: Request, params: Mapping[str, Any], receive: Receive
    ) -> tuple[Identity | None, Receive]:
        """The signer's identity and the request's ``receive`` (its body read ahead and
        replayed), or None and ``receive`` untouched for an unsigned request;
        :class:`DeviceRefusal` for one that is refused."""
        try:
            signed = parse_signed(request.headers)
        except RequestSignatureError as exc:
            raise self._refuse(request, 401, str(exc), None) from None
        if signed is None:
            return None, receive
        identities = self._identities()
        if identities is None:  # no CA to check it against: only possible with optional
            if not self._warned:
                self._warned = True
                log.warning(
                    "device %s signs its requests, but the control plane has no pki_dir to "
                    "check them: they are taken as unsigned",
                    signed.device_id,
                )
            return None, receive
        now = identities.clock()
        serial, key = self._certificate(request, identities, signed, now)
        body = await read_ahead(receive, self.max_body)
        if body is None:
            raise self._refuse(
                request, 413, f"the body is larger than max_sample_bytes ({self.max_body} bytes)",
                signed.device_id,
            )  # fmt: skip
        try:
            verify_request(key, signed, request.method, target_of(request), body_sha256(body))
        except RequestSignatureError as exc:
            raise self._refuse(request, 401, str(exc), signed.device_id) from None
        found = await identities.store.read(registry.standing, signed.device_id, serial)
        refusal = judge(found, signed.device_id, serial) or check_subject(params, signed.device_id)
        if refusal is not None:
            raise self._refuse(request, *refusal, signed.device_id)
        return Identity(None, None, "device", device_id=signed.device_id), replay(body, receive)

    def _certificate(
        self, request: Request, identities: Identities, signed: SignedRequest, now: float
    ) -> tuple[str, object]:
        """Check the freshness and the certificate (steps 1 and 2); its serial (hex) and its
        public key."""
        try:
            check_fresh(signed.timestamp, now)
            cert = x509.load_der_x509_certificate(signed.certificate)
        except RequestSignatureError as exc:
            raise self._refuse(request, 401, str(exc), signed.device_id) from None
        except ValueError:
            raise self._refuse(
                request, 401, "X-Edgefleet-Certificate: not a DER certificate", signed.device_id
            ) from None
        try:
            cert, cn = identities.ca.verify_device_cert(
                cert.public_bytes(serialization.Encoding.PEM),
                now=dt.datetime.fromtimestamp(now, dt.timezone.utc),
            )
        except CertificateRefused as exc:
            raise self._refuse(request, 401, str(exc), signed.device_id) from None
        if cn != signed.device_id:
            raise self._refuse(
                request, 401, f"the certificate is device {cn}'s, but the request says "
                f"{signed.device_id}", signed.device_id,
            )  # fmt: skip
        return serial_hex(cert.serial_number), cert.public_key()

    def _refuse(
        self, request: Request, status: int, message: str, device_id: str | None
    ) -> DeviceRefusal:
        log.info(
            "device auth: %s %s from %s refused (%d): %s", request.method, request.url.path,
            device_id or "an unnamed device", status, message,
        )  # fmt: skip
        return DeviceRefusal(status, message)
