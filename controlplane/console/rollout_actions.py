"""Starting and acting on rollouts from the console, each with a confirmation step.

The same code as the REST API does it: the start form becomes the body of ``POST
/api/v1/rollouts`` and goes through :func:`controlplane.rollouts.api.parse_start` (so both refuse
the same mistakes with the same message), then :func:`controlplane.rollouts.store.create_rollout`;
an action is :func:`controlplane.rollouts.store.act`; then the controller is woken.

Every action is two requests: the button is a link to a confirmation page (GET, changes nothing)
that says what will happen; its form POSTs with ``confirmed=yes``. A POST without it shows the
confirmation page again and changes nothing, so a replayed or mistaken submit cannot act. The
start form's confirmation shows the parsed rollout and how many devices each wave would take.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from controlplane.api import Context
from controlplane.console import params
from controlplane.console.forms import read_form
from controlplane.console.templating import page, render
from controlplane.errors import BadRequest, ControlPlaneError, Refused
from controlplane.registry.releases import query_models, query_releases
from controlplane.rollouts import planner
from controlplane.rollouts import store as rollouts
from controlplane.rollouts.api import parse_start, selector_text
from controlplane.rollouts.spec import DEFAULT_GATES, format_number
from controlplane.rollouts.store import ACTIONS, RolloutSpec
from controlplane.samples.api import evaluation_refusal

DEFAULTS = {
    "release": "", "select": "", "waves": "1%,10%,50%,100%", "bake": "10m", "gates": "",
    "min_sample": "50", "on_halt": "rollback", "device_timeout": "30m", "max_per_minute": "",
    "shadow_share": "", "shadow_samples": "", "require_eval": "",
}  # fmt: skip
CONSEQUENCES = {
    "pause": "No more devices are sent the release and no wave advances until it is resumed. "
    "Devices already deploying finish.",
    "resume": "Devices are sent the release again and the waves go on. A halted rollout's "
    "current wave counts as passed (the halt is overridden) and the next wave starts.",
    "abort": "The rollout stops for good. Devices stay on whatever release they run now.",
    "rollback": "Every device that was sent the release is sent its previous release back.",
}


def _wake(ctx: Context) -> None:
    if ctx.rollouts is not None:
        ctx.rollouts.wake()


# -- the start form --------------------------------------------------------------------------------


def spec_body(form: Mapping[str, str]) -> dict[str, Any]:
    """The start form's fields -> the JSON body of ``POST /api/v1/rollouts`` (pure)."""
    release = params.release(form.get("release") or None)
    if release is None:
        raise BadRequest("release", "choose the release to roll out")
    body: dict[str, Any] = {"model": release.model, "version": release.version}
    select = [s.strip() for s in (form.get("select") or "").split(",") if s.strip()]
    if select:
        body["select"] = select
    for name in ("waves", "bake", "on_halt", "device_timeout"):
        if form.get(name):
            body[name] = form[name].strip()
    gates = [g.strip() for g in (form.get("gates") or "").splitlines() if g.strip()]
    if gates:
        body["gates"] = gates
    for name in ("min_sample", "max_per_minute"):
        raw = (form.get(name) or "").strip()
        if raw:
            if not raw.isdigit():
                raise BadRequest(name, f"expected a whole number, got {raw!r}")
            body[name] = int(raw)
    share, samples = (form.get("shadow_share") or "").strip(), (form.get("shadow_samples") or "")
    if share or samples.strip():
        shadow: dict[str, Any] = {}
        try:
            if share:
                shadow["share"] = float(share[:-1]) / 100 if share.endswith("%") else float(share)
            if samples.strip():
                shadow["samples"] = int(samples)
        except ValueError:
            raise BadRequest(
                "shadow", "expected a share like 20% and a number of samples"
            ) from None
        body["shadow"] = shadow
    if form.get("require_eval") == "yes":
        body["require_eval"] = True
    return body


def _releases(conn: sqlite3.Connection) -> list[str]:
    return [
        f"{s.name}:{s.version}" for m in query_models(conn) for s in query_releases(conn, m["name"])
    ]


def _preview(conn: sqlite3.Connection, spec: RolloutSpec) -> list[int]:
    """How many devices each wave would take now (the rollout id only changes which ones)."""
    members = planner.initial_members("preview", rollouts.fleet(conn), spec.selector, spec.waves)
    sizes = [0] * len(spec.waves)
    for m in members:
        sizes[m.wave] += 1
    return sizes


