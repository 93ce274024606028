"""The Fleet page: devices by health, release, accelerator and backend; fleet-wide inference
rate, latency p95, offload rate and error rate over time; the devices that need attention first.

The counts are aggregate queries over ``devices`` (10,000 rows is a few milliseconds); the charts
read telemetry and results through :mod:`controlplane.console.scan`, bounded whatever the range.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from controlplane.api import Context
from controlplane.console import params
from controlplane.console.health import HEALTH, HEALTH_SQL, SEVERITY_SQL, health, reasons
from controlplane.console.inventory import accelerator_counts, backend_counts, release_counts
from controlplane.console.scan import Window, window
from controlplane.console.series import Chart, Series, Timeline, fill, ratio, timeline
from controlplane.console.templating import page, render, render_fragment
from controlplane.store import query_device

ATTENTION_LIMIT = 12


@dataclass
class Counts:
    """The fleet page's live region (also pushed by the SSE stream)."""

    total: int = 0
    health: dict[str, int] = field(default_factory=dict)
    releases: list[tuple[str, str, int]] = field(default_factory=list)
    accelerators: list[tuple[str, int]] = field(default_factory=list)
    backends: list[tuple[str, int]] = field(default_factory=list)
    attention: list[tuple[dict[str, Any], str, list[str]]] = field(default_factory=list)
    attention_total: int = 0


def query_counts(conn: sqlite3.Connection, now: float, offline_after_s: float) -> Counts:
    """One pass over ``devices`` for health and attention, then the inventory's counts."""
    by_health: dict[str, int] = dict.fromkeys(HEALTH, 0)
    ranked: list[tuple[int, float, str]] = []
    for device_id, last_seen, state, severity in conn.execute(
        f"SELECT d.id, d.last_seen, {HEALTH_SQL}, {SEVERITY_SQL} FROM devices d",
        {"cutoff": now - offline_after_s},
    ):
        by_health[state] += 1
        if severity:
            ranked.append((severity, last_seen, device_id))
    ranked.sort(reverse=True)
    attention: list[tuple[dict[str, Any], str, list[str]]] = []
    for _, _, device_id in ranked[:ATTENTION_LIMIT]:
        device = query_device(conn, device_id, now, offline_after_s)
        if device is not None:
            attention.append((device, health(device), reasons(device)))
    releases = sorted(
        ((m, v, n) for (m, v), n in release_counts(conn).items()), key=lambda r: (r[0], -r[2])
    )
    return Counts(
        total=sum(by_health.values()), health=by_health, releases=releases,
        accelerators=sorted(accelerator_counts(conn).items(), key=lambda p: -p[1]),
        backends=sorted(backend_counts(conn).items(), key=lambda p: -p[1]),
        attention=attention, attention_total=len(ranked),
    )  # fmt: skip


# -- charts ----------------------------------------------------------------------------------------


def _bucketed(
    conn: sqlite3.Connection, win: Window, line: Timeline, column: str, aggregates: str,
    condition: str = "",
) -> list[tuple[Any, ...]]:  # fmt: skip
    """``SELECT bucket, {aggregates}`` over the window's rows whose ``column`` is in the
    timeline, grouped by bucket."""
    with_clause, source, source_params = win.source()
    where = [f"t.{column} >= ?", f"t.{column} < ?"]
    where_params: list[Any] = [line.start, line.end]
    if not win.sampled:
        clause, extra = win.where()
        where.append(clause)
        where_params += extra
    if condition:
        where.append(condition)
    sql = (
        f"{with_clause}SELECT CAST((t.{column} - ?) / ? AS INTEGER) AS b, {aggregates} "
        f"FROM {source} WHERE {' AND '.join(where)} GROUP BY b"
    )
    return conn.execute(sql, [*source_params, line.start, line.step, *where_params]).fetchall()


def fleet_charts(conn: sqlite3.Connection, now: float, span: float) -> tuple[list[Chart], bool]:
    """The four fleet charts over the last ``span`` seconds; and whether any was estimated from
    a sample."""
    line = timeline(now, span, min_step=10)
    rate: dict[int, float | None] = {}
    p95: dict[int, float | None] = {}
    errors: dict[int, float | None] = {}
    offload: dict[int, float | None] = {}
    sampled = False
    tel = window(conn, "telemetry", line.start - 60)
    if tel is not None:
        sampled |= tel.sampled
        for b, inferences, failed, weighted, timed in _bucketed(
            conn, tel, line, "ts",
            "sum(t.inferences), sum(t.errors), sum(t.p95_ms * t.inferences),"
            " sum(CASE WHEN t.p95_ms IS NOT NULL THEN t.inferences END)",
        ):  # fmt: skip
            rate[b] = (inferences or 0) * tel.step / line.step
            p95[b] = ratio(weighted, timed)
            share = ratio(failed, inferences)
            errors[b] = None if share is None else share * 100
    res = window(conn, "results", line.start - 60)
    if res is not None:
        sampled |= res.sampled
        for b, away, decided in _bucketed(
            conn, res, line, "created_at",
            "count(*) FILTER (WHERE t.offload_decision IN ('offloaded', 'deferred')),"
            " count(t.offload_decision)",
        ):  # fmt: skip
            share = ratio(away, decided)
            offload[b] = None if share is None else share * 100
    charts = [
        Chart("rate", "Inference rate", line.xs(), [Series("inferences", "/s", fill(line, rate))]),
        Chart("p95", "Latency p95", line.xs(), [Series("p95", "ms", fill(line, p95))],
              note="inference-weighted mean of the devices' p95"),
        Chart("offload", "Offload rate", line.xs(), [Series("offloaded", "%", fill(line, offload))],
              note="share of results with an offload policy sent to the cloud tier",
              empty_text="No result in this range went through an offload policy: give the "
              "agents' models an offload section to send hard cases to the cloud tier."),
        Chart("errors", "Error rate", line.xs(), [Series("errors", "%", fill(line, errors))]),
    ]  # fmt: skip
    return charts, sampled


# -- the page --------------------------------------------------------------------------------------


async def read_counts(ctx: Context) -> Counts:
    counts: Counts = await ctx.store.read(query_counts, ctx.clock(), ctx.settings.offline_after_s)
    return counts


def counts_fragments(counts: Counts, now: float) -> dict[str, str]:
    """The live regions of the page, by element id."""
    return {
        "fleet-counts": render_fragment("_fleet_counts.html", counts=counts),
        "fleet-attention": render_fragment("_fleet_attention.html", counts=counts, now=now),
    }


@page
async def fleet_page(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    q = request.query_params
    params.known(q, {"range"})
    range_name, span = params.time_range(params.text(q, "range"))
    counts = await read_counts(ctx)
    charts, sampled = await ctx.store.read(fleet_charts, ctx.clock(), span)
    return render(
        request, "fleet.html",
        {"counts": counts, "charts": charts, "sampled": sampled, "range": range_name,
         "ranges": list(params.RANGES)},
        active="fleet",
    )  # fmt: skip
