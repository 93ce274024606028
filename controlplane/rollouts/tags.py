"""Device tags set by operators: an overlay on what devices report (``devices tag``, the API)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from controlplane.rollouts.columns import dumps, loads
from controlplane.store import effective_tags

TAG_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


def set_tags(
    conn: sqlite3.Connection, device_id: str, set_: Mapping[str, str], remove: Sequence[str]
) -> dict[str, Any] | None:
    """Overlay the operator's tags on a device (``remove`` hides a tag, reported or set); the
    device's effective, reported and overridden tags, or None for an unknown device."""
    row = conn.execute(
        "SELECT tags, tag_overrides FROM devices WHERE id = ?", [device_id]
    ).fetchone()
    if row is None:
        return None
    overrides: dict[str, str | None] = dict(loads(row["tag_overrides"]) or {})
    overrides.update(set_)
    for key in remove:
        overrides[key] = None
    conn.execute("UPDATE devices SET tag_overrides = ? WHERE id = ?", [dumps(overrides), device_id])
    reported = json.loads(row["tags"] or "{}")
    return {
        "id": device_id, "tags": effective_tags(reported, overrides),
        "reported_tags": reported, "tag_overrides": overrides,
    }  # fmt: skip
