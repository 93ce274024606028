"""Schema version 10: operators (users, API tokens, console sessions) and the audit log.

- ``users``: ``name`` is unique and never reused (a user is disabled, never deleted, so the audit
  log's names keep meaning one person); ``password_hash`` is Argon2id, NULL for an account that
  only uses tokens.
- ``tokens``: ``id`` is the public part of a token, ``secret_digest`` the SHA-256 of the secret;
  ``role`` is the token's own scope (never above its owner's role when it was made, and what it
  may do is further capped by the owner's role at each use); ``revoked_at`` ends it at once.
- ``sessions``: the console's server-side sessions, keyed by the SHA-256 of the cookie's value,
  with their CSRF token and an absolute expiry.
- ``audit``: see :mod:`controlplane.audit.schema`.
"""

from __future__ import annotations

from sqlite_utils import Database

from controlplane.audit.schema import create_audit


def v10_operators(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE users (
          id INTEGER PRIMARY KEY,
          name TEXT NOT NULL UNIQUE,
          role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
          password_hash TEXT,
          disabled INTEGER NOT NULL DEFAULT 0,
          created_at REAL NOT NULL,
          created_by TEXT,
          changed_at REAL NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE tokens (
          id TEXT PRIMARY KEY,
          user_id INTEGER NOT NULL REFERENCES users (id),
          name TEXT NOT NULL,
          role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
          secret_digest TEXT NOT NULL,
          created_at REAL NOT NULL,
          created_by TEXT,
          expires_at REAL,
          revoked_at REAL,
          last_used_at REAL
        )
        """
    )
    db.execute("CREATE INDEX tokens_user ON tokens (user_id)")
    db.execute(
        """
        CREATE TABLE sessions (
          id_digest TEXT PRIMARY KEY,
          user_id INTEGER NOT NULL REFERENCES users (id),
          csrf_token TEXT NOT NULL,
          created_at REAL NOT NULL,
          expires_at REAL NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX sessions_user ON sessions (user_id)")
    db.execute("CREATE INDEX sessions_expiry ON sessions (expires_at)")
    create_audit(db)
