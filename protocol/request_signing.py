"""Signed device requests: how a device's HTTP calls to the control plane carry its identity.

An enrolled device holds an EC key and a certificate from the fleet CA (docs/provisioning.md).
Each HTTP call it makes to the control plane (artifact downloads, kept-input uploads) carries:

==========================  ===================================================================
``X-Edgefleet-Device``      its device id
``X-Edgefleet-Timestamp``   when it signed the request: Unix seconds, an integer
``X-Edgefleet-Certificate`` its current certificate, base64 of the DER bytes
``X-Edgefleet-Signature``   base64 of an ECDSA-SHA256 signature (DER) by its key over
                            :func:`canonical_request`
==========================  ===================================================================

The canonical request is six lines joined by ``\\n`` (no trailing newline)::

    edgefleet-request-v1
    GET                                   the method, upper case
    /api/v1/samples/cam-1/r1?model=...    the path and query exactly as sent (percent-encoded)
    1767225600                            the timestamp header
    e3b0c442...b855                       SHA-256 of the body, hex (of no bytes for a GET)
    cam-1                                 the device header

The control plane checks the timestamp against its clock (:data:`MAX_SKEW_S` either way), the
certificate against the fleet CA and its registry (the device's current certificate, neither
revoked), and the signature against the certificate's key (``controlplane/auth/devices.py``).

Why signatures and not client certificates at the HTTP layer: a TLS terminator in front of the
control plane (a load balancer, an ingress) ends the TLS session, and with it the client
certificate; a signature in the headers passes through any of them. Why no nonce: within the
skew window a captured request can be sent again, and gains its sender nothing: a download
answers the same public, content-addressed bytes, and an upload is filed by its result id, so a
second one with the same bytes stores nothing and one with other bytes is refused. The host is
not signed (proxies rewrite it); a proxy must not rewrite the path or the query.

Pure: no I/O, the clock is an argument. Both the agent and the control plane import it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from protocol.errors import InvalidDeviceId, ProtocolError
from protocol.topics import validate_device_id

CONTEXT = "edgefleet-request-v1"
"""The first line of every canonical request: a signature over one is never valid for anything
else (a renewal signs ``edgefleet-renew-v1``, see :mod:`protocol.enrollment`)."""
DEVICE_HEADER = "X-Edgefleet-Device"
TIMESTAMP_HEADER = "X-Edgefleet-Timestamp"
CERTIFICATE_HEADER = "X-Edgefleet-Certificate"
SIGNATURE_HEADER = "X-Edgefleet-Signature"
HEADERS = (DEVICE_HEADER, TIMESTAMP_HEADER, CERTIFICATE_HEADER, SIGNATURE_HEADER)
MAX_SKEW_S = 300.0
"""How far a request's timestamp may be from the control plane's clock, either way."""
MAX_CERTIFICATE_CHARS = 8192
MAX_SIGNATURE_CHARS = 256
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_METHOD = re.compile(r"^[A-Z]{1,16}$")


class RequestSignatureError(ProtocolError):
    """A signed request that is malformed, stale, or whose signature does not verify: the message
    names which (the control plane answers 401 with it)."""


@dataclass(frozen=True)
class SignedRequest:
    """The signature headers of a request, parsed (not yet verified)."""

    device_id: str
    timestamp: int
    certificate: bytes  # DER
    signature: bytes  # DER ECDSA


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def request_target(path: str, query: str = "") -> str:
    """The path and query as they are sent: ``/a/b?x=1`` (no ``?`` without a query)."""
    return f"{path}?{query}" if query else path


def canonical_request(
    method: str, target: str, timestamp: int, body_digest: str, device_id: str
) -> bytes:
    """What a device signs (the module docstring): ValueError for a part that could smuggle a
    line break into it."""
    if not _METHOD.match(method.upper()):
        raise ValueError(f"not an HTTP method: {method!r}")
    if not target.startswith("/") or any(c in target for c in "\r\n "):
        raise ValueError(f"not a request target (a path and query): {target!r}")
    validate_device_id(device_id)
    lines = (CONTEXT, method.upper(), target, str(int(timestamp)), body_digest, device_id)
    return "\n".join(lines).encode()


def sign_request(
    key: ec.EllipticCurvePrivateKey,
    certificate_der: bytes,
    device_id: str,
    method: str,
    target: str,
    body_digest: str,
    now: float,
) -> dict[str, str]:
    """The four headers of a request signed now by ``key``, whose certificate is
    ``certificate_der``."""
    timestamp = int(now)
    signature = key.sign(
        canonical_request(method, target, timestamp, body_digest, device_id),
        ec.ECDSA(hashes.SHA256()),
    )
    return {
        DEVICE_HEADER: device_id,
        TIMESTAMP_HEADER: str(timestamp),
        CERTIFICATE_HEADER: base64.b64encode(certificate_der).decode(),
        SIGNATURE_HEADER: base64.b64encode(signature).decode(),
    }


def parse_signed(headers: Mapping[str, str]) -> SignedRequest | None:
    """The request's signature headers (names in any case); None when it has none of them,
    RequestSignatureError naming the problem when some are missing or malformed."""
    lower = {k.lower(): v for k, v in headers.items()}
    values = {h: lower.get(h.lower()) for h in HEADERS}
    if all(v is None for v in values.values()):
        return None
    missing = [h for h, v in values.items() if v is None]
    if missing:
        raise RequestSignatureError(
            f"a signed request needs all of {', '.join(HEADERS)}; missing {', '.join(missing)}"
        )
    device, stamp, cert, sig = (str(values[h]).strip() for h in HEADERS)
    try:
        validate_device_id(device)
    except InvalidDeviceId as exc:
        raise RequestSignatureError(f"{DEVICE_HEADER}: {exc}") from None
    if not _TIMESTAMP.match(stamp):
        raise RequestSignatureError(
            f"{TIMESTAMP_HEADER}: expected Unix seconds (an integer), got {stamp[:40]!r}"
        )
    return SignedRequest(
        device,
        int(stamp),
        _base64(cert, CERTIFICATE_HEADER, MAX_CERTIFICATE_CHARS),
        _base64(sig, SIGNATURE_HEADER, MAX_SIGNATURE_CHARS),
    )


def check_fresh(timestamp: int, now: float, max_skew_s: float = MAX_SKEW_S) -> None:
    """RequestSignatureError when ``timestamp`` is more than ``max_skew_s`` from ``now``."""
    off = timestamp - now
    if abs(off) > max_skew_s:
        side = "ahead of" if off > 0 else "behind"
        raise RequestSignatureError(
            f"the request's timestamp is {abs(off):.0f}s {side} the control plane's clock (at "
            f"most {max_skew_s:.0f}s either way): check the device's clock (NTP)"
        )


def verify_request(
    public_key: object, signed: SignedRequest, method: str, target: str, body_digest: str
) -> None:
    """RequestSignatureError unless ``signed.signature`` is ``public_key``'s over this request."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise RequestSignatureError("the certificate does not carry an EC key")
    try:
        message = canonical_request(method, target, signed.timestamp, body_digest, signed.device_id)
    except (ValueError, InvalidDeviceId) as exc:
        raise RequestSignatureError(str(exc)) from None
    try:
        public_key.verify(signed.signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise RequestSignatureError(
            f"the signature does not verify with the key of the certificate sent: the method, "
            f"path and query ({method} {target[:200]}), body, timestamp or device differ from "
            "what was signed (a proxy must pass the path and query unchanged)"
        ) from None


def _base64(value: str, header: str, limit: int) -> bytes:
    if len(value) > limit:
        raise RequestSignatureError(f"{header}: longer than {limit} characters")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestSignatureError(f"{header}: not base64") from None
    if not raw:
        raise RequestSignatureError(f"{header}: empty")
    return raw
