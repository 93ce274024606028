"""``GET /api/v1/audit``: the audit log, newest first, keyset-paged, filtered (admin only; see
docs/api.md). ``edgefleet audit export`` pages through it oldest first as JSON lines."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from controlplane.api import Context, check_known, parse_limit, parse_order, parse_since
from controlplane.audit.log import AuditQuery, query_audit
from controlplane.errors import BadRequest
from controlplane.store import decode_cursor

PARAMETERS = {"since", "until", "actor", "method", "route", "outcome", "limit", "cursor", "order"}


def parse_query(params: dict[str, str], maximum: int) -> AuditQuery:
    """The query string -> :class:`AuditQuery`, or BadRequest naming the parameter."""
    check_known(params.keys(), PARAMETERS)
    order = parse_order(params.get("order"))
    until = None
    if params.get("until") is not None:
        try:
            until = parse_since(params["until"])
        except BadRequest as exc:
            raise BadRequest("until", str(exc).removeprefix("since: ")) from None
    outcome = params.get("outcome")
    if outcome is not None and not (outcome.isdigit() and len(outcome) == 3):
        raise BadRequest("outcome", f"expected an HTTP status such as 403, got {outcome!r}")
    method = params.get("method")
    cursor = params.get("cursor")
    return AuditQuery(
        since=parse_since(params.get("since")),
        until=until,
        actor=params.get("actor") or None,
        method=method.upper() if method else None,
        route=params.get("route") or None,
        outcome=int(outcome) if outcome is not None else None,
        limit=parse_limit(params.get("limit"), maximum),
        cursor=decode_cursor(cursor, order) if cursor is not None else None,
        order=order,
    )


async def list_audit(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    query = parse_query(dict(request.query_params), ctx.settings.results_page_max)
    return JSONResponse(await ctx.store.read(query_audit, query))


routes = [Route("/api/v1/audit", list_audit, methods=["GET"])]
