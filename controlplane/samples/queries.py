"""SQL of the data loop (schema :mod:`controlplane.samples.schema`): writes run in the store's
writer transaction (:meth:`controlplane.store.Store.transact`), reads on its reader threads."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controlplane.errors import Conflict, NotFound
from controlplane.samples.labels import best_label
from controlplane.samples.vault import KeyRetired

IN_CHUNK = 400  # bound parameters per IN (...) list


def sample_path(device_id: str, result_id: str) -> str:
    return f"/api/v1/samples/{device_id}/{result_id}"


# -- samples ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewSample:
    device_id: str
    result_id: str
    sha256: str
    size: int
    content_type: str
    model: str
    model_version: str
    reason: str
    created_at: float
    received_at: float
    blob: str | None = None  # its sealed file (controlplane/samples/vault.py)
    key_id: str | None = None  # the key it is sealed under


def insert_sample(
    conn: sqlite3.Connection, s: NewSample, holds: Callable[[str], bool] | None = None
) -> bool:
    """File an input; False when the same bytes were filed for this result before (a retry).
    Conflict when other bytes were: a result has one input. :class:`KeyRetired` when ``holds``
    says the key it is sealed under was retired meanwhile (seal it again)."""
    if s.key_id is not None and holds is not None and not holds(s.key_id):
        raise KeyRetired(s.key_id)
    row = conn.execute(
        "SELECT sha256 FROM samples WHERE device_id = ? AND result_id = ?",
        [s.device_id, s.result_id],
    ).fetchone()
    if row is not None:
        check_same_input(row[0], s.sha256, s.device_id, s.result_id)
        return False
    conn.execute(
        "INSERT INTO samples (device_id, result_id, sha256, size, content_type, model,"
        " model_version, reason, created_at, received_at, blob, key_id)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        [s.device_id, s.result_id, s.sha256, s.size, s.content_type, s.model, s.model_version,
         s.reason, s.created_at, s.received_at, s.blob, s.key_id],
    )  # fmt: skip
    return True


def check_same_input(filed: str, sha256: str, device_id: str, result_id: str) -> None:
    """Conflict unless the input filed for a result (its SHA-256) is the one sent again."""
    if filed != sha256:
        raise Conflict(
            f"result {result_id} of {device_id} has another input filed already "
            f"({filed[:12]}, not {sha256[:12]}): a result has one input"
        )


def query_sample(conn: sqlite3.Connection, device_id: str, result_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT device_id, result_id, sha256, size, content_type, model, model_version, reason,"
        " created_at, received_at, blob, key_id FROM samples WHERE device_id = ? AND result_id = ?",
        [device_id, result_id],
    ).fetchone()
    return None if row is None else dict(zip(_SAMPLE_KEYS, row, strict=True))


_SAMPLE_KEYS = (
    "device_id", "result_id", "sha256", "size", "content_type", "model", "model_version",
    "reason", "created_at", "received_at", "blob", "key_id",
)  # fmt: skip


# -- feedback --------------------------------------------------------------------------------------


def put_feedback(
    conn: sqlite3.Connection,
    device_id: str,
    result_id: str,
    label: str | None,
    correct: bool | None,
    now: float,
) -> dict[str, Any]:
    """Record an operator's label for a stored result (replacing an earlier one). With
    ``correct`` true and no label, the label is the device's own top answer."""
    row = conn.execute(
        "SELECT top_label FROM results WHERE device_id = ? AND result_id = ?",
        [device_id, result_id],
    ).fetchone()
    if row is None:
        raise NotFound(f"no result {result_id} of device {device_id} is stored")
    if label is None:
        if row[0] is None:
            raise Conflict(
                f"result {result_id} has no top class to confirm: give the label instead"
            )
        label = str(row[0])
    conn.execute(
        "INSERT INTO feedback (device_id, result_id, label, correct, given_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id, result_id) DO UPDATE SET"
        " label = excluded.label, correct = excluded.correct, given_at = excluded.given_at",
        [device_id, result_id, label, None if correct is None else int(correct), now],
    )
    return {"label": label, "correct": correct, "given_at": now}


def query_feedback(
    conn: sqlite3.Connection, device_id: str, result_id: str
) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT label, correct, given_at FROM feedback WHERE device_id = ? AND result_id = ?",
        [device_id, result_id],
    ).fetchone()
    return None if row is None else _feedback(row)


def _feedback(row: Any) -> dict[str, Any]:
    label, correct, given_at = row[-3], row[-2], row[-1]
    return {"label": label, "correct": None if correct is None else bool(correct),
            "given_at": given_at}  # fmt: skip


