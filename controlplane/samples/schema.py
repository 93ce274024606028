"""Schema version 5: kept inputs, operator feedback and release evaluations.

- ``samples``: one row per kept input, linked to its result by ``(device_id, result_id)``; the
  bytes live in a file named by their SHA-256 under ``DATA_DIR/samples/`` (the same input sent
  twice is one file). ``id`` orders the data set's pages (keyset paging, like results).
- ``feedback``: an operator's label for a result (``correct`` 1: the device's answer was right,
  and ``label`` is that answer). It outranks the cloud model's answer in a data set.
- ``evaluations``: a release's figures on a data set (``dataset_digest`` names the exact inputs
  and labels), with the incumbent's figures on the same data when it was evaluated against one.
"""

from __future__ import annotations

from sqlite_utils import Database


def v5_samples(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE samples (
          id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, result_id TEXT NOT NULL,
          sha256 TEXT NOT NULL, size INTEGER NOT NULL, content_type TEXT NOT NULL,
          model TEXT NOT NULL, model_version TEXT NOT NULL, reason TEXT NOT NULL,
          created_at REAL NOT NULL, received_at REAL NOT NULL
        )
        """
    )
    db.execute("CREATE UNIQUE INDEX samples_result ON samples (device_id, result_id)")
    db.execute("CREATE INDEX samples_model ON samples (model, id)")
    db.execute(
        """
        CREATE TABLE feedback (
          device_id TEXT NOT NULL, result_id TEXT NOT NULL, label TEXT NOT NULL,
          correct INTEGER, given_at REAL NOT NULL, PRIMARY KEY (device_id, result_id)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE evaluations (
          id INTEGER PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL,
          against_version TEXT, dataset_digest TEXT NOT NULL, samples INTEGER NOT NULL,
          accuracy REAL, against_accuracy REAL, created_at REAL NOT NULL, body TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX evaluations_release ON evaluations (name, version, id)")
