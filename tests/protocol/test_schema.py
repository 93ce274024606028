"""The committed JSON Schemas (protocol/schema/) must match the models: regenerate with
``python -m protocol.schema`` after changing a wire message."""

from __future__ import annotations

import pytest

from protocol.schema import DOCUMENTS, SCHEMA_DIR, render


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_committed_schema_is_current(name: str) -> None:
    committed = (SCHEMA_DIR / f"{name}.schema.json").read_text()
    assert committed == render(DOCUMENTS[name]), (
        f"protocol/schema/{name}.schema.json is stale: run `python -m protocol.schema`"
    )
