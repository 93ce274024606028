"""Fire, keep or resolve: one engine tick's decisions as a pure function of the open alerts, the
pending conditions, the rules' evaluations and a clock reading.

Per (rule, device):

| evaluation | open alert | pending since | decision |
|---|---|---|---|
| firing | yes | - | **keep**: update its value, reason, severity (never fired again) |
| firing | no | none, ``for_s`` is 0 | **fire** |
| firing | no | none | **pend** (the condition starts now) |
| firing | no | ``t``, ``now - t >= for_s`` | **fire** (and drop the pending row) |
| firing | no | ``t``, not yet | nothing |
| not firing | yes | - | **resolve** with the evaluation's reason |
| not firing | no | ``t`` | **unpend** |
| cannot tell | yes | - | nothing: the alert stays as it is (stale data proves nothing) |
| cannot tell | no | ``t`` | **unpend** (the condition is not known to have held) |
| (none: rule disabled, device gone) | yes | - | **resolve** |
| (none) | no | ``t`` | **unpend** |
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from controlplane.alerts.rules import Check, Params, Severity

Key = tuple[str, str]  # (rule, device id)

NOT_EVALUATED = "no longer evaluated (the rule was disabled for this device, or it is gone)"


class Evaluation(NamedTuple):
    """One rule's answer for one device, with the parameters it was judged by."""

    rule: str
    device_id: str
    check: Check
    params: Params


@dataclass(frozen=True, slots=True)
class OpenAlert:
    id: int
    severity: Severity
    value: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class Fire:
    rule: str
    device_id: str
    severity: Severity
    value: float | None
    reason: str
    threshold: float | None
    since: float  # when the condition was first seen (the pending row's time, or now)


@dataclass(frozen=True, slots=True)
class Keep:
    id: int
    severity: Severity
    value: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class Resolve:
    id: int
    resolution: str


@dataclass(frozen=True, slots=True)
class Pend:
    rule: str
    device_id: str
    value: float | None
    reason: str


@dataclass
class Decisions:
    fire: list[Fire] = field(default_factory=list)
    keep: list[Keep] = field(default_factory=list)  # only those whose figures changed
    resolve: list[Resolve] = field(default_factory=list)
    pend: list[Pend] = field(default_factory=list)
    unpend: list[Key] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.fire or self.keep or self.resolve or self.pend or self.unpend)


def decide(
    open_alerts: Mapping[Key, OpenAlert],
    pending: Mapping[Key, float],
    evaluations: Iterable[Evaluation],
    now: float,
) -> Decisions:
    """The tick's decisions (see the module docstring's table)."""
    out = Decisions()
    seen: set[Key] = set()
    for e in evaluations:
        key = (e.rule, e.device_id)
        seen.add(key)
        alert, since = open_alerts.get(key), pending.get(key)
        firing = e.check.firing
        if alert is not None:
            if firing is True:
                if (alert.severity, alert.value, alert.reason) != (
                    e.params.severity, e.check.value, e.check.reason,
                ):  # fmt: skip
                    out.keep.append(
                        Keep(alert.id, e.params.severity, e.check.value, e.check.reason)
                    )
            elif firing is False:
                out.resolve.append(Resolve(alert.id, e.check.reason))
            continue
        if firing is True:
            start = now if since is None else since
            if now - start >= e.params.for_s:
                out.fire.append(
                    Fire(e.rule, e.device_id, e.params.severity, e.check.value, e.check.reason,
                         e.params.threshold, start)
                )  # fmt: skip
                if since is not None:
                    out.unpend.append(key)
            elif since is None:
                out.pend.append(Pend(e.rule, e.device_id, e.check.value, e.check.reason))
        elif since is not None:
            out.unpend.append(key)
    for key, alert in open_alerts.items():
        if key not in seen:
            out.resolve.append(Resolve(alert.id, NOT_EVALUATED))
    for key in pending:
        if key not in seen:
            out.unpend.append(key)
    return out
