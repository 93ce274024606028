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
from controlplane.alerts import api as alerts_api
from controlplane.alerts.config import load_alert_config
from controlplane.alerts.engine import AlertEngine
from controlplane.audit import api as audit_api
from controlplane.auth import api as auth_api
from controlplane.auth import login
from controlplane.auth.middleware import install as install_auth
from controlplane.commands import api as commands_api
from controlplane.commands.requester import CommandRequester
from controlplane.console.routes import routes as console_routes
from controlplane.errors import BadRequest, Refused, StoreError
from controlplane.http_errors import http_error, refused
from controlplane.identities import api as identities_api
from controlplane.identities.service import Identities
from controlplane.ingest import Ingestor
from controlplane.metrics import Metrics
from controlplane.registry import api as registry_api
from controlplane.registry.artifacts import ArtifactStore
from controlplane.registry.keys import ReleaseKey
from controlplane.rollouts import api as rollouts_api
from controlplane.rollouts.controller import RolloutController
from controlplane.samples import api as samples_api
from controlplane.samples import data_api
from controlplane.samples.keeper import Keeper
from controlplane.samples.vault import Vault
from controlplane.settings import Settings
from controlplane.store import Store

log = logging.getLogger(__name__)

ROUTES = (
    api.routes + registry_api.routes + rollouts_api.routes + samples_api.routes
    + alerts_api.routes + commands_api.routes
    + identities_api.routes
    + data_api.routes
    + auth_api.routes + login.routes + audit_api.routes
)  # fmt: skip
"""Every route of the API, one list per module (docs/api.md documents each)."""


def create_app(settings: Settings, *, store: Store | None = None, mqtt: bool = True) -> Starlette:
    """The app. With ``store`` the caller owns it (opens and closes it); else the lifespan does."""
    owns_store = store is None
    if store is None:
        store = Store(settings.store_path, synchronous=settings.synchronous, metrics=Metrics())
    ctx = api.Context(settings=settings, store=store, metrics=store.metrics)
    ctx.release_key = ReleaseKey.load_or_create(settings.data_dir)  # ConfigError if unusable
    ctx.artifacts = ArtifactStore(settings.data_dir / "artifacts")
    alert_config = load_alert_config(settings.alerts_file)  # ConfigError naming a bad key
    alerts = AlertEngine(settings, store, alert_config, store.metrics) if mqtt else None
    identities = Identities.from_settings(settings, store)  # None without pki_dir
    vault = Vault.load(settings.data_dir)  # the kept inputs' keyring: ConfigError if unusable
    keeper = ctx.keeper = Keeper(settings, store, vault, store.metrics)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if owns_store:
            await asyncio.to_thread(ctx.store.open)
        if ctx.artifacts is not None:
            await asyncio.to_thread(ctx.artifacts.clean)  # uploads a crash cut short
        if identities is not None:
            await identities.write_crl()  # a fresh CRL: an expired one locks every device out
        try:
            if mqtt:
                ctx.ingestor = Ingestor(settings, ctx.store, ctx.metrics)
                if ctx.release_key is not None:
                    ctx.rollouts = RolloutController(
                        settings, ctx.store, ctx.release_key, ctx.ingestor.client
                    )
                    ctx.ingestor.on_deployment = ctx.rollouts.report
                commands = CommandRequester(
                    ctx.ingestor.client, ctx.store, instance=settings.client_id
                )
                ctx.ingestor.on_command_reply = commands.on_reply
                app.state.commands = commands  # POST /api/v1/devices/{id}/commands
                await ctx.ingestor.start()
                await commands.start()
                if ctx.rollouts is not None:
                    await ctx.rollouts.start()
                if alerts is not None:
                    await alerts.start()
                # retention, sealing, key retirement (docs/data.md)
                app.state.keeper_task = asyncio.create_task(keeper.run(), name="data-keeper")
            yield
        finally:
            keeper_task: asyncio.Task[None] | None = getattr(app.state, "keeper_task", None)
            if keeper_task is not None:
                keeper_task.cancel()
                await asyncio.gather(keeper_task, return_exceptions=True)
            await keeper.stop()
            requester: CommandRequester | None = getattr(app.state, "commands", None)
            if requester is not None:
                app.state.commands = None
                await requester.stop()
            if alerts is not None:
                await alerts.stop()
            if ctx.rollouts is not None:
                await ctx.rollouts.stop()  # before ingestion: it acknowledges reports over MQTT
            if ctx.ingestor is not None:
                await ctx.ingestor.stop()
            if owns_store:
                await asyncio.to_thread(ctx.store.close)

    app = Starlette(
        routes=[*ROUTES, *console_routes],  # the console's pages: docs/console.md
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
    install_auth(app, ctx)  # tokens, sessions, roles, CSRF, the audit log: docs/security.md
    app.state.alert_config = alert_config  # GET /api/v1/alerts/rules shows it
    app.state.identities = identities
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
