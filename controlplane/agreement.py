"""How often edge and cloud agree, per model version; and a stored result with its cloud answer.

Read-side helpers for the offload columns of schema version 4 (:mod:`controlplane.offload_schema`):
run on a reader thread of :class:`controlplane.store.Store`. The agreement figure is what rollout
gates can weigh: a release whose edge answers the cloud model contradicts more often is worse.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

AGREEMENT = """
SELECT model_version,
       count(*) AS results,
       count(offload_decision) AS with_policy,
       count(*) FILTER (WHERE offload_decision = 'offloaded') AS offloaded,
       count(*) FILTER (WHERE offload_decision = 'deferred') AS deferred,
       count(cloud_body) AS cloud_answers,
       count(agree) AS compared,
       coalesce(sum(agree), 0) AS agreed
FROM results WHERE model = ? {since}
GROUP BY model_version ORDER BY model_version
"""


def query_agreement(
    conn: sqlite3.Connection, model: str, since: float | None = None
) -> list[dict[str, Any]]:
    """Per version of ``model``: results, offloads, cloud answers and the share that agree."""
    params: list[Any] = [model]
    clause = ""
    if since is not None:
        clause = "AND created_at >= ?"
        params.append(since)
    rows = conn.execute(AGREEMENT.format(since=clause), params).fetchall()
    out = []
    for row in rows:
        version, results, with_policy, offloaded, deferred, answers, compared, agreed = row
        out.append(
            {
                "model_version": version,
                "results": results,
                "with_offload_policy": with_policy,
                "offloaded": offloaded,
                "deferred": deferred,
                "offload_rate": round((offloaded + deferred) / with_policy, 6)
                if with_policy
                else None,
                "cloud_answers": answers,
                "compared": compared,
                "agreed": agreed,
                "agreement": round(agreed / compared, 6) if compared else None,
            }
        )
    return out


def with_cloud(result: dict[str, Any], cloud_body: str | None, agree: int | None) -> dict[str, Any]:
    """A stored result (its first copy's JSON) with the cloud's answer as stored, which may have
    come later than the result (a deferred case)."""
    if cloud_body is None:
        return result
    offload = dict(result.get("offload") or {"decision": "deferred"})
    offload["cloud"] = json.loads(cloud_body)
    offload["agree"] = None if agree is None else bool(agree)
    return {**result, "offload": offload}
