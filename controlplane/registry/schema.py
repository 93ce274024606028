"""Schema version 2: the registry's tables (filled in by the registry work)."""

from sqlite_utils import Database


def v2_registry(db: Database) -> None:
    """Create the registry's tables."""
