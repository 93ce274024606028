"""Retries of one cloud call: which failures to retry, how long to wait, how long each try may
take. Pure functions over plain values (a clock reading, a random number), tested as tables.

- Retried: connection errors and timeouts, 429, 502, 503, 504; 500 at most once (a bug in the
  server usually fails the same way again, a crashed worker may not). Never 400, 404, 422 or any
  other status: the same request would be refused again.
- The wait is capped, fully jittered exponential backoff; a ``Retry-After`` the server sent is
  a floor. A wait that would not leave time for another try within the deadline ends the call.
- The deadline is split across attempts: every try but the last may take half of what is left,
  the last all of it, so a slow first answer still leaves room to try again.
"""

from __future__ import annotations

from dataclasses import dataclass

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
MIN_ATTEMPT_S = 0.005
"""A try with less time than this left is not started."""


@dataclass(frozen=True)
class Backoff:
    base_s: float = 0.02
    cap_s: float = 2.0


DEFAULT_BACKOFF = Backoff()


def retryable(status: int | None, server_errors_so_far: int) -> bool:
    """Whether a failed try may be retried. ``status`` None: no HTTP answer (connection,
    timeout). ``server_errors_so_far`` counts the 500s before this one."""
    if status is None or status in RETRYABLE_STATUSES:
        return True
    if status == 500:
        return server_errors_so_far == 0
    return False


def backoff_delay(attempt: int, rand: float, backoff: Backoff = DEFAULT_BACKOFF) -> float:
    """The wait after failed try ``attempt`` (0-based): uniform in [0, min(cap, base * 2^n)]."""
    return rand * min(backoff.cap_s, backoff.base_s * 2.0**attempt)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds only; an HTTP date is ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def next_wait(
    attempt: int,
    remaining_s: float,
    rand: float,
    retry_after_s: float | None = None,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> float | None:
    """How long to wait before the next try, or None when no try fits in ``remaining_s``."""
    wait = backoff_delay(attempt, rand, backoff)
    if retry_after_s is not None:
        wait = max(wait, retry_after_s)
    if remaining_s - wait < MIN_ATTEMPT_S:
        return None
    return wait


def attempt_timeout(remaining_s: float, attempts_left: int) -> float:
    """How long the next try may take: half of what is left, all of it for the last try."""
    if attempts_left <= 1:
        return max(0.0, remaining_s)
    return max(0.0, remaining_s / 2)
