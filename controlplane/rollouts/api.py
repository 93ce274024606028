"""The rollouts' REST routes (docs/rollouts.md): start, list, show, act on rollouts; device tags.

The body of ``POST /api/v1/rollouts`` mirrors the CLI's flags and goes through the same parsers
(:mod:`controlplane.rollouts.spec`), so both refuse the same mistakes with the same message: a
400 naming the field. Every action answers the rollout as it now is, or 409 when its state does
not allow the action; the controller is woken so the change takes effect at once.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from controlplane.api import Context, check_known, not_found, parse_device_id
from controlplane.errors import BadRequest
from controlplane.rollouts import store as queries
from controlplane.rollouts import views
from controlplane.rollouts.spec import (
    DEFAULT_GATES,
    parse_duration,
    parse_gate,
    parse_selector,
    parse_waves,
)
from controlplane.rollouts.store import RolloutSpec
from controlplane.rollouts.tags import TAG_PATTERN, set_tags
from controlplane.samples.api import evaluation_refusal

FIELDS = (
    "model", "version", "select", "waves", "bake", "gates", "min_sample", "on_halt",
    "device_timeout", "max_per_minute", "shadow", "require_eval",
)  # fmt: skip
STATES = ("running", "paused", "halted", "rolling_back", "rolled_back", "completed", "aborted")
ACTIONS = ("pause", "resume", "abort", "rollback")
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
TAG = re.compile(TAG_PATTERN)


# -- the request (pure) ----------------------------------------------------------------------------


def parse_start(body: Any) -> RolloutSpec:
    """A ``POST /rollouts`` body -> :class:`RolloutSpec`, or BadRequest naming the field."""
    if not isinstance(body, dict):
        raise BadRequest("body", "expected a JSON object with model and version")
    for key in body:
        if key not in FIELDS:
            raise BadRequest(key, f"unknown field (a rollout takes: {', '.join(FIELDS)})")
    model, version = body.get("model"), body.get("version")
    if not isinstance(model, str) or not NAME.fullmatch(model):
        raise BadRequest("model", "expected a model name (1 to 64 of A-Z a-z 0-9 _ . -)")
    if not isinstance(version, str) or not version:
        raise BadRequest("version", "expected the release's version, a string")
    try:
        spec = RolloutSpec(
            model=model,
            version=version,
            selector=_selector(body.get("select")),
            waves=_field("waves", _waves, body.get("waves", "1%,10%,50%,100%")),
            bake_s=_field("bake", _duration, body.get("bake", "10m")),
            gates=_field("gates", _gates, body.get("gates")),
            min_sample=_count("min_sample", body.get("min_sample", 50), minimum=0),
            on_halt=_choice("on_halt", body.get("on_halt", "rollback"), ("pause", "rollback")),
            device_timeout_s=_field("device_timeout", _duration, body.get("device_timeout", "30m")),
            max_per_minute=_optional_count("max_per_minute", body.get("max_per_minute")),
            shadow=_shadow(body.get("shadow")),
        )
    except BadRequest:
        raise
    if spec.device_timeout_s <= 0:
        raise BadRequest("device_timeout", "must be longer than 0")
    return spec


def _field(name: str, parse: Any, value: Any) -> Any:
    try:
        return parse(value)
    except (ValueError, TypeError) as exc:
        raise BadRequest(name, str(exc)) from None


def _selector(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        items = [f"{k}={v}" for k, v in value.items()]
        if not all(isinstance(v, str) for v in value.values()):
            raise BadRequest("select", "expected {tag: value} with string values")
    elif isinstance(value, list) and all(isinstance(i, str) for i in value):
        items = value
    else:
        raise BadRequest("select", "expected {tag: value} or a list of tag=value")
    return dict(_field("select", parse_selector, items))


def _waves(value: Any) -> list[float]:
    if isinstance(value, list):
        if not value or not all(isinstance(v, int | float | str) for v in value):
            raise ValueError(f"waves {value!r}: expected a list of shares or percentages")
        value = ",".join(v if isinstance(v, str) else repr(float(v)) for v in value)
    if not isinstance(value, str):
        raise ValueError("expected a list or a text like 1%,10%,50%,100%")
    return parse_waves(value)


def _duration(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"expected seconds >= 0, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("expected seconds or a duration like 10m")
    return parse_duration(value)


def _gates(value: Any) -> list[Any]:
    if value is None or value == []:
        return list(DEFAULT_GATES)
    if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
        raise ValueError('expected a list like ["error_rate<0.02"]')
    gates = [parse_gate(g) for g in value]
    if not any(g.metric == "failure_rate" for g in gates):  # else a wave of failures waits forever
        gates.insert(0, next(g for g in DEFAULT_GATES if g.metric == "failure_rate"))
    return gates


def _count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadRequest(name, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _optional_count(name: str, value: Any) -> int | None:
    return None if value is None else _count(name, value, minimum=1)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise BadRequest(name, f"expected one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _shadow(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"share", "samples"}:
        raise BadRequest("shadow", 'expected {"share": 0..1, "samples": N} or null')
    share, samples = value.get("share", 0.2), value.get("samples", 100)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        raise BadRequest("shadow.share", f"expected a share in (0, 1], got {share!r}")
    return {"share": float(share), "samples": _count("shadow.samples", samples, minimum=1)}


def _require_eval(body: dict[str, Any]) -> bool:
    value = body.get("require_eval", False)
    if not isinstance(value, bool):
        raise BadRequest("require_eval", f"expected true or false, got {value!r}")
    return value


def parse_tags(body: Any) -> tuple[dict[str, str], list[str]]:
    """A ``PATCH /devices/{id}/tags`` body ``{"set": {k: v}, "remove": [k]}``."""
    if not isinstance(body, dict) or set(body) - {"set", "remove"} or not body:
        raise BadRequest("body", 'expected {"set": {tag: value}, "remove": [tag]}')
    set_, remove = body.get("set") or {}, body.get("remove") or []
    if not isinstance(set_, dict):
        raise BadRequest("set", "expected an object {tag: value}")
    if not isinstance(remove, list):
        raise BadRequest("remove", "expected a list of tags")
    for key, value in set_.items():
        for what, text in (("tag", key), ("value", value)):
            if not isinstance(text, str) or not TAG.fullmatch(text):
                raise BadRequest(f"set.{key}", f"{what} {text!r}: use 1 to 64 of A-Z a-z 0-9 _ . -")
    for key in remove:
        if not isinstance(key, str) or not TAG.fullmatch(key):
            raise BadRequest("remove", f"tag {key!r}: use 1 to 64 of A-Z a-z 0-9 _ . -")
    return dict(set_), list(remove)


# -- handlers --------------------------------------------------------------------------------------


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except ValueError:
        raise BadRequest("body", "not JSON") from None


def _wake(ctx: Context) -> None:
    if ctx.rollouts is not None:
        ctx.rollouts.wake()


async def start_rollout(request: Request) -> Response:
    ctx = _ctx(request)
    check_known(request.query_params.keys(), ())
    body = await _json(request)
    spec = parse_start(body)
    if _require_eval(body):  # the data loop's gate before the swap (docs/data.md)
        refusal = await evaluation_refusal(ctx, spec.model, spec.version)
        if refusal is not None:
            return JSONResponse(refusal, status_code=409)
    rollout = await ctx.store.transact(queries.create_rollout, spec, ctx.clock())
    _wake(ctx)
    return JSONResponse(rollout, status_code=201)


async def list_rollouts(request: Request) -> Response:
    ctx, q = _ctx(request), request.query_params
    check_known(q.keys(), {"state"})
    state = q.get("state")
    if state is not None and state not in STATES:
        raise BadRequest("state", f"expected one of {', '.join(STATES)}, got {state!r}")
    rollouts = await ctx.store.read(views.query_rollouts, state)
    return JSONResponse({"rollouts": rollouts, "count": len(rollouts)})


async def get_rollout(request: Request) -> Response:
    ctx = _ctx(request)
    check_known(request.query_params.keys(), ())
    rollout = await ctx.store.read(views.rollout_detail, request.path_params["id"])
    return JSONResponse(rollout)


async def rollout_action(request: Request) -> Response:
    ctx = _ctx(request)
    check_known(request.query_params.keys(), ())
    action = request.path_params["action"]
    if action not in ACTIONS:
        return not_found(f"no action {action!r} (actions: {', '.join(ACTIONS)})")
    rollout = await ctx.store.transact(queries.act, request.path_params["id"], action, ctx.clock())
    _wake(ctx)
    return JSONResponse(rollout)


async def patch_tags(request: Request) -> Response:
    ctx = _ctx(request)
    check_known(request.query_params.keys(), ())
    device_id = parse_device_id(request.path_params["id"], "id")
    set_, remove = parse_tags(await _json(request))
    device = await ctx.store.transact(set_tags, device_id, set_, remove)
    if device is None:
        return not_found(f"unknown device {device_id!r}")
    _wake(ctx)
    return JSONResponse(device)


routes = [
    Route("/api/v1/rollouts", start_rollout, methods=["POST"]),
    Route("/api/v1/rollouts", list_rollouts, methods=["GET"]),
    Route("/api/v1/rollouts/{id}", get_rollout, methods=["GET"]),
    Route("/api/v1/rollouts/{id}/{action}", rollout_action, methods=["POST"]),
    Route("/api/v1/devices/{id}/tags", patch_tags, methods=["PATCH"]),
]


def selector_text(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "all devices"
