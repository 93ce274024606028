"""The supervisor's decisions, as pure functions over plain values (no processes, no clock).

A backend that runs in a worker process has a :class:`Health`: ``up``, ``restarting`` (its worker
crashed or hung and a new one starts at ``next_attempt_at``) or ``demoted`` (it failed
``max_failures`` times within ``failure_window_s``; requests go to the next backend of the
priority list, and it is tried again at ``next_attempt_at``). The transitions:

    up/restarting --failure--> restarting (backoff doubling per failure in the window)
                          \\--> demoted (the max_failures-th failure in the window)
    demoted --failed retry--> demoted (the retry delay doubles, up to retry_max_s)
    restarting/demoted --worker started and its smoke inference passed--> up

A backend demoted again within one failure window of its promotion comes back after twice the
previous delay, not the base one, so a flapping accelerator is tried less and less often.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from agent.supervisor.config import Isolation, SupervisorConfig

State = Literal["up", "restarting", "demoted"]

MIN_TIMED = 50
"""Inferences timed before the p99-based limit replaces ``timeout_s``."""
MAX_RESTART_BACKOFF_S = 60.0
ACCELERATORS = frozenset({"edgetpu"})
"""Backends that always run in a worker under ``isolation = "auto"`` (plus ``onnxruntime`` when it
has a GPU provider, and the test backends)."""


@dataclass(frozen=True)
class Policy:
    timeout_s: float = 5.0
    timeout_p99_factor: float = 20.0
    timeout_floor_s: float = 1.0
    max_failures: int = 3
    failure_window_s: float = 300.0
    restart_backoff_s: float = 0.5
    retry_s: float = 600.0
    retry_max_s: float = 3600.0

    @classmethod
    def from_config(cls, cfg: SupervisorConfig) -> Policy:
        return cls(
            timeout_s=cfg.timeout_s,
            timeout_p99_factor=cfg.timeout_p99_factor,
            timeout_floor_s=cfg.timeout_floor_s,
            max_failures=cfg.max_failures,
            failure_window_s=cfg.failure_window_s,
            restart_backoff_s=cfg.restart_backoff_s,
            retry_s=cfg.retry_s,
            retry_max_s=cfg.retry_max_s,
        )


@dataclass(frozen=True)
class Health:
    state: State = "up"
    failures: tuple[float, ...] = ()
    """When the failures inside the window happened (clock readings)."""
    next_attempt_at: float | None = None
    """When to start a worker again (restarting, demoted); None when up."""
    retry_delay_s: float | None = None
    """The delay of the last demotion or failed retry (what doubles)."""
    promoted_at: float | None = None
    last_failure: str | None = None


def isolation_for(backend: str, mode: Isolation, gpu: bool) -> Literal["process", "thread"]:
    """Where ``backend`` runs: ``process`` (a supervised worker) or ``thread`` (in the agent)."""
    if mode != "auto":
        return mode
    if backend in ACCELERATORS or backend.startswith("test-"):
        return "process"
    if backend == "onnxruntime" and gpu:
        return "process"
    return "thread"


def inference_limit(p99_s: float | None, policy: Policy) -> float:
    """Seconds one inference may take: ``timeout_s`` until enough are timed (``p99_s`` None),
    then ``timeout_p99_factor`` times the p99, kept between the floor and ``timeout_s``."""
    if p99_s is None or policy.timeout_p99_factor <= 0:
        return policy.timeout_s
    return min(policy.timeout_s, max(policy.timeout_floor_s, policy.timeout_p99_factor * p99_s))


def after_failure(health: Health, now: float, what: str, policy: Policy) -> Health:
    """The health after the worker crashed, hung or failed to start (``what`` says how)."""
    recent = tuple(t for t in health.failures if now - t < policy.failure_window_s) + (now,)
    if health.state == "demoted":  # a retry failed: wait twice as long
        delay = min(policy.retry_max_s, (health.retry_delay_s or policy.retry_s) * 2)
        return replace(
            health,
            failures=recent,
            next_attempt_at=now + delay,
            retry_delay_s=delay,
            last_failure=what,
        )
    if len(recent) >= policy.max_failures:
        relapse = (
            health.promoted_at is not None
            and health.retry_delay_s is not None
            and now - health.promoted_at < policy.failure_window_s
        )
        delay = policy.retry_s
        if relapse and health.retry_delay_s is not None:
            delay = min(policy.retry_max_s, health.retry_delay_s * 2)
        return Health(
            state="demoted",
            failures=recent,
            next_attempt_at=now + delay,
            retry_delay_s=delay,
            promoted_at=health.promoted_at,
            last_failure=what,
        )
    backoff = min(MAX_RESTART_BACKOFF_S, policy.restart_backoff_s * 2 ** (len(recent) - 1))
    return replace(
        health,
        state="restarting",
        failures=recent,
        next_attempt_at=now + backoff,
        last_failure=what,
    )


def after_start(health: Health, now: float) -> Health:
    """The health once a new worker started and passed its smoke inference."""
    if health.state == "demoted":  # promoted back: a clean slate, but remember the delay
        return Health(state="up", retry_delay_s=health.retry_delay_s, promoted_at=now)
    return replace(health, state="up", next_attempt_at=None)


def is_due(health: Health, now: float) -> bool:
    """Whether a worker should be started now (a restart, or a retry of a demoted backend)."""
    return health.next_attempt_at is not None and health.next_attempt_at <= now


def route(states: Sequence[State | None]) -> int | None:
    """Which backend of the chain answers a request: the first one up (None: none is).

    ``states`` is in priority order; None marks a backend not opened (or that cannot be)."""
    return next((i for i, state in enumerate(states) if state == "up"), None)


def retry_after(healths: Sequence[Health], now: float) -> int:
    """Whole seconds a client should wait when no backend can answer: until the next worker
    start (a restart first), at least 1."""
    due = [h.next_attempt_at for h in healths if h.next_attempt_at is not None]
    restarting = [
        h.next_attempt_at for h in healths if h.state == "restarting" and h.next_attempt_at
    ]
    soonest = min(restarting or due, default=now + 1.0)
    return max(1, math.ceil(soonest - now))


def describe(health: Health, policy: Policy) -> str | None:
    """Why a backend is not serving, for ``fallback_reason`` (None when it is up). Deliberately
    without times, so the text changes only when the state does."""
    if health.state == "up":
        return None
    if health.state == "restarting":
        return (
            f"restarting after {health.last_failure} ({len(health.failures)} of "
            f"{policy.max_failures} failures within {policy.failure_window_s:g} s)"
        )
    return f"demoted after repeated failures (last: {health.last_failure})"


def exit_description(returncode: int | None) -> str:
    """How a worker ended: ``killed by SIGABRT``, ``exited with status 3``."""
    if returncode is None:
        return "connection lost"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"
