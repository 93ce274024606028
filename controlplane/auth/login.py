"""The console's way in and out: ``GET/POST /login`` and ``POST /logout``.

A login checks the password (Argon2id), opens a server-side session (:mod:`accounts` keeps the
SHA-256 of its id, its CSRF token and its expiry, ``session_lifetime_s``) and sets the session
cookie: ``HttpOnly`` (no script can read it), ``SameSite=Lax`` (not sent with cross-site posts),
``Path=/``, and ``Secure`` when the console is served over HTTPS (the request came over TLS, a
trusted proxy says ``X-Forwarded-Proto: https``, or ``public_url`` is ``https://``), so it never
travels in clear text where TLS is available. Each login gets a new session id (no fixation).
The login form itself is protected against cross-site posting by a double-submit cookie
(``edgefleet_login``, ``SameSite=Strict``) that must equal its hidden field.

Logging out deletes the session on the server (the cookie is worthless at once, wherever a copy
of it is) and expires the cookie.
"""

from __future__ import annotations

import html
import re
import secrets
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from controlplane.audit.log import is_trusted
from controlplane.auth import csrf
from controlplane.auth.authenticator import Authenticator
from controlplane.auth.identity import Identity
from controlplane.auth.middleware import NOT_SET_UP, SESSION_COOKIE, refusal_page

LOGIN_COOKIE = "edgefleet_login"
LOGIN_COOKIE_S = 3600
_LOGIN_TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")


def safe_next(raw: str | None, default: str = "/") -> str:
    """Where to go after the login: a path on this site only (never ``//host`` or a URL: an
    open redirect would make the login page a phishing tool)."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return default
    parts = urlsplit(raw)
    return default if parts.scheme or parts.netloc else raw


def cookie_secure(
    scheme: str, forwarded_proto: str | None, peer_trusted: bool, public_url: str
) -> bool:
    """Whether cookies get ``Secure``: when the browser reached us over HTTPS."""
    if scheme == "https" or public_url.startswith("https://"):
        return True
    return peer_trusted and (forwarded_proto or "").split(",")[0].strip().lower() == "https"


def _auth(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


def _secure(request: Request) -> bool:
    auth = _auth(request)
    peer = request.client.host if request.client is not None else None
    trusted = peer is not None and is_trusted(peer, auth.trusted)
    return cookie_secure(
        request.url.scheme, request.headers.get("x-forwarded-proto"), trusted,
        auth.settings.public_url,
    )  # fmt: skip


def page(form_token: str, next_path: str, message: str = "", user: str = "") -> str:
    notice = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Log in: edgefleet</title>
<style>body{{font-family:system-ui,sans-serif;max-width:22rem;margin:4rem auto;padding:0 1rem}}
label{{display:block;margin:.8rem 0 .2rem}}input{{width:100%;padding:.4rem;box-sizing:border-box}}
button{{margin-top:1rem;padding:.4rem 1.2rem}}.error{{color:#b00020}}</style></head>
<body><h1>edgefleet</h1>{notice}
<form method="post" action="/login">
<input type="hidden" name="{csrf.FIELD}" value="{html.escape(form_token)}">
<input type="hidden" name="next" value="{html.escape(next_path)}">
<label for="user">User</label>
<input id="user" name="user" autocomplete="username" required value="{html.escape(user)}">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Log in</button></form></body></html>
"""


def _login_page(
    request: Request, next_path: str, message: str = "", user: str = "", status: int = 200
) -> Response:
    # Reuse the browser's login cookie when it has one: a browser fetches more than the page (its
    # /favicon.ico is redirected here too), and a fresh cookie per GET would make the form it is
    # showing stale. The value stays secret (HttpOnly, SameSite=Strict); reusing it costs nothing.
    current = request.cookies.get(LOGIN_COOKIE, "")
    token = current if _LOGIN_TOKEN.fullmatch(current) else secrets.token_urlsafe(24)
    response = HTMLResponse(page(token, next_path, message, user), status_code=status)
    response.set_cookie(
        LOGIN_COOKIE, token, max_age=LOGIN_COOKIE_S, path="/login", secure=_secure(request),
        httponly=True, samesite="strict",
    )  # fmt: skip
    response.headers["Cache-Control"] = "no-store"
    return response


async def show_login(request: Request) -> Response:
    next_path = safe_next(request.query_params.get("next"))
    message = "" if await _auth(request).bootstrapped() else NOT_SET_UP
    return _login_page(request, next_path, message)


async def _form(request: Request) -> dict[str, str] | None:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > csrf.MAX_FORM_BYTES:
            return None
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        return None


async def submit_login(request: Request) -> Response:
    auth = _auth(request)
    form = await _form(request)
    if form is None:
        return HTMLResponse(refusal_page(400, "not a login form"), status_code=400)
    next_path = safe_next(form.get("next"))
    name = form.get("user", "").strip()
    request.state.audit_detail = {"user": name[:64]}
    if not csrf.matches(request.cookies.get(LOGIN_COOKIE), form.get(csrf.FIELD)):
        return _login_page(request, next_path, "the login form expired: try again", name, 403)
    if not await auth.bootstrapped():
        return _login_page(request, next_path, NOT_SET_UP, name, 503)
    found = await auth.by_password(name, form.get("password", ""))
    if isinstance(found, str):
        return _login_page(request, next_path, found, name, 401)
    assert found.user_id is not None
    session = await auth.open_session(found.user_id)
    request.state.identity = Identity(
        found.user, found.role, "session", user_id=found.user_id, csrf_token=session.csrf_token
    )
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        SESSION_COOKIE, session.cookie, max_age=int(auth.settings.session_lifetime_s), path="/",
        secure=_secure(request), httponly=True, samesite="lax",
    )  # fmt: skip
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


async def logout(request: Request) -> Response:
    identity = getattr(request.state, "identity", None)
    if isinstance(identity, Identity) and identity.session_digest is not None:
        await _auth(request).close_session(identity.session_digest)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response


routes = [
    Route("/login", show_login, methods=["GET"]),
    Route("/login", submit_login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]
