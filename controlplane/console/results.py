"""The Results page: browse and filter inference results, give feedback on them, and see each
release's accuracy over time from that feedback and from edge-cloud agreement.

Paging is by keyset on the results' ``id``, newest first. Filters that an index serves (device,
model) read only matching rows; the others (version, label, confidence, offloaded) scan, and a
page scans at most :data:`SCAN_ROWS` rows: when that window holds no more matches the page says
which results it searched and links to the next older window, so a page of a million results
costs the same as one of a thousand.

Feedback goes through the data loop's own code (:func:`controlplane.samples.api.parse_feedback`,
:func:`controlplane.samples.queries.put_feedback`), as ``PUT /api/v1/results/.../feedback`` does.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from controlplane.agreement import with_cloud
from controlplane.api import Context
from controlplane.console import params
from controlplane.console.forms import local_path, read_form
from controlplane.console.inventory import release_counts
from controlplane.console.scan import id_buckets
from controlplane.console.series import MAX_POINTS, Chart, Series, ratio
from controlplane.console.templating import page, render
from controlplane.errors import BadRequest
from controlplane.samples.api import parse_feedback, parse_result_id
from controlplane.samples.queries import attach, put_feedback
from controlplane.store import decode_cursor, encode_cursor

SCAN_ROWS = 200_000
PAGE_SIZE = 50
LOW_CONFIDENCE = 0.6  # the agent's default `low_confidence` (docs/data.md): a hard case below it
MAX_VERSIONS = 4  # versions charted (the most recent ones)
PARAMETERS = {
    "device", "model", "version", "label", "min_confidence", "max_confidence", "offloaded",
    "cursor", "range",
}  # fmt: skip
_COLUMNS = (
    "id, device_id, result_id, created_at, received_at, model, model_version, backend, "
    "latency_ms, top_label, top_score, offload_decision, offload_reason, cloud_label, "
    "cloud_score, agree, cloud_body"
)


@dataclass(frozen=True)
class ResultFilters:
    device_id: str | None = None
    model: str | None = None
    version: str | None = None
    label: str | None = None
    min_confidence: float | None = None
    max_confidence: float | None = None
    offloaded: bool | None = None
    hard: bool = False  # offloaded, deferred or under LOW_CONFIDENCE (the device page)

    @property
    def scans(self) -> bool:
        """Whether a filter is applied row by row (no index serves it)."""
        return bool(
            self.version or self.label or self.hard or self.offloaded is not None
            or self.min_confidence is not None or self.max_confidence is not None
        )  # fmt: skip

    def sql(self) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        bind: list[Any] = []
        for column, op, value in (
            ("device_id", "=", self.device_id), ("model", "=", self.model),
            ("model_version", "=", self.version), ("top_label", "=", self.label),
            ("top_score", ">=", self.min_confidence), ("top_score", "<=", self.max_confidence),
        ):  # fmt: skip
            if value is not None:
                where.append(f"{column} {op} ?")
                bind.append(value)
        away = "offload_decision IN ('offloaded', 'deferred')"
        if self.offloaded is True:
            where.append(away)
        elif self.offloaded is False:
            where.append(f"NOT coalesce({away}, 0)")
        if self.hard:
            where.append(f"({away} OR top_score < ?)")
            bind.append(LOW_CONFIDENCE)
        return where, bind


@dataclass
class ResultsPage:
    results: list[dict[str, Any]]
    next_cursor: str | None
    searched: tuple[int, int] | None  # (lowest, highest) id scanned when the window ran out
    stored: int  # results stored, about (the highest id)


def _result(r: sqlite3.Row) -> dict[str, Any]:
    out = {k: r[k] for k in r.keys() if k != "cloud_body"}  # noqa: SIM118
    return with_cloud(out, r["cloud_body"], r["agree"])


def query_results(
    conn: sqlite3.Connection, f: ResultFilters, before: int | None, limit: int = PAGE_SIZE,
    scan_rows: int = SCAN_ROWS,
) -> ResultsPage:  # fmt: skip
    """A page of results newest first, with id below ``before`` (the cursor); filters without
    an index look at ``scan_rows`` ids at most."""
    (top,) = conn.execute("SELECT max(id) FROM results").fetchone()
    stored = int(top or 0)
    ceiling = (stored + 1) if before is None else before
    where, bind = f.sql()
    where.insert(0, "id < ?")
    bind.insert(0, ceiling)
    floor = None
    if f.scans:
        floor = max(0, ceiling - scan_rows)
        where.append("id >= ?")
        bind.append(floor)
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM results WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
        [*bind, limit + 1],
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    results = attach(conn, [_result(r) for r in rows])
    searched = None
    if more:
        next_cursor: str | None = encode_cursor(rows[-1]["id"], "desc")
    elif floor is not None and floor > 0:  # the window ran out: older results remain
        next_cursor = encode_cursor(floor, "desc")
        searched = (floor, ceiling - 1)
    else:
        next_cursor = None
    return ResultsPage(results, next_cursor, searched, stored)


# -- accuracy per release --------------------------------------------------------------------------


@dataclass
class Accuracy:
    model: str | None
    versions: list[dict[str, Any]] = field(default_factory=list)
    chart: Chart | None = None


def query_accuracy(
    conn: sqlite3.Connection, model: str | None, span: float, now: float
) -> Accuracy:
    """Per version of ``model`` (default: the model of the newest result), over the results
    received in the last ``span`` seconds: feedback accuracy (the operator's label equals the
    device's answer) and edge-cloud agreement, in total and over time.

    Exact at any size: agreement is counted on its covering partial index (``results_agreement``)
    and feedback from the feedback table (operators label thousands, not millions), both grouped
    by slices of result ids (:func:`controlplane.console.scan.id_buckets`).
    """
    if model is None:
        row = conn.execute("SELECT model FROM results ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return Accuracy(None)
        model = str(row[0])
    versions: dict[str, dict[str, Any]] = {}

    def version(v: str) -> dict[str, Any]:
        return versions.setdefault(
            v, {"version": v, "judged": 0, "correct": 0, "compared": 0, "agreed": 0}
        )

    for (name, v), _ in release_counts(conn).items():  # what devices run, with no figures yet
        if name == model:
            version(v)
    buckets = id_buckets(conn, "results", now - span, MAX_POINTS)
    feedback: dict[str, dict[int, float | None]] = {}
    agreement: dict[str, dict[int, float | None]] = {}
    if buckets is not None:
        where = [model, buckets.lo]
        for v, b, judged, correct in conn.execute(
            "SELECT r.model_version, (r.id - ?) / ?, count(*), sum(f.label = r.top_label)"
            " FROM feedback f CROSS JOIN results r"  # feedback first: it is the small side
            " ON r.device_id = f.device_id AND r.result_id = f.result_id"
            " WHERE r.model = ? AND r.id >= ? GROUP BY 1, 2",
            [buckets.lo, buckets.step, *where],
        ):
            item = version(v)
            item["judged"] += judged
            item["correct"] += correct or 0
            feedback.setdefault(v, {})[b] = (correct or 0) / judged * 100
        for v, b, compared, agreed in conn.execute(
            # the planner prefers the model index with the rowid range, which reads every row
            # of the model; the partial index holds only compared rows and covers the query
            "SELECT model_version, (id - ?) / ?, count(*), sum(agree)"
            " FROM results INDEXED BY results_agreement"
            " WHERE model = ? AND agree IS NOT NULL AND id >= ? GROUP BY 1, 2",
            [buckets.lo, buckets.step, *where],
        ):
            item = version(v)
            item["compared"] += compared
            item["agreed"] += agreed or 0
            agreement.setdefault(v, {})[b] = (agreed or 0) / compared * 100
    for item in versions.values():
        item["accuracy"] = ratio(item["correct"], item["judged"])
        item["agreement"] = ratio(item["agreed"], item["compared"])
    ordered = sorted(versions.values(), key=lambda i: i["version"])
    chart = None
    charted = sorted(set(feedback) | set(agreement))[-MAX_VERSIONS:]
    if buckets is not None and charted:
        count = len(buckets.xs)
        series = []
        for v in charted:
            if v in feedback:
                series.append(
                    Series(f"{v} accuracy", "%", [feedback[v].get(i) for i in range(count)])
                )
            if v in agreement:
                series.append(
                    Series(
                        f"{v} agrees with cloud", "%", [agreement[v].get(i) for i in range(count)]
                    )
                )
        chart = Chart("accuracy", f"Accuracy of {model} per release", buckets.xs, series)
    return Accuracy(model, ordered, chart)


# -- the page and the feedback form ----------------------------------------------------------------


def parse_filters(q: Any) -> ResultFilters:
    low = params.share("min_confidence", params.text(q, "min_confidence"))
    high = params.share("max_confidence", params.text(q, "max_confidence"))
    if low is not None and high is not None and low > high:
        raise BadRequest("min_confidence", f"{low} is above max_confidence {high}")
    return ResultFilters(
        device_id=params.device_id(params.text(q, "device")),
        model=params.model_name(params.text(q, "model")),
        version=params.version(params.text(q, "version")),
        label=params.label(params.text(q, "label")),
        min_confidence=low,
        max_confidence=high,
        offloaded=params.yes_no("offloaded", params.text(q, "offloaded")),
    )


@page
async def results_page(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    q = request.query_params
    params.known(q, PARAMETERS)
    filters = parse_filters(q)
    cursor = params.text(q, "cursor")
    before = decode_cursor(cursor, "desc") if cursor is not None else None
    range_name, span = params.time_range(params.text(q, "range"), "7d")
    found = await ctx.store.read(query_results, filters, before)
    accuracy = await ctx.store.read(query_accuracy, filters.model, span, ctx.clock())
    query = {k: v for k, v in q.items() if k != "cursor"}
    return render(
        request, "results.html",
        {"filters": filters, "page": found, "accuracy": accuracy, "query": query,
         "range": range_name, "ranges": list(params.RANGES), "here": str(request.url.path)
         + (f"?{request.url.query}" if request.url.query else "")},
        active="results",
    )  # fmt: skip


@page
async def give_feedback(request: Request) -> Response:
    """``POST /results/feedback``: ``device_id``, ``result_id`` and ``correct=yes`` or a
    ``label``; then back to ``next`` (303)."""
    ctx: Context = request.app.state.ctx
    params.known(request.query_params, ())
    form = await read_form(request)
    device_id = params.device_id(form.get("device_id") or "", "device_id") or ""
    result_id = parse_result_id(form.get("result_id") or "")
    body: dict[str, Any] = {}
    if form.get("correct") == "yes":
        body["correct"] = True
    if form.get("label"):
        body = {"label": form["label"]}
    if not body:
        raise BadRequest("label", "mark the result correct or give the right label")
    label, correct = parse_feedback(body)
    await ctx.store.transact(put_feedback, device_id, result_id, label, correct, ctx.clock())
    target = local_path(form.get("next"), f"/results?device={device_id}")
    return RedirectResponse(target, status_code=303)