def attach(conn: sqlite3.Connection, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A page of results, each with ``sample_url`` and ``feedback`` where it has them."""
    ids = sorted({r["result_id"] for r in results if "result_id" in r})
    samples: set[tuple[str, str]] = set()
    feedback: dict[tuple[str, str], dict[str, Any]] = {}
    for start in range(0, len(ids), IN_CHUNK):
        chunk = ids[start : start + IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        for device_id, result_id in conn.execute(
            f"SELECT device_id, result_id FROM samples WHERE result_id IN ({marks})", chunk
        ):
            samples.add((device_id, result_id))
        for row in conn.execute(
            "SELECT device_id, result_id, label, correct, given_at FROM feedback"
            f" WHERE result_id IN ({marks})",
            chunk,
        ):
            feedback[(row[0], row[1])] = _feedback(row)
    out = []
    for result in results:
        key = (result.get("device_id", ""), result.get("result_id", ""))
        extra: dict[str, Any] = {}
        if key in samples:
            extra["sample_url"] = sample_path(*key)
        if key in feedback:
            extra["feedback"] = feedback[key]
        out.append({**result, **extra} if extra else result)
    return out


# -- data sets -------------------------------------------------------------------------------------

_DATASET = """
SELECT s.id, s.device_id, s.result_id, s.sha256, s.size, s.content_type, s.model_version,
       s.reason, s.created_at, f.label, r.cloud_label, r.cloud_score, r.top_label, r.top_score
FROM samples s
LEFT JOIN feedback f ON f.device_id = s.device_id AND f.result_id = s.result_id
LEFT JOIN results r ON r.device_id = s.device_id AND r.result_id = s.result_id
WHERE s.model = ? AND s.id > ? {since} {labelled}
ORDER BY s.id LIMIT ?
"""


def dataset_page(
    conn: sqlite3.Connection,
    model: str,
    *,
    since: float | None,
    labelled: bool,
    after: int,
    limit: int,
) -> tuple[list[dict[str, Any]], int | None]:
    """A page of ``model``'s kept inputs with the best label of each; (items, last id or None
    when this was the last page)."""
    params: list[Any] = [model, after]
    since_sql = ""
    if since is not None:
        since_sql = "AND s.created_at >= ?"
        params.append(since)
    labelled_sql = "AND (f.label IS NOT NULL OR r.cloud_label IS NOT NULL)" if labelled else ""
    rows = conn.execute(
        _DATASET.format(since=since_sql, labelled=labelled_sql), [*params, limit + 1]
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    items = []
    for row in rows:
        (_, device_id, result_id, sha256, size, ctype, version, reason, created_at,
         fb, cloud_label, cloud_score, top_label, top_score) = row  # fmt: skip
        best = best_label(fb, (cloud_label, cloud_score), (top_label, top_score), labelled=labelled)
        items.append({
            "device_id": device_id, "result_id": result_id, "model_version": version,
            "reason": reason, "created_at": created_at, "sha256": sha256, "size": size,
            "content_type": ctype, "sample_url": sample_path(device_id, result_id),
            "label": best.label if best else None,
            "label_source": best.source if best else None,
            "confidence": best.confidence if best else None,
            "edge_label": top_label, "cloud_label": cloud_label,
        })  # fmt: skip
    return items, (rows[-1][0] if more else None)


# -- evaluations -----------------------------------------------------------------------------------


def insert_evaluation(
    conn: sqlite3.Connection, name: str, version: str, body: dict[str, Any], now: float
) -> dict[str, Any]:
    against = body.get("against") or {}
    dataset = body["dataset"]
    cursor = conn.execute(
        "INSERT INTO evaluations (name, version, against_version, dataset_digest, samples,"
        " accuracy, against_accuracy, created_at, body) VALUES (?,?,?,?,?,?,?,?,?)",
        [name, version, against.get("version"), dataset["digest"], body["samples"],
         body.get("accuracy"), against.get("accuracy"), now, json.dumps(body)],
    )  # fmt: skip
    return _evaluation((cursor.lastrowid, name, version, now, json.dumps(body)))


def query_evaluations(conn: sqlite3.Connection, name: str, version: str) -> list[dict[str, Any]]:
    """A release's evaluations, newest first."""
    rows = conn.execute(
        "SELECT id, name, version, created_at, body FROM evaluations WHERE name = ?"
        " AND version = ? ORDER BY id DESC",
        [name, version],
    )
    return [_evaluation(r) for r in rows]


def incumbent_figures(
    conn: sqlite3.Connection, name: str, latest: dict[str, Any]
) -> dict[str, Any] | None:
    """The figures to beat: the ``--against`` release's in ``latest``, else the newest
    evaluation of another release of ``name`` on the same data set (same digest)."""
    digest = latest["dataset"]["digest"]
    against = latest.get("against")
    if against:
        return {"version": against.get("version"), "accuracy": against.get("accuracy"),
                "dataset_digest": digest}  # fmt: skip
    row = conn.execute(
        "SELECT version, accuracy FROM evaluations WHERE name = ? AND version != ?"
        " AND dataset_digest = ? ORDER BY id DESC LIMIT 1",
        [name, latest["version"], digest],
    ).fetchone()
    return (
        None if row is None else {"version": row[0], "accuracy": row[1], "dataset_digest": digest}
    )


def _evaluation(row: Any) -> dict[str, Any]:
    rowid, name, version, created_at, body = row
    return {"id": rowid, "name": name, "version": version, "created_at": created_at,
            **json.loads(body)}  # fmt: skip
