"""Retry decisions, backoff and the deadline split, as tables (pure functions)."""

from __future__ import annotations

import pytest

from agent.offload.retry import (
    MIN_ATTEMPT_S,
    Backoff,
    attempt_timeout,
    backoff_delay,
    next_wait,
    parse_retry_after,
    retryable,
)


@pytest.mark.parametrize(
    ("status", "server_errors", "expected"),
    [
        (None, 0, True),  # connection error or timeout
        (None, 5, True),
        (429, 0, True),
        (502, 0, True),
        (503, 3, True),
        (504, 0, True),
        (500, 0, True),  # once
        (500, 1, False),  # not twice
        (400, 0, False),
        (404, 0, False),
        (422, 0, False),
        (401, 0, False),
        (501, 0, False),
    ],
)
def test_retryable(status: int | None, server_errors: int, expected: bool) -> None:
    assert retryable(status, server_errors) is expected


B = Backoff(base_s=0.1, cap_s=1.0)


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (0, 1.0, 0.1),
        (1, 1.0, 0.2),
        (3, 1.0, 0.8),
        (4, 1.0, 1.0),  # capped
        (30, 1.0, 1.0),
        (3, 0.5, 0.4),  # jitter scales the ceiling
        (3, 0.0, 0.0),
    ],
)
def test_backoff_delay(attempt: int, rand: float, expected: float) -> None:
    assert backoff_delay(attempt, rand, B) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("attempt", "remaining", "rand", "retry_after", "expected"),
    [
        (0, 1.0, 1.0, None, 0.1),
        (0, 1.0, 0.0, 0.3, 0.3),  # Retry-After is a floor
        (3, 1.0, 1.0, 0.3, 0.8),  # backoff longer than Retry-After
        (0, 0.2, 1.0, 0.5, None),  # Retry-After past the deadline: give up now
        (3, 0.8, 1.0, None, None),  # waiting 0.8 of 0.8 leaves no time for a try
        (0, 0.1 + MIN_ATTEMPT_S, 1.0, None, 0.1),
    ],
)
def test_next_wait(
    attempt: int, remaining: float, rand: float, retry_after: float | None, expected: float | None
) -> None:
    got = next_wait(attempt, remaining, rand, retry_after, B)
    assert got == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("remaining", "attempts_left", "expected"),
    [(1.0, 3, 0.5), (1.0, 2, 0.5), (1.0, 1, 1.0), (0.4, 1, 0.4), (-0.1, 1, 0.0), (-1, 3, 0.0)],
)
def test_attempt_timeout(remaining: float, attempts_left: int, expected: float) -> None:
    assert attempt_timeout(remaining, attempts_left) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("2", 2.0),
        (" 0.5 ", 0.5),
        ("-1", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected
