"""The one place every HTTP request is authenticated, authorized and audited.

For each request, in order:

1. a request id: the client's ``X-Request-Id`` when it is a sane token, else a new one; on
   ``request.state.request_id`` and echoed in the answer's ``X-Request-Id``;
2. the route: the request is matched against the app's routes as the router will match it, and
   :func:`controlplane.auth.policy.rule_for` names the role it needs (unknown routes: admin);
3. unless the route is open (or ``auth`` is off): 503 until an admin exists; the identity from
   ``Authorization: Bearer TOKEN``, or from the console's session cookie (or, on the one route
   that takes it, ``Authorization: Basic`` with a user's password), else 401; the role, else 403;
   for a mutating request authenticated by the session cookie, the CSRF token, else 403. Before
   that, on the routes devices call, a device's signed request is checked and a revoked device
   refused, whether ``auth`` is on or off, and an unsigned one is let through, refused, or taken
   from an operator, as ``device_auth`` says (:mod:`controlplane.auth.devices`);
4. the identity on ``request.state.identity`` (:class:`~controlplane.auth.identity.Identity`;
   anonymous on open routes; the device for a signed request). With ``auth`` on, a client's
   ``X-Edgefleet-User`` header is replaced by the authenticated user's name, so code that still
   reads that header records the right person and no client can claim to be someone else;
5. the handler runs; for a mutating request (any method but GET, HEAD, OPTIONS), refused or not,
   an audit record is written once the answer is known and before its last byte is sent, so no
   client ever sees an action complete that the log does not hold. Handlers may add to the
   record's ``detail`` with ``request.state.audit_detail`` (a dict; never a secret).

Refusals are JSON ``{"error": ...}`` on API paths; on the console's pages a missing or expired
login is a redirect to ``/login`` and a refusal is a small HTML page.

It is a plain ASGI middleware (no ``BaseHTTPMiddleware``): uploads and server-sent events stream
through it untouched; only a session-authenticated form post without an ``X-CSRF-Token`` header
is read ahead (up to 64 KiB) to find its ``csrf_token`` field, and a device's signed upload (up
to ``max_sample_bytes``) to check its hash, and replayed to the handler.
"""

from __future__ import annotations

import base64
import binascii
import html
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controlplane.audit.log import Record, client_address, target_of
from controlplane.auth import csrf
from controlplane.auth.authenticator import Authenticator
from controlplane.auth.bodies import read_ahead, replay
from controlplane.auth.devices import UNSIGNED, DeviceGate, DeviceRefusal, unsigned_access
from controlplane.auth.identity import ANONYMOUS, UNCHECKED, Identity
from controlplane.auth.policy import SAFE_METHODS, Rule, resolve, rule_for
from controlplane.auth.roles import allows
from controlplane.errors import StoreError

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from controlplane.api import Context

log = logging.getLogger(__name__)

SESSION_COOKIE = "edgefleet_session"
USER_HEADER = b"x-edgefleet-user"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
NOT_SET_UP = (
    "no administrator exists yet: create the first one on the control plane's host with "
    "`edgefleet users create NAME --admin --data-dir DATA_DIR`"
)
NO_CREDENTIALS = (
    "authentication required: send `Authorization: Bearer TOKEN` (the CLI reads EDGEFLEET_TOKEN "
    "or --token; create a token with `edgefleet tokens create`) or log in at /login"
)
OPEN_PATHS = ("/healthz", "/metrics")


