"""The offload server's ASGI app: the six Open Inference Protocol routes, ``/metrics``, and the
graceful drain that lets it run on spot or preemptible GPU instances.

Every route is served with and without ``/versions/{v}``; without it a model's highest version
answers. Errors are JSON ``{"error": "..."}`` with the status of their :mod:`.errors` class.

Drain (SIGTERM, or SIGINT): readiness answers 503 at once, so a load balancer or Kubernetes stops
sending; new inference requests get 503 with ``Retry-After``; what is queued runs without waiting
for its batch to fill, and in-flight requests are answered; after at least ``drain_grace`` seconds
(time for the load balancer to notice) the process stops listening and exits 0. A second signal
stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import FrameType

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from controlplane.errors import ConfigError
from controlplane.http_errors import http_error, refused
from controlplane.metrics import CONTENT_TYPE
from controlplane.offload import oip
from controlplane.offload.batcher import Batcher, BatchPolicy
from controlplane.offload.errors import ModelNotFound, OffloadError, Unavailable
from controlplane.offload.metrics import OffloadMetrics
from controlplane.offload.runtime import OnnxModel

log = logging.getLogger("controlplane.offload")
VERSION = "0.1.0"
Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass
class OffloadState:
    """What the routes share: the batchers by model and version, the metrics, the drain flag."""

    batchers: dict[str, dict[str, Batcher]]
    metrics: OffloadMetrics
    policy: BatchPolicy
    draining: bool = False
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def batcher(self, name: str, version: str | None) -> Batcher:
        versions = self.batchers.get(name)
        if versions is None:
            known = ", ".join(sorted(self.batchers)) or "none"
            raise ModelNotFound(f"unknown model {name!r} (served here: {known})")
        if version is None:
            return versions[max(versions, key=_version_key)]
        if version not in versions:
            raise ModelNotFound(
                f"model {name!r} has no version {version!r} (it has "
                f"{', '.join(sorted(versions, key=_version_key))})"
            )
        return versions[version]

    def all(self) -> list[Batcher]:
        return [b for versions in self.batchers.values() for b in versions.values()]

    async def drain(self, grace: float = 0.0) -> None:
        """Stop taking work, finish what was taken, and stay up at least ``grace`` seconds."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.draining = True
        log.info(
            "draining: not ready; finishing %d queued requests", sum(b.pending for b in self.all())
        )
        await asyncio.gather(*(b.drain() for b in self.all()))
        while self.inflight:
            self.idle.clear()
            await self.idle.wait()
        await asyncio.sleep(max(0.0, started + grace - loop.time()))
        log.info("drained")


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


def build_state(models: Sequence[OnnxModel], policy: BatchPolicy) -> OffloadState:
    metrics = OffloadMetrics()
    batchers: dict[str, dict[str, Batcher]] = {}
    for model in models:
        versions = batchers.setdefault(model.name, {})
        if model.version in versions:
            raise ConfigError(f"model {model.name!r} version {model.version!r} is given twice")
        versions[model.version] = Batcher(model, policy, metrics)
    return OffloadState(batchers, metrics, policy)


def create_app(state: OffloadState) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for batcher in state.all():
            batcher.start()
        try:
            yield
        finally:
            await asyncio.gather(*(b.stop() for b in state.all()))

    def route(path: str, endpoint: Endpoint, methods: list[str]) -> list[Route]:
        return [
            Route(f"/v2/models/{{model}}{path}", endpoint, methods=methods),
            Route(f"/v2/models/{{model}}/versions/{{version}}{path}", endpoint, methods=methods),
        ]

    app = Starlette(
        routes=[
            Route("/v2/health/live", _live, methods=["GET"]),
            Route("/v2/health/ready", _ready, methods=["GET"]),
            Route("/v2", _server_metadata, methods=["GET"]),
            Route("/metrics", _metrics, methods=["GET"]),
            *route("", _model_metadata, ["GET"]),
            *route("/ready", _model_ready, ["GET"]),
            *route("/infer", _infer, ["POST"]),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, OffloadError: _offload_error},
    )
    app.state.offload = state
    return app


