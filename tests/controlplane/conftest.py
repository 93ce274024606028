"""Fixtures shared by the control plane's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controlplane.store import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "cp.db")
    s.open()
    try:
        yield s
    finally:
        s.close()
