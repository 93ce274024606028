"""Offload in the request path, and the background task that drains deferred cases to the cloud.

**Request path** (:meth:`Offloader.process`): the local answer is already in. The policy decides;
when it wants the cloud, one call is made within the caller's deadline (or the model's
``deadline_ms``). The cloud's answer is added to the result (``offloaded``); a slow, down or
breaker-open cloud gets the local result back at once, marked ``deferred`` with the cause, and
the case goes into the :class:`~agent.offload.deferred.DeferredQueue`. Nothing here waits on the
cloud past the deadline: the call is cancelled when it runs out.

**Later** (:meth:`Offloader.run`): due cases are sent to the cloud with a longer deadline
(``drain_deadline_ms``); a failure is retried with capped backoff, a refusal is given up. The
answer travels as the same result sent again, with ``offload.cloud`` set, through the outbox (key
``{result_id}.cloud``, so it never collides with the first copy still waiting there): at least
once, like every result. Only then is the case removed. Cases past the model's TTL are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.errors import OutboxError
from agent.offload.answers import agree, cloud_answer, top_score
from agent.offload.client import CloudReply, OIPClient
from agent.offload.config import OffloadConfig
from agent.offload.deferred import (
    DeferredCase,
    DeferredQueue,
    DeferredStats,
    input_bytes,
    pack_inputs,
    unpack_inputs,
)
from agent.offload.errors import BreakerOpen, CloudRejected, CloudUnavailable
from agent.offload.policy import Case, Policy, decide
from agent.offload.retry import MIN_ATTEMPT_S
from protocol.keyring import KeyringFile
from protocol.manifest import ModelManifest
from protocol.messages import InferenceResult, Offload, decode, encode
from protocol.wakeup import wait_event

log = logging.getLogger(__name__)

Put = Callable[[str, float, bytes], Awaitable[None]]
"""The outbox's put: (key, created_at, encoded result)."""

LATENCY_EWMA = 0.2
DRAIN_BATCH = 16
DRAIN_RETRY_MIN_S = 1.0
DRAIN_RETRY_MAX_S = 300.0
IDLE_WAIT_S = 1.0
BLOCKED_WAIT_S = 1.0
"""How long the drain rests when the tier's breaker is open. Trying each due case anyway costs a
SQLite write per case and per new deferral (measured: p50 +23 ms on the request path against a
tier that refuses connections), for a call the breaker refuses without trying."""
LATE_SUFFIX = ".cloud"


def drain_retry_delay(attempts: int, rand: float) -> float:
    """Wait before a deferred case's next try: jittered doubling from 1 s, capped at 5 min."""
    ceiling = min(DRAIN_RETRY_MAX_S, DRAIN_RETRY_MIN_S * 2.0**attempts)
    return ceiling / 2 + rand * ceiling / 2


@dataclass
class _Model:
    config: OffloadConfig
    policy: Policy
    cloud_model: str
    manifest: ModelManifest | None
    mean_latency_ms: float | None = None


@dataclass
class OffloadCounts:
    offloaded: int = 0
    deferred: int = 0
    rejected: int = 0
    late_answers: int = 0
    lost: int = 0  # deferred cases that could not be stored
    by_reason: dict[str, int] = field(default_factory=dict)


