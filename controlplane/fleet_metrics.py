"""Fleet-level gauges for ``GET /metrics``, computed from the store at scrape time.

Prometheus users alert and graph on these (deploy/prometheus, deploy/grafana). They are read
with a few aggregate queries on a reader thread (:func:`snapshot`, via ``Store.read``), never
on the event loop, and replace the gauges' values whole (:func:`apply`) so that a release or a
backend that no device runs any more drops out of the scrape instead of lingering.

Cardinality stays bounded: releases and backends are few per fleet, and per-rollout series
exist only for active rollouts (at most one per model).

Device states follow :func:`controlplane.store.device_state`. The fallback count and the outbox
age describe devices now, so they count online devices only: an offline device's last report is
stale, and the offline alert covers it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from controlplane.alerts.queries import open_counts
from controlplane.alerts.rules import RULES
from controlplane.metrics import Metrics
from controlplane.rollouts.planner import ACTIVE_STATES, FINAL_STATES
from controlplane.store import count_devices

ROLLOUT_STATES = tuple(sorted(ACTIVE_STATES | FINAL_STATES))

Labels = tuple[str, ...]


@dataclass(frozen=True)
class FleetSnapshot:
    """What one scrape read from the store (label values -> value)."""

    devices: dict[str, int] = field(default_factory=dict)  # state
    by_release: dict[Labels, int] = field(default_factory=dict)  # (model, version)
    by_backend: dict[Labels, int] = field(default_factory=dict)  # (backend,)
    fallback: int = 0
    rollouts: dict[str, int] = field(default_factory=dict)  # state
    rollout_devices: dict[Labels, int] = field(default_factory=dict)  # (id, model, version, state)
    ingest_lag_s: float | None = None  # None: no result received yet
    outbox_oldest_age_s: float | None = None  # None: no online device reports one
    alerts: dict[Labels, int] = field(default_factory=dict)  # (rule, severity): firing alerts


_ONLINE = "state = 'online' AND last_seen >= ?"


def snapshot(conn: sqlite3.Connection, now: float, offline_after_s: float) -> FleetSnapshot:
    """Read every fleet gauge's values (run on a reader thread)."""
    cutoff = now - offline_after_s
    by_release: dict[Labels, int] = {
        (str(model), str(version)): n
        for model, version, n in conn.execute(
            "SELECT json_extract(m.value, '$.name'), json_extract(m.value, '$.version'), "
            "count(DISTINCT d.id) FROM devices d, json_each(d.models) m "
            "WHERE json_extract(m.value, '$.name') IS NOT NULL "
            "AND json_extract(m.value, '$.version') IS NOT NULL GROUP BY 1, 2"
        )
    }
    by_backend: dict[Labels, int] = {
        (str(backend),): n
        for backend, n in conn.execute(
            "SELECT backend, count(*) FROM devices WHERE backend IS NOT NULL GROUP BY backend"
        )
    }
    (fallback, outbox_age) = conn.execute(
        f"SELECT count(*) FILTER (WHERE fallback_reason IS NOT NULL), "
        f"max(json_extract(telemetry, '$.outbox_oldest_age_s')) FROM devices WHERE {_ONLINE}",
        [cutoff],
    ).fetchone()
    rollouts: dict[str, int] = {
        str(state): n
        for state, n in conn.execute("SELECT state, count(*) FROM rollouts GROUP BY state")
    }
    active = sorted(ACTIVE_STATES)
    rollout_devices: dict[Labels, int] = {
        (str(rid), str(model), str(version), str(state)): n
        for rid, model, version, state, n in conn.execute(
            f"SELECT r.id, r.model, r.version, d.state, count(*) FROM rollouts r "
            f"JOIN deployments d ON d.rollout_id = r.id "
            f"WHERE r.state IN ({','.join('?' * len(active))}) GROUP BY 1, 2, 3, 4",
            active,
        )
    }
    newest = conn.execute("SELECT received_at FROM results ORDER BY id DESC LIMIT 1").fetchone()
    return FleetSnapshot(
        devices=count_devices(conn, now, offline_after_s),
        by_release=by_release,
        by_backend=by_backend,
        fallback=fallback,
        rollouts=rollouts,
        rollout_devices=rollout_devices,
        ingest_lag_s=None if newest is None else max(0.0, now - newest[0]),
        outbox_oldest_age_s=None if outbox_age is None else float(outbox_age),
        alerts=open_counts(conn),
    )


def apply(metrics: Metrics, snap: FleetSnapshot) -> None:
    """Set the fleet gauges to a snapshot; a series missing from it disappears."""
    metrics.devices.replace({(state,): n for state, n in snap.devices.items()})
    metrics.devices_by_release.replace(snap.by_release)
    metrics.devices_by_backend.replace(snap.by_backend)
    metrics.devices_fallback.set(snap.fallback)
    # Every state is always there (0 when none), so `state="halted"` alerts have a series.
    metrics.rollouts.replace({(s,): snap.rollouts.get(s, 0) for s in ROLLOUT_STATES})
    metrics.rollout_devices.replace(snap.rollout_devices)
    lag = snap.ingest_lag_s
    metrics.ingest_lag.replace({} if lag is None else {(): lag})
    age = snap.outbox_oldest_age_s
    metrics.outbox_oldest_age_max.replace({} if age is None else {(): age})
    # Every rule at its default severity is always there (0 when none), like the rollouts.
    zeros: dict[Labels, int] = {(n, r.defaults.severity): 0 for n, r in RULES.items()}
    metrics.alerts.replace({**zeros, **snap.alerts})
