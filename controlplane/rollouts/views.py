"""What the API shows of a rollout: its device counts, its waves and its devices (reads only).

The writes (creating, acting, a tick, reports) are :mod:`controlplane.rollouts.store`; these run on
a reader thread through ``Store.read``.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from controlplane.rollouts.columns import loads
from controlplane.rollouts.store import get_rollout


def query_rollouts(conn: sqlite3.Connection, state: str | None) -> list[dict[str, Any]]:
    sql = "SELECT id FROM rollouts"
    params: list[Any] = []
    if state is not None:
        sql += " WHERE state = ?"
        params.append(state)
    ids = [r[0] for r in conn.execute(sql + " ORDER BY created_at DESC", params)]
    return [get_rollout(conn, i) for i in ids]


def rollout_detail(conn: sqlite3.Connection, rollout_id: str) -> dict[str, Any]:
    """The rollout, each wave (device counts by state, its evaluation) and each device."""
    out = get_rollout(conn, rollout_id)
    devices = []
    waves: list[dict[str, Any]] = [
        {"wave": i, "share": share, "devices": 0, "states": {}, "evaluation": None}
        for i, share in enumerate(out["waves"])
    ]
    for r in conn.execute(
        """SELECT device_id, wave, state, kind, target, attempts, generation, detail,
             dispatched_at, activated_at, updated_at, previous_version, smoke, shadow
           FROM deployments WHERE rollout_id = ? ORDER BY wave, device_id""",
        [rollout_id],
    ):
        item = {k: r[k] for k in r.keys()}  # noqa: SIM118
        item["smoke"], item["shadow"] = loads(item["smoke"]), loads(item["shadow"])
        devices.append(item)
        if 0 <= r["wave"] < len(waves):
            w = waves[r["wave"]]
            w["devices"] += 1
            w["states"][r["state"]] = w["states"].get(r["state"], 0) + 1
    for entry in out["history"]:
        if "wave" in entry and 0 <= entry["wave"] < len(waves):
            waves[entry["wave"]]["evaluation"] = entry
    current = out.get("evaluation")
    if current and 0 <= current["wave"] < len(waves):
        waves[current["wave"]]["evaluation"] = current
    out["waves_detail"] = waves
    out["deployments"] = devices
    return out
