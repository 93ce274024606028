"""The offload policy: local or cloud, and why. A pure function over plain values.

Checked in this order, the first that holds wins: ``local_only`` (never offload), an input larger
than the device should handle (``input_too_large``), a local backlog that would break the latency
budget (``backlog``), a top score under the threshold (``low_confidence``). Otherwise the local
answer stands. The reason is recorded with the result, so the control plane can tell which rule
sends how much traffic to the cloud.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    """The thresholds of one model (from :class:`agent.offload.config.OffloadConfig`)."""

    min_confidence: float
    max_input_bytes: int | None = None
    latency_budget_ms: float | None = None
    local_only: bool = False


@dataclass(frozen=True)
class Case:
    """What is known about one request once the local answer is in."""

    top_score: float | None  # None: not a classifier (raw outputs): confidence says nothing
    input_bytes: int
    queued: int  # requests waiting for the same model behind this one
    mean_latency_ms: float | None  # recent mean local latency; None before the first


@dataclass(frozen=True)
class Decision:
    offload: bool
    decision: str  # "local" | "local_only" | "offload"
    reason: str | None


LOCAL = Decision(False, "local", None)
LOCAL_ONLY = Decision(False, "local_only", "policy")


def decide(policy: Policy, case: Case) -> Decision:
    """Whether to ask the cloud about ``case``, and why (see the module docstring)."""
    if policy.local_only:
        return LOCAL_ONLY
    if policy.max_input_bytes is not None and case.input_bytes > policy.max_input_bytes:
        return Decision(True, "offload", "input_too_large")
    if (
        policy.latency_budget_ms is not None
        and case.mean_latency_ms is not None
        and case.queued * case.mean_latency_ms > policy.latency_budget_ms
    ):
        return Decision(True, "offload", "backlog")
    if case.top_score is not None and case.top_score < policy.min_confidence:
        return Decision(True, "offload", "low_confidence")
    return LOCAL
