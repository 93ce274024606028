"""The Device page: its status, telemetry charts over a chosen range, deployment history, recent
results (with the kept input image), hard cases, and what its accelerator fallback did.

A device's telemetry is read through the ``(device_id, ts)`` index and grouped into at most
``MAX_POINTS`` buckets in SQL. The fallback history is the list of moments its backend, fallback
reason, demoted backends or backend restarts changed, from its telemetry in the range
(:func:`fallback_events`, pure).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from controlplane.api import Context, parse_device_id
from controlplane.console import params
from controlplane.console.alerts import DIAGNOSTICS, query_device_extras, with_runbooks
from controlplane.console.health import health, reasons
from controlplane.console.results import ResultFilters, query_results
from controlplane.console.series import Chart, Series, fill, points, timeline
from controlplane.console.templating import page, render, render_fragment
from controlplane.errors import NotFound
from controlplane.store import query_device

RECENT = 20
HISTORY_ROWS = 20_000  # telemetry rows read for the fallback history, newest

_SERIES = """
SELECT CAST((ts - ?) / ? AS INTEGER) AS b,
       sum(inferences) * 1.0 / nullif(sum(json_extract(body, '$.interval_s')), 0),
       sum(p50_ms * inferences) / sum(CASE WHEN p50_ms IS NOT NULL THEN inferences END),
       sum(p95_ms * inferences) / sum(CASE WHEN p95_ms IS NOT NULL THEN inferences END),
       sum(p99_ms * inferences) / sum(CASE WHEN p99_ms IS NOT NULL THEN inferences END),
       sum(errors) * 100.0 / nullif(sum(inferences), 0),
       max(outbox_depth),
       avg(json_extract(body, '$.cpu_percent')),
       avg(json_extract(body, '$.memory_rss_bytes')) / 1048576.0,
       max(json_extract(body, '$.temperature_c'))
