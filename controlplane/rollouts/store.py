"""The rollouts' queries and transactions: functions over a connection, run by ``Store.transact``
(writes) or ``Store.read`` (reads).

Each transaction is whole: a tick's state changes, deployment rows and desired documents commit
together or not at all, so the controller can stop at any moment and the next one carries on
from the store. Desired documents are written unsigned in the same transaction
(:mod:`controlplane.rollouts.desired`); device tags set by operators live in
:mod:`controlplane.rollouts.tags`.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.errors import BadRequest, Conflict, NotFound
from controlplane.registry.releases import StoredRelease, query_release
from controlplane.rollouts import planner
from controlplane.rollouts.columns import dumps, loads
from controlplane.rollouts.desired import entry_for, read_desired, write_desired
from controlplane.rollouts.metrics import measure
from controlplane.rollouts.planner import ACTIVE_STATES, Deployment, Device, Rollout, TickPlan
from controlplane.rollouts.spec import Gate
from controlplane.rollouts.waves import accelerator_kind
from controlplane.store import effective_tags
from protocol.release import TERMINAL_STATES, DeploymentReport

FALLBACK_FROM = frozenset({"edgetpu"})
"""Targets whose devices also get the release's cpu artifact, to fall back to."""

ACTIONS: dict[str, tuple[frozenset[str], str]] = {
    # action: (states it is allowed from, the state it leads to)
    "pause": (frozenset({"running"}), "paused"),
    "resume": (frozenset({"paused", "halted"}), "running"),
    "abort": (frozenset({"running", "paused", "halted"}), "aborted"),
    "rollback": (frozenset({"running", "paused", "halted", "completed"}), "rolling_back"),
}


@dataclass(frozen=True)
class RolloutSpec:
    """A validated request to start a rollout (API body or CLI flags)."""

    model: str
    version: str
    selector: dict[str, str] = field(default_factory=dict)
    waves: list[float] = field(default_factory=lambda: [0.01, 0.1, 0.5, 1.0])
    bake_s: float = 600.0
    gates: list[Gate] = field(default_factory=list)
    min_sample: int = 50
    on_halt: str = "rollback"
    device_timeout_s: float = 1800.0
    max_per_minute: int | None = None
    shadow: dict[str, Any] | None = None


@dataclass
class TickOutcome:
    state: str | None  # the rollout's state after the tick (None: no such rollout)
    changed: bool  # something was written: another tick may have more to do


def new_id() -> str:
    return uuid.uuid4().hex[:12]


# -- rows ------------------------------------------------------------------------------------------


def rollout_dict(row: sqlite3.Row) -> dict[str, Any]:
    out = {k: row[k] for k in row.keys()}  # noqa: SIM118 (sqlite3.Row is not a mapping)
    for key in ("selector", "waves", "gates", "shadow", "halt", "evaluation", "history"):
        out[key] = loads(out[key])
    out["gates"] = [_gate_text(g) for g in out["gates"]]
    return out


def _gate_text(g: Mapping[str, Any]) -> str:
    return str(Gate(g["metric"], g["op"], g["threshold"], g.get("required", True)))


def _rollout(row: sqlite3.Row, targets: frozenset[str]) -> Rollout:
    return Rollout(
        id=row["id"], model=row["model"], version=row["version"], state=row["state"],
        waves=json.loads(row["waves"]), selector=json.loads(row["selector"]),
        gates=[Gate(**g) for g in json.loads(row["gates"])], targets=targets,
        bake_s=row["bake_s"], min_sample=row["min_sample"], on_halt=row["on_halt"],
        device_timeout_s=row["device_timeout_s"], max_per_minute=row["max_per_minute"],
        current_wave=row["current_wave"], wave_finished_at=row["wave_finished_at"],
    )  # fmt: skip


def _deployment(row: sqlite3.Row) -> Deployment:
    return Deployment(
        row["device_id"], row["wave"], row["state"], row["kind"] or "cpu", row["attempts"],
        row["dispatched_at"], row["rollback_at"],
    )  # fmt: skip


