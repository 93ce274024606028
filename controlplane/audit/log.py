"""The audit log's records: what one holds, where a request came from (pure), writing one row
and reading pages of them (plain functions over a connection).

A record says who (user and token id, or ``anonymous``; the role the request had, and ``via``:
token, session, password, local or none), what (``action``: the method and the route pattern, and
``target``: the route's path parameters plus the query's, with any whose name suggests a secret
redacted), when (``at``, Unix seconds), the outcome (the HTTP status; for a local action, 0 for
success), from where (the client's address, and the ``X-Forwarded-For`` header when the peer is a
trusted proxy) and the request id (``X-Request-Id``). Never a body, a password or a token.
"""

from __future__ import annotations

import ipaddress
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from controlplane.store import encode_cursor

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Order = Literal["asc", "desc"]
REDACTED = "[redacted]"
_SECRET_WORDS = ("token", "password", "passwd", "secret", "key", "csr", "cert", "auth")
MAX_VALUE = 200


@dataclass(frozen=True)
class Record:
    at: float
    request_id: str
    actor: str | None
    via: str
    action: str
    method: str
    outcome: int
    role: str | None = None
    token_id: str | None = None
    route: str | None = None
    target: dict[str, Any] = field(default_factory=dict)
    address: str | None = None
    forwarded_for: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


# -- decisions (pure) ------------------------------------------------------------------------------


def parse_networks(values: Iterable[str]) -> list[Network]:
    """Addresses or CIDR networks (``10.0.0.0/8``, ``::1``), or ValueError naming the bad one."""
    out: list[Network] = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"expected an IP address or network, got {value!r}") from None
    return out


def is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted if ip.version == net.version)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]
) -> tuple[str | None, str | None]:
    """``(client address, X-Forwarded-For as recorded)``.

    The header is believed only when the peer is a trusted proxy, and then only as far as
    trusted proxies added to it: the client is the rightmost hop that is not a trusted proxy
    (anything left of it was written by the client itself and proves nothing). From an untrusted
    peer the header is ignored and not recorded.
    """
    if peer is None or not forwarded_for or not is_trusted(peer, trusted):
        return peer, None
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    header = forwarded_for[:MAX_VALUE]
    for hop in reversed(hops):
        if not is_trusted(hop, trusted):
            return hop[:64], header
    return (hops[0][:64] if hops else peer), header


def target_of(path_params: Mapping[str, Any], query: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """What a request acted on: its path parameters, and its query parameters under ``query``
    (the selection of a deletion, say), with values of secret-sounding names redacted."""
    target: dict[str, Any] = {k: str(v)[:MAX_VALUE] for k, v in path_params.items()}
    params: dict[str, str] = {}
    for name, value in query:
        secret = any(word in name.lower() for word in _SECRET_WORDS)
        params[name[:64]] = REDACTED if secret else value[:MAX_VALUE]
    if params:
        target["query"] = params
    return target


# -- the table -------------------------------------------------------------------------------------


def append(conn: sqlite3.Connection, record: Record) -> int:
    """Add a record; returns its id. (There is no function that changes or removes one.)"""
    values = asdict(record)
    values["target"] = json.dumps(record.target, sort_keys=True)
    values["detail"] = json.dumps(record.detail, sort_keys=True)
    columns = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    cursor = conn.execute(f"INSERT INTO audit ({columns}) VALUES ({marks})", list(values.values()))
    return int(cursor.lastrowid or 0)


def record_view(row: sqlite3.Row) -> dict[str, Any]:
    out = {k: row[k] for k in row.keys()}  # noqa: SIM118 (sqlite3.Row is not a mapping)
    out["target"] = json.loads(out["target"])
    out["detail"] = json.loads(out["detail"])
    return out


@dataclass(frozen=True)
class AuditQuery:
    since: float | None = None
    until: float | None = None
    actor: str | None = None
    method: str | None = None
    route: str | None = None
    outcome: int | None = None
    limit: int = 100
    cursor: int | None = None
    order: Order = "desc"


def query_audit(conn: sqlite3.Connection, q: AuditQuery) -> dict[str, Any]:
    """A page of records, keyset-paged by id like results (``next_cursor`` None: no more)."""
    where: list[str] = []
    params: list[Any] = []
    for column, op, value in (
        ("at", ">=", q.since), ("at", "<", q.until), ("actor", "=", q.actor),
        ("method", "=", q.method), ("route", "=", q.route), ("outcome", "=", q.outcome),
    ):  # fmt: skip
        if value is not None:
            where.append(f"{column} {op} ?")
            params.append(value)
    if q.cursor is not None:
        where.append("id < ?" if q.order == "desc" else "id > ?")
        params.append(q.cursor)
    sql = "SELECT * FROM audit"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY id {q.order.upper()} LIMIT ?"
    rows = conn.execute(sql, [*params, q.limit + 1]).fetchall()
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    return {
        "records": [record_view(r) for r in rows],
        "count": len(rows),
        "limit": q.limit,
        "next_cursor": encode_cursor(rows[-1]["id"], q.order) if more else None,
    }
