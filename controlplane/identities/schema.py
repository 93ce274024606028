"""Schema version 9: device identities.

- ``enrollment_tokens``: one row per token, keyed by its SHA-256 (the token itself is never
  stored); ``used_at`` is set once, by the enrollment that consumed it.
- ``certificates``: every certificate the control plane issued to a device (enrollment, renewal,
  an operator's ``provision device``, and the short-lived ones a revocation uses to cut a live
  session), by serial (hex); ``revoked_at`` puts it in the CRL.
- ``revoked_devices``: devices revoked for good: no new token, enrollment, renewal or
  certificate for the id, and ``GET /api/v1/devices`` shows ``revoked``.
"""

from __future__ import annotations

from sqlite_utils import Database


def v9_provisioning(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE enrollment_tokens (
          token_hash TEXT PRIMARY KEY, device_id TEXT NOT NULL, created_at REAL NOT NULL,
          expires_at REAL NOT NULL, used_at REAL
        )
        """
    )
    db.execute("CREATE INDEX enrollment_tokens_device ON enrollment_tokens (device_id)")
    db.execute(
        """
        CREATE TABLE certificates (
          serial TEXT PRIMARY KEY, device_id TEXT NOT NULL, via TEXT NOT NULL,
          issued_at REAL NOT NULL, not_before REAL NOT NULL, not_after REAL NOT NULL,
          revoked_at REAL
        )
        """
    )
    db.execute("CREATE INDEX certificates_device ON certificates (device_id)")
    db.execute("CREATE INDEX certificates_revoked ON certificates (revoked_at)")
    db.execute(
        """
        CREATE TABLE revoked_devices (
          device_id TEXT PRIMARY KEY, revoked_at REAL NOT NULL, reason TEXT NOT NULL
        )
        """
    )
