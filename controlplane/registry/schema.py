"""Schema version 2: the registry's tables.

``artifacts`` lists the files of the content-addressed store (the bytes live on disk under
``DATA_DIR/artifacts``; a row is written after its file is in place). ``releases`` holds each
sealed release exactly as it was signed (``sealed``, JSON), keyed by name and version; ``seq``
grows per name and is unique with it, so two concurrent pushes cannot share a number.
"""

from sqlite_utils import Database


def v2_registry(db: Database) -> None:
    """Create the registry's tables."""
    db.table("artifacts").create(
        {"sha256": str, "size": int, "format": str, "created_at": float},
        pk="sha256",
        not_null=["size", "format", "created_at"],
    )
    db.table("releases").create(
        {"name": str, "version": str, "seq": int, "created_at": float, "sealed": str},
        pk=("name", "version"),
        not_null=["name", "version", "seq", "created_at", "sealed"],
    )
    db.table("releases").create_index(["name", "seq"], unique=True)