def _state(request: Request) -> OffloadState:
    state: OffloadState = request.app.state.offload
    return state


def _target(request: Request) -> Batcher:
    params = request.path_params
    return _state(request).batcher(params["model"], params.get("version"))


async def _live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def _ready(request: Request) -> Response:
    if _state(request).draining:
        return JSONResponse({"ready": False, "error": "the server is draining"}, status_code=503)
    return JSONResponse({"ready": True})


async def _server_metadata(request: Request) -> Response:
    return JSONResponse(oip.server_metadata(VERSION))


async def _model_metadata(request: Request) -> Response:
    batcher = _target(request)
    model = batcher.model
    assert isinstance(model, OnnxModel)
    versions = sorted(_state(request).batchers[model.name], key=_version_key)
    return JSONResponse(oip.model_metadata(model.name, versions, model.inputs, model.outputs))


async def _model_ready(request: Request) -> Response:
    batcher = _target(request)
    ready = not _state(request).draining
    body = {"name": batcher.model.name, "version": batcher.model.version, "ready": ready}
    return JSONResponse(body, status_code=200 if ready else 503)


async def _metrics(request: Request) -> Response:
    return Response(_state(request).metrics.render(), media_type=CONTENT_TYPE)


async def _infer(request: Request) -> Response:
    state = _state(request)
    batcher = _target(request)
    labels = (batcher.model.name, batcher.model.version)
    started = time.perf_counter()
    state.inflight += 1
    try:
        if state.draining:
            raise Unavailable(
                "the server is shutting down; retry on another replica", state.policy.retry_after
            )
        model = batcher.model
        assert isinstance(model, OnnxModel)
        body = await request.body()
        length = oip.header_length(request.headers.get(oip.HEADER_LENGTH), len(body))
        decoded = oip.decode_request(body, length, model.inputs, batched=model.batched)
        oip.check_outputs(decoded, model.output_names)
        timeout = None if decoded.timeout_us is None else decoded.timeout_us / 1e6
        outputs = await batcher.infer(decoded.inputs, decoded.rows, timeout)
        content, json_length = oip.encode_response(
            model.name, model.version, oip.select_outputs(decoded, outputs), decoded.id
        )
    except OffloadError:
        state.metrics.request_failure.inc(1, *labels)
        raise
    finally:
        state.inflight -= 1
        if not state.inflight:
            state.idle.set()
        state.metrics.request_duration_us.inc(round((time.perf_counter() - started) * 1e6), *labels)
    state.metrics.request_success.inc(1, *labels)
    if json_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={oip.HEADER_LENGTH: str(json_length)},
    )


async def _offload_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OffloadError)
    if exc.status >= 500 and not isinstance(exc, Unavailable):
        log.warning("%s %s: %s", request.method, request.url.path, exc)
    return await refused(request, exc)


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM or SIGINT drains (see the module docstring) before it
    stops; uvicorn alone would stop listening at once, so readiness could never go 503."""

    def __init__(self, config: uvicorn.Config, state: OffloadState, grace: float) -> None:
        super().__init__(config)
        self._state = state
        self._grace = grace
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None
        self.signalled = False

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.signalled or self._loop is None:
            self.should_exit = True  # a second signal: stop now
            if sig == signal.SIGINT and self.signalled:
                self.force_exit = True
            return
        self.signalled = True
        log.info("signal %d: draining", sig)
        self._loop.call_soon_threadsafe(self._begin_drain)

    def _begin_drain(self) -> None:
        async def drain_then_exit() -> None:
            try:
                await self._state.drain(self._grace)
            finally:
                self.should_exit = True

        self._drain = asyncio.get_running_loop().create_task(drain_then_exit())
