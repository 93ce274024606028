"""CSRF protection for the console: a synchronizer token per session.

A browser sends the session cookie with any request to this site, including one a hostile page
makes it send (a form that posts to ``/rollouts/7/abort``). So every mutating request that is
authenticated by the session cookie must also carry the session's CSRF token, which a hostile
page cannot read: in the form field ``csrf_token`` (a URL-encoded form) or in the
``X-CSRF-Token`` header (JavaScript's ``fetch``). The middleware checks it before the handler
runs and answers 403 without it. Requests with a bearer token need no CSRF token: a browser never
adds an ``Authorization`` header by itself. (``SameSite=Lax`` on the cookie is a second fence,
not the first: older browsers ignore it.)

For templates: :func:`csrf_field` inside every ``<form method="post">`` (``{{ csrf_field() }}``
as a Jinja2 global: without an argument it reads the token of the request being handled, which
the middleware binds in a context variable; ``csrf_field(request)`` works too) and
:func:`csrf_token` (for a ``<meta>`` that JavaScript reads and sends as ``X-CSRF-Token``).
"""

from __future__ import annotations

import hmac
from contextvars import ContextVar, Token
from html import escape
from urllib.parse import parse_qsl

from starlette.requests import Request

from controlplane.auth.identity import Identity

FIELD = "csrf_token"
HEADER = "x-csrf-token"
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 64 * 1024


_current: ContextVar[str] = ContextVar("edgefleet_csrf_token", default="")
"""The CSRF token of the session of the request being handled ("" without one)."""


class HTML(str):
    """Text that is already HTML: Jinja2 (and MarkupSafe) insert it as it is (``__html__``)."""

    __slots__ = ()

    def __html__(self) -> str:
        return str(self)


def bind(identity: Identity) -> Token[str]:
    """Make ``identity``'s CSRF token the current one (the middleware, around each request)."""
    return _current.set(identity.csrf_token or "")


def unbind(bound: Token[str]) -> None:
    _current.reset(bound)


def csrf_token(request: Request | None = None) -> str:
    """The CSRF token of the request's console session ("" without a session); without
    ``request``, of the request being handled."""
    if request is None:
        return _current.get()
    identity = getattr(request.state, "identity", None)
    if isinstance(identity, Identity) and identity.csrf_token:
        return identity.csrf_token
    return ""


def csrf_field(request: Request | None = None) -> HTML:
    """The hidden input a console form carries; empty when the request has no session (auth
    off, or a bearer token), which needs none."""
    token = csrf_token(request)
    if not token:
        return HTML("")
    return HTML(f'<input type="hidden" name="{FIELD}" value="{escape(token)}">')


def matches(expected: str | None, given: str | None) -> bool:
    """Whether ``given`` is the session's token (constant time; a missing one never matches)."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def form_token(body: bytes) -> str | None:
    """The ``csrf_token`` field of a URL-encoded form body (the last one), if any."""
    try:
        fields = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        return None
    found = [value for name, value in fields if name == FIELD]
    return found[-1] if found else None
