"""``POST /api/v1/devices/{id}/commands`` (run a command, answer its reply) and ``GET`` (the
device's recent commands); see docs/api.md.

Who sent a command is the ``X-Edgefleet-User`` header: with ``auth`` on (the default) the auth
middleware overwrites it with the authenticated user's name before the handler runs; only with
``auth`` off is it the name the caller gives (the CLI's ``--as``) or ``anonymous``. Parsing is
pure and answers a bad value with 400 naming it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from controlplane.api import (
    Context,
    check_known,
    not_found,
    parse_device_id,
    parse_limit,
    parse_since,
)
from controlplane.commands import records
from controlplane.commands.requester import (
    DEFAULT_TIMEOUT_S,
    MAX_TIMEOUT_S,
    CommandRequester,
    CommandsUnavailable,
    CommandTimeout,
)
from controlplane.errors import BadRequest
from protocol.commands import COMMANDS, MAX_SENDER, unknown_command

USER_HEADER = "X-Edgefleet-User"
ANONYMOUS = "anonymous"
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000


# -- parameters (pure) -----------------------------------------------------------------------------


def parse_sender(raw: str | None) -> str:
    """The ``X-Edgefleet-User`` header: who sends the command (``anonymous`` without it)."""
    if raw is None:
        return ANONYMOUS
    name = raw.strip()
    if not name or len(name) > MAX_SENDER or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise BadRequest(USER_HEADER, f"expected a name of 1 to {MAX_SENDER} printable characters")
    return name


def parse_body(body: Any) -> tuple[str, dict[str, Any], float]:
    """``{"command": ..., "args": {...}, "timeout_s": ...}`` -> (command, args, timeout_s)."""
    if not isinstance(body, dict):
        raise BadRequest("body", 'expected a JSON object like {"command": "diag"}')
    unknown = sorted(set(body) - {"command", "args", "timeout_s"})
    if unknown:
        raise BadRequest(unknown[0], "unknown field (the body takes: command, args, timeout_s)")
    command = body.get("command")
    if command is None:
        raise BadRequest("command", f"required: one of {', '.join(COMMANDS)}")
    if command not in COMMANDS:
        raise BadRequest("command", unknown_command(command))
    args = body.get("args") or {}
    if not isinstance(args, dict):
        raise BadRequest("args", "expected an object of the command's arguments")
    timeout = body.get("timeout_s", DEFAULT_TIMEOUT_S)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or not 0 < timeout <= MAX_TIMEOUT_S
    ):
        raise BadRequest("timeout_s", f"expected seconds, above 0 and at most {MAX_TIMEOUT_S:g}")
    return command, args, float(timeout)


# -- handlers --------------------------------------------------------------------------------------


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def _requester(request: Request) -> CommandRequester | None:
    requester: CommandRequester | None = getattr(request.app.state, "commands", None)
    return requester


async def run_command(request: Request) -> Response:
    ctx = _ctx(request)
    check_known(request.query_params.keys(), ())
    device_id = parse_device_id(request.path_params["id"], "id")
    sender = parse_sender(request.headers.get(USER_HEADER))
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body", 'expected JSON, e.g. {"command": "ping"}') from None
    command, args, timeout = parse_body(body)
    now, after = ctx.clock(), ctx.settings.offline_after_s
    device = await ctx.store.device(device_id, now=now, offline_after_s=after)
    if device is None:
        return not_found(f"unknown device {device_id!r}")
    requester = _requester(request)
    if requester is None:
        raise CommandsUnavailable("commands need MQTT: this control plane runs without it")
    try:
        record = await requester.run(device_id, command, args, sender=sender, timeout_s=timeout)
    except CommandTimeout as exc:
        message = str(exc)
        if device["state"] == "offline":
            message += f" (it is offline: last heard from at {device['last_seen']:.0f})"
        return JSONResponse({"error": message, "command": exc.record}, status_code=504)
    return JSONResponse(record)


async def list_commands(request: Request) -> Response:
    ctx, q = _ctx(request), request.query_params
    check_known(q.keys(), {"since", "limit"})
    device_id = parse_device_id(request.path_params["id"], "id")
    since = parse_since(q.get("since"))
    limit = parse_limit(q.get("limit"), MAX_LIMIT, DEFAULT_LIMIT)
    now, after = ctx.clock(), ctx.settings.offline_after_s
    if await ctx.store.device(device_id, now=now, offline_after_s=after) is None:
        return not_found(f"unknown device {device_id!r}")
    rows = await ctx.store.read(records.query_commands, device_id, since, limit)
    return JSONResponse({"device_id": device_id, "commands": rows, "count": len(rows)})


routes = [
    Route("/api/v1/devices/{id}/commands", run_command, methods=["POST"]),
    Route("/api/v1/devices/{id}/commands", list_commands, methods=["GET"]),
]