def fleet(conn: sqlite3.Connection) -> list[Device]:
    """Every known device with its effective tags, accelerator kind and running versions."""
    out = []
    for row in conn.execute("SELECT id, tags, tag_overrides, accelerators, models FROM devices"):
        models = json.loads(row["models"] or "[]")
        out.append(
            Device(
                row["id"],
                effective_tags(json.loads(row["tags"] or "{}"), loads(row["tag_overrides"])),
                accelerator_kind(json.loads(row["accelerators"] or "[]")),
                {m["name"]: m["version"] for m in models if "name" in m and "version" in m},
            )
        )
    return out


def _release(conn: sqlite3.Connection, model: str, version: str) -> StoredRelease:
    stored = query_release(conn, model, version)
    if stored is None:
        raise NotFound(f"no release {model}:{version} in the registry (edgefleet models list)")
    return stored


# -- creating a rollout and operator actions -------------------------------------------------------


def create_rollout(conn: sqlite3.Connection, spec: RolloutSpec, now: float) -> dict[str, Any]:
    """Store a new rollout with its devices assigned to waves; NotFound, Conflict, BadRequest."""
    stored = _release(conn, spec.model, spec.version)
    busy = conn.execute(
        f"SELECT id, state FROM rollouts WHERE model = ? AND state IN "
        f"({','.join('?' * len(ACTIVE_STATES))})",
        [spec.model, *sorted(ACTIVE_STATES)],
    ).fetchone()
    if busy is not None:
        raise Conflict(
            f"rollout {busy['id']} of {spec.model} is {busy['state']}: finish, abort or roll it "
            "back first (one rollout per model at a time)"
        )
    rollout_id = new_id()
    members = planner.initial_members(rollout_id, fleet(conn), spec.selector, spec.waves)
    if not members:
        raise BadRequest("select", f"no device matches {spec.selector or 'the fleet'}")
    conn.execute(
        """INSERT INTO rollouts (id, model, version, seq, selector, waves, bake_s, gates,
             min_sample, on_halt, device_timeout_s, max_per_minute, shadow, state, current_wave,
             wave_started_at, created_at, updated_at, history)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', 0, ?, ?, ?, '[]')""",
        [
            rollout_id, spec.model, spec.version, stored.seq, dumps(spec.selector),
            dumps(spec.waves), spec.bake_s, dumps([_gate_dict(g) for g in spec.gates]),
            spec.min_sample, spec.on_halt, spec.device_timeout_s, spec.max_per_minute,
            dumps(spec.shadow), now, now, now,
        ],
    )  # fmt: skip
    conn.executemany(
        "INSERT INTO deployments (rollout_id, device_id, wave, state, kind, attempts, updated_at) "
        "VALUES (?, ?, ?, 'pending', ?, 0, ?)",
        [(rollout_id, d.device_id, d.wave, d.kind, now) for d in members],
    )
    return get_rollout(conn, rollout_id)


def _gate_dict(g: Gate) -> dict[str, Any]:
    return {"metric": g.metric, "op": g.op, "threshold": g.threshold, "required": g.required}


def act(conn: sqlite3.Connection, rollout_id: str, action: str, now: float) -> dict[str, Any]:
    """pause, resume, abort or rollback; NotFound, or Conflict when the state does not allow it.

    ``resume`` of a halted rollout is the operator overriding the halt: the halted wave counts as
    passed and the next wave starts.
    """
    row = rollout_row(conn, rollout_id)
    allowed, target = ACTIONS[action]
    if row["state"] not in allowed:
        raise Conflict(
            f"cannot {action} rollout {rollout_id}: it is {row['state']} "
            f"({action} needs {' or '.join(sorted(allowed))})"
        )
    changes: dict[str, Any] = {"state": target}
    entry: dict[str, Any] = {"at": now, "action": action, "from": row["state"]}
    if action == "resume" and row["state"] == "halted":
        waves = json.loads(row["waves"])
        entry["override"] = loads(row["halt"])
        changes["halt"] = None
        if row["current_wave"] + 1 < len(waves):
            changes.update(
                current_wave=row["current_wave"] + 1, wave_started_at=now, wave_finished_at=None
            )
        else:
            changes["state"] = "completed"
    _update_rollout(conn, rollout_id, changes, now, entry)
    return get_rollout(conn, rollout_id)


