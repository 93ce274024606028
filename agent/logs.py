"""The agent's log lines: one JSON object per line on stdout, with the level changeable at run time.

JSON on stdout because journald and container runtimes keep stdout as it is, and a log shipper
parses an object without a regular expression. ``text`` is for a person at a terminal (stderr).
The level is the root logger's, so it is changed in one place: :func:`set_level` (the
``set-log-level`` command) and :func:`step` (SIGUSR1/SIGUSR2 in :mod:`agent.main`).

A :class:`RingBuffer` on the root logger keeps the last :data:`RING_SIZE` records, each as the
object its JSON line holds (long fields cut at :data:`MAX_FIELD_CHARS`), for the ``logs``
command: a bounded amount of memory, whatever the format or the destination of the log.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import deque
from datetime import datetime, timezone
from typing import Any, Literal, TextIO

LogFormat = Literal["json", "text"]

#: The levels a user may choose, most verbose first (the order SIGUSR1/SIGUSR2 step through).
LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)
_OWN = frozenset({"ts", "level", "logger", "msg", "device_id", "exc"})


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: ``ts``, ``level``, ``logger``, ``msg``, ``device_id``,
    ``exc`` when an exception is attached, and each ``extra=`` field that JSON can carry."""

    def __init__(self, device_id: str | None = None) -> None:
        super().__init__()
        self.device_id = device_id

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.fields(record), ensure_ascii=False, separators=(",", ":"))

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        """The object of a record's JSON line."""
        ts = datetime.fromtimestamp(record.created, timezone.utc)
        line: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "device_id": getattr(record, "device_id", None) or self.device_id,
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key in _STANDARD or key in _OWN or key.startswith("_"):
                continue
            if _jsonable(value):
                line[key] = value
        return line


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def level_name(name: str) -> str:
    """The canonical name of a level (any case), or a ValueError naming the valid ones."""
    upper = name.strip().upper()
    if upper not in LEVELS:
        raise ValueError(f"unknown log level {name!r}: expected one of {', '.join(LEVELS)}")
    return upper


class _Handler(logging.StreamHandler[TextIO]):
    """The handler :func:`configure` installs, told apart from handlers others installed."""


RING_SIZE = 1000
"""Log records the ring buffer keeps (the ``logs`` command's ``--tail`` is at most this)."""
MAX_FIELD_CHARS = 4096
"""A longer string field of a kept record (a traceback) is cut to this many characters."""


class RingBuffer(logging.Handler):
    """The last ``capacity`` log records as JSON-ready objects, oldest first; bounded."""

    def __init__(self, capacity: int = RING_SIZE, device_id: str | None = None) -> None:
        super().__init__()
        self._lines: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._fields = JsonFormatter(device_id)

    @property
    def device_id(self) -> str | None:
        return self._fields.device_id

    @device_id.setter
    def device_id(self, value: str | None) -> None:
        self._fields.device_id = value

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self._fields.fields(record)
            for key, value in line.items():
                if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
                    line[key] = value[: MAX_FIELD_CHARS - 1] + "\u2026"
            self._lines.append(line)
        except Exception:
            self.handleError(record)

    def tail(self, n: int) -> list[dict[str, Any]]:
        """The last ``n`` records kept (fewer when fewer were logged), oldest first."""
        self.acquire()  # emit() runs under the same lock, from any thread
        try:
            lines = list(self._lines)
        finally:
            self.release()
        return lines[-n:] if n > 0 else []


def ring_buffer(device_id: str | None = None) -> RingBuffer:
    """The root logger's ring buffer, installed the first time (idempotent)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, RingBuffer):
            if device_id is not None:
                handler.device_id = device_id
            return handler
    ring = RingBuffer(device_id=device_id)
    root.addHandler(ring)
    return ring


def configure(level: str, fmt: LogFormat = "json", device_id: str | None = None) -> None:
    """Send every log record to one handler, JSON on stdout or text on stderr, and keep the
    last ones in the ring buffer."""
    handler = _Handler(sys.stdout if fmt == "json" else sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(device_id))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        if isinstance(old, _Handler):  # configured again: replace ours, keep anyone else's
            root.removeHandler(old)
    root.addHandler(handler)
    ring_buffer(device_id)
    root.setLevel(level_name(level))


def current_level() -> str:
    return logging.getLevelName(logging.getLogger().level)


def set_level(name: str) -> str:
    """Change the running agent's level; returns the previous one."""
    new = level_name(name)
    previous = current_level()
    logging.getLogger().setLevel(new)
    return previous


def stepped(current: str, steps: int) -> str:
    """The level ``steps`` places from ``current`` in :data:`LEVELS` (negative: more verbose),
    held at either end."""
    index = LEVELS.index(current) if current in LEVELS else LEVELS.index("INFO")
    return LEVELS[min(max(index + steps, 0), len(LEVELS) - 1)]


def step(steps: int, reason: str) -> str:
    """Move the level ``steps`` places (-1: more verbose) and log the change; returns the new one.

    The change is logged at the less verbose of the two levels, so both sides of it show the line.
    """
    new = stepped(current_level(), steps)
    previous = set_level(new)
    shown = max(logging.getLevelName(previous), logging.getLevelName(new))
    logging.getLogger("edgefleet.agent").log(
        shown, "log level %s -> %s (%s)", previous, new, reason,
        extra={"previous_level": previous, "log_level": new},
    )  # fmt: skip
    return new
