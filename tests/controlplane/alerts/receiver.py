"""A real webhook receiver for notification tests: Starlette under uvicorn on a free port, in a
thread, that answers the first ``fail`` requests of each path with ``status`` (and a
``Retry-After``) and accepts the rest, recording every request."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.mosquitto import free_port


@dataclass
class Received:
    path: str
    body: Any
    status: int


@dataclass
class Receiver:
    fail: int = 0
    status: int = 503
    retry_after: str | None = "1"
    url: str = ""
    requests: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted(self, path: str) -> list[Any]:
        with self._lock:
            return [r.body for r in self.requests if r.path == path and r.status == 200]

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.path == path)

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        body = await request.json()
        with self._lock:
            seen = sum(1 for r in self.requests if r.path == path)
            status = self.status if seen < self.fail else 200
            self.requests.append(Received(path, body, status))
        if status == 200:
            return JSONResponse({"ok": True})
        headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
        return JSONResponse({"error": "busy"}, status_code=status, headers=headers)


@contextmanager
def receiver(fail: int = 0, status: int = 503, retry_after: str | None = "1") -> Iterator[Receiver]:
    r = Receiver(fail, status, retry_after)
    app = Starlette(routes=[Route("/{path:path}", r.handle, methods=["POST"])])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the receiver did not start"
    r.url = f"http://127.0.0.1:{port}"
    try:
        yield r
    finally:
        server.should_exit = True
        thread.join(30)