def rollout_row(conn: sqlite3.Connection, rollout_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM rollouts WHERE id = ?", [rollout_id]).fetchone()
    if row is None:
        raise NotFound(f"no rollout {rollout_id!r} (edgefleet rollout list)")
    result: sqlite3.Row = row
    return result


def _update_rollout(
    conn: sqlite3.Connection, rollout_id: str, changes: Mapping[str, Any], now: float,
    history: Mapping[str, Any] | None = None,
) -> None:  # fmt: skip
    columns = dict(changes)
    for key in ("halt", "evaluation"):
        if key in columns:
            columns[key] = dumps(columns[key])
    columns["updated_at"] = now
    sets = ", ".join(f"{k} = ?" for k in columns)
    params: list[Any] = list(columns.values())
    if history is not None:
        sets += ", history = json_insert(history, '$[#]', json(?))"
        params.append(dumps(history))
    conn.execute(f"UPDATE rollouts SET {sets} WHERE id = ?", [*params, rollout_id])


# -- a tick ----------------------------------------------------------------------------------------


def active_rollouts(conn: sqlite3.Connection) -> list[str]:
    """Rollouts a tick has work for, oldest first."""
    rows = conn.execute(
        "SELECT id FROM rollouts WHERE state IN ('running', 'paused', 'halted', 'rolling_back') "
        "ORDER BY created_at"
    )
    return [r[0] for r in rows]


def tick(
    conn: sqlite3.Connection, rollout_id: str, now: float, max_retries: int, public_url: str
) -> TickOutcome:
    """One tick of one rollout (see :mod:`controlplane.rollouts.planner`), applied."""
    row = conn.execute("SELECT * FROM rollouts WHERE id = ?", [rollout_id]).fetchone()
    if row is None:
        return TickOutcome(None, False)
    stored = _release(conn, row["model"], row["version"])
    rollout = _rollout(row, frozenset(stored.release.get("artifacts", {})))
    rows = {
        r["device_id"]: r
        for r in conn.execute("SELECT * FROM deployments WHERE rollout_id = ?", [rollout_id])
    }
    deployments = [_deployment(r) for r in rows.values()]
    wave = [d for d in deployments if d.wave == rollout.current_wave]
    measured = None
    if rollout.state == "running" and all(d.state in TERMINAL_STATES for d in wave):
        measured = measure(conn, rollout_id, rollout.model, rollout.version, rollout.current_wave)
    devices = fleet(conn)
    plan = planner.plan_tick(
        rollout, deployments, devices, measured, now=now, max_retries=max_retries
    )
    _apply(conn, row, plan, stored, {d.id: d for d in devices}, now, public_url, max_retries)
    return TickOutcome(plan.rollout.get("state", rollout.state), not plan.empty)


def _apply(
    conn: sqlite3.Connection, row: sqlite3.Row, plan: TickPlan, stored: StoredRelease,
    devices: Mapping[str, Device], now: float, public_url: str, max_retries: int,
) -> None:  # fmt: skip
    rollout_id = row["id"]
    for change in plan.changes:
        activated = now if change.state == "active" else None
        conn.execute(
            """UPDATE deployments SET state = ?, detail = coalesce(?, detail), updated_at = ?,
                 activated_at = coalesce(activated_at, ?)
               WHERE rollout_id = ? AND device_id = ? AND state = ?""",
            [change.state, change.detail, now, activated, rollout_id, change.device_id,
             change.expect],
        )  # fmt: skip
    conn.executemany(
        "INSERT INTO deployments (rollout_id, device_id, wave, state, kind, attempts, updated_at) "
        "VALUES (?, ?, ?, 'pending', ?, 0, ?)",
        [(rollout_id, d.device_id, d.wave, d.kind, now) for d in plan.joins],
    )
    for dispatch in plan.dispatches:
        device = devices.get(dispatch.device_id)
        _dispatch(conn, row, dispatch, stored, device, now, public_url, max_retries)
    for device_id in plan.rollbacks:
        _roll_back(conn, row, device_id, now)
    changes = dict(plan.rollout)
    entry = None
    if plan.verdict is not None:
        evaluation = {
            "wave": row["current_wave"], "at": now, **plan.verdict.as_dict(),
            "gates": [_gate_text(g) for g in json.loads(row["gates"])],
            "metrics": _metrics_dict(plan),
        }  # fmt: skip
        if plan.verdict.decision != "wait" or loads(row["evaluation"]) != evaluation:
            changes["evaluation"] = evaluation
        if plan.verdict.decision != "wait":
            entry = {k: v for k, v in evaluation.items() if k != "gates"}
    if changes or entry:
        _update_rollout(conn, rollout_id, changes, now, entry)


def _metrics_dict(plan: TickPlan) -> dict[str, Any]:
    m = plan.metrics
    if m is None:
        return {}
    values = dict(m.values)
    values.setdefault("failure_rate", m.failed / m.devices if m.devices else None)
    return {"devices": m.devices, "finished": m.finished, "failed": m.failed,
            "samples": m.samples, "values": values}  # fmt: skip


def _dispatch(
    conn: sqlite3.Connection, row: sqlite3.Row, dispatch: planner.Dispatch, stored: StoredRelease,
    device: Device | None, now: float, public_url: str, max_retries: int,
) -> None:  # fmt: skip
    rollout_id, model, device_id = row["id"], row["model"], dispatch.device_id
    where = "WHERE rollout_id = ? AND device_id = ?"
    if dispatch.target is None:
        kinds = ", ".join(sorted(stored.release.get("artifacts", {})))
        conn.execute(
            f"UPDATE deployments SET state = 'failed', attempts = ?, detail = ?, updated_at = ? "
            f"{where}",
            [max_retries + 1, f"no artifact for a {dispatch.kind} device (the release has {kinds})",
             now, rollout_id, device_id],
        )  # fmt: skip
        return
    artifacts = stored.release["artifacts"]
    fallback = artifacts.get("cpu") if dispatch.target in FALLBACK_FROM else None
    entry = {
        "model": model, "release": stored.sealed, "target": dispatch.target,
        "artifact_url": f"{public_url}/api/v1/artifacts/{artifacts[dispatch.target]['sha256']}",
        "rollout_id": rollout_id, "rollback": False, "shadow": loads(row["shadow"]),
    }  # fmt: skip
    if fallback is not None:  # the device keeps the CPU build too (docs/agent.md)
        entry["fallback_artifact_url"] = f"{public_url}/api/v1/artifacts/{fallback['sha256']}"
    current = read_desired(conn, device_id)
    generation = write_desired(conn, device_id, current, entry, now)
    dep = conn.execute(f"SELECT attempts FROM deployments {where}", [rollout_id, device_id])
    first = dep.fetchone()["attempts"] == 0 and not dispatch.retry
    sets = ("state = 'queued', target = ?, generation = ?, attempts = attempts + 1, "
            "dispatched_at = ?, updated_at = ?, detail = ?")  # fmt: skip
    params: list[Any] = [dispatch.target, generation, now, now,
                         "retry" if dispatch.retry else None]  # fmt: skip
    if first:
        previous = entry_for(current, model)
        previous_version = None
        if previous is not None and previous.get("release"):
            previous_version = previous["release"]["release"]["version"]
        elif device is not None:
            previous_version = device.versions.get(model)
        sets += ", previous = ?, previous_version = ?"
        params += [dumps(previous), previous_version]
    conn.execute(f"UPDATE deployments SET {sets} {where}", [*params, rollout_id, device_id])


def _roll_back(conn: sqlite3.Connection, row: sqlite3.Row, device_id: str, now: float) -> None:
    rollout_id, model = row["id"], row["model"]
    dep = conn.execute(
        "SELECT previous, previous_version FROM deployments WHERE rollout_id = ? AND device_id = ?",
        [rollout_id, device_id],
    ).fetchone()
    previous = loads(dep["previous"])
    if previous is None:
        entry: dict[str, Any] = {"model": model, "release": None}
    else:
        entry = {k: v for k, v in previous.items() if k != "shadow"}
    entry.update(rollout_id=rollout_id, rollback=True)
    generation = write_desired(conn, device_id, read_desired(conn, device_id), entry, now)
    back_to = dep["previous_version"] or "its configured model"
    conn.execute(
        """UPDATE deployments SET state = 'queued', generation = ?, rollback_generation = ?,
             rollback_at = ?, updated_at = ?, detail = ?
           WHERE rollout_id = ? AND device_id = ?""",
        [generation, generation, now, now, f"rolling back to {back_to}", rollout_id, device_id],
    )


# -- deployment reports ----------------------------------------------------------------------------


def apply_report(
    conn: sqlite3.Connection, device_id: str, report: DeploymentReport, now: float
) -> bool:
    """A device's report on its deployment; False when it is ignored (unknown, or about an older
    generation than the deployment's)."""
    if report.rollout_id is not None:
        row = conn.execute(
            "SELECT * FROM deployments WHERE rollout_id = ? AND device_id = ?",
            [report.rollout_id, device_id],
        ).fetchone()
    else:
        row = conn.execute(
            """SELECT d.* FROM deployments d JOIN rollouts r ON r.id = d.rollout_id
               WHERE d.device_id = ? AND r.model = ? AND d.generation IS NOT NULL
               ORDER BY r.created_at DESC LIMIT 1""",
            [device_id, report.model],
        ).fetchone()
    if row is None or row["generation"] is None or report.generation < row["generation"]:
        return False
    if report.state == "timed_out":
        return False  # the control plane's verdict, never a device's
    state, detail = report.state, report.detail
    if row["rollback_generation"] is not None:
        if state == "active":
            state = "rolled_back"
    elif state == "rolled_back":  # it went back by itself: the new release is not running
        state, detail = "failed", f"the device rolled back: {detail or 'no reason given'}"
    if detail is None and report.progress is not None and state == "downloading":
        detail = f"{report.progress:.0%} downloaded"
    conn.execute(
        """UPDATE deployments SET state = ?, detail = ?, updated_at = ?,
             activated_at = coalesce(activated_at, ?), smoke = coalesce(?, smoke),
             shadow = coalesce(?, shadow)
           WHERE rollout_id = ? AND device_id = ?""",
        [
            state, detail, now, now if state == "active" else None,
            dumps(report.smoke.model_dump(mode="json")) if report.smoke else None,
            dumps(report.shadow.model_dump(mode="json")) if report.shadow else None,
            row["rollout_id"], device_id,
        ],
    )  # fmt: skip
    return True


# -- the rollout as writes answer it (the API's other reads: views.py) ----------------------------


def get_rollout(conn: sqlite3.Connection, rollout_id: str) -> dict[str, Any]:
    """The rollout with a per-state count of its devices; NotFound."""
    out = rollout_dict(rollout_row(conn, rollout_id))
    counts: dict[str, int] = {}
    for state, n in conn.execute(
        "SELECT state, count(*) FROM deployments WHERE rollout_id = ? GROUP BY state",
        [rollout_id],
    ):
        counts[state] = n
    out["devices"] = counts
    return out
