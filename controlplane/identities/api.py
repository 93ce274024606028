"""The identity routes (docs/api.md, docs/provisioning.md).

Devices call ``POST /api/v1/enroll`` (a one-time token and a CSR) and ``POST /api/v1/enroll/renew``
(the current certificate, a CSR and a proof of the current key); both answer the certificate
chain. Operators call the rest through ``edgefleet provision``: tokens, a certificate for a CSR
(bundles), revocation, a device's identity, the CA certificate. Every refusal is JSON
``{"error": ...}``: 400 for a body that does not parse, 401 for an unknown or expired token, 403
for a used token, a revoked device or a certificate that is not acceptable, 503 when the control
plane runs without ``pki_dir``.

Enrollment must go over HTTPS in production (``tls_cert_file``/``tls_key_file``): a token is a
credential, and the answer tells the device which CA to trust.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from controlplane.api import check_known, parse_device_id
from controlplane.errors import BadRequest, Refused
from controlplane.identities.service import Identities
from protocol.enrollment import EnrollRequest, RenewRequest
from provisioning.errors import CertificateRefused, InvalidName, TokenRefused

M = TypeVar("M", bound=BaseModel)
MAX_BODY = 64 * 1024


class NotConfigured(Refused):
    status = 503


class Denied(Refused):
    """A provisioning refusal, with the status the provisioning error names."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class TokenSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: str
    ttl_s: float = Field(3600.0, gt=0)


class CertificateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    csr: str = Field(min_length=1, max_length=16_384)


class RevokeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=500)


def _identities(request: Request) -> Identities:
    identities: Identities | None = getattr(request.app.state, "identities", None)
    if identities is None:
        raise NotConfigured(
            "provisioning is not configured: start the control plane with --pki-dir DIR "
            "(the directory `edgefleet provision init` wrote)"
        )
    return identities


async def _body(request: Request, model: type[M]) -> M:
    check_known(request.query_params.keys(), ())
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise Denied(f"the body is larger than {MAX_BODY} bytes", 413)
    try:
        data = json.loads(raw or b"null")
    except ValueError:
        raise BadRequest("body", "expected a JSON object") from None
    if not isinstance(data, dict):
        raise BadRequest("body", "expected a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise BadRequest("body", problems) from None


def _refusal(exc: Exception) -> Refused:
    """A provisioning error as the API's refusal (its status and message)."""
    if isinstance(exc, (TokenRefused, CertificateRefused)):
        return Denied(str(exc), exc.status)
    return Denied(str(exc), 400)


def _ok(body: dict[str, Any], status: int = 200) -> Response:
    return JSONResponse(body, status_code=status)


async def enroll(request: Request) -> Response:
    identities = _identities(request)
    spec = await _body(request, EnrollRequest)
    try:
        issued = await identities.enroll(spec)
    except (TokenRefused, CertificateRefused, InvalidName) as exc:
        raise _refusal(exc) from None
    return _ok(issued.model_dump())


async def renew(request: Request) -> Response:
    identities = _identities(request)
    spec = await _body(request, RenewRequest)
    try:
        issued = await identities.renew(spec)
    except (CertificateRefused, InvalidName) as exc:
        raise _refusal(exc) from None
    return _ok(issued.model_dump())


async def create_token(request: Request) -> Response:
    identities = _identities(request)
    spec = await _body(request, TokenSpec)
    try:
        body = await identities.create_token(spec.device_id, spec.ttl_s)
    except (CertificateRefused, InvalidName, ValueError) as exc:
        raise _refusal(exc) from None
    return _ok(body, 201)


async def issue_certificate(request: Request) -> Response:
    identities = _identities(request)
    device_id = parse_device_id(request.path_params["id"], "id")
    spec = await _body(request, CertificateSpec)
    try:
        issued = await identities.issue(device_id, spec.csr)
    except (CertificateRefused, InvalidName) as exc:
        raise _refusal(exc) from None
    return _ok(issued.model_dump(), 201)


async def revoke(request: Request) -> Response:
    identities = _identities(request)
    device_id = parse_device_id(request.path_params["id"], "id")
    spec = await _body(request, RevokeSpec)
    try:
        done = await identities.revoke(device_id, spec.reason)
    except InvalidName as exc:
        raise _refusal(exc) from None
    return _ok(done.as_json())


async def identity(request: Request) -> Response:
    identities = _identities(request)
    check_known(request.query_params.keys(), ())
    device_id = parse_device_id(request.path_params["id"], "id")
    try:
        return _ok(await identities.identity(device_id))
    except InvalidName as exc:
        raise _refusal(exc) from None


async def ca_certificate(request: Request) -> Response:
    identities = _identities(request)
    check_known(request.query_params.keys(), ())
    return _ok({"ca": identities.ca.cert_pem.decode()})


routes = [
    Route("/api/v1/enroll", enroll, methods=["POST"]),
    Route("/api/v1/enroll/renew", renew, methods=["POST"]),
    Route("/api/v1/enroll/tokens", create_token, methods=["POST"]),
    Route("/api/v1/pki/ca", ca_certificate, methods=["GET"]),
    Route("/api/v1/devices/{id}/certificate", issue_certificate, methods=["POST"]),
    Route("/api/v1/devices/{id}/revoke", revoke, methods=["POST"]),
    Route("/api/v1/devices/{id}/identity", identity, methods=["GET"]),
]
