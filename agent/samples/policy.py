"""Which inputs to keep: a pure decision over a result and its model's policy.

Every hard case is kept: one the cloud was asked about (``offloaded`` or ``deferred``), one whose
local top score is under ``low_confidence``, and one where edge and cloud gave different top
classes (``disagreement``). Of the rest, a ``share`` is kept (``sampled``) so the data set also
holds the easy, everyday inputs. The draw is a hash of the result id, not a random number: the
same result is always decided the same way (a retried request, a replayed test).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from protocol.messages import InferenceResult

Reason = Literal["disagreement", "offloaded", "deferred", "low_confidence", "sampled"]
REASONS: tuple[Reason, ...] = ("disagreement", "offloaded", "deferred", "low_confidence", "sampled")


@dataclass(frozen=True)
class Policy:
    share: float
    low_confidence: float


def draw(result_id: str) -> float:
    """A number in [0, 1) fixed by the result id (uniform over ids)."""
    digest = hashlib.sha256(result_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def decide(result: InferenceResult, policy: Policy, share_draw: float) -> Reason | None:
    """Why ``result``'s input is kept, or None to let it go: the first reason of
    :data:`REASONS` that holds."""
    offload = result.offload
    if offload is not None:
        if offload.decision in ("offloaded", "deferred"):
            if offload.agree is False:
                return "disagreement"
            return "offloaded" if offload.decision == "offloaded" else "deferred"
        if offload.agree is False:
            return "disagreement"
    if result.classes and result.classes[0].score < policy.low_confidence:
        return "low_confidence"
    if share_draw < policy.share:
        return "sampled"
    return None