class Refusal(Exception):
    def __init__(self, status: int, message: str, identity: Identity | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.identity = identity


def is_console(path: str) -> bool:
    """Whether ``path`` is a page of the console (refusals are redirects or HTML there)."""
    return not path.startswith("/api/") and path not in OPEN_PATHS


def request_id_of(raw: str | None) -> str:
    return raw if raw is not None and _REQUEST_ID.match(raw) else uuid.uuid4().hex


class AuthMiddleware:
    def __init__(
        self, app: ASGIApp, auth: Authenticator, devices: DeviceGate | None = None
    ) -> None:
        self.app = app
        self.auth = auth
        # without a gate (no CA to check signatures against): device requests pass as unsigned
        self.devices = devices or DeviceGate("optional", 0, lambda: None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and self.auth.enabled:
            # No route speaks WebSocket; one that did would have to be added here first.
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        request_id = request_id_of(request.headers.get("x-request-id"))
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        send = _with_request_id(send, request_id)
        app = scope.get("app")
        found = resolve(app.router.routes, scope) if app is not None else None
        pattern, params = found if found is not None else (None, {})
        method = scope["method"]
        rule = rule_for(method, pattern)
        audit = None
        if method not in SAFE_METHODS and rule.audit:
            audit = _Audit(self.auth, scope, pattern, params, request)
        try:
            identity, receive = await self._admit(request, rule, pattern, params, receive)
        except Refusal as refusal:
            state["identity"] = refusal.identity or ANONYMOUS
            await _respond(self._refusal(request, refusal), scope, receive, send, audit)
            return
        except StoreError as exc:
            state["identity"] = ANONYMOUS
            log.error("auth: %s %s: %s", method, request.url.path, exc)
            answer = JSONResponse({"error": f"store unavailable: {exc}"}, status_code=503)
            await _respond(answer, scope, receive, send, audit)
            return
        state["identity"] = identity
        if self.auth.enabled:
            scope["headers"] = _with_user(scope["headers"], identity.user)
        bound = csrf.bind(identity)  # for csrf_field() in the console's templates
        try:
            await _respond(self.app, scope, receive, send, audit)
        finally:
            csrf.unbind(bound)

    async def _admit(
        self, request: Request, rule: Rule, pattern: str | None, params: dict[str, Any],
        receive: Receive,
    ) -> tuple[Identity, Receive]:  # fmt: skip
        if rule.device:  # a route devices call: controlplane/auth/devices.py
            try:
                device, receive = await self.devices.admit(request, params, receive)
            except DeviceRefusal as exc:
                raise Refusal(exc.status, exc.message) from None
            if device is not None:
                return device, receive
            access = unsigned_access(self.devices.mode, request.method)
            operator = "authorization" in request.headers or SESSION_COOKIE in request.cookies
            if access is None or (access != "open" and not operator):
                raise Refusal(401, UNSIGNED)
            rule = replace(rule, access=access)
        if not self.auth.enabled:
            return UNCHECKED, receive
        if rule.access == "open":
            return ANONYMOUS, receive
        if not await self.auth.bootstrapped():
            raise Refusal(503, NOT_SET_UP)
        identity = await self._identify(request, rule)
        if not allows(identity.role, rule.access):
            what = f"{request.method} {pattern or request.url.path}"
            raise Refusal(
                403,
                f"{identity.name} ({identity.role} via {identity.via}) may not {what}: it needs "
                f"the {rule.access} role",
                identity,
            )
        if identity.via == "session" and request.method not in SAFE_METHODS:
            receive = await _check_csrf(request, identity, receive)
        return identity, receive

    async def _identify(self, request: Request, rule: Rule) -> Identity:
        header = request.headers.get("authorization")
        if header:
            scheme, _, value = header.strip().partition(" ")
            scheme = scheme.lower()
            if scheme == "bearer":
                found = await self.auth.by_token(value.strip())
            elif scheme == "basic":
                if not rule.password:
                    raise Refusal(
                        401,
                        "a password is accepted only to create a token (POST /api/v1/tokens): "
                        "send `Authorization: Bearer TOKEN`",
                    )
                name, password = _basic(value)
                found = await self.auth.by_password(name, password)
                if isinstance(found, str):
                    log.info("auth: failed password for %r from %s", name, _peer(request))
            else:
                raise Refusal(401, f"unsupported Authorization scheme {scheme!r}: use Bearer")
        else:
            cookie = request.cookies.get(SESSION_COOKIE)
            if not cookie:
                raise Refusal(401, NO_CREDENTIALS)
            found = await self.auth.by_session(cookie)
        if isinstance(found, str):
            raise Refusal(401, found)
        return found

    def _refusal(self, request: Request, refusal: Refusal) -> Response:
        path = request.url.path
        if not is_console(path):
            headers = {"WWW-Authenticate": 'Bearer realm="edgefleet"'}
            return JSONResponse(
                {"error": refusal.message},
                status_code=refusal.status,
                headers=headers if refusal.status == 401 else None,
            )
        if refusal.status in (401, 503):
            target = path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='/')}", status_code=303)
        return HTMLResponse(refusal_page(refusal.status, refusal.message), refusal.status)


def refusal_page(status: int, message: str) -> str:
    title = {403: "Not allowed", 413: "Too large"}.get(status, "Refused")
    return (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{title}: edgefleet</title>"
        f"<body><h1>{title}</h1><p>{html.escape(message)}</p>"
        f'<p><a href="/">Back to the console</a></p></body></html>'
    )


