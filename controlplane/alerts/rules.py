"""The alert rules: each a pure function of one device's snapshot, its parameters and a clock
reading, answering whether it fires, with the observed value and a short reason.

A rule answers ``firing=None`` ("cannot tell") when its data is stale: every rule but
``device_offline`` looks at what an offline device last reported, which describes the past, so
an offline device keeps the alerts it has (the engine neither fires nor resolves them) and gets
``device_offline`` instead. Right after the control plane starts, a device it has not heard
from yet is neither (``online`` is None): its birth or telemetry may still be on the way, and a
restart after a long stop must not call the whole fleet offline. Missing data on an online
device (no inferences in the interval, no disk figures) is not a fault: the rule does not fire.

Thresholds are in the rule's ``unit`` (:data:`RULES`); ``for_s`` is how long the condition must
hold before the alert fires (the engine keeps the pending condition, see ``decisions.py``).
Durations a rule measures itself (offline for, outbox age, drift) are its threshold, so their
``for_s`` defaults to 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")

ERROR_WINDOW_S = 300.0
"""The error rate is judged over the telemetry a device sent in its last five minutes (by its own
clock, so a skewed clock does not shift the window)."""


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a rollout says a device should run for a model, and since when (its dispatch, or the
    dispatch of its rollback)."""

    model: str
    version: str | None  # None: back to the device's own configured model (nothing to compare)
    since: float
    rollout_id: str


@dataclass(frozen=True, slots=True)
class Recent:
    """Requests of the error-rate window: successful inferences and errors."""

    inferences: int = 0
    errors: int = 0


@dataclass(frozen=True, slots=True)
class DeviceSnapshot:
    """One device as the rules see it (built by ``queries.py`` from the store)."""

    id: str
    online: bool | None  # as the API computes it; None: not heard from since we started
    last_seen: float
    telemetry: Mapping[str, Any] = field(default_factory=dict)  # the latest Telemetry, as JSON
    fallback_reason: str | None = None
    models: Mapping[str, str] = field(default_factory=dict)  # model -> version it reports
    tags: Mapping[str, str] = field(default_factory=dict)  # effective tags
    expected: Sequence[Expectation] = ()
    recent: Recent = Recent()


@dataclass(frozen=True, slots=True)
class Params:
    """A rule's parameters: the defaults in :data:`RULES`, overridden per selection."""

    severity: Severity
    for_s: float = 0.0
    threshold: float | None = None  # None for rules without one (accelerator_fallback)
    enabled: bool = True
    min_count: int | None = None  # error_rate: fewest requests in the window to judge
    min_free_bytes: int | None = None  # disk_full: free bytes below which the disk is full

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "severity": self.severity, "for_s": self.for_s, "threshold": self.threshold,
            "enabled": self.enabled,
        }  # fmt: skip
        if self.min_count is not None:
            out["min_count"] = self.min_count
        if self.min_free_bytes is not None:
            out["min_free_bytes"] = self.min_free_bytes
        return out


class Check(NamedTuple):
    """A rule's answer for one device (a tuple: a tick makes one per rule and device)."""

    firing: bool | None  # None: cannot tell (stale data): an open alert stays as it is
    value: float | None  # the observed value, in the rule's unit
    reason: str


Rule = Callable[[DeviceSnapshot, Params, float], Check]


# -- helpers ---------------------------------------------------------------------------------------


def duration_text(seconds: float) -> str:
    """``42`` -> ``"42s"``, ``754`` -> ``"12m34s"``, ``5400`` -> ``"1h30m"``, ``90000`` ->
    ``"1d1h"``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s % 60 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m" if s % 3600 // 60 else f"{s // 3600}h"
    return f"{s // 86400}d{s % 86400 // 3600}h" if s % 86400 // 3600 else f"{s // 86400}d"


def _mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB"


def _stale(s: DeviceSnapshot, now: float) -> Check:
    if s.online is None:
        return Check(None, None, "not heard from since the control plane started")
    return Check(None, None, f"offline for {duration_text(now - s.last_seen)}: its data is stale")


def _number(value: Any) -> float | None:
    """A finite number from telemetry JSON, else None (tolerant: an odd value is no data)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _threshold(p: Params) -> float:
    return p.threshold if p.threshold is not None else math.inf


