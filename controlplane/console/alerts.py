"""The Alerts page (open and recent alerts, fleet-wide, with their runbook sections) and the
alerts and diagnostics of the device page.

Alerts are read with the alerts' own queries (:func:`controlplane.alerts.queries.list_alerts`,
keyset-paged like results) and their parameters parsed by the alerts API's parsers, so the page
and ``GET /api/v1/alerts`` refuse the same mistakes. Diagnostics run through the same
:class:`~controlplane.commands.requester.CommandRequester` as ``POST
/api/v1/devices/{id}/commands``: the button posts, the command is sent to the device over MQTT
and its answer (or its timeout) is recorded in the store, and the device page shows the recorded
commands with their answers.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from controlplane.alerts import queries as alert_queries
from controlplane.alerts.api import parse_rule, parse_state
from controlplane.alerts.queries import AlertQuery
from controlplane.alerts.rules import RULES
from controlplane.alerts.webhook import runbook_url
from controlplane.api import Context, parse_device_id
from controlplane.commands import records as command_records
from controlplane.commands.api import USER_HEADER, parse_sender
from controlplane.commands.requester import CommandRequester, CommandsUnavailable, CommandTimeout
from controlplane.console import params
from controlplane.console.forms import read_form
from controlplane.console.templating import page, render
from controlplane.errors import BadRequest, NotFound
from controlplane.store import decode_cursor

PAGE_SIZE = 50
DEVICE_ALERTS = 10
DEVICE_COMMANDS = 5
DIAGNOSTICS = ("ping", "diag", "logs")
"""The read-only commands the device page offers (the others change the device: CLI or API)."""
TIMEOUT_S = 10.0
CONSOLE_SENDER = "console"


def runbook_link(base: str, rule: str) -> str | None:
    """The rule's runbook section as a link the browser can follow, or None when
    ``alert_runbook_url`` is a path in the repository (the default, ``docs/operations.md``)
    rather than a URL where the runbook is published."""
    if base.startswith(("http://", "https://", "/")):
        return runbook_url(base, rule)
    return None


def with_runbooks(alerts: list[dict[str, Any]], base: str) -> list[dict[str, Any]]:
    return [
        {**a, "runbook_url": runbook_url(base, a["rule"]),
         "runbook_link": runbook_link(base, a["rule"])}
        for a in alerts
    ]  # fmt: skip


def query_device_extras(conn: sqlite3.Connection, device_id: str) -> dict[str, Any]:
    """The device's latest alerts (open or not) and its latest diagnostics commands."""
    alerts = alert_queries.list_alerts(
        conn, AlertQuery(state="all", device_id=device_id, limit=DEVICE_ALERTS)
    )
    commands = command_records.query_commands(conn, device_id, None, DEVICE_COMMANDS)
    return {"alerts": alerts.alerts, "commands": commands}


@page
async def alerts_page(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    q = request.query_params
    params.known(q, {"state", "device", "rule", "cursor"})
    cursor = params.text(q, "cursor")
    query = AlertQuery(
        state=parse_state(params.text(q, "state")),
        device_id=params.device_id(params.text(q, "device")),
        rule=parse_rule(params.text(q, "rule")),
        limit=PAGE_SIZE,
        cursor=decode_cursor(cursor, "desc") if cursor is not None else None,
    )
    found = await ctx.store.read(alert_queries.list_alerts, query)
    base = ctx.settings.alert_runbook_url
    return render(
        request, "alerts.html",
        {"alerts": with_runbooks(found.alerts, base), "total": found.total,
         "next_cursor": found.next_cursor, "query": {k: v for k, v in q.items() if k != "cursor"},
         "state": query.state, "rule": query.rule, "device": query.device_id,
         "rules": RULES, "runbook_base": base},
        active="alerts",
    )  # fmt: skip


@page
async def run_diagnostic(request: Request) -> Response:
    """``POST /devices/{id}/diagnostics`` with ``command`` (ping, diag or logs): run it as
    ``POST /api/v1/devices/{id}/commands`` does, then back to the device page, which shows the
    recorded answer (303). A device that does not answer in time is recorded as timed out."""
    ctx: Context = request.app.state.ctx
    params.known(request.query_params, ())
    device_id = parse_device_id(request.path_params["id"], "id")
    form = await read_form(request)
    command = form.get("command", "")
    if command not in DIAGNOSTICS:
        raise BadRequest("command", f"expected one of {', '.join(DIAGNOSTICS)}, got {command!r}")
    header = request.headers.get(USER_HEADER)  # the operator's name once auth is on
    sender = parse_sender(header) if header is not None else CONSOLE_SENDER
    device = await ctx.store.device(
        device_id, now=ctx.clock(), offline_after_s=ctx.settings.offline_after_s
    )
    if device is None:
        raise NotFound(f"no device {device_id!r} has ever reported to this control plane")
    requester: CommandRequester | None = getattr(request.app.state, "commands", None)
    if requester is None:
        raise CommandsUnavailable("diagnostics need MQTT: this control plane runs without it")
    try:
        await requester.run(device_id, command, {}, sender=sender, timeout_s=TIMEOUT_S)
    except CommandTimeout:
        pass  # recorded as timed out: the page shows it
    return RedirectResponse(f"/devices/{device_id}#diagnostics", status_code=303)
