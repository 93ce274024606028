"""What the agent measures about itself, and the telemetry message built from it.

:class:`InferenceStats` is fed by the request path (one O(1) call per inference, in the event
loop); :class:`agent.daemon.Agent` turns an interval's worth of it, the outbox's counters and the
host's readings (:class:`HostProbe`) into a :class:`protocol.messages.Telemetry`. Percentiles are
computed once per interval, never on the hot path.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from protocol.messages import LatencySummary

RESERVOIR = 10_000
"""Latency samples kept per interval; past it a uniform reservoir sample keeps them honest."""


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) by the nearest-rank method; None for no values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarise(latencies_ms: Sequence[float], count: int | None = None) -> LatencySummary:
    values = sorted(latencies_ms)
    return LatencySummary(
        count=len(values) if count is None else count,
        p50_ms=percentile(values, 50),
        p95_ms=percentile(values, 95),
        p99_ms=percentile(values, 99),
        max_ms=values[-1] if values else None,
    )


@dataclass
class InferenceStats:
    """Counts and latencies of the inferences served, per telemetry interval and in total."""

    inferences_total: int = 0
    errors_total: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    _interval_count: int = 0
    _interval_errors: int = 0
    _samples: list[float] = field(default_factory=list)
    _rng: random.Random = field(default_factory=lambda: random.Random(0))

    def observe(self, model: str, latency_ms: float) -> None:
        self.inferences_total += 1
        self._interval_count += 1
        if len(self._samples) < RESERVOIR:
            self._samples.append(latency_ms)
        else:
            slot = self._rng.randrange(self._interval_count)
            if slot < RESERVOIR:
                self._samples[slot] = latency_ms

    def error(self, kind: str) -> None:
        self.errors_total += 1
        self._interval_errors += 1
        self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1

    def take_interval(self) -> tuple[int, int, LatencySummary]:
        """(inferences, errors, latency summary) since the last call; starts a new interval."""
        summary = summarise(self._samples, self._interval_count)
        taken = (self._interval_count, self._interval_errors, summary)
        self._interval_count = 0
        self._interval_errors = 0
        self._samples = []
        return taken


@dataclass(frozen=True)
class HostReading:
    cpu_percent: float | None
    memory_rss_bytes: int | None
    memory_percent: float | None
    temperature_c: float | None
    throttled: bool | None = None
    disk_free_bytes: int | None = None
    disk_used_percent: float | None = None


RPI_THROTTLED = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")
"""Raspberry Pi firmware flags; bits 0-3 say "now": under-voltage, capped, throttled, soft limit."""


class HostProbe:
    """Reads this process's CPU and memory, the hottest thermal sensor, throttling and the disk."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)  # the first call primes the counter
        self._data_dir = data_dir

    def read(self) -> HostReading:
        with self._process.oneshot():
            cpu = self._process.cpu_percent(None)
            rss = self._process.memory_info().rss
            mem = self._process.memory_percent()
        free, used = disk_usage(self._data_dir) if self._data_dir else (None, None)
        return HostReading(
            cpu, rss, round(mem, 2), hottest_temperature(), throttled(RPI_THROTTLED), free, used
        )


def disk_usage(path: Path) -> tuple[int | None, float | None]:
    """(free bytes, percent used) of the file system holding ``path``; Nones where unreadable."""
    try:
        usage = psutil.disk_usage(str(path))
    except OSError:
        return None, None
    return int(usage.free), round(float(usage.percent), 2)


def throttled(flags_file: Path) -> bool | None:
    """Whether the firmware says the SoC is throttled now (low 4 bits); None if it cannot say."""
    try:
        value = int(flags_file.read_text().strip(), 16)
    except (OSError, ValueError):
        return None
    return bool(value & 0xF)


def hottest_temperature() -> float | None:
    """The highest current reading of any thermal sensor (Jetson, Pi, x86 expose them), or None."""
    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:
        return None
    try:
        sensors = reader()
    except (OSError, RuntimeError):
        return None
    readings = [t.current for entries in sensors.values() for t in entries if t.current is not None]
    return max(readings) if readings else None
