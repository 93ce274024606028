"""A circuit breaker per endpoint: stop calling a tier that keeps failing, probe it now and then.

Closed: every call goes through; ``failures`` consecutive failed calls open it. Open: no call
goes through until ``cooldown_s`` has passed, then it is half open. Half open: one call (the
probe) goes through at a time; its success closes the breaker, its failure opens it again for
another cool-down. The clock is passed in, so the state machine is tested without sleeping.
A refused request (400, 404) is the caller's problem, not the tier's: it counts as a success.
"""

from __future__ import annotations

from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(self, failures: int = 5, cooldown_s: float = 10.0) -> None:
        if failures < 1 or cooldown_s <= 0:
            raise ValueError("failures must be >= 1 and cooldown_s > 0")
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probing = False
        self.opened_total = 0

    def state(self, now: float) -> State:
        if self._opened_at is None:
            return "closed"
        if now - self._opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def allow(self, now: float) -> bool:
        """Whether a call may start now (in half open, this call becomes the probe)."""
        state = self.state(now)
        if state == "closed":
            return True
        if state == "open" or self._probing:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self._consecutive = 0
        self._opened_at = None
        self._probing = False

    def failure(self, now: float) -> None:
        self._consecutive += 1
        if self._probing or (self._opened_at is None and self._consecutive >= self.failures):
            self._opened_at = now
            self.opened_total += 1
        self._probing = False

    def release(self) -> None:
        """A call that ended without a verdict (cancelled): let another probe go."""
        self._probing = False