# -- the rules -------------------------------------------------------------------------------------


def device_offline(s: DeviceSnapshot, p: Params, now: float) -> Check:
    """Offline (a will, or silent past ``offline_after_s``) for longer than the threshold (s)."""
    if s.online:
        return Check(False, 0.0, "online")
    if s.online is None:
        return Check(None, None, "not heard from since the control plane started: waiting")
    silent = max(0.0, now - s.last_seen)
    limit = _threshold(p)
    return Check(
        silent >= limit,
        silent,
        f"offline, last seen {duration_text(silent)} ago (threshold {duration_text(limit)})",
    )


def latency_p95(s: DeviceSnapshot, p: Params, now: float) -> Check:
    """The latest telemetry interval's p95 inference latency over the budget (ms)."""
    if not s.online:
        return _stale(s, now)
    latency = s.telemetry.get("latency")
    p95 = _number(latency.get("p95_ms")) if isinstance(latency, Mapping) else None
    if p95 is None:
        return Check(False, None, "no inferences in the latest telemetry interval")
    limit = _threshold(p)
    return Check(p95 > limit, p95, f"p95 latency {p95:.0f} ms (budget {limit:.0f} ms)")


def error_rate(s: DeviceSnapshot, p: Params, now: float) -> Check:
    """Failed requests / all requests (errors + inferences) over the last ERROR_WINDOW_S of
    telemetry above the threshold (a share), once there are at least ``min_count`` requests."""
    if not s.online:
        return _stale(s, now)
    requests = s.recent.inferences + s.recent.errors
    rate = s.recent.errors / requests if requests else None
    window = duration_text(ERROR_WINDOW_S)
    minimum = p.min_count or 0
    if requests == 0 or requests < minimum:
        return Check(
            False, rate, f"{requests} requests in the last {window} (fewer than {minimum} to judge)"
        )
    assert rate is not None
    limit = _threshold(p)
    return Check(
        rate > limit,
        rate,
        f"{s.recent.errors} of {requests} requests failed in the last {window} ({rate:.1%}, "
        f"threshold {limit:.1%})",
    )


def outbox_stuck(s: DeviceSnapshot, p: Params, now: float) -> Check:
    """The oldest unsent outbox entry older than the threshold (s): the uplink is stuck."""
    if not s.online:
        return _stale(s, now)
    age = _number(s.telemetry.get("outbox_oldest_age_s"))
    if age is None:
        return Check(False, None, "the outbox is empty")
    limit = _threshold(p)
    depth = s.telemetry.get("outbox_depth")
    return Check(
        age > limit,
        age,
        f"oldest unsent result is {duration_text(age)} old ({depth} waiting; threshold "
        f"{duration_text(limit)})",
    )


def accelerator_fallback(s: DeviceSnapshot, p: Params, now: float) -> Check:
    """A preferred backend was skipped (``fallback_reason``) or the supervisor demoted one."""
    if not s.online:
        return _stale(s, now)
    reason = s.fallback_reason or s.telemetry.get("fallback_reason")
    demoted = [str(b) for b in s.telemetry.get("demoted_backends") or []]
    if not reason and not demoted:
        return Check(False, 0.0, "on its preferred backend")
    parts = [f"running on {s.telemetry.get('backend') or 'a fallback backend'}"]
    if reason:
        parts.append(str(reason))
    if demoted:
        parts.append(f"demoted: {', '.join(demoted)}")
    return Check(True, float(len(demoted) or 1), "; ".join(parts))


def disk_full(s: DeviceSnapshot, p: Params, now: float) -> Check:
    """The data directory's disk more used than the threshold (%) or with less free space than
    ``min_free_bytes``."""
    if not s.online:
        return _stale(s, now)
    used = _number(s.telemetry.get("disk_used_percent"))
    free = _number(s.telemetry.get("disk_free_bytes"))
    if used is None and free is None:
        return Check(False, None, "no disk figures reported")
    limit, floor = _threshold(p), p.min_free_bytes or 0
    firing = (used is not None and used > limit) or (free is not None and free < floor)
    figures = [f"{used:.1f}% used" if used is not None else None,
               f"{_mb(free)} free" if free is not None else None]  # fmt: skip
    return Check(
        firing,
        used,
        f"disk {', '.join(f for f in figures if f)} (limits: {limit:.0f}% used, {_mb(floor)} free)",
    )


