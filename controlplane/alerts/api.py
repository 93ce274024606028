"""The alerts' REST routes (docs/api.md): the alerts, paged like results; one alert with its
notifications; a device's alerts; the effective rules.

Parameters are checked like every other list's (an unknown one, a bad state or rule is 400 naming
it). The rules come from ``app.state.alert_config`` (:func:`controlplane.app.create_app` loads the
alerts file); an app without one shows the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from controlplane.alerts import queries
from controlplane.alerts.config import AlertConfig
from controlplane.alerts.queries import AlertQuery, StateFilter
from controlplane.alerts.rules import RULES
from controlplane.alerts.webhook import runbook_url
from controlplane.api import Context, check_known, not_found, parse_device_id, parse_limit
from controlplane.errors import BadRequest
from controlplane.store import decode_cursor

STATES: tuple[StateFilter, ...] = ("open", "resolved", "all")


# -- parameters (pure) -----------------------------------------------------------------------------


def parse_state(raw: str | None) -> StateFilter:
    for state in STATES:
        if raw == state:
            return state
    if raw is None:
        return "open"
    raise BadRequest("state", f"expected open (firing), resolved or all, got {raw!r}")


def parse_rule(raw: str | None) -> str | None:
    if raw is not None and raw not in RULES:
        raise BadRequest("rule", f"unknown rule {raw!r}; rules: {', '.join(RULES)}")
    return raw


def parse_query(q: Mapping[str, str], page_max: int, device_id: str | None = None) -> AlertQuery:
    """The query of ``GET /alerts`` (or of a device's alerts, ``device_id`` from the path)."""
    device = q.get("device")
    cursor = q.get("cursor")
    return AlertQuery(
        state=parse_state(q.get("state")),
        device_id=device_id if device is None else parse_device_id(device, "device"),
        rule=parse_rule(q.get("rule")),
        limit=parse_limit(q.get("limit"), page_max),
        cursor=decode_cursor(cursor, "desc") if cursor is not None else None,
    )


# -- handlers --------------------------------------------------------------------------------------


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def _config(request: Request) -> AlertConfig:
    config = getattr(request.app.state, "alert_config", None)
    return config if isinstance(config, AlertConfig) else AlertConfig()


async def _page(ctx: Context, query: AlertQuery, base: str) -> Response:
    page = await ctx.store.read(queries.list_alerts, query)
    for alert in page.alerts:
        alert["runbook_url"] = runbook_url(base, alert["rule"])
    return JSONResponse(
        {
            "alerts": page.alerts,
            "count": len(page.alerts),
            "total": page.total,
            "limit": query.limit,
            "next_cursor": page.next_cursor,
        }  # fmt: skip
    )


async def list_alerts(request: Request) -> Response:
    ctx, q = _ctx(request), request.query_params
    check_known(q.keys(), {"state", "device", "rule", "limit", "cursor"})
    query = parse_query(q, ctx.settings.results_page_max)
    return await _page(ctx, query, ctx.settings.alert_runbook_url)


async def device_alerts(request: Request) -> Response:
    ctx, q = _ctx(request), request.query_params
    check_known(q.keys(), {"state", "rule", "limit", "cursor"})
    device_id = parse_device_id(request.path_params["id"], "id")
    now, after = ctx.clock(), ctx.settings.offline_after_s
    if await ctx.store.device(device_id, now=now, offline_after_s=after) is None:
        return not_found(f"unknown device {device_id!r}")
    query = parse_query(q, ctx.settings.results_page_max, device_id)
    return await _page(ctx, query, ctx.settings.alert_runbook_url)


async def get_alert(request: Request) -> Response:
    ctx = _ctx(request)
    check_known(request.query_params.keys(), ())
    raw = request.path_params["id"]
    if not raw.isdigit():
        raise BadRequest("id", f"expected an alert id (an integer), got {raw!r}")
    alert_id = int(raw)
    alert = await ctx.store.read(queries.get_alert, alert_id)
    if alert is None:
        return not_found(f"no alert {alert_id} (edgefleet alerts list --state all)")
    alert["runbook_url"] = runbook_url(ctx.settings.alert_runbook_url, alert["rule"])
    alert["notifications"] = await ctx.store.read(queries.notifications, alert_id)
    return JSONResponse(alert)


async def alert_rules(request: Request) -> Response:
    """Every rule with its defaults and the alerts file's overrides; with ``?device=ID``, the
    parameters that device gets (its tags matched against the overrides' selections)."""
    ctx, q = _ctx(request), request.query_params
    check_known(q.keys(), {"device"})
    config = _config(request)
    body = config.describe()
    raw = q.get("device")
    if raw is not None:
        device_id = parse_device_id(raw, "device")
        now, after = ctx.clock(), ctx.settings.offline_after_s
        device = await ctx.store.device(device_id, now=now, offline_after_s=after)
        if device is None:
            return not_found(f"unknown device {device_id!r}")
        effective = config.effective(device["tags"])
        body["device"] = {"id": device_id, "tags": device["tags"]}
        body["rules"] = [
            {"rule": s.name, "summary": s.summary, "unit": s.unit, **effective[s.name].as_dict()}
            for s in RULES.values()
        ]
    for rule in body["rules"]:
        rule["runbook_url"] = runbook_url(ctx.settings.alert_runbook_url, rule["rule"])
    body["interval_s"] = ctx.settings.alerts_interval_s
    return JSONResponse(body)


routes = [
    Route("/api/v1/alerts", list_alerts, methods=["GET"]),
    Route("/api/v1/alerts/rules", alert_rules, methods=["GET"]),
    Route("/api/v1/alerts/{id}", get_alert, methods=["GET"]),
    Route("/api/v1/devices/{id}/alerts", device_alerts, methods=["GET"]),
]
