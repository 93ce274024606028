"""The alerts' queries and transactions: functions over a connection, run by ``Store.read``
(snapshots, lists, the notification queue's due rows) or ``Store.transact`` (a tick's decisions,
delivery outcomes).

The snapshot of the fleet is a few set-wise queries, not one per device: the ``devices`` rows, the
error-rate window's sums from ``telemetry`` (through its ``(device_id, ts)`` index, device by
device), and what each device's rollouts say it should run (``deployments`` and ``rollouts``,
read only, as :mod:`controlplane.rollouts.store` writes them).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from controlplane.alerts.decisions import Decisions, Key, OpenAlert
from controlplane.alerts.rules import ERROR_WINDOW_S, DeviceSnapshot, Expectation, Recent
from controlplane.alerts.webhook import alert_payload
from controlplane.store import device_state, effective_tags, encode_cursor

StateFilter = Literal["open", "resolved", "all"]


# -- the fleet as the rules see it -----------------------------------------------------------------


def snapshots(
    conn: sqlite3.Connection, now: float, offline_after_s: float,
    listening_since: float = -math.inf,
) -> list[DeviceSnapshot]:  # fmt: skip
    """Every known device as a :class:`DeviceSnapshot`, ordered by id.

    Until ``offline_after_s`` after ``listening_since`` (when ingestion started), a device not
    heard from since then is neither online nor offline (``online=None``): its retained birth or
    its next telemetry may not be in yet.
    """
    settling = now < listening_since + offline_after_s
    cutoff = now - offline_after_s
    recent = {
        device: Recent(int(inferences or 0), int(errors or 0))
        for device, inferences, errors in conn.execute(
            # CROSS JOIN keeps devices the outer loop: one index range per online device.
            """SELECT t.device_id, sum(t.inferences), sum(t.errors)
               FROM devices d CROSS JOIN telemetry t
                 ON t.device_id = d.id AND t.ts >= d.telemetry_at - ?
               WHERE d.state = 'online' AND d.last_seen >= ? AND d.telemetry_at IS NOT NULL
               GROUP BY t.device_id""",
            [ERROR_WINDOW_S, cutoff],
        )
    }
    expected = expectations(conn)
    empty: dict[str, Any] = {}
    out = []
    for row in conn.execute(
        "SELECT id, state, last_seen, telemetry, fallback_reason, models, tags, tag_overrides "
        "FROM devices ORDER BY id"
    ):
        device_id = row[0]
        models = json.loads(row[5] or "[]")
        out.append(
            DeviceSnapshot(
                id=device_id,
                online=_online(row[1], row[2], now, offline_after_s, settling, listening_since),
                last_seen=row[2],
                telemetry=json.loads(row[3]) if row[3] else empty,
                fallback_reason=row[4],
                models={
                    str(m["name"]): str(m["version"])
                    for m in models
                    if isinstance(m, dict) and "name" in m and "version" in m
                },
                tags=_tags(row[6], row[7]),
                expected=expected.get(device_id, ()),
                recent=recent.get(device_id, Recent()),
            )
        )
    return out


def _online(
    reported: str, last_seen: float, now: float, offline_after_s: float, settling: bool,
    listening_since: float,
) -> bool | None:  # fmt: skip
    if device_state(reported, last_seen, now, offline_after_s) == "online":
        return True
    return None if settling and last_seen < listening_since else False


def _tags(reported: str | None, overrides: str | None) -> dict[str, str]:
    tags: dict[str, str] = json.loads(reported) if reported and reported != "{}" else {}
    if overrides and overrides != "{}":
        return effective_tags(tags, json.loads(overrides))
    return tags


def expectations(conn: sqlite3.Connection) -> dict[str, tuple[Expectation, ...]]:
    """Per device, per model: the release the latest rollout that sent the device anything says
    it should run (the release; its previous one once a rollback was sent), and since when."""
    latest: dict[str, dict[str, Expectation]] = {}
    for device, rollout, model, version, dispatched, rollback_at, previous in conn.execute(
        """SELECT d.device_id, r.id, r.model, r.version, d.dispatched_at, d.rollback_at,
                  d.previous_version
           FROM deployments d JOIN rollouts r ON r.id = d.rollout_id
           WHERE d.dispatched_at IS NOT NULL OR d.rollback_at IS NOT NULL
           ORDER BY r.created_at, r.id"""
    ):
        if rollback_at is not None:
            e = Expectation(model, previous, rollback_at, rollout)
        else:
            e = Expectation(model, version, dispatched, rollout)
        latest.setdefault(device, {})[model] = e
    return {device: tuple(by_model.values()) for device, by_model in latest.items()}


def open_alerts(conn: sqlite3.Connection) -> dict[Key, OpenAlert]:
    return {
        (rule, device): OpenAlert(alert_id, severity, value, reason)
        for alert_id, rule, device, severity, value, reason in conn.execute(
            "SELECT id, rule, device_id, severity, value, reason FROM alerts WHERE state = 'firing'"
        )
    }


def pending(conn: sqlite3.Connection) -> dict[Key, float]:
    return {
        (rule, device): since
        for rule, device, since in conn.execute("SELECT rule, device_id, since FROM alert_pending")
    }


# -- a tick's writes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    fired: int
    resolved: int
    notifications: int


def apply(
    conn: sqlite3.Connection, decisions: Decisions, now: float, webhooks: Sequence[str],
    runbook_base: str,
) -> Applied:  # fmt: skip
    """Write a tick's decisions, and queue a notification per webhook key for each alert fired
    or resolved, in one transaction. Guarded: an alert already firing is not fired again, one
    already resolved is not resolved again."""
    events: list[dict[str, Any]] = []
    for f in decisions.fire:
        row = conn.execute(
            """INSERT OR IGNORE INTO alerts (rule, device_id, severity, state, value, threshold,
                 reason, since, started_at, updated_at)
               VALUES (?, ?, ?, 'firing', ?, ?, ?, ?, ?, ?) RETURNING *""",
            [f.rule, f.device_id, f.severity, f.value, f.threshold, f.reason, f.since, now, now],
        ).fetchone()
        if row is not None:
            events.append(_row(row))
    fired = len(events)
    conn.executemany(
        "UPDATE alerts SET severity = ?, value = ?, reason = ?, updated_at = ? "
        "WHERE id = ? AND state = 'firing'",
        [(k.severity, k.value, k.reason, now, k.id) for k in decisions.keep],
    )
    for r in decisions.resolve:
        row = conn.execute(
            """UPDATE alerts SET state = 'resolved', resolution = ?, resolved_at = ?,
                 updated_at = ?
               WHERE id = ? AND state = 'firing' RETURNING *""",
            [r.resolution, now, now, r.id],
        ).fetchone()
        if row is not None:
            events.append(_row(row))
    conn.executemany(
        "INSERT OR IGNORE INTO alert_pending (rule, device_id, since, value, reason) "
        "VALUES (?, ?, ?, ?, ?)",
        [(p.rule, p.device_id, now, p.value, p.reason) for p in decisions.pend],
    )
    conn.executemany("DELETE FROM alert_pending WHERE rule = ? AND device_id = ?", decisions.unpend)
    queued = enqueue(conn, events, webhooks, runbook_base, now)
    return Applied(fired, len(events) - fired, queued)


def _row(row: sqlite3.Row) -> dict[str, Any]:
    return {k: row[k] for k in row.keys()}  # noqa: SIM118 (sqlite3.Row is not a mapping)


def enqueue(
    conn: sqlite3.Connection, alerts: Iterable[dict[str, Any]], webhooks: Sequence[str],
    runbook_base: str, now: float,
) -> int:  # fmt: skip
    rows = [
        (a["id"], a["state"], key, json.dumps(alert_payload(a, runbook_base)), now, now, now)
        for a in alerts
        for key in webhooks
    ]
    conn.executemany(
        """INSERT INTO alert_notifications (alert_id, event, webhook, payload, state, attempts,
             next_at, created_at, updated_at)
           VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?)""",
        rows,
    )
    return len(rows)


# -- the notification queue ------------------------------------------------------------------------


@dataclass(frozen=True)
class Queued:
    id: int
    alert_id: int
    event: str
    webhook: str
    payload: dict[str, Any]
    attempts: int


def due(conn: sqlite3.Connection, now: float, limit: int) -> list[Queued]:
    """Pending notifications whose time has come, oldest first."""
    return [
        Queued(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5])
        for r in conn.execute(
            "SELECT id, alert_id, event, webhook, payload, attempts FROM alert_notifications "
            "WHERE state = 'pending' AND next_at <= ? ORDER BY next_at, id LIMIT ?",
            [now, limit],
        )
    ]


def next_due(conn: sqlite3.Connection) -> float | None:
    (at,) = conn.execute(
        "SELECT min(next_at) FROM alert_notifications WHERE state = 'pending'"
    ).fetchone()
    return None if at is None else float(at)


@dataclass(frozen=True)
class Outcome:
    id: int
    state: Literal["delivered", "pending", "failed"]  # pending: to be retried at next_at
    attempts: int
    next_at: float
    error: str | None


def record(conn: sqlite3.Connection, outcomes: Sequence[Outcome], now: float) -> None:
    conn.executemany(
        "UPDATE alert_notifications SET state = ?, attempts = ?, next_at = ?, last_error = ?, "
        "updated_at = ? WHERE id = ? AND state = 'pending'",
        [(o.state, o.attempts, o.next_at, o.error, now, o.id) for o in outcomes],
    )


def notifications(conn: sqlite3.Connection, alert_id: int) -> list[dict[str, Any]]:
    """An alert's notifications (without the webhook URLs, which the store never holds)."""
    return [
        _row(r)
        for r in conn.execute(
            "SELECT id, event, webhook, state, attempts, next_at, created_at, updated_at, "
            "last_error FROM alert_notifications WHERE alert_id = ? ORDER BY id",
            [alert_id],
        )
    ]