class Offloader:
    """The offload of every model that has an ``[models.offload]`` section."""

    def __init__(
        self,
        configs: Mapping[str, OffloadConfig],
        *,
        deferred_path: Path,
        put: Put,
        on_put: Callable[[], None] | None = None,
        client: OIPClient | None = None,
        synchronous: str = "FULL",
        max_output_values: int = 4096,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        keys: KeyringFile | None = None,
    ) -> None:
        self._models: dict[str, _Model] = {}
        self._client = client or OIPClient()
        for name, cfg in configs.items():
            manifest = ModelManifest.load(cfg.manifest) if cfg.manifest is not None else None
            self._models[name] = _Model(
                config=cfg,
                policy=Policy(
                    cfg.min_confidence, cfg.max_input_bytes, cfg.latency_budget_ms, cfg.local_only
                ),
                cloud_model=cfg.model or name,
                manifest=manifest,
            )
            if cfg.endpoint is not None:
                self._client.breaker(cfg.endpoint, cfg.breaker_failures, cfg.breaker_cooldown_s)
        self.queue = DeferredQueue(
            deferred_path, synchronous="NORMAL" if synchronous == "NORMAL" else "FULL", keys=keys
        )
        self._put = put
        self._on_put = on_put
        self._max_output_values = max_output_values
        self._clock = clock
        self._rand = rand
        self._wake = asyncio.Event()
        self.counts = OffloadCounts()
        self._stats = DeferredStats(0, 0, 0, 0)
        self._blocked_until = 0.0  # the drain rests until then: the breaker is open

    def covers(self, model: str) -> bool:
        return model in self._models

    async def start(self) -> None:
        await self.queue.open()
        self._stats = await self.queue.stats()

    async def stop(self) -> None:
        await self._client.close()
        await self.queue.close()

    def stats(self) -> DeferredStats:
        """The deferred queue's counters as of the last drain pass (no query)."""
        return self._stats

    # --- the request path ---------------------------------------------------------------------

    async def process(
        self,
        result: InferenceResult,
        inputs: Mapping[str, np.ndarray],
        *,
        queued: int = 0,
        timeout_s: float | None = None,
    ) -> InferenceResult:
        """``result`` with its offload decision (and the cloud's answer when it came in time)."""
        m = self._models.get(result.model)
        if m is None:
            return result
        previous = m.mean_latency_ms
        m.mean_latency_ms = (
            result.latency_ms
            if previous is None
            else previous + LATENCY_EWMA * (result.latency_ms - previous)
        )
        case = Case(top_score(result.classes), input_bytes(inputs), queued, previous)
        decision = decide(m.policy, case)
        if not decision.offload:
            return _with(result, Offload(decision=decision.decision, reason=decision.reason))
        cfg = m.config
        assert cfg.endpoint is not None  # the config's validator: required unless local_only
        budget = cfg.deadline_ms / 1000.0 if timeout_s is None else timeout_s
        if budget < MIN_ATTEMPT_S:
            return await self._defer(result, inputs, m, decision.reason, "no_time_left")
        try:
            # The client's own deadline ends a little before the hard one, so that a slow
            # cloud counts against its breaker instead of being cancelled without a verdict.
            call = self._call(m, inputs, result.result_id, max(MIN_ATTEMPT_S, budget - 0.005))
            reply = await asyncio.wait_for(call, budget)
        except asyncio.TimeoutError:
            return await self._defer(result, inputs, m, decision.reason, "timeout")
        except BreakerOpen:
            return await self._defer(result, inputs, m, decision.reason, "breaker_open")
        except CloudUnavailable as exc:
            cause = "timeout" if exc.timed_out else "unavailable"
            return await self._defer(result, inputs, m, decision.reason, cause)
        except CloudRejected as exc:
            self.counts.rejected += 1
            log.warning("offload of %s refused by the cloud: %s", result.result_id, exc)
            offload = Offload(decision="local", reason=decision.reason, cloud_error="rejected")
            return _with(result, offload)
        self.counts.offloaded += 1
        self._count(decision.reason)
        return _with(result, self._answered("offloaded", decision.reason, result, m, reply))

    async def _call(
        self, m: _Model, inputs: Mapping[str, np.ndarray], result_id: str, timeout_s: float
    ) -> CloudReply:
        cfg = m.config
        assert cfg.endpoint is not None
        return await self._client.infer(
            cfg.endpoint,
            m.cloud_model,
            inputs,
            request_id=result_id,
            timeout_s=timeout_s,
            version=cfg.version,
            binary=cfg.binary,
            max_attempts=cfg.max_attempts,
        )

    def _answered(
        self,
        decision: str,
        reason: str | None,
        result: InferenceResult,
        m: _Model,
        reply: CloudReply,
        cloud_error: str | None = None,
    ) -> Offload:
        answer = cloud_answer(
            reply.outputs,
            model=reply.model_name or m.cloud_model,
            model_version=reply.model_version or m.config.version,
            latency_ms=reply.latency_ms,
            answered_at=self._clock(),
            manifest=m.manifest,
            max_output_values=self._max_output_values,
        )
        return Offload(
            decision=decision,
            reason=reason,
            cloud_error=cloud_error,
            cloud=answer,
            agree=agree(result.classes, answer.classes),
        )

    async def _defer(
        self,
        result: InferenceResult,
        inputs: Mapping[str, np.ndarray],
        m: _Model,
        reason: str | None,
        cause: str,
    ) -> InferenceResult:
        deferred = _with(result, Offload(decision="deferred", reason=reason, cloud_error=cause))
        self.counts.deferred += 1
        self._count(reason)
        try:
            await self.queue.put(
                result.result_id,
                result.model,
                self._clock(),
                pack_inputs(inputs),
                encode(deferred),
                m.config.deferred_max,
            )
        except (OutboxError, ValueError) as exc:
            self.counts.lost += 1
            log.error("deferred case %s not kept: %s", result.result_id, exc)
        else:
            self._wake.set()
        return deferred

    def _count(self, reason: str | None) -> None:
        key = reason or "unknown"
        self.counts.by_reason[key] = self.counts.by_reason.get(key, 0) + 1

    # --- the background drain ----------------------------------------------------------------

    async def run(self) -> None:
        """Drain deferred cases to the cloud until cancelled."""
        while True:
            try:
                worked = await self.drain_once()
            except OutboxError as exc:
                log.error("deferred queue: %s", exc)
                worked = 0
            if worked:
                continue
            blocked = self._blocked_until - self._clock()
            if blocked > 0:  # a put must not wake us: the breaker would refuse again
                await asyncio.sleep(blocked)
                continue
            wait = IDLE_WAIT_S
            with contextlib.suppress(OutboxError):
                due = await self.queue.next_due()
                if due is not None:
                    wait = min(IDLE_WAIT_S, max(0.0, due - self._clock()))
            self._wake.clear()
            await wait_event(self._wake, wait)

    async def drain_once(self) -> int:
        """Expire, then try the cases due now; return how many were tried."""
        now = self._clock()
        for name, m in self._models.items():
            expired = await self.queue.expire(name, now - m.config.deferred_ttl_s)
            if expired:
                log.warning("dropped %d deferred cases of %s past their TTL", expired, name)
        cases = await self.queue.due(now, DRAIN_BATCH)
        tried = 0
        for case in cases:
            if not await self._drain_case(case):
                self._blocked_until = self._clock() + BLOCKED_WAIT_S
                break
            tried += 1
        self._stats = await self.queue.stats()
        return tried

    async def _drain_case(self, case: DeferredCase) -> bool:
        """Try one case; False when the tier's breaker refused it untried (the case stays due)."""
        m = self._models.get(case.model)
        if m is None or m.config.endpoint is None:
            log.warning("dropping deferred case %s: %s no longer offloads", case.result_id,
                        case.model)  # fmt: skip
            await self.queue.done(case.rowid, "failed_total")
            return True
        result = decode(InferenceResult, case.result)
        try:
            inputs = unpack_inputs(case.inputs)
            reply = await self._call(m, inputs, case.result_id, m.config.drain_deadline_ms / 1000.0)
        except CloudRejected as exc:
            log.warning("deferred case %s refused by the cloud, dropped: %s", case.result_id, exc)
            await self.queue.done(case.rowid, "failed_total")
            return True
        except (ValueError, OSError) as exc:  # an unreadable case: it will not get better
            log.error("deferred case %s is unreadable, dropped: %s", case.result_id, exc)
            await self.queue.done(case.rowid, "failed_total")
            return True
        except BreakerOpen:
            return False
        except CloudUnavailable as exc:
            log.debug("deferred case %s: cloud still unavailable: %s", case.result_id, exc)
            delay = drain_retry_delay(case.attempts, self._rand())
            await self.queue.retry_at(case.rowid, self._clock() + delay)
            return True
        previous = result.offload or Offload(decision="deferred")
        offload = self._answered("deferred", previous.reason, result, m, reply)
        offload = offload.model_copy(update={"cloud_error": previous.cloud_error})
        late = _with(result, offload)
        await self._put(case.result_id + LATE_SUFFIX, self._clock(), encode(late))
        if self._on_put is not None:
            self._on_put()
        await self.queue.done(case.rowid)
        self.counts.late_answers += 1
        return True


def _with(result: InferenceResult, offload: Offload) -> InferenceResult:
    return result.model_copy(update={"offload": offload})


def configured_offloads(
    names: Sequence[str], configs: Sequence[OffloadConfig | None]
) -> dict[str, OffloadConfig]:
    """Each served model's offload settings, by the served name (``names`` in config order)."""
    return {name: cfg for name, cfg in zip(names, configs, strict=False) if cfg is not None}
