"""The rollout tables' JSON text columns: how they are read and written (compact, NULL for None)."""

from __future__ import annotations

import json
from typing import Any


def loads(text: str | None) -> Any:
    return json.loads(text) if text else None


def dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))
