"""What the fleet CLI prints: JSON for scripts, aligned tables and progress for people."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, TextIO


def emit(as_json: bool, data: Any, render: Callable[[Any], str]) -> None:
    """Print ``data`` as JSON (``--json``) or as ``render(data)``."""
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        text = render(data)
        if text:
            print(text)


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Left-aligned columns separated by two spaces; None prints as ``-``."""
    cells = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in header]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items())) or "-"
    if isinstance(value, list | tuple):
        return ",".join(cell(v) for v in value) or "-"
    return str(value)


def when(unix: float | None) -> str:
    """A Unix time as local ISO 8601 to the second."""
    if unix is None:
        return "-"
    return datetime.fromtimestamp(unix, timezone.utc).astimezone().isoformat(timespec="seconds")


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # not reached


class Progress:
    """A one-line progress report on stderr: redrawn in place on a terminal, else a line every
    few seconds (so CI logs show movement without a flood)."""

    def __init__(self, label: str, stream: TextIO | None = None, every_s: float = 5.0) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every_s = every_s
        self._last = 0.0

    def update(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            self.stream.write(f"\r{self.label}: {text}\033[K")
            self.stream.flush()
        elif force or now - self._last >= self.every_s:
            self._last = now
            self.stream.write(f"{self.label}: {text}\n")
            self.stream.flush()

    def bytes(self, sent: int, total: int) -> None:
        share = sent / total if total else 1.0
        self.update(f"{size(sent)} of {size(total)} ({share:.0%})", force=sent >= total)

    def done(self, text: str = "done") -> None:
        if self.tty:
            self.stream.write(f"\r{self.label}: {text}\033[K\n")
        else:
            self.stream.write(f"{self.label}: {text}\n")
        self.stream.flush()
