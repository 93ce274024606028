"""Desired documents: each device's next desired state, written unsigned in the rollout's
transaction; the controller seals and publishes them after the commit (:func:`unpublished`,
:func:`mark_published`), so a document written but not published is published by the next pass."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from controlplane.rollouts.columns import dumps


def next_generation(previous: int | None, now: float) -> int:
    """Grows with every document, and stays ahead even if the store is replaced (issue 3)."""
    return max((previous or 0) + 1, int(now * 1000))


def read_desired(conn: sqlite3.Connection, device_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT doc FROM desired WHERE device_id = ?", [device_id]).fetchone()
    return None if row is None else dict(json.loads(row["doc"]))


def entry_for(doc: Mapping[str, Any] | None, model: str) -> dict[str, Any] | None:
    for entry in (doc or {}).get("models", []):
        if entry.get("model") == model:
            return dict(entry)
    return None


def desired_doc(
    device_id: str, current: Mapping[str, Any] | None, entry: Mapping[str, Any],
    generation: int, now: float,
) -> dict[str, Any]:  # fmt: skip
    """The device's next desired state: its other models unchanged, ``entry`` for its model."""
    models = [m for m in (current or {}).get("models", []) if m.get("model") != entry["model"]]
    models.append(dict(entry))
    models.sort(key=lambda m: str(m.get("model")))
    return {"device_id": device_id, "generation": generation, "issued_at": now, "models": models}


def write_desired(
    conn: sqlite3.Connection, device_id: str, current: Mapping[str, Any] | None,
    entry: Mapping[str, Any], now: float,
) -> int:  # fmt: skip
    previous = current.get("generation") if current is not None else None
    generation = next_generation(previous, now)
    doc = desired_doc(device_id, current, entry, generation, now)
    conn.execute(
        """INSERT INTO desired (device_id, generation, doc, published_generation)
           VALUES (?, ?, ?, 0)
           ON CONFLICT (device_id) DO UPDATE SET generation = excluded.generation,
             doc = excluded.doc""",
        [device_id, generation, dumps(doc)],
    )
    return generation


def unpublished(
    conn: sqlite3.Connection, limit: int = 1000
) -> list[tuple[str, int, dict[str, Any]]]:
    """Desired documents not yet acknowledged by the broker: (device id, generation, doc)."""
    rows = conn.execute(
        "SELECT device_id, generation, doc FROM desired WHERE published_generation < generation "
        "ORDER BY device_id LIMIT ?",
        [limit],
    )
    return [(r[0], r[1], json.loads(r[2])) for r in rows]


def mark_published(conn: sqlite3.Connection, published: Sequence[tuple[str, int]]) -> None:
    conn.executemany(
        "UPDATE desired SET published_generation = max(published_generation, ?) "
        "WHERE device_id = ?",
        [(generation, device_id) for device_id, generation in published],
    )
