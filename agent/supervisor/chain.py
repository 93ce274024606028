"""The backends of one supervised model, in priority order, and what can be read off them.

A :class:`Slot` is one backend of the chain: whether it runs in a worker (``isolated``), its
engine when it is open, its :class:`~agent.supervisor.decisions.Health`, and its timings (for the
p99-based limit). :class:`Chain` holds the slots and answers the questions the supervisor and the
agent's telemetry ask: which backend answers (:func:`~agent.supervisor.decisions.route`), why the
earlier ones do not (``fallback_reason``), which worker to start next and when, which idle worker
has died. No locking and no I/O here: :class:`~agent.supervisor.supervised.SupervisedRuntime`
holds its lock around every call, and does the starting and killing.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from agent.errors import BackendUnavailable
from agent.runtimes import fallback_reason
from agent.supervisor.decisions import (
    MIN_TIMED,
    Health,
    Policy,
    State,
    describe,
    inference_limit,
    is_due,
    retry_after,
    route,
)
from agent.supervisor.engines import Engine
from agent.supervisor.process import WorkerProcess

log = logging.getLogger(__name__)

TIMED = 200
"""Inference times kept per backend for its p99."""
RECOMPUTE_EVERY = 50


@dataclass
class Slot:
    """One backend of the chain."""

    name: str
    isolated: bool
    limit: float
    """Seconds an inference may take on it (see :func:`inference_limit`)."""
    health: Health = field(default_factory=Health)
    engine: Engine | None = None
    unusable: str | None = None
    """Why it could not be opened (it is not tried again)."""
    times: deque[float] = field(default_factory=lambda: deque(maxlen=TIMED))
    since_limit: int = 0
    serial: threading.Lock = field(default_factory=threading.Lock)
    """One call at a time into an in-process engine (a worker queues its requests itself)."""
    opening: threading.Lock = field(default_factory=threading.Lock)
    """Held while this backend is being opened as a fallback (by one caller, not two)."""

    @property
    def state(self) -> State | None:
        """For :func:`route`: its health, or None when it is not open."""
        if self.health.state != "up":
            return self.health.state
        return "up" if self.engine is not None else None

    def timed(self, seconds: float, policy: Policy) -> None:
        """One inference took ``seconds``: every 50, the limit follows the p99 of the last 200."""
        self.times.append(seconds)
        self.since_limit += 1
        if self.since_limit >= RECOMPUTE_EVERY and len(self.times) >= MIN_TIMED:
            self.since_limit = 0
            ordered = sorted(self.times)
            p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
            self.limit = inference_limit(p99, policy)


class Chain:
    def __init__(self, chain: Sequence[tuple[str, bool]], policy: Policy) -> None:
        self.policy = policy
        limit = inference_limit(None, policy)
        self.slots = [Slot(name, isolated, limit) for name, isolated in chain]

    def __iter__(self) -> Iterator[Slot]:
        return iter(self.slots)

    def __len__(self) -> int:
        return len(self.slots)

    def __getitem__(self, i: int) -> Slot:
        return self.slots[i]

    def route(self) -> int | None:
        """The slot that answers a request now (None: none can)."""
        return route([slot.state for slot in self.slots])

    def serving(self) -> str:
        """The backend serving now (the first of the chain when none is)."""
        i = self.route()
        return self.slots[0 if i is None else i].name

    def fallback_reason(self, skipped: Sequence[tuple[str, str]]) -> str | None:
        """Why the backends before the serving one do not serve (after those ``skipped`` at
        load), or None when the first one serves."""
        i = self.route()
        reasons = list(skipped)
        for slot in self.slots[: len(self.slots) if i is None else i]:
            reasons.append((slot.name, self._why(slot)))
        serving = "none (requests get 503 until a worker restarts)"
        if i is not None:
            serving = self.slots[i].name
        return fallback_reason(reasons, serving)

    def demoted(self) -> list[str]:
        return [slot.name for slot in self.slots if slot.health.state == "demoted"]

    def workers(self) -> list[WorkerProcess]:
        return [slot.engine for slot in self.slots if isinstance(slot.engine, WorkerProcess)]

    def due(self, now: float) -> int | None:
        """The slot whose worker should be started now (a restart or a retry), if any."""
        for i, slot in enumerate(self.slots):
            if slot.engine is None and slot.unusable is None and is_due(slot.health, now):
                return i
        return None

    def wait(self, now: float, most: float) -> float:
        """Seconds until the next worker start is due, at most ``most``."""
        times = [
            s.health.next_attempt_at - now
            for s in self.slots
            if s.engine is None and s.unusable is None and s.health.next_attempt_at is not None
        ]
        return max(0.0, min([most, *times]))

    def dead_idle(self) -> list[tuple[Slot, WorkerProcess]]:
        """Workers with no request in flight whose process has ended."""
        return [
            (slot, slot.engine)
            for slot in self.slots
            if isinstance(slot.engine, WorkerProcess)
            and not slot.engine.busy
            and not slot.engine.alive()
        ]

    def unavailable(self, what: str | None, now: float) -> BackendUnavailable:
        """The 503 for a request no backend can answer: ``what`` happened (default: each
        backend's state), and when to retry."""
        after = retry_after([s.health for s in self.slots], now)
        if what is None:
            what = "; ".join(f"{s.name}: {self._why(s)}" for s in self.slots)
        return BackendUnavailable(
            f"{what}; no fallback backend can answer; retry in {after} s", retry_after_s=after
        )

    def log_failure(self, label: str, slot: Slot, was: State, what: str, now: float) -> None:
        """Log the decision just taken for ``slot`` (restart, demotion, or a failed retry)."""
        health, policy = slot.health, self.policy
        wait = (health.next_attempt_at or now) - now
        i = self.route()
        serving = "no other backend yet" if i is None else self.slots[i].name
        if health.state == "demoted" and was != "demoted":
            log.error(
                "%s: %s %s; demoted after %d failures within %g s; serving on %s; "
                "trying %s again in %g s",
                label,
                slot.name,
                what,
                len(health.failures),
                policy.failure_window_s,
                serving,
                slot.name,
                wait,
            )
        elif health.state == "demoted":
            log.warning(
                "%s: retry of demoted %s failed: %s; next try in %g s",
                label,
                slot.name,
                what,
                wait,
            )
        else:
            log.warning(
                "%s: %s %s (failure %d of %d within %g s); restarting in %g s; serving on %s",
                label,
                slot.name,
                what,
                len(health.failures),
                policy.max_failures,
                policy.failure_window_s,
                wait,
                serving,
            )

    def _why(self, slot: Slot) -> str:
        return describe(slot.health, self.policy) or slot.unusable or "not loaded"
