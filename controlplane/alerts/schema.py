"""Schema version 7: alerts, the conditions waiting out their ``for`` duration, and the durable
queue of webhook notifications.

- ``alerts``: one row per alert, ``firing`` then ``resolved`` (kept as history). At most one
  firing alert per (rule, device): a partial unique index makes a second one impossible, so
  deduplication holds even if two engines ran on one store. ``since`` is when the condition was
  first seen, ``started_at`` when the alert fired, ``updated_at`` its last change; ``value`` and
  ``reason`` are the latest while it fires; ``resolution`` says why it cleared.
- ``alert_pending``: a condition that holds but not yet for its rule's ``for_s``: a row per
  (rule, device), dropped when the alert fires or the condition clears. Kept in the store so a
  restart does not restart the clock.
- ``alert_notifications``: one row per (alert event, webhook), written in the transaction that
  fires or resolves the alert: ``pending`` until delivered, retried at ``next_at``, ``failed``
  after the last attempt. ``webhook`` is a digest of the webhook's URL (a URL may hold a token:
  it never enters the store); ``payload`` the generic JSON body.
"""

from __future__ import annotations

from sqlite_utils import Database


def v7_alerts(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE alerts (
          id INTEGER PRIMARY KEY, rule TEXT NOT NULL, device_id TEXT NOT NULL,
          severity TEXT NOT NULL, state TEXT NOT NULL, value REAL, threshold REAL,
          reason TEXT NOT NULL, resolution TEXT, since REAL NOT NULL, started_at REAL NOT NULL,
          updated_at REAL NOT NULL, resolved_at REAL
        )
        """
    )
    db.execute(
        "CREATE UNIQUE INDEX alerts_firing ON alerts (rule, device_id) WHERE state = 'firing'"
    )
    db.execute("CREATE INDEX alerts_state ON alerts (state, id)")
    db.execute("CREATE INDEX alerts_device ON alerts (device_id, id)")
    db.execute("CREATE INDEX alerts_rule ON alerts (rule, id)")
    db.execute(
        """
        CREATE TABLE alert_pending (
          rule TEXT NOT NULL, device_id TEXT NOT NULL, since REAL NOT NULL, value REAL,
          reason TEXT, PRIMARY KEY (rule, device_id)
        ) WITHOUT ROWID
        """
    )
    db.execute(
        """
        CREATE TABLE alert_notifications (
          id INTEGER PRIMARY KEY, alert_id INTEGER NOT NULL REFERENCES alerts (id),
          event TEXT NOT NULL, webhook TEXT NOT NULL, payload TEXT NOT NULL,
          state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
          created_at REAL NOT NULL, updated_at REAL NOT NULL, last_error TEXT
        )
        """
    )
    db.execute("CREATE INDEX alert_notifications_due ON alert_notifications (state, next_at)")
