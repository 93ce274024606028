"""How every console POST reads its form, and where it may send the browser afterwards.

Mutating forms are rendered by the ``post_form`` macro (``templates/macros.html``), which emits
:func:`controlplane.console.templating.csrf_field`: the one place the session's CSRF token enters
a form. The auth middleware checks that token before any handler runs
(:mod:`controlplane.auth.csrf`); :func:`read_form` is the one place the handlers read a form, so
anything else every form must carry is checked here.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request

from controlplane.errors import BadRequest, TooLarge

MAX_FORM_BYTES = 64 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"


async def read_form(request: Request) -> dict[str, str]:
    """The POSTed form's fields (the last of a repeated name); 400/413 for what is not one."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise TooLarge(f"the form is larger than {MAX_FORM_BYTES} bytes")
    if kind != FORM_TYPE and (kind or body):  # an empty form may come without a type
        raise BadRequest("Content-Type", f"expected {FORM_TYPE}, got {kind or 'none'}")
    try:
        text = body.decode("utf-8")
        return dict(parse_qsl(text, keep_blank_values=True, strict_parsing=False))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("body", "not a URL-encoded form") from None


def local_path(raw: str | None, default: str) -> str:
    """A redirect target from a form's ``next`` field: only a path on this site (no scheme, no
    host, no ``//``), else ``default`` (an open redirect would be a phishing tool)."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return default
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc:
        return default
    return raw
