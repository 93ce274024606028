"""The rollout controller: ticks every rollout, publishes desired states, takes deployment reports.

It keeps no state of its own between ticks: each tick is one store transaction per rollout
(:func:`controlplane.rollouts.store.tick`), and the desired documents it writes are published
afterwards from the ``desired`` table, every one whose generation the broker has not
acknowledged yet. A control plane stopped at any moment therefore carries on after a restart:
a tick that did not commit is done again, a document written but not published is published by
the next tick, and the retained message lets a device that was offline converge when it returns.

Ticks run every ``rollout_tick_s``, and at once after a deployment report or an API action
(:meth:`RolloutController.wake`); a tick that changed something is followed by another at once
(a wave that passes can start the next wave's dispatch without waiting a period).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from controlplane.errors import StoreClosed
from controlplane.registry.keys import ReleaseKey
from controlplane.rollouts import desired
from controlplane.rollouts import store as queries
from controlplane.settings import Settings
from controlplane.store import Store
from protocol.errors import MQTTError
from protocol.release import DeploymentReport, seal_desired
from protocol.topics import Channel, device_topic
from protocol.wakeup import wait_event

log = logging.getLogger(__name__)

PUBLISH_BATCH = 200  # desired documents in flight at once
MAX_RUNS = 20  # ticks in a row while each one changes something


class Publisher(Protocol):
    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
        timeout: float = 10.0, require_subscribers: bool = False,
    ) -> None: ...  # fmt: skip


class RolloutController:
    """Start it after ingestion, stop it before; see the module docstring."""

    def __init__(
        self, settings: Settings, store: Store, key: ReleaseKey, publisher: Publisher | None,
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.store = store
        self.key = key
        self.publisher = publisher
        self.clock = clock
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._reports: set[asyncio.Task[None]] = set()
        self._publish_failed_logged = False

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="rollout-controller")

    async def stop(self) -> None:
        """Finish the tick under way, then stop; reports in flight are committed first."""
        self._stopping = True
        self._wakeup.set()
        if self._reports:
            await asyncio.gather(*self._reports, return_exceptions=True)
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def wake(self) -> None:
        """Tick now (after an API action or a report) rather than at the next period."""
        self._wakeup.set()

    # -- reports -----------------------------------------------------------------------------------

    def report(self, device_id: str, report: DeploymentReport, ack: Callable[[], None]) -> None:
        """Take a deployment report from ingestion (in the event loop; never blocks). ``ack`` is
        called once the report is committed, so a report lost to a crash is delivered again."""
        if self._stopping:
            return  # not acknowledged: the broker delivers it again after the restart
        task = asyncio.create_task(self._apply_report(device_id, report, ack))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _apply_report(
        self, device_id: str, report: DeploymentReport, ack: Callable[[], None]
    ) -> None:
        try:
            applied = await self.store.transact(
                queries.apply_report, device_id, report, self.clock()
            )
        except StoreClosed:
            return
        except Exception:
            log.exception("a deployment report from %s could not be stored", device_id)
            ack()  # it would fail the same way on every redelivery
            return
        ack()
        if applied:
            self.wake()
        else:
            log.debug("ignored a stale or unknown deployment report from %s", device_id)

    # -- ticks -------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            try:
                for _ in range(MAX_RUNS):
                    if not await self.tick() or self._stopping:
                        break
            except StoreClosed:
                return
            except Exception:
                log.exception("rollout tick failed; trying again next tick")
            await wait_event(self._wakeup, self.settings.rollout_tick_s)

    async def tick(self) -> bool:
        """One pass over every rollout with work, then publish; True if anything changed."""
        changed = False
        for rollout_id in await self.store.transact(queries.active_rollouts):
            outcome = await self.store.transact(
                queries.tick, rollout_id, self.clock(), self.settings.rollout_max_retries,
                self.settings.public_url,
            )  # fmt: skip
            if outcome.changed:
                changed = True
                log.debug("rollout %s ticked: %s", rollout_id, outcome.state)
        await self.publish_pending()
        return changed

    async def publish_pending(self) -> int:
        """Seal and publish (QoS 1, retained) every desired document the broker has not
        acknowledged; return how many were published. Failures are retried next tick."""
        if self.publisher is None:
            return 0
        pending = await self.store.transact(desired.unpublished)
        published: list[tuple[str, int]] = []
        for start in range(0, len(pending), PUBLISH_BATCH):
            batch = pending[start : start + PUBLISH_BATCH]
            outcomes = await asyncio.gather(
                *(self._publish(device_id, doc) for device_id, _, doc in batch),
                return_exceptions=True,
            )
            for (device_id, generation, _), outcome in zip(batch, outcomes, strict=True):
                if outcome is None:
                    published.append((device_id, generation))
                elif not isinstance(outcome, MQTTError):
                    log.error("cannot publish the desired state of %s: %s", device_id, outcome)
                elif not self._publish_failed_logged:
                    self._publish_failed_logged = True
                    log.warning("desired states not published yet (retrying): %s", outcome)
            if len(published) < start + len(batch):
                break  # the broker is away: the rest waits for the next tick
        if published:
            self._publish_failed_logged = False
            await self.store.transact(desired.mark_published, published)
        return len(published)

    async def _publish(self, device_id: str, doc: dict[str, object]) -> None:
        assert self.publisher is not None
        payload = seal_desired(self.key.private, doc)
        await self.publisher.publish(
            device_topic(device_id, Channel.DESIRED), payload, qos=1, retain=True
        )
