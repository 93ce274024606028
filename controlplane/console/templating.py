"""The console's Jinja2 environment: filters that give every number its unit and every time a
``<time datetime>``, the page renderer, and the HTML error page.

Times are rendered as ISO 8601 UTC in ``<time datetime="...">`` with a readable UTC text inside,
so a page reads without JavaScript; ``console.js`` rewrites them in the browser's time zone.
Missing values render as an em dash, never as ``None``. Templates are strict (an undefined name
is an error, not an empty string), so a typo fails the route tests instead of a page.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from controlplane.api import Context
from controlplane.auth.csrf import csrf_field as auth_csrf_field
from controlplane.errors import BadRequest, Refused, StoreError

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
DASH = "\u2014"

NAV = (
    ("fleet", "/fleet", "Fleet"),
    ("devices", "/devices", "Devices"),
    ("models", "/models", "Models"),
    ("rollouts", "/rollouts", "Rollouts"),
    ("alerts", "/alerts", "Alerts"),
    ("results", "/results", "Results"),
)


# -- filters (pure) --------------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def iso(ts: float | None) -> str:
    """Unix seconds -> ``2025-01-31T12:00:00Z`` (what ``<time datetime>`` holds)."""
    if _missing(ts):
        return ""
    assert ts is not None
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def time_tag(ts: float | None) -> Markup:
    """``<time datetime="ISO">YYYY-MM-DD HH:MM:SS UTC</time>``, or a dash."""
    if _missing(ts):
        return Markup(DASH)
    assert ts is not None
    text = datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}">{}</time>').format(iso(ts), text)


def number(value: float | int | None, digits: int = 0) -> str:
    """Thousands separators: ``10,000``, ``3.14``."""
    if _missing(value):
        return DASH
    assert value is not None
    return f"{value:,.{digits}f}"


def with_unit(value: float | None, unit: str, digits: int = 1) -> str:
    if _missing(value):
        return DASH
    assert value is not None
    return f"{value:,.{digits}f}\u00a0{unit}"


def ms(value: float | None) -> str:
    """Milliseconds, with one decimal below 100 ms."""
    if _missing(value):
        return DASH
    assert value is not None
    return with_unit(value, "ms", 1 if abs(value) < 100 else 0)


def percent(share: float | None, digits: int = 1) -> str:
    """A share in [0, 1] as a percentage: ``12.5 %``."""
    if _missing(share):
        return DASH
    assert share is not None
    return with_unit(share * 100, "%", digits)


def per_second(value: float | None) -> str:
    if _missing(value):
        return DASH
    assert value is not None
    return with_unit(value, "/s", 2 if abs(value) < 10 else 1)


def size(value: float | None) -> str:
    """Bytes with a binary unit: ``2.0 MiB``."""
    if _missing(value):
        return DASH
    assert value is not None
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(amount) < 1024 or unit == "GiB":
            return with_unit(amount, unit, 0 if unit == "B" else 1)
        amount /= 1024
    raise AssertionError("unreachable")


def duration(seconds: float | None) -> str:
    """``45 s``, ``3 min 20 s``, ``2 h 05 min``, ``3 d 4 h``."""
    if _missing(seconds):
        return DASH
    assert seconds is not None
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}\u00a0s"
    if s < 3600:
        return f"{s // 60}\u00a0min {s % 60:02d}\u00a0s"
    if s < 86400:
        return f"{s // 3600}\u00a0h {s % 3600 // 60:02d}\u00a0min"
    return f"{s // 86400}\u00a0d {s % 86400 // 3600}\u00a0h"


def short_hash(value: str | None, length: int = 12) -> str:
    return DASH if not value else value[:length]


def tags_text(tags: Mapping[str, str] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((tags or {}).items())) or DASH


def with_query(query: Mapping[str, str], **changes: Any) -> str:
    """``?a=1&b=2``: ``query`` with ``changes`` applied (None removes a key), for links that keep
    a page's filters."""
    merged = {k: v for k, v in query.items() if v != ""}
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = str(value)
    return "?" + urlencode(merged) if merged else "?"


def chart_json(chart: Any) -> Markup:
    """A chart's data for ``<script type="application/json">``: JSON with ``<`` escaped, so no
    value can close the script element."""
    text = json.dumps(chart, separators=(",", ":"), allow_nan=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


# -- the environment -------------------------------------------------------------------------------


def csrf_field() -> Markup:
    """The hidden input every mutating form carries: the ``post_form`` macro calls it, so this is
    the one place the CSRF token enters the console's forms.

    The token is the console session's (:func:`controlplane.auth.csrf.csrf_field`, bound to the
    request being handled by the auth middleware, which checks it before any handler runs); it is
    empty when there is no session (auth off, or a bearer token), which needs none.
    """
    return Markup(str(auth_csrf_field()))


@functools.cache
def _asset_version() -> str:
    """A short digest of the static files: their URLs change when they do (no stale cache)."""
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def static_url(path: str) -> str:
    return f"/static/{path}?v={_asset_version()}"


@functools.cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("controlplane.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        iso=iso, time=time_tag, number=number, ms=ms, percent=percent, per_second=per_second,
        size=size, duration=duration, short_hash=short_hash, tags_text=tags_text,
        chart_json=chart_json, with_unit=with_unit,
    )  # fmt: skip
    env.globals.update(
        with_query=with_query, csrf_field=csrf_field, static_url=static_url, nav=NAV, DASH=DASH
    )
    return env


def render_fragment(name: str, **context: Any) -> str:
    """A template (a page's live region) as text: the page includes it, the SSE stream sends it."""
    return environment().get_template(name).render(**context)


def render(
    request: Request, name: str, context: Mapping[str, Any], *, status: int = 200,
    active: str = "",
) -> HTMLResponse:  # fmt: skip
    ctx: Context = request.app.state.ctx
    html = environment().get_template(name).render(
        **context, request=request, now=ctx.clock(), active=active,
        offline_after_s=ctx.settings.offline_after_s,
    )  # fmt: skip
    return HTMLResponse(html, status_code=status)


# -- errors ----------------------------------------------------------------------------------------

_TITLES = {400: "Bad request", 404: "Not found", 409: "Conflict", 503: "Store unavailable"}


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    title = _TITLES.get(status, "Refused")
    return render(
        request, "error.html", {"status": status, "title": title, "message": message},
        status=status,
    )  # fmt: skip


Handler = Callable[[Request], Awaitable[Response]]


def page(handler: Handler) -> Handler:
    """A console page: the control plane's own errors become an HTML page with their status
    (a bad query parameter 400 naming it, an unknown device 404), never JSON or a traceback."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except BadRequest as exc:
            return error_page(request, 400, str(exc))
        except Refused as exc:
            return error_page(request, exc.status, str(exc))
        except StoreError as exc:
            return error_page(request, 503, f"store unavailable: {exc}")

    return wrapped