FROM telemetry WHERE device_id = ? AND ts >= ? AND ts < ? GROUP BY b
"""


def device_charts(conn: sqlite3.Connection, device_id: str, now: float, span: float) -> list[Chart]:
    line = timeline(now, span, min_step=10)
    rows = conn.execute(
        _SERIES, [line.start, line.step, device_id, line.start, line.end]
    ).fetchall()

    xs = line.xs()

    def s(label: str, unit: str, column: int) -> Series:
        return Series(label, unit, fill(line, points(rows, column)))

    return [
        Chart("rate", "Inference rate", xs, [s("inferences", "/s", 1)]),
        Chart("latency", "Latency", xs,
              [s("p50", "ms", 2), s("p95", "ms", 3), s("p99", "ms", 4)]),
        Chart("errors", "Error rate", xs, [s("errors", "%", 5)]),
        Chart("outbox", "Outbox depth", xs, [s("waiting", "results", 6)]),
        Chart("cpu", "CPU", xs, [s("cpu", "%", 7)]),
        Chart("memory", "Memory (RSS)", xs, [s("rss", "MiB", 8)]),
        Chart("temperature", "Temperature", xs, [s("SoC", "\u00b0C", 9)]),
    ]  # fmt: skip


@dataclass(frozen=True)
class FallbackState:
    backend: str | None
    fallback_reason: str | None
    demoted: tuple[str, ...]
    restarts: int | None


def fallback_events(samples: Iterable[tuple[float, FallbackState]]) -> list[dict[str, Any]]:
    """The moments the accelerator fallback changed, oldest first: the first sample, then every
    sample whose backend, fallback reason or demoted backends differ from the one before, or
    whose backend restart count grew (a restart of the accelerator's worker process)."""
    out: list[dict[str, Any]] = []
    before: FallbackState | None = None
    for at, state in samples:
        what: list[str] = []
        if before is None:
            what.append("first report in range")
        else:
            if state.backend != before.backend:
                what.append(f"backend {before.backend or '-'} -> {state.backend or '-'}")
            if state.fallback_reason != before.fallback_reason:
                what.append(
                    "fallback reason changed" if state.fallback_reason else "fallback ended"
                )
            if state.demoted != before.demoted:
                what.append("demoted: " + (", ".join(state.demoted) or "none"))
            grown = (state.restarts or 0) - (before.restarts or 0)
            if state.restarts is not None and grown > 0:
                what.append(f"{grown} backend restart{'s' if grown > 1 else ''}")
        if what:
            out.append({"at": at, "state": state, "what": "; ".join(what)})
        before = state
    return out


def query_fallback(conn: sqlite3.Connection, device_id: str, since: float) -> list[dict[str, Any]]:
    rows = conn.execute(
        """SELECT ts, json_extract(body, '$.backend'), json_extract(body, '$.fallback_reason'),
                  json_extract(body, '$.demoted_backends'),
                  json_extract(body, '$.backend_restarts_total')
           FROM (SELECT ts, body FROM telemetry WHERE device_id = ? AND ts >= ?
                 ORDER BY ts DESC LIMIT ?) ORDER BY ts""",
        [device_id, since, HISTORY_ROWS],
    ).fetchall()
    samples = [
        (ts, FallbackState(backend, reason, tuple(json.loads(demoted or "[]")), restarts))
        for ts, backend, reason, demoted, restarts in rows
    ]
    return fallback_events(samples)


def query_deployments(conn: sqlite3.Connection, device_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        """SELECT d.rollout_id, r.model, r.version, r.state AS rollout_state, d.wave, d.state,
                  d.target, d.attempts, d.detail, d.dispatched_at, d.activated_at, d.updated_at,
                  d.previous_version
           FROM deployments d JOIN rollouts r ON r.id = d.rollout_id
           WHERE d.device_id = ? ORDER BY r.created_at DESC LIMIT 50""",
        [device_id],
    )
    return [{k: r[k] for k in r.keys()} for r in rows]  # noqa: SIM118


@dataclass
class DeviceView:
    device: dict[str, Any]
    health: str
    reasons: list[str]
    charts: list[Chart]
    deployments: list[dict[str, Any]]
    recent: list[dict[str, Any]]
    hard: list[dict[str, Any]]
    fallback: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    commands: list[dict[str, Any]]


def query_view(
    conn: sqlite3.Connection, device_id: str, now: float, offline_after_s: float, span: float
) -> DeviceView | None:
    device = query_device(conn, device_id, now, offline_after_s)
    if device is None:
        return None
    return DeviceView(
        device, health(device), reasons(device),
        device_charts(conn, device_id, now, span),
        query_deployments(conn, device_id),
        query_results(conn, ResultFilters(device_id=device_id), None, RECENT).results,
        query_results(conn, ResultFilters(device_id=device_id, hard=True), None, RECENT).results,
        query_fallback(conn, device_id, now - span),
        **query_device_extras(conn, device_id),
    )  # fmt: skip


def status_fragment(device: dict[str, Any]) -> str:
    return render_fragment(
        "_device_status.html", device=device, health=health(device), reasons=reasons(device)
    )


async def read_status(ctx: Context, device_id: str) -> str | None:
    device = await ctx.store.device(
        device_id, now=ctx.clock(), offline_after_s=ctx.settings.offline_after_s
    )
    return None if device is None else status_fragment(device)


@page
async def device_page(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    q = request.query_params
    params.known(q, {"range"})
    device_id = parse_device_id(request.path_params["id"], "id")
    range_name, span = params.time_range(params.text(q, "range"))
    view = await ctx.store.read(
        query_view, device_id, ctx.clock(), ctx.settings.offline_after_s, span
    )
    if view is None:
        raise NotFound(f"no device {device_id!r} has ever reported to this control plane")
    view.alerts = with_runbooks(view.alerts, ctx.settings.alert_runbook_url)
    return render(
        request, "device.html",
        {"view": view, "d": view.device, "device": view.device, "health": view.health,
         "reasons": view.reasons, "range": range_name, "ranges": list(params.RANGES),
         "here": f"/devices/{device_id}", "diagnostics": DIAGNOSTICS},
        active="devices",
    )  # fmt: skip
