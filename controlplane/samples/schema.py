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


def v8_data_protection(db: Database) -> None:
    """Schema version 8: kept inputs sealed at rest (docs/data.md, "Encryption at rest").

    - ``samples.blob``: the sealed file of the input, relative to ``DATA_DIR/samples/``
      (``sealed/ab/<32 hex>``); NULL for an input stored before version 8, whose plaintext is
      still the file named by its SHA-256. The control plane seals those after it starts
      (:class:`controlplane.samples.keeper.Keeper`): a migration has no keys.
    - ``samples.key_id``: the keyring key the input is sealed under (NULL: not sealed yet), so
      a rotation finds what an old key sealed without opening a file.
    - indexes for the retention purge (by either time) and deletion by device and time.
    """
    db.execute("ALTER TABLE samples ADD COLUMN blob TEXT")
    db.execute("ALTER TABLE samples ADD COLUMN key_id TEXT")
    db.execute("CREATE INDEX samples_key ON samples (key_id)")
    db.execute("CREATE INDEX samples_device_time ON samples (device_id, created_at)")
    db.execute("CREATE INDEX samples_created ON samples (created_at)")
    db.execute("CREATE INDEX samples_received ON samples (received_at)")
