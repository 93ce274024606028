"""What the fleet runs, counted from the devices' latest birth messages (reads, for the pages).

The ``models`` and ``accelerators`` columns are JSON, and devices of one release report the same
text: grouping by the text and decoding each distinct value once is several times cheaper than
``json_each`` over 10,000 rows.
"""

from __future__ import annotations

import json
import sqlite3

from controlplane.rollouts.waves import accelerator_kind


def release_counts(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    """``{(model, version): devices}`` over every known device."""
    counts: dict[tuple[str, str], int] = {}
    for text, n in conn.execute("SELECT models, count(*) FROM devices GROUP BY models"):
        seen: set[tuple[str, str]] = set()
        for m in json.loads(text or "[]"):
            name, version = m.get("name"), m.get("version")
            if name is None or version is None or (name, version) in seen:
                continue
            seen.add((str(name), str(version)))
            counts[(str(name), str(version))] = counts.get((str(name), str(version)), 0) + n
    return counts


def accelerator_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """``{edgetpu|gpu|cpu: devices}``: the accelerator a device has present."""
    kinds: dict[str, int] = {}
    for text, n in conn.execute("SELECT accelerators, count(*) FROM devices GROUP BY 1"):
        kind = accelerator_kind(json.loads(text or "[]"))
        kinds[kind] = kinds.get(kind, 0) + n
    return kinds


def backend_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """``{backend: devices}``: the runtime backend each device uses now."""
    return {
        str(b): int(n)
        for b, n in conn.execute(
            "SELECT backend, count(*) FROM devices WHERE backend IS NOT NULL GROUP BY 1"
        )
    }
