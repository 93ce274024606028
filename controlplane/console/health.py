"""A device's health as the console shows it: online, degraded or offline, and why it needs
attention.

Each :class:`Sign` is written twice, once as SQL over a ``devices`` row (``d``) so that 10,000
devices are counted, filtered and ranked in the database, and once as a Python predicate over the
device as :func:`controlplane.store.query_device` returns it, which says *why* in words; a
table-driven test checks the two agree on every case.

- **offline**: :func:`controlplane.store.device_state` says so (no birth since its will, or
  silent for longer than ``offline_after_s``).
- **degraded**: online, but running on a fallback backend, with errors in its latest telemetry,
  throttled, or with a backend the accelerator supervisor demoted.
- **online**: the rest.

Devices that *need attention* show one of these signs, or a full outbox, a nearly full disk, or a
hot SoC; the fleet page lists them worst first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Health = Literal["online", "degraded", "offline"]
HEALTH: tuple[Health, ...] = ("online", "degraded", "offline")

OUTBOX_ATTENTION = 1000  # results waiting on the device
DISK_ATTENTION = 90.0  # percent used
HOT_C = 80.0
OFFLINE_SEVERITY = 20  # above the sum of every sign: a device that cannot serve comes first

ONLINE_SQL = "(d.state = 'online' AND d.last_seen >= :cutoff)"


def _telemetry(device: Mapping[str, Any]) -> Mapping[str, Any]:
    return device.get("telemetry") or {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@dataclass(frozen=True)
class Sign:
    name: str
    severity: int  # higher first on the fleet page
    degrades: bool  # an online device with it counts as degraded
    sql: str  # over the devices row `d`; true when the sign shows
    test: Callable[[Mapping[str, Any]], bool]
    text: Callable[[Mapping[str, Any]], str]


def _errors(device: Mapping[str, Any]) -> float:
    return _number(_telemetry(device).get("errors")) or 0.0


SIGNS: tuple[Sign, ...] = (
    Sign(
        "fallback", 3, True, "d.fallback_reason IS NOT NULL",
        lambda d: d.get("fallback_reason") is not None,
        lambda d: f"on fallback backend {d.get('backend')}: {d.get('fallback_reason')}",
    ),
    Sign(
        "errors", 4, True, "coalesce(json_extract(d.telemetry, '$.errors'), 0) > 0",
        lambda d: _errors(d) > 0,
        lambda d: f"{_errors(d):.0f} failed requests in its latest telemetry interval",
    ),
    Sign(
        "demoted", 3, True,
        "coalesce(json_array_length(d.telemetry, '$.demoted_backends'), 0) > 0",
        lambda d: bool(_telemetry(d).get("demoted_backends")),
        lambda d: "demoted backends: " + ", ".join(_telemetry(d).get("demoted_backends") or []),
    ),
    Sign(
        "throttled", 2, True, "json_extract(d.telemetry, '$.throttled') = 1",
        lambda d: _telemetry(d).get("throttled") is True,
        lambda d: "thermal or power throttling",
    ),
    Sign(
        "outbox", 2, False,
        f"coalesce(json_extract(d.telemetry, '$.outbox_depth'), 0) >= {OUTBOX_ATTENTION}",
        lambda d: (_number(_telemetry(d).get("outbox_depth")) or 0) >= OUTBOX_ATTENTION,
        lambda d: f"{_telemetry(d).get('outbox_depth')} results waiting in its outbox",
    ),
    Sign(
        "disk", 2, False,
        f"coalesce(json_extract(d.telemetry, '$.disk_used_percent'), 0) >= {DISK_ATTENTION}",
        lambda d: (_number(_telemetry(d).get("disk_used_percent")) or 0) >= DISK_ATTENTION,
        lambda d: f"data disk {_telemetry(d).get('disk_used_percent')} % full",
    ),
    Sign(
        "hot", 1, False,
        f"coalesce(json_extract(d.telemetry, '$.temperature_c'), 0) >= {HOT_C}",
        lambda d: (_number(_telemetry(d).get("temperature_c")) or 0) >= HOT_C,
        lambda d: f"SoC at {_telemetry(d).get('temperature_c')} \u00b0C",
    ),
)  # fmt: skip

DEGRADED_SQL = "(" + " OR ".join(f"({s.sql})" for s in SIGNS if s.degrades) + ")"
HEALTH_SQL = (
    f"(CASE WHEN NOT {ONLINE_SQL} THEN 'offline' WHEN {DEGRADED_SQL} THEN 'degraded' "
    "ELSE 'online' END)"
)
"""The device's health in SQL (bind ``:cutoff`` = now - offline_after_s)."""

ATTENTION_SQL = f"(NOT {ONLINE_SQL} OR " + " OR ".join(f"({s.sql})" for s in SIGNS) + ")"
SEVERITY_SQL = (
    f"((CASE WHEN NOT {ONLINE_SQL} THEN {OFFLINE_SEVERITY} ELSE 0 END) + "
    + " + ".join(f"(CASE WHEN {s.sql} THEN {s.severity} ELSE 0 END)" for s in SIGNS)
    + ")"
)


def health(device: Mapping[str, Any]) -> Health:
    """The health of a device as :func:`controlplane.store.query_device` returns it (its
    ``state`` already judged online or offline)."""
    if device.get("state") != "online":
        return "offline"
    if any(s.degrades and s.test(device) for s in SIGNS):
        return "degraded"
    return "online"


def reasons(device: Mapping[str, Any]) -> list[str]:
    """Why the device needs attention, worst first (empty: it does not)."""
    out: list[tuple[int, str]] = []
    if device.get("state") != "online":
        out.append((OFFLINE_SEVERITY, "offline"))
    out += [(s.severity, s.text(device)) for s in SIGNS if s.test(device)]
    return [text for _, text in sorted(out, key=lambda p: -p[0])]
