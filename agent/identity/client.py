"""The enrollment routes of the control plane, from the device (``POST /api/v1/enroll`` and
``/api/v1/enroll/renew``): one JSON request, the HTTPS server checked against ``ca_file``."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp

from agent.errors import AgentError
from protocol.enrollment import IssuedCertificate


class EnrollError(AgentError):
    """The control plane refused (``status``: its HTTP status) or could not be reached (None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise EnrollError(f"cannot load the CA file {ca_file}: {exc}") from None


async def post(
    server: str, path: str, body: dict[str, Any], ca_file: Path | None, timeout: float = 30.0
) -> IssuedCertificate:
    """POST ``body`` to ``server + path``; the certificate it answers, or EnrollError."""
    url = server.rstrip("/") + path
    context = ssl_context(ca_file) if url.startswith("https://") else None
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
            async with http.post(url, json=body, ssl=context if context else True) as response:
                text = await response.text()
                status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise EnrollError(f"cannot reach {url}: {exc or type(exc).__name__}") from None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if status != 200:
        why = data.get("error") if isinstance(data, dict) else text[:200]
        raise EnrollError(f"{url} refused: {why} (HTTP {status})", status)
    try:
        return IssuedCertificate.model_validate(data)
    except ValueError:
        raise EnrollError(f"{url} answered something that is not a certificate") from None
