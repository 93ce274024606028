"""``edgefleet audit list|export``: the audit log (admin).

``export`` writes every selected record, oldest first, as JSON lines on stdout
(``edgefleet audit export --since 2025-01-01 > audit.jsonl``), page after page through the API,
or straight from the store with ``--data-dir`` (when the control plane is down).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from controlplane.audit.api import parse_query
from controlplane.auth import local
from controlplane.errors import BadRequest
from controlplane.fleet.client import FleetClient, FleetError, add_client_flags
from controlplane.fleet.output import emit, table, when

PAGE = 1000


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", help="from this time (Unix seconds or ISO 8601)")
    parser.add_argument("--until", help="before this time")
    parser.add_argument("--actor", help="only this user's actions")
    parser.add_argument("--method", help="only this HTTP method (POST, DELETE, ...)")
    parser.add_argument("--route", help="only this route, e.g. '/api/v1/rollouts/{id}/{action}'")
    parser.add_argument("--outcome", help="only this HTTP status, e.g. 403")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("list", help="the latest records, newest first")
    _filters(p)
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    add_client_flags(p)
    p.set_defaults(handler=list_records)
    p = sub.add_parser("export", help="every selected record as JSON lines, oldest first")
    _filters(p)
    p.add_argument(
        "--data-dir", type=Path, metavar="DIR",
        help="read the control plane's data directory directly, not through the API",
    )  # fmt: skip
    add_client_flags(p)
    p.set_defaults(handler=export)


def _params(args: argparse.Namespace) -> dict[str, str]:
    names = ("since", "until", "actor", "method", "route", "outcome")
    return {n: str(getattr(args, n)) for n in names if getattr(args, n) is not None}


def list_records(args: argparse.Namespace) -> int:
    params = {**_params(args), "limit": str(args.limit)}
    with FleetClient.from_args(args) as client:
        body = client.get("/api/v1/audit", params)
    emit(args.json, body, _render)
    return 0


def _render(body: dict[str, Any]) -> str:
    rows = [
        (
            when(r["at"]), r["actor"] or "anonymous", r["role"], r["action"],
            _target(r["target"]), r["outcome"], r["address"],
        )
        for r in body["records"]
    ]  # fmt: skip
    if not rows:
        return "no records"
    return table(rows, ["when", "who", "role", "action", "target", "outcome", "from"])


def _target(target: dict[str, Any]) -> str:
    flat = {k: v for k, v in target.items() if k != "query"}
    flat.update(target.get("query", {}))
    return ",".join(f"{k}={v}" for k, v in sorted(flat.items())) or "-"


def export(args: argparse.Namespace) -> int:
    params = {**_params(args), "order": "asc", "limit": str(PAGE)}
    records = _local(args.data_dir, params) if args.data_dir else _remote(args, params)
    out = sys.stdout
    for record in records:
        out.write(json.dumps(record, sort_keys=True) + "\n")
    out.flush()
    return 0


def _local(data_dir: Path, params: dict[str, str]) -> Iterator[dict[str, Any]]:
    try:
        query = parse_query(params, PAGE)
    except BadRequest as exc:
        raise FleetError(str(exc)) from None
    yield from local.audit_pages(data_dir, query)


def _remote(args: argparse.Namespace, params: dict[str, str]) -> Iterator[dict[str, Any]]:
    with FleetClient.from_args(args) as client:
        cursor: str | None = None
        while True:
            page = client.get("/api/v1/audit", {**params, **({"cursor": cursor} if cursor else {})})
            yield from page["records"]
            cursor = page["next_cursor"]
            if not cursor:
                return
