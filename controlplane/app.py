"""The control plane's ASGI app: ``create_app(settings)`` wires the store, ingestion and the API.

The lifespan opens the store (unless one is passed in, already open) and starts MQTT ingestion
(unless ``mqtt=False``: an API-only app, for tests or a read replica) with the rollout
controller after it, and on shutdown stops the controller, then ingestion, so that every message
taken in is committed and acknowledged, then closes the store. Every error is answered as JSON
``{"error": ...}``; an unexpected exception is logged with its traceback and answered 500
without one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from controlplane import api
from controlplane.errors import BadRequest, Refused, StoreError
from controlplane.http_errors import http_error, refused
from controlplane.ingest import Ingestor
from controlplane.metrics import Metrics
from controlplane.registry import api as registry_api
from controlplane.registry.artifacts import ArtifactStore
from controlplane.registry.keys import ReleaseKey
from controlplane.rollouts import api as rollouts_api
from controlplane.rollouts.controller import RolloutController
from controlplane.samples import api as samples_api
from controlplane.settings import Settings
from controlplane.store import Store

log = logging.getLogger(__name__)

ROUTES = api.routes + registry_api.routes + rollouts_api.routes + samples_api.routes
"""Every route of the API, one list per module (docs/api.md documents each)."""


def create_app(settings: Settings, *, store: Store | None = None, mqtt: bool = True) -> Starlette:
    """The app. With ``store`` the caller owns it (opens and closes it); else the lifespan does."""
    owns_store = store is None
    if store is None:
        store = Store(settings.store_path, synchronous=settings.synchronous, metrics=Metrics())
    ctx = api.Context(settings=settings, store=store, metrics=store.metrics)
    ctx.release_key = ReleaseKey.load_or_create(settings.data_dir)  # ConfigError if unusable
    ctx.artifacts = ArtifactStore(settings.data_dir / "artifacts")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if owns_store:
            await asyncio.to_thread(ctx.store.open)
        if ctx.artifacts is not None:
            await asyncio.to_thread(ctx.artifacts.clean)  # uploads a crash cut short
        try:
            if mqtt:
                ctx.ingestor = Ingestor(settings, ctx.store, ctx.metrics)
                if ctx.release_key is not None:
                    ctx.rollouts = RolloutController(
                        settings, ctx.store, ctx.release_key, ctx.ingestor.client
                    )
                    ctx.ingestor.on_deployment = ctx.rollouts.report
                await ctx.ingestor.start()
                if ctx.rollouts is not None:
                    await ctx.rollouts.start()
            yield
        finally:
            if ctx.rollouts is not None:
                await ctx.rollouts.stop()  # before ingestion: it acknowledges reports over MQTT
            if ctx.ingestor is not None:
                await ctx.ingestor.stop()
            if owns_store:
                await asyncio.to_thread(ctx.store.close)

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={
            HTTPException: http_error,
            BadRequest: _bad_request,
            Refused: refused,
            StoreError: _store_error,
            Exception: _internal_error,
        },
    )
    app.state.ctx = ctx
    return app


async def _bad_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadRequest)
    return JSONResponse({"error": str(exc), "parameter": exc.parameter}, status_code=400)


async def _store_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"error": f"store unavailable: {exc}"}, status_code=503)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": "internal server error"}, status_code=500)
