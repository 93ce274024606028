"""The circuit breaker's state machine, with the clock passed in."""

from __future__ import annotations

import pytest

from agent.offload.breaker import CircuitBreaker


def test_opens_after_consecutive_failures_only() -> None:
    b = CircuitBreaker(failures=3, cooldown_s=10)
    b.failure(0)
    b.failure(0)
    b.success()  # resets the count
    b.failure(1)
    b.failure(1)
    assert b.state(1) == "closed" and b.allow(1)
    b.failure(2)
    assert b.state(2) == "open"
    assert not b.allow(2)
    assert not b.allow(11.9)
    assert b.opened_total == 1


def test_half_open_lets_one_probe_and_its_outcome_decides() -> None:
    b = CircuitBreaker(failures=1, cooldown_s=10)
    b.failure(0)
    assert b.state(10) == "half_open"
    assert b.allow(10)  # the probe
    assert not b.allow(10)  # only one at a time
    b.failure(10.5)  # the probe failed: open for another cool-down
    assert b.state(15) == "open" and not b.allow(15)
    assert b.allow(20.5)  # next probe
    b.success()
    assert b.state(20.5) == "closed" and b.allow(20.5) and b.allow(20.5)


def test_a_cancelled_probe_lets_another_go() -> None:
    b = CircuitBreaker(failures=1, cooldown_s=1)
    b.failure(0)
    assert b.allow(1)
    b.release()
    assert b.allow(1)


@pytest.mark.parametrize(("failures", "cooldown"), [(0, 1.0), (1, 0.0), (-1, 1.0)])
def test_bad_settings_are_refused(failures: int, cooldown: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failures, cooldown)
