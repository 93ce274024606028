"""Whether a wave may advance: a pure function of its metrics, the gates and the clock.

The controller gathers a :class:`WaveMetrics` from the store and calls :func:`evaluate`; nothing
here reads a clock, a database or the network, so every rule has a table-driven test.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from controlplane.rollouts.spec import Gate, format_number

Decision = Literal["wait", "pass", "halt"]

_BROKEN = {"<": ">=", "<=": ">", ">": "<=", ">=": "<"}  # how a broken gate reads


@dataclass(frozen=True)
class WaveMetrics:
    """What was measured over one wave (the controller computes it from the store)."""

    devices: int  # devices in the wave
    finished: int  # in a terminal state
    failed: int  # failed or timed_out
    samples: int  # results of the new release + shadow samples from these devices
    values: Mapping[str, float | None]  # measured metric values (None or absent: no data)


@dataclass(frozen=True)
class Verdict:
    """The decision, and for people why: which gate, the measured value, threshold, sample size."""

    decision: Decision
    reason: str  # "error_rate 0.08 > 0.05 over 412 samples"
    gate: str | None = None  # the gate as written, "error_rate<=0.05"
    value: float | None = None
    threshold: float | None = None
    samples: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    gates: Sequence[Gate],
    metrics: WaveMetrics,
    *,
    finished_at: float | None,
    bake_s: float,
    min_sample: int,
    now: float,
) -> Verdict:
    """Decide ``wait``, ``pass`` or ``halt`` for a wave. The rules, in order:

    1. A wave with no devices passes at once.
    2. Halt at once when a ``failure_rate`` gate is broken whatever the devices still deploying do
       (it fails both if they all succeed and if they all fail). ``failure_rate`` is always
       ``failed / devices``, computed here from the counts.
    3. Wait while devices are still deploying (``finished < devices``), until ``bake_s`` seconds
       have passed since ``finished_at`` (the moment the last one finished; exactly ``bake_s`` is
       enough), and while ``samples < min_sample``.
    4. Halt on the first broken gate that has data, with its value, threshold and sample size. A
       broken gate halts even while another gate still waits for data: it was judged over the
       minimum sample already, and waiting would only expose more devices to a worse release.
    5. Wait when a required gate has no data yet; a gate with ``required=False`` (a default) and no
       data is skipped.
    6. Otherwise pass.
    """
    samples = metrics.samples
    if metrics.devices <= 0:
        return Verdict("pass", "no devices in this wave", samples=samples)

    values = dict(metrics.values)
    best = metrics.failed / metrics.devices  # if every device still deploying succeeds
    values["failure_rate"] = best
    unfinished = max(0, metrics.devices - metrics.finished)
    worst = (metrics.failed + unfinished) / metrics.devices
    for gate in gates:
        if gate.metric != "failure_rate":
            continue
        if not gate.holds(best) and not gate.holds(worst):
            detail = f"{metrics.failed} of {metrics.devices} devices failed"
            if unfinished:
                detail += f", {unfinished} still deploying"
            return _halt(gate, best, f"({detail})", samples)

    if unfinished:
        return Verdict(
            "wait",
            f"{unfinished} of {metrics.devices} devices still deploying",
            samples=samples,
        )
    if finished_at is None:
        return Verdict("wait", "bake not started", samples=samples)
    left = bake_s - (now - finished_at)
    if left > 0:
        return Verdict("wait", f"baking, {_duration(left)} left", samples=samples)
    if samples < min_sample:
        return Verdict("wait", f"{samples} of {min_sample} samples", samples=samples)

    missing: Gate | None = None
    skipped: list[str] = []
    for gate in gates:
        value = values.get(gate.metric)
        if value is None or math.isnan(value):
            if gate.required and missing is None:
                missing = gate
            elif not gate.required:
                skipped.append(gate.metric)
            continue
        if not gate.holds(value):
            return _halt(gate, value, f"over {samples} samples", samples)
    if missing is not None:
        return Verdict(
            "wait",
            f"no data yet for {missing.metric}",
            gate=str(missing),
            threshold=missing.threshold,
            samples=samples,
        )
    reason = f"{len(gates) - len(skipped)} gates hold over {samples} samples"
    if skipped:
        reason += f" (no data, skipped: {', '.join(skipped)})"
    return Verdict("pass", reason, samples=samples)


def _halt(gate: Gate, value: float, detail: str, samples: int) -> Verdict:
    broken = f"{_fmt(value, gate)} {_BROKEN[gate.op]} {format_number(gate.threshold)}"
    reason = f"{gate.metric} {broken} {detail}"
    return Verdict("halt", reason, str(gate), value, gate.threshold, samples)


def _fmt(value: float, gate: Gate) -> str:
    """Four significant digits, unless that would print the threshold for a value that is not."""
    text = f"{value:.4g}"
    if float(text) == gate.threshold and value != gate.threshold:
        text = repr(value)
    return text


def _duration(seconds: float) -> str:
    s = math.ceil(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def ks_distance(a: Sequence[float], b: Sequence[float]) -> float | None:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical
    distribution functions, from 0 (same distribution) to 1 (disjoint). ``None`` if either is
    empty. Used for ``confidence_shift`` over the top scores of two releases."""
    if not a or not b:
        return None
    xs, ys = sorted(a), sorted(b)
    return max(
        abs(bisect_right(xs, v) / len(xs) - bisect_right(ys, v) / len(ys)) for v in (*xs, *ys)
    )


def p95(values: Sequence[float]) -> float | None:
    """The 95th percentile by nearest rank (a value that was observed), ``None`` if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(round(0.95 * len(ordered), 9))
    return ordered[max(rank, 1) - 1]
