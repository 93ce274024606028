"""The alert engine: every ``alerts_interval_s`` it evaluates every rule on every device and
writes what changed.

A tick is two steps, so that neither the event loop nor ingestion waits for it:

1. on a reader thread (``Store.read``): the fleet's snapshots, the open alerts and the pending
   conditions are read, each device's rules are evaluated with its effective parameters
   (:mod:`controlplane.alerts.config`) and :func:`controlplane.alerts.decisions.decide` says what
   to fire, keep, resolve; the event loop never runs this CPU work;
2. on the writer thread (``Store.transact``): only the decisions are written, with a queued
   notification per webhook for each alert fired or resolved, in one transaction. Then the
   notifier is woken; delivery runs in its own task (:mod:`controlplane.alerts.notify`).

The engine keeps nothing between ticks (open alerts and pending conditions are in the store), so a
restart carries on: an open alert is not fired again and a ``for`` duration does not start over.
It runs where MQTT ingestion runs (like the rollout controller): a replica without ingestion has
no fresh data to judge. Run it on one replica per store.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from controlplane.alerts import queries
from controlplane.alerts.config import AlertConfig, Effective
from controlplane.alerts.decisions import Decisions, Evaluation, decide
from controlplane.alerts.notify import Notifier
from controlplane.alerts.rules import RULES, DeviceSnapshot
from controlplane.errors import StoreClosed
from controlplane.metrics import Metrics
from controlplane.settings import Settings
from controlplane.store import Store

log = logging.getLogger(__name__)


def evaluate(
    devices: Iterable[DeviceSnapshot], resolve: Callable[[Mapping[str, str]], Effective],
    now: float,
) -> list[Evaluation]:  # fmt: skip
    """Every enabled rule on every device, with the device's effective parameters (pure)."""
    checks = {name: spec.check for name, spec in RULES.items()}
    out = []
    for device in devices:
        for name, params in resolve(device.tags).items():
            if params.enabled:
                out.append(Evaluation(name, device.id, checks[name](device, params, now), params))
    return out


@dataclass(frozen=True)
class Plan:
    devices: int
    evaluations: int
    decisions: Decisions


def plan(
    conn: sqlite3.Connection, now: float, offline_after_s: float, config: AlertConfig,
    listening_since: float = -math.inf,
) -> Plan:  # fmt: skip
    """Step 1 of a tick, run on a reader thread: read, evaluate, decide."""
    devices = queries.snapshots(conn, now, offline_after_s, listening_since)
    evaluations = evaluate(devices, config.resolver(), now)
    decisions = decide(queries.open_alerts(conn), queries.pending(conn), evaluations, now)
    return Plan(len(devices), len(evaluations), decisions)


@dataclass(frozen=True)
class TickReport:
    devices: int
    evaluations: int
    fired: int
    resolved: int
    notifications: int
    seconds: float


class AlertEngine:
    """Start it after ingestion, stop it before; see the module docstring."""

    def __init__(
        self, settings: Settings, store: Store, config: AlertConfig, metrics: Metrics, *,
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.store = store
        self.config = config
        self.clock = clock
        self.webhook_keys = [w.key for w in settings.alert_webhooks]
        self.notifier = Notifier(
            store, settings.alert_webhooks, metrics, max_attempts=settings.alert_max_attempts,
            clock=clock,
        )  # fmt: skip
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.listening_since = -math.inf  # set by start(): see queries.snapshots

    async def start(self) -> None:
        """Start ticking (call it once ingestion runs) and delivering notifications."""
        self.listening_since = self.clock()
        await self.notifier.start()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="alert-engine")

    async def stop(self) -> None:
        """Finish the tick under way, then stop the notifier (pending notifications stay queued)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()  # a tick's write, once queued, still commits on the writer thread
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.notifier.stop()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                report = await self.tick()
                if report.fired or report.resolved:
                    log.info(
                        "alerts: %d fired, %d resolved (%d devices, %.0f ms)",
                        report.fired, report.resolved, report.devices, report.seconds * 1000,
                    )  # fmt: skip
            except StoreClosed:
                return
            except Exception:
                log.exception("alert tick failed; trying again next tick")
            await asyncio.sleep(self.settings.alerts_interval_s)

    async def tick(self) -> TickReport:
        """One evaluation of the fleet, its decisions written and their notifications queued."""
        started = time.perf_counter()
        now = self.clock()
        p = await self.store.read(
            plan, now, self.settings.offline_after_s, self.config, self.listening_since
        )
        applied = queries.Applied(0, 0, 0)
        if not p.decisions.empty:
            applied = await self.store.transact(
                queries.apply, p.decisions, now, self.webhook_keys, self.settings.alert_runbook_url
            )
        if applied.notifications:
            self.notifier.wake()
        return TickReport(
            p.devices, p.evaluations, applied.fired, applied.resolved, applied.notifications,
            time.perf_counter() - started,
        )  # fmt: skip
