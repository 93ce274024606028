"""How the control plane's HTTP servers (the API in ``app.py``, the offload server) answer an
error: JSON ``{"error": "..."}`` with the status it names, never Starlette's plain-text pages."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from controlplane.errors import Refused


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, method not allowed) in our JSON shape."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"not found: {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


async def refused(request: Request, exc: Exception) -> Response:
    """A :class:`~controlplane.errors.Refused`: its status, message and headers."""
    assert isinstance(exc, Refused)
    return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=exc.headers())
