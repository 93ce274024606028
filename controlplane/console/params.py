"""The console pages' query parameters: pure parsers that raise :class:`BadRequest` naming the
parameter and what it takes (the page answers it as an HTML 400).

HTML forms submit every field, empty ones too: an empty value means "not set" here, so a filter
form left blank is the unfiltered page. Unknown parameters are refused as in the JSON API (a typo
must not silently show everything).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from controlplane.api import check_known, parse_device_id
from controlplane.errors import BadRequest

RANGES: dict[str, float] = {
    "15m": 900.0,
    "1h": 3600.0,
    "6h": 6 * 3600.0,
    "24h": 86400.0,
    "7d": 7 * 86400.0,
    "30d": 30 * 86400.0,
}
"""The time ranges a chart can show (the ``range`` parameter)."""

NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
VERSION = re.compile(r"[A-Za-z0-9_.+-]{1,64}")
TAG = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_PAGE = 100_000
MAX_TEXT = 128


def known(q: Mapping[str, str], allowed: Collection[str]) -> None:
    check_known(q.keys(), allowed)


def text(q: Mapping[str, str], name: str) -> str | None:
    """The parameter's value, None when absent or empty."""
    value = q.get(name)
    return value if value else None


def search(raw: str | None) -> str | None:
    if raw is None:
        return None
    value = raw.strip()
    if len(value) > MAX_TEXT or any(ord(c) < 32 for c in value):
        raise BadRequest("q", f"expected up to {MAX_TEXT} printable characters")
    return value or None


def page_number(raw: str | None) -> int:
    """A 1-based page number."""
    if raw is None:
        return 1
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise BadRequest("page", f"expected a page number from 1 to {MAX_PAGE}, got {raw!r}")
    return int(raw)


def choice(name: str, raw: str | None, choices: Collection[str], default: str) -> str:
    if raw is None:
        return default
    if raw not in choices:
        raise BadRequest(name, f"expected one of {', '.join(choices)}, got {raw!r}")
    return raw


def time_range(raw: str | None, default: str = "1h") -> tuple[str, float]:
    """``range``: one of :data:`RANGES` -> (its name, seconds)."""
    name = choice("range", raw, RANGES, default)
    return name, RANGES[name]


def share(name: str, raw: str | None) -> float | None:
    """A number in [0, 1] (a confidence), or None."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise BadRequest(name, f"expected a number from 0 to 1, got {raw!r}")
    return value


def yes_no(name: str, raw: str | None) -> bool | None:
    """``yes`` or ``no`` (None: either)."""
    if raw is None:
        return None
    if raw in ("yes", "no"):
        return raw == "yes"
    raise BadRequest(name, f"expected yes or no, got {raw!r}")


def device_id(raw: str | None, name: str = "device") -> str | None:
    return None if raw is None else parse_device_id(raw, name)


def model_name(raw: str | None, name: str = "model") -> str | None:
    if raw is None:
        return None
    if not NAME.fullmatch(raw):
        raise BadRequest(name, f"expected a model name (1 to 64 of A-Z a-z 0-9 _ . -), got {raw!r}")
    return raw


def version(raw: str | None, name: str = "version") -> str | None:
    if raw is None:
        return None
    if not VERSION.fullmatch(raw):
        raise BadRequest(name, f"expected a version (1 to 64 of A-Z a-z 0-9 _ . + -), got {raw!r}")
    return raw


@dataclass(frozen=True)
class ReleaseRef:
    model: str
    version: str

    def __str__(self) -> str:
        return f"{self.model}:{self.version}"


def release(raw: str | None, name: str = "release") -> ReleaseRef | None:
    """``MODEL:VERSION``."""
    if raw is None:
        return None
    model, sep, ver = raw.partition(":")
    if not sep:
        raise BadRequest(name, f"expected MODEL:VERSION, like digits-edge:2.0.0, got {raw!r}")
    return ReleaseRef(model_name(model, name) or "", version(ver, name) or "")


def tag(raw: str | None) -> tuple[str, str] | None:
    """``KEY=VALUE``."""
    if raw is None:
        return None
    key, sep, value = raw.partition("=")
    if not sep or not TAG.fullmatch(key) or not TAG.fullmatch(value):
        raise BadRequest("tag", f"expected KEY=VALUE of A-Z a-z 0-9 _ . -, got {raw!r}")
    return key, value


def label(raw: str | None, name: str = "label") -> str | None:
    if raw is None:
        return None
    if len(raw) > MAX_TEXT or any(ord(c) < 32 for c in raw):
        raise BadRequest(name, f"expected a label of up to {MAX_TEXT} printable characters")
    return raw


def id_list(raw: str | None, name: str, maximum: int) -> list[str]:
    """Comma-separated device ids (at most ``maximum``)."""
    if raw is None:
        return []
    items = [i for i in raw.split(",") if i]
    if len(items) > maximum:
        raise BadRequest(name, f"at most {maximum} ids, got {len(items)}")
    return [parse_device_id(i, name) for i in items]


def rollout_id(raw: str, name: str = "id") -> str:
    if not NAME.fullmatch(raw):
        raise BadRequest(name, f"expected a rollout id (1 to 64 of A-Z a-z 0-9 _ . -), got {raw!r}")
    return raw