# -- lists for the API -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertQuery:
    state: StateFilter = "open"
    device_id: str | None = None
    rule: str | None = None
    limit: int = 100
    cursor: int | None = None  # the id of the last row of the previous page


@dataclass(frozen=True)
class AlertPage:
    alerts: list[dict[str, Any]]
    next_cursor: str | None
    total: int


_STATE_SQL = {"open": "state = 'firing'", "resolved": "state = 'resolved'", "all": None}


def list_alerts(conn: sqlite3.Connection, q: AlertQuery) -> AlertPage:
    """Alerts newest first (by id), keyset-paged like results."""
    where: list[str] = []
    params: list[Any] = []
    state = _STATE_SQL[q.state]
    if state is not None:
        where.append(state)
    for column, value in (("device_id", q.device_id), ("rule", q.rule)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    filters = " AND ".join(where)
    (total,) = conn.execute(
        "SELECT count(*) FROM alerts" + (f" WHERE {filters}" if filters else ""), params
    ).fetchone()
    if q.cursor is not None:
        where.append("id < ?")
        params.append(q.cursor)
    sql = "SELECT * FROM alerts" + (f" WHERE {' AND '.join(where)}" if where else "")
    rows = conn.execute(sql + " ORDER BY id DESC LIMIT ?", [*params, q.limit + 1]).fetchall()
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    alerts = [_row(r) for r in rows]
    return AlertPage(alerts, encode_cursor(rows[-1]["id"], "desc") if more else None, total)


def get_alert(conn: sqlite3.Connection, alert_id: int) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM alerts WHERE id = ?", [alert_id]).fetchone()
    return None if row is None else _row(row)


def open_counts(conn: sqlite3.Connection) -> dict[tuple[str, ...], int]:
    """Firing alerts by (rule, severity): the ``edgefleet_alerts`` gauge."""
    return {
        (str(rule), str(severity)): n
        for rule, severity, n in conn.execute(
            "SELECT rule, severity, count(*) FROM alerts WHERE state = 'firing' GROUP BY 1, 2"
        )
    }
