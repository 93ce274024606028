"""The fleet CLI's HTTP client: one place that talks to the control plane and turns every failure
into a :class:`FleetError` that names it (the API's own ``{"error": ...}`` message when there is
one, the unreachable URL otherwise)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx

from controlplane.errors import ControlPlaneError

DEFAULT_SERVER = "http://127.0.0.1:8080"
SERVER_ENV = "EDGEFLEET_SERVER"
TOKEN_ENV = "EDGEFLEET_TOKEN"
CHUNK = 256 * 1024


class FleetError(ControlPlaneError):
    """A CLI command failed; the message is what the user sees."""

    status: int | None = None  # the HTTP status, when the control plane answered


def add_client_flags(parser: argparse.ArgumentParser) -> None:
    """``--server``, ``--json`` and ``--timeout``: every fleet command has them."""
    parser.add_argument(
        "--server",
        default=None,
        metavar="URL",
        help=f"the control plane (default: ${SERVER_ENV}, else {DEFAULT_SERVER})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    parser.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="seconds per HTTP request"
    )
    parser.add_argument(
        "--token",
        default=None,
        metavar="TOKEN",
        help=f"API token (default: ${TOKEN_ENV}; prefer the variable: flags show in `ps`)",
    )


def api_token(flag: str | None, environ: dict[str, str] | None = None) -> str | None:
    """The API token: the flag, then the environment; None when neither is set."""
    env = os.environ if environ is None else environ
    return flag or env.get(TOKEN_ENV) or None


def server_url(flag: str | None, environ: dict[str, str] | None = None) -> str:
    """The control plane's base URL: the flag, then the environment, then the default."""
    env = os.environ if environ is None else environ
    url = (flag or env.get(SERVER_ENV) or DEFAULT_SERVER).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise FleetError(f"--server {url!r}: expected an http:// or https:// URL")
    return url


class FleetClient:
    """A thin synchronous client; every method returns the decoded JSON body."""

    def __init__(self, server: str, timeout: float = 30.0, token: str | None = None) -> None:
        self.server = server
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._http = httpx.Client(base_url=server, timeout=timeout, headers=headers)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FleetClient:
        token = api_token(getattr(args, "token", None))
        return cls(server_url(args.server), timeout=args.timeout, token=token)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FleetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def stream(self, method: str, path: str) -> AbstractContextManager[httpx.Response]:
        """A streamed request with this client's server, token and timeout (large downloads);
        httpx errors are the caller's to translate."""
        return self._http.stream(method, path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def put(self, path: str, body: Any = None) -> Any:
        return self.request("PUT", path, json=body)

    def patch(self, path: str, body: Any = None) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def upload(
        self,
        path: str,
        file: Path,
        *,
        content_type: str = "application/octet-stream",
        progress: Callable[[int, int], None] | None = None,
    ) -> Any:
        """PUT a file's bytes, streamed, calling ``progress(sent, total)`` as it goes."""
        try:
            total = file.stat().st_size
        except OSError as exc:
            raise FleetError(f"cannot read {file}: {exc.strerror}") from None

        def chunks() -> Iterator[bytes]:
            sent = 0
            with file.open("rb") as fh:
                while chunk := fh.read(CHUNK):
                    sent += len(chunk)
                    yield chunk
                    if progress is not None:
                        progress(sent, total)

        headers = {"Content-Type": content_type, "Content-Length": str(total)}
        return self.request("PUT", path, content=chunks(), headers=headers)

    def get_bytes(self, path: str) -> bytes:
        """The raw body of a GET (a kept input, an artifact), or FleetError as for JSON."""
        try:
            response = self._http.get(path)
        except httpx.TimeoutException:
            raise FleetError(f"GET {self.server}{path}: no answer in time") from None
        except httpx.HTTPError as exc:
            raise FleetError(f"cannot reach the control plane at {self.server} ({exc})") from None
        if not response.is_success:
            decode("GET", f"{self.server}{path}", response)  # raises with the API's message
        return response.content

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise FleetError(f"{method} {self.server}{path}: no answer in time") from None
        except httpx.HTTPError as exc:
            raise FleetError(
                f"cannot reach the control plane at {self.server} ({exc}); "
                f"pass --server URL or set {SERVER_ENV}"
            ) from None
        return decode(method, f"{self.server}{path}", response)


def decode(method: str, url: str, response: httpx.Response) -> Any:
    """The JSON body of a 2xx answer, or a FleetError carrying the API's error message."""
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = None
    if response.is_success:
        if body is None and response.content:
            raise FleetError(f"{method} {url}: the answer is not JSON")
        return body
    message = body.get("error") if isinstance(body, dict) else None
    if not message:
        message = response.text.strip()[:200] or response.reason_phrase
    if response.status_code == 401 and TOKEN_ENV not in message:
        message += f" (set {TOKEN_ENV} or pass --token; create one with `edgefleet tokens create`)"
    error = FleetError(f"{message} (HTTP {response.status_code} from {method} {url})")
    error.status = response.status_code
    raise error
