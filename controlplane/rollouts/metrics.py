"""The gate metrics of one wave, measured from the store (definitions in docs/rollouts.md).

Queries over a connection, run inside the controller's tick transaction. Each value is ``None``
when there is no data for it (no telemetry since activation, no shadow run, no results of the
incumbent to compare with): :func:`controlplane.rollouts.gates.evaluate` skips a default gate
without data and waits for an explicit one. ``failure_rate`` is not measured here: the planner
counts it from the deployments' states.
"""

from __future__ import annotations

import json
import sqlite3
import statistics

from controlplane.rollouts.gates import ks_distance
from controlplane.rollouts.planner import Measured

SCORES_LIMIT = 5000  # most recent top scores per release: enough for a KS distance
KS_MIN_SCORES = 50
"""Fewer scores on either side and ``confidence_shift`` has no data: with 6 against 6 a KS
distance of 0.5 is noise (the 5 % critical value is about 0.7), and it would halt good releases."""

_WAVE = "SELECT device_id FROM deployments WHERE rollout_id = :rollout AND wave = :wave"


def measure(
    conn: sqlite3.Connection, rollout_id: str, model: str, version: str, wave: int
) -> Measured:
    """The metrics of wave ``wave`` of the rollout (deployment rows must exist)."""
    params = {"rollout": rollout_id, "wave": wave, "model": model, "version": version}
    results, offloaded, decided, cloud_same, cloud_compared = conn.execute(
        f"""SELECT count(*),
                   count(*) FILTER (WHERE offload_decision IN ('offloaded', 'deferred')),
                   count(offload_decision), count(*) FILTER (WHERE agree = 1), count(agree)
            FROM results WHERE device_id IN ({_WAVE})
            AND model = :model AND model_version = :version""",
        params,
    ).fetchone()
    inferences, errors, weighted_p95 = conn.execute(
        """SELECT sum(t.inferences), sum(t.errors), sum(t.p95_ms * t.inferences)
           FROM deployments d JOIN telemetry t ON t.device_id = d.device_id
           WHERE d.rollout_id = :rollout AND d.wave = :wave AND d.activated_at IS NOT NULL
             AND t.ts >= d.activated_at""",
        params,
    ).fetchone()
    ratios: list[float] = []
    shadow_samples, agreeing = 0, 0.0
    for smoke_text, shadow_text in conn.execute(
        """SELECT smoke, shadow FROM deployments
           WHERE rollout_id = :rollout AND wave = :wave AND state = 'active'""",
        params,
    ):
        # The smoke test's ratio first: both models on the same inputs, in turns. Shadow
        # p95s come from live traffic at different moments (measured: 2.5x for two equally fast
        # models on a busy machine), so they are the fallback.
        ratio = None
        shadow = json.loads(shadow_text) if shadow_text else None
        smoke = json.loads(smoke_text) if smoke_text else None
        if smoke:
            ratio = _ratio(smoke.get("candidate_ms"), smoke.get("incumbent_ms"))
        if shadow:
            n = int(shadow.get("samples") or 0)
            if shadow.get("agreement") is not None and n > 0:
                shadow_samples += n
                agreeing += float(shadow["agreement"]) * n
            if ratio is None:
                ratio = _ratio(shadow.get("candidate_p95_ms"), shadow.get("incumbent_p95_ms"))
        if ratio is not None:
            ratios.append(ratio)
    candidate = _scores(
        conn,
        f"""SELECT top_score FROM results WHERE device_id IN ({_WAVE}) AND model = :model
            AND model_version = :version AND top_score IS NOT NULL
            ORDER BY id DESC LIMIT {SCORES_LIMIT}""",
        params,
    )
    incumbent = _scores(
        conn,
        f"""SELECT r.top_score FROM deployments d JOIN results r ON r.device_id = d.device_id
            WHERE d.rollout_id = :rollout AND d.wave = :wave AND r.model = :model
            AND r.model_version = d.previous_version AND r.model_version != :version
            AND r.top_score IS NOT NULL ORDER BY r.id DESC LIMIT {SCORES_LIMIT}""",
        params,
    )
    values: dict[str, float | None] = {
        "error_rate": errors / inferences if inferences else None,
        "latency_p95_ms": weighted_p95 / inferences if inferences and weighted_p95 else None,
        "latency_ratio": statistics.median(ratios) if ratios else None,
        "confidence_shift": (
            ks_distance(candidate, incumbent)
            if min(len(candidate), len(incumbent)) >= KS_MIN_SCORES
            else None
        ),
        "agreement": agreeing / shadow_samples if shadow_samples else None,
        "offload_rate": offloaded / decided if decided else None,  # devices with an offload tier
        "cloud_agreement": cloud_same / cloud_compared if cloud_compared else None,
    }
    return Measured(samples=int(results) + shadow_samples, values=values)


def _ratio(candidate: object, incumbent: object) -> float | None:
    if isinstance(candidate, int | float) and isinstance(incumbent, int | float) and incumbent > 0:
        return float(candidate) / float(incumbent)
    return None


def _scores(conn: sqlite3.Connection, sql: str, params: dict[str, object]) -> list[float]:
    return [float(score) for (score,) in conn.execute(sql, params)]
