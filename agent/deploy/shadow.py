"""Shadow evaluation: the candidate answers a share of live requests too, in the background.

The live request is answered by the incumbent as usual; :meth:`Shadow.offer` only *schedules* the
candidate's run (never awaited by the caller), and skips it while ``max_in_flight`` shadow runs
are already waiting, so a slow candidate cannot pile work up behind live traffic. Each finished
pair counts toward ``samples``: whether both gave the same top class, and both latencies. Inputs
the candidate cannot take (raw tensors of another dtype) are skipped, not counted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from agent.errors import AgentError
from agent.inference import InferenceOutput, ServedModel
from protocol.release import ShadowStats

log = logging.getLogger(__name__)

ShadowInput = bytes | Mapping[str, np.ndarray]
"""What the live request carried: an image's bytes, or the decoded input tensors."""


@dataclass(frozen=True)
class Pair:
    agree: bool
    incumbent_ms: float
    candidate_ms: float


def p95(values: Sequence[float]) -> float | None:
    """The 95th percentile by nearest rank (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def shadow_stats(pairs: Sequence[Pair]) -> ShadowStats:
    """Agreement (share of pairs with the same top class) and each side's p95."""
    if not pairs:
        return ShadowStats(samples=0)
    return ShadowStats(
        samples=len(pairs),
        agreement=round(sum(p.agree for p in pairs) / len(pairs), 6),
        candidate_p95_ms=p95([p.candidate_ms for p in pairs]),
        incumbent_p95_ms=p95([p.incumbent_ms for p in pairs]),
    )


def top_class(output: InferenceOutput) -> int | None:
    """The top class of a result: its classes, else the argmax of a single raw output."""
    if output.result.classes:
        return output.result.classes[0].index
    if len(output.outputs) == 1:
        tensor = next(iter(output.outputs.values()))
        return int(np.argmax(tensor)) if tensor.size else None
    return None


class Shadow:
    """Runs ``candidate`` beside the live model on a share of requests until ``samples`` pairs."""

    def __init__(
        self,
        candidate: ServedModel,
        *,
        share: float,
        samples: int,
        rng: random.Random | None = None,
        max_in_flight: int = 2,
    ) -> None:
        self.candidate = candidate
        self.share = share
        self.samples = samples
        self.pairs: list[Pair] = []
        self.skipped = 0
        self._rng = rng or random.Random()
        self._max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()
        self.done = asyncio.Event()

    def offer(self, payload: ShadowInput, live: InferenceOutput) -> None:
        """Maybe run ``payload`` on the candidate too; returns at once."""
        if self.done.is_set() or len(self._tasks) >= self._max_in_flight:
            return
        if self._rng.random() >= self.share:
            return
        task = asyncio.create_task(self._run(payload, live))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stats(self) -> ShadowStats:
        return shadow_stats(self.pairs)

    async def close(self) -> None:
        """Stop shadowing (the candidate stays open: the caller owns it)."""
        self.done.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, payload: ShadowInput, live: InferenceOutput) -> None:
        try:
            if isinstance(payload, bytes):
                output = await self.candidate.infer_image(payload)
            else:
                output = await self.candidate.infer(dict(payload))
        except AgentError as exc:
            self.skipped += 1
            log.debug("shadow run skipped: %s", exc)
            return
        if self.done.is_set():
            return
        theirs, ours = top_class(live), top_class(output)
        self.pairs.append(
            Pair(
                agree=theirs is not None and theirs == ours,
                incumbent_ms=live.result.latency_ms,
                candidate_ms=output.result.latency_ms,
            )
        )
        if len(self.pairs) >= self.samples:
            self.done.set()