def _summary(spec: RolloutSpec) -> list[tuple[str, str]]:
    shadow = spec.shadow
    return [
        ("release", f"{spec.model} {spec.version}"),
        ("devices", selector_text(spec.selector)),
        ("waves", ", ".join(f"{format_number(round(w * 100, 4))} %" for w in spec.waves)),
        ("bake time per wave", f"{format_number(spec.bake_s)} s"),
        ("gates", ", ".join(str(g) for g in spec.gates)),
        ("minimum sample", str(spec.min_sample)),
        ("on a broken gate", spec.on_halt),
        ("device timeout", f"{format_number(spec.device_timeout_s)} s"),
        ("at most per minute", str(spec.max_per_minute or "no limit")),
        ("shadow", "off" if not shadow else f"{shadow['share']:.0%} of traffic, "
                                            f"{shadow['samples']} samples"),
    ]  # fmt: skip


async def _form(
    request: Request, values: Mapping[str, str], error: str | None = None, status: int = 200
) -> Response:
    ctx: Context = request.app.state.ctx
    releases = await ctx.store.read(_releases)
    return render(
        request, "rollout_new.html",
        {"values": {**DEFAULTS, **values}, "releases": releases, "error": error,
         "default_gates": ", ".join(str(g) for g in DEFAULT_GATES)},
        status=status, active="rollouts",
    )  # fmt: skip


@page
async def new_rollout(request: Request) -> Response:
    """``GET /rollouts/new``: the start form (``?release=MODEL:VERSION`` preselects one)."""
    q = request.query_params
    params.known(q, {"release"})
    release = params.release(params.text(q, "release"))
    return await _form(request, {"release": str(release) if release else ""})


@page
async def start_rollout(request: Request) -> Response:
    """``POST /rollouts/new``: without ``confirmed=yes`` the confirmation page, with it the
    rollout is created (as ``POST /api/v1/rollouts``) and the browser goes to it."""
    ctx: Context = request.app.state.ctx
    params.known(request.query_params, ())
    form = await read_form(request)
    values = {k: v for k, v in form.items() if k in DEFAULTS}
    if form.get("edit") == "yes":  # "Change it" on the confirmation page
        return await _form(request, values)
    try:
        body = spec_body(form)
        spec = parse_start(body)
    except BadRequest as exc:
        return await _form(request, values, str(exc), 400)
    if form.get("confirmed") != "yes":
        sizes = await ctx.store.read(_preview, spec)
        return render(
            request, "rollout_confirm.html",
            {"values": values, "summary": _summary(spec), "sizes": sizes,
             "require_eval": body.get("require_eval", False)},
            active="rollouts",
        )  # fmt: skip
    try:
        if body.get("require_eval"):
            refusal = await evaluation_refusal(ctx, spec.model, spec.version)
            if refusal is not None:
                return await _form(request, values, refusal["error"], 409)
        created = await ctx.store.transact(rollouts.create_rollout, spec, ctx.clock())
    except (BadRequest, Refused) as exc:
        status = 400 if isinstance(exc, BadRequest) else exc.status
        return await _form(request, values, str(exc), status)
    _wake(ctx)
    return RedirectResponse(f"/rollouts/{created['id']}", status_code=303)


# -- actions ---------------------------------------------------------------------------------------


def _action(request: Request) -> tuple[str, str]:
    rollout_id = params.rollout_id(request.path_params["id"])
    action = request.path_params["action"]
    if action not in ACTIONS:
        raise BadRequest("action", f"expected one of {', '.join(ACTIONS)}, got {action!r}")
    return rollout_id, action


async def _confirm(
    request: Request, rollout_id: str, action: str, error: str | None = None, status: int = 200
) -> Response:
    ctx: Context = request.app.state.ctx
    rollout = await ctx.store.read(rollouts.get_rollout, rollout_id)
    allowed = rollout["state"] in ACTIONS[action][0]
    return render(
        request, "action_confirm.html",
        {"r": rollout, "action": action, "consequence": CONSEQUENCES[action],
         "allowed": allowed, "error": error},
        status=status if allowed or error else 409, active="rollouts",
    )  # fmt: skip


@page
async def confirm_action(request: Request) -> Response:
    """``GET /rollouts/{id}/{action}``: what the action will do, and the button that does it."""
    params.known(request.query_params, ())
    rollout_id, action = _action(request)
    return await _confirm(request, rollout_id, action)


@page
async def do_action(request: Request) -> Response:
    """``POST /rollouts/{id}/{action}`` with ``confirmed=yes``: as ``POST
    /api/v1/rollouts/{id}/{action}``; then back to the rollout (303)."""
    ctx: Context = request.app.state.ctx
    params.known(request.query_params, ())
    rollout_id, action = _action(request)
    form = await read_form(request)
    if form.get("confirmed") != "yes":
        return await _confirm(request, rollout_id, action)
    try:
        await ctx.store.transact(rollouts.act, rollout_id, action, ctx.clock())
    except ControlPlaneError as exc:
        if isinstance(exc, Refused) and exc.status == 409:
            return await _confirm(request, rollout_id, action, str(exc), 409)
        raise
    _wake(ctx)
    return RedirectResponse(f"/rollouts/{rollout_id}", status_code=303)
