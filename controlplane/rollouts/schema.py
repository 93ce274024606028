"""Schema version 3: the rollouts' tables (filled in by the rollout work)."""

from sqlite_utils import Database


def v3_rollouts(db: Database) -> None:
    """Create the rollouts' tables."""
