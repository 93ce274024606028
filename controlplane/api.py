"""The JSON API (see docs/api.md): devices, telemetry, results with keyset paging, health, metrics.

Handlers validate every query parameter (unknown ones too: a typo must not silently widen a
query) and answer a bad one with 400 and ``{"error": "..."}`` naming it. The parsing is a set of
pure functions; the handlers only read :class:`Context` from ``request.app.state``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from controlplane import fleet_metrics
from controlplane.agreement import query_agreement
from controlplane.errors import BadRequest, StoreClosed
from controlplane.metrics import CONTENT_TYPE, Metrics
from controlplane.settings import Settings
from controlplane.store import Order, ResultQuery, State, Store, decode_cursor
from protocol.errors import InvalidDeviceId
from protocol.topics import validate_device_id

if TYPE_CHECKING:
    from controlplane.ingest import Ingestor
    from controlplane.registry.artifacts import ArtifactStore
    from controlplane.registry.keys import ReleaseKey
    from controlplane.rollouts.controller import RolloutController
    from controlplane.samples.keeper import Keeper

DEFAULT_LIMIT = 100


@dataclass
class Context:
    """What the handlers serve from; one per app, at ``app.state.ctx``."""

    settings: Settings
    store: Store
    metrics: Metrics
    ingestor: Ingestor | None = None  # None: an API-only app (no MQTT)
    release_key: ReleaseKey | None = None  # None: no registry (its routes answer 503)
    artifacts: ArtifactStore | None = None
    rollouts: RolloutController | None = None  # None: no MQTT, so no rollouts are driven here
    keeper: Keeper | None = None  # kept inputs: sealed files, retention, deletion, keys
    clock: Callable[[], float] = field(default=time.time)


# -- parameters (pure) -----------------------------------------------------------------------------


def check_known(params: Collection[str], allowed: Collection[str]) -> None:
    for name in params:
        if name not in allowed:
            expected = ", ".join(sorted(allowed)) or "none"
            raise BadRequest(name, f"unknown parameter (this endpoint takes: {expected})")


def parse_limit(raw: str | None, maximum: int, default: int = DEFAULT_LIMIT) -> int:
    """A positive integer, capped at ``maximum``."""
    if raw is None:
        return min(default, maximum)
    if not raw.isdigit() or int(raw) < 1:
        raise BadRequest("limit", f"expected a positive integer, got {raw!r}")
    return min(int(raw), maximum)


def parse_since(raw: str | None) -> float | None:
    """Unix seconds, or an ISO 8601 time (UTC when it has no offset)."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            raise BadRequest(
                "since", f"expected Unix seconds or an ISO 8601 time, got {raw!r}"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    if not math.isfinite(value):
        raise BadRequest("since", f"expected a finite number of seconds, got {raw!r}")
    return value


def parse_device_id(raw: str, parameter: str = "device_id") -> str:
    try:
        return validate_device_id(raw)
    except InvalidDeviceId as exc:
        raise BadRequest(parameter, str(exc)) from None


def parse_state(raw: str | None) -> State | None:
    if raw is None:
        return None
    if raw == "online":
        return "online"
    if raw == "offline":
        return "offline"
    raise BadRequest("state", f"expected online or offline, got {raw!r}")


def parse_order(raw: str | None) -> Order:
    if raw is None or raw == "desc":
        return "desc"
    if raw == "asc":
        return "asc"
    raise BadRequest("order", f"expected desc (newest first) or asc, got {raw!r}")


def not_found(what: str) -> JSONResponse:
    return JSONResponse({"error": what}, status_code=404)


# -- handlers --------------------------------------------------------------------------------------


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


async def list_devices(request: Request) -> Response:
    ctx, q = _ctx(request), request.query_params
    check_known(q.keys(), {"state"})
    devices = await ctx.store.devices(
        state=parse_state(q.get("state")),
        now=ctx.clock(),
        offline_after_s=ctx.settings.offline_after_s,
    )
    return JSONResponse({"devices": devices, "count": len(devices)})


