"""``GET /events``: live updates of a console page over server-sent events.

A page names its live regions in the query (``fleet=1``, ``devices=ID,ID``, ``device=ID``,
``rollouts=all``, ``rollout=ID``); the stream reads them from the store every :data:`POLL_S`
seconds, renders each with the same template partial the page was rendered with, and sends the
ones that changed since the last send as ``event: fragment`` with ``{"id": ELEMENT_ID, "html":
...}``; ``console.js`` swaps that element. The first read of a stream sends every region, so a
page that reconnects after a gap catches up at once.

A stream ends after :data:`STREAM_S` seconds (the browser's ``EventSource`` reconnects by itself
after the ``retry`` delay), when the client goes away, or when the store closes. A comment line
every :data:`HEARTBEAT_S` seconds keeps proxies from closing an idle stream. Bad parameters are
answered before the stream starts: 400 with JSON ``{"error": ...}``, as the API does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from controlplane.api import Context
from controlplane.console import params
from controlplane.console.device import read_status
from controlplane.console.devices import query_rows, row_fragments
from controlplane.console.fleet import counts_fragments, read_counts
from controlplane.console.rollouts import (
    DEVICE_STATES,
    detail_fragments,
    list_fragment,
    query_list,
    query_rollout,
)
from controlplane.errors import BadRequest, ControlPlaneError
from controlplane.rollouts.api import STATES

POLL_S = 2.0
STREAM_S = 300.0
HEARTBEAT_S = 15.0
RETRY_MS = 2000
MAX_DEVICES = 200


@dataclass(frozen=True)
class Views:
    fleet: bool = False
    devices: tuple[str, ...] = ()
    device: str | None = None
    rollouts: str | None = None  # "all" or a state
    rollout: str | None = None
    rollout_state: str | None = None
    rollout_page: int = 1


def parse_views(q: Mapping[str, str]) -> Views:
    params.known(q, {"fleet", "devices", "device", "rollouts", "rollout", "state", "page"})
    fleet = params.text(q, "fleet")
    if fleet is not None and fleet != "1":
        raise BadRequest("fleet", f"expected 1, got {fleet!r}")
    rollouts = params.text(q, "rollouts")
    if rollouts is not None:
        params.choice("rollouts", rollouts, ("all", *STATES), "all")
    rollout = params.text(q, "rollout")
    state = params.text(q, "state")
    if state is not None:
        if rollout is None:
            raise BadRequest("state", "only with rollout=ID (the rollout's device states)")
        params.choice("state", state, DEVICE_STATES, "pending")
    views = Views(
        fleet=fleet == "1",
        devices=tuple(params.id_list(params.text(q, "devices"), "devices", MAX_DEVICES)),
        device=params.device_id(params.text(q, "device")),
        rollouts=rollouts,
        rollout=None if rollout is None else params.rollout_id(rollout, "rollout"),
        rollout_state=state,
        rollout_page=params.page_number(params.text(q, "page")),
    )
    if views == Views(rollout_page=views.rollout_page):
        raise BadRequest(
            "fleet", "name at least one live region: fleet, devices, device, rollouts or rollout"
        )
    return views


async def fragments(ctx: Context, views: Views) -> dict[str, str]:
    """Every live region of ``views`` as it is now, by element id."""
    out: dict[str, str] = {}
    now, after = ctx.clock(), ctx.settings.offline_after_s
    if views.fleet:
        out.update(counts_fragments(await read_counts(ctx), now))
    if views.devices:
        rows = await ctx.store.read(query_rows, list(views.devices), now, after)
        out.update(row_fragments(rows))
    if views.device is not None:
        status = await read_status(ctx, views.device)
        if status is not None:
            out["device-status"] = status
    if views.rollouts is not None:
        state = None if views.rollouts == "all" else views.rollouts
        out["rollout-list"] = list_fragment(await ctx.store.read(query_list, state))
    if views.rollout is not None:
        try:
            rollout = await ctx.store.read(
                query_rollout, views.rollout, views.rollout_state, views.rollout_page
            )
        except ControlPlaneError:  # gone (NotFound) or the store closes: nothing to show
            pass
        else:
            out.update(detail_fragments(rollout))
    return out


def event(name: str, data: object) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def stream(
    ctx: Context, views: Views, *, poll_s: float = POLL_S, stream_s: float = STREAM_S
) -> AsyncIterator[str]:
    """The events of one stream (see the module docstring)."""
    yield f"retry: {RETRY_MS}\n\n"
    sent: dict[str, str] = {}
    started = beat = time.monotonic()
    while True:
        try:
            current = await fragments(ctx, views)
        except ControlPlaneError:
            return  # the store closed (shutting down): the browser reconnects later
        for element, html in current.items():
            if sent.get(element) != html:
                sent[element] = html
                yield event("fragment", {"id": element, "html": html})
        clock = time.monotonic()
        if clock - beat >= HEARTBEAT_S:
            beat = clock
            yield ": keepalive\n\n"
        if clock - started >= stream_s:
            return
        await asyncio.sleep(poll_s)


async def events(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    views = parse_views(request.query_params)
    return StreamingResponse(
        stream(ctx, views),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