def _basic(value: str) -> tuple[str, str]:
    try:
        text = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Refusal(401, "malformed Basic credentials") from None
    name, sep, password = text.partition(":")
    if not sep or not name:
        raise Refusal(401, "malformed Basic credentials (expected NAME:PASSWORD)")
    return name, password


def _peer(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


async def _check_csrf(request: Request, identity: Identity, receive: Receive) -> Receive:
    given = request.headers.get(csrf.HEADER)
    if given is None:
        kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind == csrf.FORM_TYPE:
            body = await read_ahead(receive, csrf.MAX_FORM_BYTES)
            if body is None:
                raise Refusal(413, f"the form is larger than {csrf.MAX_FORM_BYTES} bytes", identity)
            given = csrf.form_token(body)
            receive = replay(body, receive)
    if not csrf.matches(identity.csrf_token, given):
        raise Refusal(
            403,
            "missing or wrong CSRF token: reload the page and submit the form again (scripts "
            "send the session's token in X-CSRF-Token, or use a bearer token)",
            identity,
        )
    return receive


def _with_request_id(send: Send, request_id: str) -> Send:
    async def tagged(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            if not any(k.lower() == b"x-request-id" for k, _ in headers):
                headers.append((b"x-request-id", request_id.encode()))
            message = {**message, "headers": headers}
        await send(message)

    return tagged


def _with_user(headers: list[tuple[bytes, bytes]], user: str | None) -> list[tuple[bytes, bytes]]:
    kept = [(k, v) for k, v in headers if k.lower() != USER_HEADER]
    if user:
        kept.append((USER_HEADER, user.encode()))
    return kept


class _Audit:
    """The record of one mutating request, completed with the outcome and written once."""

    def __init__(
        self, auth: Authenticator, scope: Scope, pattern: str | None, params: dict[str, Any],
        request: Request,
    ) -> None:  # fmt: skip
        self.auth = auth
        self.scope = scope
        self.pattern = pattern
        self.target = target_of(params, request.query_params.multi_items())
        peer = request.client.host if request.client is not None else None
        self.address, self.forwarded_for = client_address(
            peer, request.headers.get("x-forwarded-for"), auth.trusted
        )
        self.written = False

    async def write(self, outcome: int) -> None:
        if self.written:
            return
        self.written = True
        state = self.scope.get("state", {})
        identity: Identity = state.get("identity") or ANONYMOUS
        method = self.scope["method"]
        route = self.pattern
        detail = state.get("audit_detail")
        record = Record(
            at=self.auth.clock(), request_id=state.get("request_id", ""), actor=identity.user,
            via=identity.via, role=identity.role, token_id=identity.token_id,
            action=f"{method} {route or self.scope['path'][:200]}", method=method, route=route,
            target=self.target, outcome=outcome, address=self.address,
            forwarded_for=self.forwarded_for, detail=dict(detail) if detail else {},
        )  # fmt: skip
        await self.auth.record(record)


async def _respond(
    app: Callable[[Scope, Receive, Send], Awaitable[None]], scope: Scope, receive: Receive,
    send: Send, audit: _Audit | None,
) -> None:  # fmt: skip
    """Run ``app``; with ``audit``, write the record just before the answer's last message."""
    if audit is None:
        await app(scope, receive, send)
        return
    status = 500

    async def recording(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            await audit.write(status)
        await send(message)

    try:
        await app(scope, receive, recording)
    except Exception:
        await audit.write(500)  # the app failed: the error handler outside answers 500
        raise
    await audit.write(status)  # an app that ended without finishing its answer


def install(app: Starlette, ctx: Context) -> Authenticator:
    """Put the middleware in front of ``app`` and its authenticator at ``app.state.auth``."""
    auth = Authenticator(ctx.settings, ctx.store, clock=lambda: ctx.clock())
    app.state.auth = auth
    devices = DeviceGate(
        ctx.settings.device_auth,
        ctx.settings.max_sample_bytes,
        lambda: getattr(app.state, "identities", None),
    )
    app.add_middleware(AuthMiddleware, auth=auth, devices=devices)
    if not ctx.settings.auth:
        log.warning(
            "auth is OFF: every route, users and rollouts included, is open to anyone who can "
            "reach %s (turn it on: `auth = true`; docs/security.md)",
            ctx.settings.listen,
        )
    return auth