async def get_device(request: Request) -> Response:
    ctx = _ctx(request)
    check_known(request.query_params.keys(), ())
    device_id = parse_device_id(request.path_params["id"], "id")
    device = await ctx.store.device(
        device_id, now=ctx.clock(), offline_after_s=ctx.settings.offline_after_s
    )
    return JSONResponse(device) if device else not_found(f"unknown device {device_id!r}")


async def device_telemetry(request: Request) -> Response:
    ctx, q = _ctx(request), request.query_params
    check_known(q.keys(), {"since", "limit"})
    device_id = parse_device_id(request.path_params["id"], "id")
    since = parse_since(q.get("since"))
    limit = parse_limit(q.get("limit"), ctx.settings.results_page_max)
    now, after = ctx.clock(), ctx.settings.offline_after_s
    if await ctx.store.device(device_id, now=now, offline_after_s=after) is None:
        return not_found(f"unknown device {device_id!r}")
    samples = await ctx.store.telemetry(device_id, since=since, limit=limit)
    return JSONResponse({"device_id": device_id, "telemetry": samples, "count": len(samples)})


async def list_results(request: Request) -> Response:
    ctx, q = _ctx(request), request.query_params
    check_known(q.keys(), {"device_id", "model", "since", "limit", "cursor", "order"})
    device_id = q.get("device_id")
    model = q.get("model")
    if model == "":
        raise BadRequest("model", "expected a model name, got an empty string")
    order = parse_order(q.get("order"))
    cursor = q.get("cursor")
    query = ResultQuery(
        device_id=parse_device_id(device_id) if device_id is not None else None,
        model=model,
        since=parse_since(q.get("since")),
        limit=parse_limit(q.get("limit"), ctx.settings.results_page_max),
        cursor=decode_cursor(cursor, order) if cursor is not None else None,
        order=order,
    )
    page = await ctx.store.results(query)
    return JSONResponse(
        {
            "results": page.results,
            "count": len(page.results),
            "total": page.total,
            "limit": query.limit,
            "next_cursor": page.next_cursor,
        }
    )


async def results_agreement(request: Request) -> Response:
    """Per version of ``model``: offloads, cloud answers and how often edge and cloud agree."""
    ctx, q = _ctx(request), request.query_params
    check_known(q.keys(), {"model", "since"})
    model = q.get("model")
    if not model:
        raise BadRequest("model", "required: the model name, e.g. ?model=digits-edge")
    versions = await ctx.store.read(query_agreement, model, parse_since(q.get("since")))
    return JSONResponse({"model": model, "versions": versions})


def _health(ctx: Context) -> tuple[bool, dict[str, Any]]:
    store = "open" if ctx.store.is_open else "closed"
    if ctx.ingestor is None:
        mqtt = "disabled"
    else:
        mqtt = "connected" if ctx.ingestor.connected else "disconnected"
    ok = store == "open" and mqtt != "disconnected"
    return ok, {"status": "ok" if ok else "unavailable", "store": store, "mqtt": mqtt}


async def healthz(request: Request) -> Response:
    ok, body = _health(_ctx(request))
    return JSONResponse(body, status_code=200 if ok else 503)


async def metrics(request: Request) -> Response:
    ctx = _ctx(request)
    m = ctx.metrics
    m.store_queue_depth.set(ctx.store.queue_depth if ctx.store.is_open else 0)
    m.mqtt_connected.set(1 if ctx.ingestor is not None and ctx.ingestor.connected else 0)
    try:
        snap = await ctx.store.read(
            fleet_metrics.snapshot, ctx.clock(), ctx.settings.offline_after_s
        )
    except StoreClosed:
        pass  # the fleet gauges keep their last values
    else:
        fleet_metrics.apply(m, snap)
    return Response(m.render(), media_type=CONTENT_TYPE)


routes = [
    Route("/api/v1/devices", list_devices, methods=["GET"]),
    Route("/api/v1/devices/{id}", get_device, methods=["GET"]),
    Route("/api/v1/devices/{id}/telemetry", device_telemetry, methods=["GET"]),
    Route("/api/v1/results", list_results, methods=["GET"]),
    Route("/api/v1/results/agreement", results_agreement, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
