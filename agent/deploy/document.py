"""A first, unverified look at a desired-state payload: enough to address a refusal (which
models, which generation) and to keep each release exactly as it was signed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RawDocument:
    names: list[str]
    """The model names it mentions (``["*"]`` when none can be read)."""
    generation: int
    """Its claimed generation (0 when unreadable)."""
    releases: dict[str, Any]
    """Per model, the sealed release object as received (stored on disk, re-verified at start)."""


def peek(payload: bytes) -> RawDocument:
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        doc = None
    body = doc.get("desired") if isinstance(doc, dict) else None
    body = body if isinstance(body, dict) else {}
    models = body.get("models")
    entries = [
        m
        for m in (models if isinstance(models, list) else [])
        if isinstance(m, dict) and isinstance(m.get("model"), str)
    ]
    generation = body.get("generation")
    return RawDocument(
        names=[m["model"] for m in entries] or ["*"],
        generation=generation if isinstance(generation, int) and generation >= 0 else 0,
        releases={m["model"]: m.get("release") for m in entries},
    )
