"""A device's health and attention signs: the SQL and the Python of each sign agree."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from controlplane.console.health import (
    ATTENTION_SQL,
    HEALTH_SQL,
    SEVERITY_SQL,
    health,
    reasons,
)
from controlplane.db import migrate
from controlplane.store import query_device

NOW = 1_800_000_000.0
AFTER = 60.0

CASES: list[tuple[str, dict[str, Any], str, list[str]]] = [
    # (name, device columns, health, words in its reasons)
    ("healthy", {}, "online", []),
    ("silent", {"last_seen": NOW - 61}, "offline", ["offline"]),
    ("will", {"state": "offline"}, "offline", ["offline"]),
    ("fallback", {"fallback_reason": "edgetpu: missing", "backend": "litert"}, "degraded",
     ["fallback backend litert"]),
    ("errors", {"telemetry": {"errors": 2}}, "degraded", ["2 failed requests"]),
    ("demoted", {"telemetry": {"demoted_backends": ["edgetpu"]}}, "degraded",
     ["demoted backends: edgetpu"]),
    ("throttled", {"telemetry": {"throttled": True}}, "degraded", ["throttling"]),
    ("not throttled", {"telemetry": {"throttled": False}}, "online", []),
    ("outbox", {"telemetry": {"outbox_depth": 1000}}, "online", ["1000 results waiting"]),
    ("short outbox", {"telemetry": {"outbox_depth": 999}}, "online", []),
    ("disk", {"telemetry": {"disk_used_percent": 95.0}}, "online", ["95.0 % full"]),
    ("hot", {"telemetry": {"temperature_c": 85}}, "online", ["85"]),
    ("offline and failing", {"state": "offline", "telemetry": {"errors": 1}}, "offline",
     ["offline", "failed requests"]),
]  # fmt: skip


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> sqlite3.Connection:
    path: Path = tmp_path_factory.mktemp("health") / "cp.db"
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA synchronous = OFF")
    migrate(c)
    for name, columns, _, _ in CASES:
        row = {"state": "online", "last_seen": NOW - 1, "telemetry": {}, **columns}
        c.execute(
            "INSERT INTO devices (id, state, first_seen, last_seen, telemetry, backend,"
            " fallback_reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [name.replace(" ", "-"), row["state"], NOW - 100, row["last_seen"],
             json.dumps(row["telemetry"]), row.get("backend"), row.get("fallback_reason")],
        )  # fmt: skip
    c.row_factory = sqlite3.Row
    return c


@pytest.mark.parametrize(("name", "columns", "expected", "words"), CASES, ids=[c[0] for c in CASES])
def test_sql_and_python_agree(
    conn: sqlite3.Connection, name: str, columns: dict[str, Any], expected: str, words: list[str]
) -> None:
    device_id = name.replace(" ", "-")
    device = query_device(conn, device_id, NOW, AFTER)
    assert device is not None
    cutoff = {"cutoff": NOW - AFTER, "id": device_id}
    (in_sql, attention, severity) = conn.execute(
        f"SELECT {HEALTH_SQL}, {ATTENTION_SQL}, {SEVERITY_SQL} FROM devices d WHERE d.id = :id",
        cutoff,
    ).fetchone()
    assert health(device) == in_sql == expected
    why = reasons(device)
    assert bool(attention) == bool(why) == bool(words)
    assert (severity > 0) == bool(words)
    for word in words:
        assert any(word in w for w in why), (word, why)


def test_reasons_come_worst_first() -> None:
    device = {"state": "offline", "last_seen": time.time(),
              "telemetry": {"temperature_c": 90, "errors": 3}}  # fmt: skip
    assert reasons(device)[0] == "offline"
    assert "failed requests" in reasons(device)[1]
