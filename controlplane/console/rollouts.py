"""The Rollouts pages (reads): every rollout with its progress, and one rollout with its waves as
progress bars, each gate's measured value per wave against its threshold, the halt reason, and
its devices' states (paged). The actions are :mod:`controlplane.console.rollout_actions`.

The rollout itself is read with the rollouts' own :func:`controlplane.rollouts.store.get_rollout`;
the per-wave counts and the device list are grouped and paged here so that a rollout to 10,000
devices renders one page of devices, not all of them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from controlplane.api import Context
from controlplane.console import params
from controlplane.console.templating import page, render, render_fragment
from controlplane.rollouts import views
from controlplane.rollouts.api import STATES
from controlplane.rollouts.planner import ACTIVE_STATES
from controlplane.rollouts.spec import METRICS, parse_gate
from controlplane.rollouts.store import ACTIONS, get_rollout

DEVICES_PER_PAGE = 100
DEVICE_STATES = (
    "pending", "queued", "downloading", "verifying", "shadow", "active", "failed", "timed_out",
    "rolled_back",
)  # fmt: skip
DONE = frozenset({"active", "rolled_back"})
FAILED = frozenset({"failed", "timed_out"})
MOVING = frozenset({"queued", "downloading", "verifying", "shadow"})


def bar(states: dict[str, int], total: int) -> list[dict[str, Any]]:
    """A progress bar's segments (done, moving, failed, pending), each with its share in %."""
    groups = (
        ("done", sum(n for s, n in states.items() if s in DONE)),
        ("moving", sum(n for s, n in states.items() if s in MOVING)),
        ("failed", sum(n for s, n in states.items() if s in FAILED)),
        ("pending", states.get("pending", 0)),
    )
    return [
        {"kind": kind, "count": n, "percent": round(100 * n / total, 2)}
        for kind, n in groups
        if n and total
    ]


def allowed_actions(state: str) -> list[str]:
    return [a for a, (allowed, _) in ACTIONS.items() if state in allowed]


@dataclass(frozen=True)
class GateRow:
    """One gate against one wave: what the chart draws."""

    wave: int
    value: float | None
    holds: bool | None
    value_percent: float  # bar length, % of the scale
    threshold_percent: float  # the threshold mark, % of the scale


def gate_chart(gate_text: str, evaluations: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """A gate's measured value in each evaluated wave against its threshold (pure)."""
    gate = parse_gate(gate_text)
    values: dict[int, float | None] = {}
    for wave, evaluation in sorted(evaluations.items()):
        measured = ((evaluation.get("metrics") or {}).get("values") or {}).get(gate.metric)
        values[wave] = float(measured) if isinstance(measured, int | float) else None
    present = [v for v in values.values() if v is not None]
    scale = max([gate.threshold, *present]) * 1.25 or 1.0
    rows = [
        GateRow(
            wave, value, None if value is None else gate.holds(value),
            0.0 if value is None else round(min(100.0, 100 * value / scale), 2),
            round(100 * gate.threshold / scale, 2),
        )
        for wave, value in values.items()
    ]  # fmt: skip
    return {"gate": gate_text, "metric": gate.metric, "op": gate.op,
            "threshold": gate.threshold, "meaning": METRICS.get(gate.metric, ""),
            "rows": rows}  # fmt: skip


def query_rollout(
    conn: sqlite3.Connection, rollout_id: str, state: str | None, page_number: int
) -> dict[str, Any]:
    """The rollout (NotFound), its waves with counts and bars, gate charts, one page of devices."""
    out = get_rollout(conn, rollout_id)
    waves: list[dict[str, Any]] = [
        {"wave": i, "share": share, "devices": 0, "states": {}, "evaluation": None}
        for i, share in enumerate(out["waves"])
    ]
    for wave, dstate, n in conn.execute(
        "SELECT wave, state, count(*) FROM deployments WHERE rollout_id = ? GROUP BY 1, 2",
        [rollout_id],
    ):
        if 0 <= wave < len(waves):
            waves[wave]["devices"] += n
            waves[wave]["states"][dstate] = n
    evaluations: dict[int, dict[str, Any]] = {}
    for entry in out["history"]:
        if "wave" in entry and "metrics" in entry and 0 <= entry["wave"] < len(waves):
            evaluations[entry["wave"]] = entry
    current = out.get("evaluation")
    if current and 0 <= current.get("wave", -1) < len(waves):
        evaluations[current["wave"]] = current
    for w in waves:
        w["evaluation"] = evaluations.get(w["wave"])
        w["bar"] = bar(w["states"], w["devices"])
    where, bind = "WHERE rollout_id = ?", [rollout_id]
    if state is not None:
        where += " AND state = ?"
        bind.append(state)
    (matching,) = conn.execute(f"SELECT count(*) FROM deployments {where}", bind).fetchone()
    devices = conn.execute(
        "SELECT device_id, wave, state, target, attempts, detail, dispatched_at, activated_at,"
        f" updated_at, previous_version FROM deployments {where}"
        " ORDER BY wave, device_id LIMIT ? OFFSET ?",
        [*bind, DEVICES_PER_PAGE, (page_number - 1) * DEVICES_PER_PAGE],
    )
    out["waves_detail"] = waves
    out["gate_charts"] = [gate_chart(g, evaluations) for g in out["gates"]]
    out["device_rows"] = [{k: r[k] for k in r.keys()} for r in devices]  # noqa: SIM118
    out["device_matching"] = matching
    out["filter_state"], out["page"] = state, page_number
    out["pages"] = max(1, -(-matching // DEVICES_PER_PAGE))
    out["bar"] = bar(out["devices"], sum(out["devices"].values()))
    out["actions"] = allowed_actions(out["state"])
    return out


def query_list(conn: sqlite3.Connection, state: str | None) -> list[dict[str, Any]]:
    rollouts = views.query_rollouts(conn, state)
    for r in rollouts:
        r["bar"] = bar(r["devices"], sum(r["devices"].values()))
        r["actions"] = allowed_actions(r["state"])
    return sorted(rollouts, key=lambda r: r["state"] not in ACTIVE_STATES)  # stable: newest first


def list_fragment(rollouts: list[dict[str, Any]]) -> str:
    return render_fragment("_rollout_list.html", rollouts=rollouts)


def detail_fragments(rollout: dict[str, Any]) -> dict[str, str]:
    return {
        "rollout-progress": render_fragment("_rollout_progress.html", r=rollout),
        "rollout-devices": render_fragment("_rollout_devices.html", r=rollout),
    }


@page
async def rollouts_page(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    q = request.query_params
    params.known(q, {"state"})
    state = params.text(q, "state")
    if state is not None:
        params.choice("state", state, STATES, "running")
    rollouts = await ctx.store.read(query_list, state)
    return render(
        request, "rollouts.html", {"rollouts": rollouts, "state": state, "states": STATES},
        active="rollouts",
    )  # fmt: skip


@page
async def rollout_page(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    q = request.query_params
    params.known(q, {"state", "page"})
    rollout_id = params.rollout_id(request.path_params["id"])
    state = params.text(q, "state")
    if state is not None:
        params.choice("state", state, DEVICE_STATES, "pending")
    number = params.page_number(params.text(q, "page"))
    rollout = await ctx.store.read(query_rollout, rollout_id, state, number)
    return render(
        request, "rollout.html",
        {"r": rollout, "state": state, "device_states": DEVICE_STATES, "page": number},
        active="rollouts",
    )  # fmt: skip
