"""The Devices page: one row per device with filter, sort, search and server-side paging.

Filters and sorting run in SQL over ``devices`` (10,000 rows: the JSON columns are read with
``json_extract``; the measured page time is in docs/benchmarks.md). The offload rate of a
device is its share of offloaded or deferred results among the fleet's latest
:data:`OFFLOAD_WINDOW` results, a bounded read of the ``results`` table: for the rows of a page
it comes from the ``device_id`` index; sorting by it reads the whole window once.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from controlplane.api import Context
from controlplane.console import params
from controlplane.console.health import HEALTH, HEALTH_SQL
from controlplane.console.inventory import backend_counts, release_counts
from controlplane.console.templating import page, render, render_fragment
from controlplane.errors import BadRequest
from controlplane.store import effective_tags

OFFLOAD_WINDOW = 50_000
PER_PAGE = ("25", "50", "100", "200")
SORTS: dict[str, str] = {
    "id": "d.id",
    "health": "(CASE h WHEN 'offline' THEN 0 WHEN 'degraded' THEN 1 ELSE 2 END)",
    "release": "json_extract(d.models, '$[0].version')",
    "backend": "d.backend",
    "p95": "p95",
    "offload": "offload_rate",
    "outbox": "outbox",
    "last_seen": "d.last_seen",
}
PARAMETERS = {"q", "health", "release", "backend", "tag", "sort", "dir", "page", "per"}
ESCAPE = str.maketrans({"\\": "\\\\", "%": "\\%", "_": "\\_"})

_OFFLOAD = (
    "SELECT device_id, count(*) FILTER (WHERE offload_decision IN ('offloaded', 'deferred'))"
    " AS away, count(offload_decision) AS decided FROM results {hint} WHERE id > :since_id"
)
_COLUMNS = (
    "d.id, d.state, d.last_seen, d.models, d.tags, d.tag_overrides, d.backend, "
    "d.fallback_reason, d.agent_version, d.accelerators, "
    f"{HEALTH_SQL} AS h, json_extract(d.telemetry, '$.latency.p95_ms') AS p95, "
    "json_extract(d.telemetry, '$.outbox_depth') AS outbox"
)


@dataclass(frozen=True)
class Filters:
    q: str | None = None
    health: str | None = None
    release: params.ReleaseRef | None = None
    backend: str | None = None
    tag: tuple[str, str] | None = None

    def sql(self, now: float, offline_after_s: float) -> tuple[str, dict[str, Any]]:
        """``WHERE ...`` (or "") and its named parameters."""
        where: list[str] = []
        bind: dict[str, Any] = {"cutoff": now - offline_after_s}
        if self.q:
            bind["q"] = f"%{self.q.translate(ESCAPE)}%"
            where.append(
                "(d.id LIKE :q ESCAPE '\\' OR d.tags LIKE :q ESCAPE '\\'"
                " OR d.tag_overrides LIKE :q ESCAPE '\\')"
            )
        if self.health:
            where.append(f"{HEALTH_SQL} = :health")
            bind["health"] = self.health
        if self.release:
            where.append(
                "EXISTS (SELECT 1 FROM json_each(d.models) m WHERE json_extract(m.value, '$.name')"
                " = :model AND json_extract(m.value, '$.version') = :version)"
            )
            bind.update(model=self.release.model, version=self.release.version)
        if self.backend:
            where.append("d.backend = :backend")
            bind["backend"] = self.backend
        if self.tag:
            bind.update(tag_path=f'$."{self.tag[0]}"', tag_value=self.tag[1])
            where.append(
                "(CASE WHEN json_type(d.tag_overrides, :tag_path) IS NOT NULL"
                " THEN json_extract(d.tag_overrides, :tag_path)"
                " ELSE json_extract(d.tags, :tag_path) END) = :tag_value"
            )
        return (" WHERE " + " AND ".join(where)) if where else "", bind


@dataclass(frozen=True)
class Listing:
    filters: Filters
    sort: str = "id"
    descending: bool = False
    page: int = 1
    per_page: int = 50


@dataclass
class DevicePage:
    rows: list[dict[str, Any]]
    total: int  # devices matching the filters
    fleet: int  # devices known
    releases: list[str]
    backends: list[str]


def parse_listing(q: Any) -> Listing:
    params.known(q, PARAMETERS)
    backend = params.text(q, "backend")
    if backend is not None and not params.NAME.fullmatch(backend):
        raise BadRequest("backend", f"expected a backend name like litert, got {backend!r}")
    filters = Filters(
        q=params.search(params.text(q, "q")),
        health=_health(params.text(q, "health")),
        release=params.release(params.text(q, "release")),
        backend=backend,
        tag=params.tag(params.text(q, "tag")),
    )
    return Listing(
        filters,
        sort=params.choice("sort", params.text(q, "sort"), SORTS, "id"),
        descending=params.choice("dir", params.text(q, "dir"), ("asc", "desc"), "asc") == "desc",
        page=params.page_number(params.text(q, "page")),
        per_page=int(params.choice("per", params.text(q, "per"), PER_PAGE, "50")),
    )


def _health(raw: str | None) -> str | None:
    return None if raw is None else params.choice("health", raw, HEALTH, "online")


def _row(r: sqlite3.Row, offload: dict[str, float | None]) -> dict[str, Any]:
    models = json.loads(r["models"] or "[]")
    return {
        "id": r["id"], "health": r["h"], "last_seen": r["last_seen"],
        "tags": effective_tags(
            json.loads(r["tags"] or "{}"), json.loads(r["tag_overrides"] or "{}")
        ),
        "releases": [f"{m.get('name')} {m.get('version')}" for m in models],
        "backend": r["backend"], "fallback_reason": r["fallback_reason"],
        "p95": r["p95"], "outbox": r["outbox"], "offload_rate": offload.get(r["id"]),
    }  # fmt: skip


def _since_id(conn: sqlite3.Connection) -> int:
    (top,) = conn.execute("SELECT max(id) FROM results").fetchone()
    return max(0, (top or 0) - OFFLOAD_WINDOW)


def _offload_of(conn: sqlite3.Connection, ids: list[str], since_id: int) -> dict[str, float | None]:
    if not ids:
        return {}
    marks = ",".join(f":d{i}" for i in range(len(ids)))
    bind: dict[str, Any] = {f"d{i}": v for i, v in enumerate(ids)}
    rows = conn.execute(
        f"{_OFFLOAD.format(hint='')} AND device_id IN ({marks}) GROUP BY device_id",
        {**bind, "since_id": since_id},
    )
    return {r[0]: (r[1] / r[2] if r[2] else None) for r in rows}


def query_page(
    conn: sqlite3.Connection, listing: Listing, now: float, offline_after_s: float
) -> DevicePage:
    where, bind = listing.filters.sql(now, offline_after_s)
    since_id = _since_id(conn)
    direction = "DESC" if listing.descending else "ASC"
    key = SORTS[listing.sort]
    order = f"{key} IS NULL, {key} {direction}, d.id {direction}"
    bind.update(limit=listing.per_page, offset=(listing.page - 1) * listing.per_page)
    if listing.sort == "offload":  # rank by the whole window
        sql = (
            # the whole window by rowid: the device_id index would visit every result ever
            f"WITH o AS ({_OFFLOAD.format(hint='NOT INDEXED')} GROUP BY device_id)"
            f" SELECT {_COLUMNS}, "
            "CAST(o.away AS REAL) / nullif(o.decided, 0) AS offload_rate "
            f"FROM devices d LEFT JOIN o ON o.device_id = d.id{where} "
            f"ORDER BY {order} LIMIT :limit OFFSET :offset"
        )
        found = conn.execute(sql, {**bind, "since_id": since_id}).fetchall()
        offload = {r["id"]: r["offload_rate"] for r in found}
    else:
        sql = (
            f"SELECT {_COLUMNS} FROM devices d{where} ORDER BY {order} LIMIT :limit OFFSET :offset"
        )
        found = conn.execute(sql, bind).fetchall()
        offload = _offload_of(conn, [r["id"] for r in found], since_id)
    (total,) = conn.execute(f"SELECT count(*) FROM devices d{where}", bind).fetchone()
    (fleet,) = conn.execute("SELECT count(*) FROM devices").fetchone()
    releases = sorted(f"{m}:{v}" for m, v in release_counts(conn))
    backends = sorted(backend_counts(conn))
    return DevicePage([_row(r, offload) for r in found], total, fleet, releases, backends)


def query_rows(
    conn: sqlite3.Connection, ids: list[str], now: float, offline_after_s: float
) -> list[dict[str, Any]]:
    """The rows of these devices (the live updates of a page's rows), in the order given."""
    if not ids:
        return []
    marks = ",".join(f":d{i}" for i in range(len(ids)))
    bind: dict[str, Any] = {f"d{i}": v for i, v in enumerate(ids)}
    found = conn.execute(
        f"SELECT {_COLUMNS} FROM devices d WHERE d.id IN ({marks})",
        {**bind, "cutoff": now - offline_after_s},
    ).fetchall()
    offload = _offload_of(conn, [r["id"] for r in found], _since_id(conn))
    rows = {r["id"]: _row(r, offload) for r in found}
    return [rows[i] for i in ids if i in rows]


def row_fragments(rows: list[dict[str, Any]]) -> dict[str, str]:
    return {f"device-{r['id']}": render_fragment("_device_row.html", d=r) for r in rows}


@page
async def devices_page(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    listing = parse_listing(request.query_params)
    result: DevicePage = await ctx.store.read(
        query_page, listing, ctx.clock(), ctx.settings.offline_after_s
    )
    pages = max(1, -(-result.total // listing.per_page))
    return render(
        request, "devices.html",
        {"listing": listing, "result": result, "pages": pages, "sorts": list(SORTS),
         "healths": HEALTH, "query": dict(request.query_params), "per_page": PER_PAGE,
         "offload_window": OFFLOAD_WINDOW},
        active="devices",
    )  # fmt: skip
