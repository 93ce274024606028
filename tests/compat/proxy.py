"""A counting HTTP proxy between our client and a real server: how many tries reached it.

The client's contract (no retry of a 400 or 404, at most one of a 500) is about requests on
the wire, so the tests count them there. The proxy forwards every request unchanged (method,
path, body, headers less the hop-by-hop ones) and the server's status, body and the headers a
client reads; it also closes the client's connection when the server closed its own (KServe and
MLServer do after a 500), so the client meets the same connection behaviour as without it.
"""

from __future__ import annotations

from collections import Counter

import aiohttp
from aiohttp import web

from tests.mosquitto import free_port

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}
_PASSED_BACK = (
    "Content-Type", "Content-Encoding", "Inference-Header-Content-Length", "Retry-After",
)  # fmt: skip


class CountingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: Counter[str] = Counter()
        """``"POST /v2/models/x/infer"`` -> how many reached the server."""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._session = aiohttp.ClientSession(auto_decompress=False)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def count(self, method: str, path: str) -> int:
        return self.requests[f"{method} {path}"]

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        self.requests[f"{request.method} {request.path}"] += 1
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            data=body,
            headers=headers,
            skip_auto_headers=("Content-Type", "User-Agent", "Accept-Encoding"),
        ) as upstream:
            content = await upstream.read()
            response = web.Response(status=upstream.status, body=content)
            for name in _PASSED_BACK:
                if name in upstream.headers:
                    response.headers[name] = upstream.headers[name]
            if upstream.headers.get("Connection", "").lower() == "close":
                response.force_close()
            return response
