"""Schema version 4: each result's offload decision and the cloud's answer beside the local one.

Columns on ``results``: ``offload_decision`` (local, offloaded, deferred, local_only),
``offload_reason``, ``cloud_label`` and ``cloud_score`` (the cloud's top class: its label, or its
index when the cloud model has no labels), ``agree`` (1 or 0: same top class as the edge; NULL
when not compared), ``cloud_at`` (when the cloud answered) and ``cloud_body`` (the whole
:class:`~protocol.messages.CloudAnswer` as JSON). A deferred result's late answer fills the cloud
columns of the row stored earlier (:mod:`controlplane.records`). The agreement per model version
(:func:`controlplane.records.query_agreement`) reads the partial index on ``agree``.
"""

from __future__ import annotations

from sqlite_utils import Database

COLUMNS: dict[str, type] = {
    "offload_decision": str,
    "offload_reason": str,
    "cloud_label": str,
    "cloud_score": float,
    "agree": int,
    "cloud_at": float,
    "cloud_body": str,
}


def v4_offload(db: Database) -> None:
    """Add the offload columns to ``results`` and an index for the agreement figures."""
    results = db.table("results")
    for name, kind in COLUMNS.items():
        results.add_column(name, kind)
    db.execute(
        "CREATE INDEX results_agreement ON results (model, model_version, agree)"
        " WHERE agree IS NOT NULL"
    )
