"""The audit table: append-only, enforced by the database itself.

One row per mutating request (and per local action that bypasses the API, such as ``edgefleet
users create --data-dir``). Two triggers abort any ``UPDATE`` or ``DELETE`` of a row, so no code
path, bug or SQL typed by hand through the application's connections can rewrite history; nothing
in the code issues either statement. (Someone with the file can still drop the triggers: the log
protects against the application and its users, not against root on the host. Export it to
somewhere append-only for that: ``edgefleet audit export``.)
"""

from __future__ import annotations

from sqlite_utils import Database

APPEND_ONLY = "the audit log is append-only"


def create_audit(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE audit (
          id INTEGER PRIMARY KEY AUTOINCREMENT,
          at REAL NOT NULL,
          request_id TEXT NOT NULL,
          actor TEXT,
          token_id TEXT,
          via TEXT NOT NULL,
          role TEXT,
          action TEXT NOT NULL,
          method TEXT NOT NULL,
          route TEXT,
          target TEXT NOT NULL DEFAULT '{}',
          outcome INTEGER NOT NULL,
          address TEXT,
          forwarded_for TEXT,
          detail TEXT NOT NULL DEFAULT '{}'
        )
        """
    )
    db.execute("CREATE INDEX audit_at ON audit (at)")
    db.execute("CREATE INDEX audit_actor ON audit (actor, id)")
    for event in ("UPDATE", "DELETE"):
        db.execute(
            f"""
            CREATE TRIGGER audit_no_{event.lower()} BEFORE {event} ON audit
            BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END
            """
        )
