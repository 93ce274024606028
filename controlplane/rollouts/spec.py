"""What operators type to start a rollout (CLI flags and API fields), parsed into plain values.

Every parser raises ``ValueError`` with a message that quotes the input and shows the expected
form, so the CLI can print it as one line and the API can return it as a 400 unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, cast

Op = Literal["<", "<=", ">", ">="]

METRICS: dict[str, str] = {
    "failure_rate": "devices of the wave that failed or timed out / devices in the wave",
    "error_rate": "telemetry errors / inferences of the wave's devices since they activated",
    "latency_p95_ms": "telemetry p95 latency (ms) of the wave's devices since activation, "
    "inference-weighted mean",
    "latency_ratio": "candidate / incumbent latency on the device (the smoke test's medians, else "
    "shadow p95s), median over the wave",
    "confidence_shift": "Kolmogorov-Smirnov distance between the new and the incumbent "
    "release's top scores on the wave's devices",
    "agreement": "share of shadow samples where candidate and incumbent agree, sample-weighted",
    "offload_rate": "share of the new release's results that went to the cloud tier",
    "cloud_agreement": "share of the new release's offloaded results where the cloud model "
    "gave the same top class",
}

# Metrics that are shares: a threshold outside [0, 1] is a mistake (most likely a percentage
# written without its "%"), so it is refused rather than left to never (or always) hold.
_FRACTIONS = frozenset(
    {
        "failure_rate",
        "error_rate",
        "confidence_shift",
        "agreement",
        "offload_rate",
        "cloud_agreement",
    }
)

_DURATION = re.compile(
    r"(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?"
)
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_GATE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>)\s*(\S+?)\s*")


def parse_duration(text: str) -> float:
    """``"0"``, ``"45s"``, ``"10m"``, ``"1h30m"``, ``"2h"``, ``"1d"`` -> seconds.

    A unit is required (except for ``0``): a bare ``10`` could mean seconds or minutes.
    """
    t = re.sub(r"\s+", "", text).lower()
    if t == "0":
        return 0.0
    match = _DURATION.fullmatch(t)
    if not t or match is None or not any(match.groupdict().values()):
        raise ValueError(
            f"duration {text!r}: expected a number with a unit, like 45s, 10m, 1h30m, 2h or 0"
        )
    return sum(float(v) * _UNIT_SECONDS[u] for u, v in match.groupdict().items() if v)


def parse_waves(text: str) -> list[float]:
    """``"1%,10%,50%,100%"`` -> ``[0.01, 0.1, 0.5, 1.0]``: the share of the selection done by the
    end of each wave. Fractions without ``%`` (``0.1``) are accepted too.

    Strictly increasing, each in (0, 1], and the last is 100 % so that every device is reached.
    """
    form = "expected increasing percentages ending at 100%, like 1%,10%,50%,100%"
    waves: list[float] = []
    for part in text.split(","):
        item = part.strip()
        try:
            share = float(item[:-1]) / 100 if item.endswith("%") else float(item)
        except ValueError:
            raise ValueError(f"waves {text!r}: {item!r} is not a percentage; {form}") from None
        if not (0 < share <= 1):
            raise ValueError(f"waves {text!r}: {item!r} is not in (0%, 100%]; {form}")
        if waves and share <= waves[-1]:
            raise ValueError(f"waves {text!r}: {item!r} does not grow; {form}")
        waves.append(share)
    if waves[-1] != 1.0:
        raise ValueError(f"waves {text!r}: the last wave must be 100%; {form}")
    return waves


def parse_selector(items: Sequence[str]) -> dict[str, str]:
    """``["site=lab", "hw=coral"]`` -> ``{"site": "lab", "hw": "coral"}``; a device matches when it
    has every one of these tags. No items select every device."""
    selector: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"selector {item!r}: expected TAG=VALUE, like site=lab")
        if selector.get(key, value) != value:
            raise ValueError(
                f"selector {item!r}: tag {key!r} is already selected as {selector[key]!r}; "
                "a device has one value per tag"
            )
        selector[key] = value
    return selector


def selector_matches(selector: Mapping[str, str], tags: Mapping[str, str]) -> bool:
    """Whether a device with ``tags`` is in the selection (every selected tag, same value)."""
    return all(tags.get(key) == value for key, value in selector.items())


def format_number(x: float) -> str:
    """``2.0`` -> ``"2"``, ``0.02`` -> ``"0.02"``: short, and exact enough to parse back."""
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


@dataclass(frozen=True)
class Gate:
    """One health condition a wave must meet, e.g. ``error_rate<0.02``.

    ``required=False`` marks a default gate: it is skipped when its metric has no data, where an
    explicit (required) gate waits for data.
    """

    metric: str
    op: Op
    threshold: float
    required: bool = True

    def holds(self, value: float) -> bool:
        if self.op == "<":
            return value < self.threshold
        if self.op == "<=":
            return value <= self.threshold
        if self.op == ">":
            return value > self.threshold
        return value >= self.threshold

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{format_number(self.threshold)}"


def parse_gate(text: str) -> Gate:
    """``"error_rate<0.02"``, ``"agreement >= 90%"`` -> a required :class:`Gate`."""
    match = _GATE.fullmatch(text)
    if match is None:
        raise ValueError(
            f"gate {text!r}: expected METRIC<OP>VALUE with OP one of < <= > >=, "
            "like error_rate<0.02"
        )
    metric, op, raw = match.groups()
    if metric not in METRICS:
        raise ValueError(f"gate {text!r}: unknown metric {metric!r}; known: {', '.join(METRICS)}")
    try:
        threshold = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(f"gate {text!r}: {raw!r} is not a number") from None
    if not math.isfinite(threshold):
        raise ValueError(f"gate {text!r}: the threshold must be a finite number")
    if metric in _FRACTIONS and not (0 <= threshold <= 1):
        raise ValueError(
            f"gate {text!r}: {metric} is a share between 0 and 1; "
            f"write {format_number(threshold)}% for a percentage"
        )
    return Gate(metric, cast(Op, op), threshold)


DEFAULT_GATES: tuple[Gate, ...] = (  # in the order they are judged: wrong answers before slow ones
    Gate("failure_rate", "<=", 0.1, required=False),
    Gate("error_rate", "<=", 0.05, required=False),
    Gate("agreement", ">=", 0.9, required=False),
    Gate("confidence_shift", "<=", 0.3, required=False),
    Gate("latency_ratio", "<=", 2.0, required=False),
)