def thermal(s: DeviceSnapshot, p: Params, now: float) -> Check:
    """Temperature above the threshold (°C), or the SoC reports throttling."""
    if not s.online:
        return _stale(s, now)
    temp = _number(s.telemetry.get("temperature_c"))
    throttled = s.telemetry.get("throttled") is True
    limit = _threshold(p)
    hot = temp is not None and temp > limit
    if temp is None and not throttled:
        return Check(False, None, "no temperature reported, not throttled")
    parts = [f"{temp:.0f} °C (threshold {limit:.0f} °C)" if temp is not None else "no temperature"]
    if throttled:
        parts.append("throttled")
    return Check(hot or throttled, temp, ", ".join(parts))


def model_drift(s: DeviceSnapshot, p: Params, now: float) -> Check:
    """A rollout says the device should run release X of a model, and for longer than the
    threshold (s) since it was sent (or sent its rollback) the device has reported another."""
    if not s.online:
        return _stale(s, now)
    checked = [e for e in s.expected if e.version is not None]
    if not checked:
        return Check(False, None, "no rollout says what it should run")
    limit = _threshold(p)
    worst: Check | None = None
    for e in checked if len(checked) == 1 else sorted(checked, key=lambda e: (e.since, e.model)):
        reported = s.models.get(e.model)
        if reported == e.version:
            continue
        age = max(0.0, now - e.since)
        check = Check(
            age >= limit,
            age,
            f"reports {e.model}:{reported or 'nothing'} but rollout {e.rollout_id} says "
            f"{e.model}:{e.version} (for {duration_text(age)}, threshold {duration_text(limit)})",
        )
        if worst is None or (check.firing and not worst.firing):
            worst = check
    if worst is None:
        models = ", ".join(f"{e.model}:{e.version}" for e in checked)
        return Check(False, 0.0, f"runs {models} as its rollouts say")
    return worst


# -- the registry ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleSpec:
    name: str
    check: Rule
    defaults: Params
    unit: str  # of the threshold and of the value
    summary: str
    takes: frozenset[str] = frozenset()  # parameters beyond severity, for_s, enabled, threshold


MB = 1_000_000

RULES: dict[str, RuleSpec] = {
    spec.name: spec
    for spec in (
        RuleSpec(
            "device_offline", device_offline, Params("warning", 0.0, 600.0), "s",
            "offline for longer than the threshold",
        ),
        RuleSpec(
            "latency_p95", latency_p95, Params("warning", 300.0, 250.0), "ms",
            "p95 inference latency of the latest interval over the budget",
        ),
        RuleSpec(
            "error_rate", error_rate, Params("critical", 120.0, 0.05, min_count=20), "ratio",
            "share of failed requests in the last 5 minutes of telemetry over the threshold",
            frozenset({"min_count"}),
        ),
        RuleSpec(
            "outbox_stuck", outbox_stuck, Params("warning", 0.0, 900.0), "s",
            "oldest unsent outbox entry older than the threshold: the uplink is stuck",
        ),
        RuleSpec(
            "accelerator_fallback", accelerator_fallback, Params("warning", 60.0), "backends",
            "a preferred backend was skipped or demoted: inference runs on a fallback",
        ),
        RuleSpec(
            "disk_full", disk_full, Params("critical", 0.0, 90.0, min_free_bytes=500 * MB), "%",
            "data disk more used than the threshold, or less free than min_free_bytes",
            frozenset({"min_free_bytes"}),
        ),
        RuleSpec(
            "thermal", thermal, Params("warning", 120.0, 80.0), "°C",
            "temperature over the threshold, or the SoC throttles",
        ),
        RuleSpec(
            "model_drift", model_drift, Params("warning", 0.0, 1800.0), "s",
            "not on the release its rollout says, for longer than the threshold",
        ),
    )
}  # fmt: skip
"""Every rule, in the order the docs and the API list them."""
