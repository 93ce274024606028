"""The Models page: each model's releases with their artifacts per target (hash, size, format),
the signature's key, the accuracy their manifests declare and their latest evaluation, and how
many devices run each one (from their latest birth messages), linked to the filtered devices."""

from __future__ import annotations

import sqlite3
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from controlplane.api import Context
from controlplane.console import params
from controlplane.console.templating import page, render
from controlplane.registry.releases import query_models, query_releases, summary

RELEASES_SHOWN = 20  # per model, newest first


def query_registry(conn: sqlite3.Connection) -> dict[str, Any]:
    """``models``: each registered model with its releases; ``elsewhere``: (model, version,
    devices) that devices run from their own configuration, outside the registry."""
    running: dict[tuple[str, str], int] = {
        (str(m), str(v)): int(n)
        for m, v, n in conn.execute(
            "SELECT json_extract(m.value, '$.name'), json_extract(m.value, '$.version'),"
            " count(DISTINCT d.id) FROM devices d, json_each(d.models) m GROUP BY 1, 2"
        )
    }
    evaluations: dict[tuple[str, str], dict[str, Any]] = {}
    for name, version, accuracy, samples, created_at in conn.execute(
        "SELECT name, version, accuracy, samples, max(created_at) FROM evaluations"
        " GROUP BY name, version"
    ):
        evaluations[(name, version)] = {
            "accuracy": accuracy, "samples": samples, "at": created_at,
        }  # fmt: skip
    out = []
    for model in query_models(conn):
        releases = []
        for stored in query_releases(conn, model["name"])[:RELEASES_SHOWN]:
            body = stored.release
            key = (stored.name, stored.version)
            releases.append({
                **summary(stored),
                "artifacts": body.get("artifacts", {}),
                "metrics": body.get("metrics", {}),
                "labels": len(body.get("labels", [])),
                "golden": len(body.get("golden", [])),
                "signature": stored.sealed.get("signature", {}),
                "running_on": running.get(key, 0),
                "evaluation": evaluations.get(key),
            })  # fmt: skip
        unregistered = sorted(
            (v, n) for (m, v), n in running.items()
            if m == model["name"] and (m, v) not in {(r["name"], r["version"]) for r in releases}
        )  # fmt: skip
        out.append({**model, "release_list": releases, "unregistered": unregistered})
    names = {m["name"] for m in out}
    elsewhere = sorted((m, v, n) for (m, v), n in running.items() if m not in names)
    return {"models": out, "elsewhere": elsewhere}


@page
async def models_page(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    params.known(request.query_params, ())
    registry = await ctx.store.read(query_registry)
    return render(request, "models.html", registry, active="models")
