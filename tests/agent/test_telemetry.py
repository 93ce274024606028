"""Percentiles, the per-interval reservoir, and the host probe."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.telemetry import (
    RESERVOIR,
    HostProbe,
    InferenceStats,
    disk_usage,
    percentile,
    summarise,
    throttled,
)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, None),
        ([5.0], 99, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([float(i) for i in range(1, 101)], 95, 95.0),
        ([float(i) for i in range(1, 101)], 99, 99.0),
        ([float(i) for i in range(1, 101)], 100, 100.0),
    ],
)
def test_percentile_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def test_summarise() -> None:
    s = summarise([3.0, 1.0, 2.0])
    assert (s.count, s.p50_ms, s.max_ms) == (3, 2.0, 3.0)
    assert summarise([]).p50_ms is None


def test_intervals_reset_and_totals_accumulate() -> None:
    stats = InferenceStats()
    for ms in (1.0, 2.0, 3.0):
        stats.observe("m", ms)
    stats.error("bad_input")
    count, errors, latency = stats.take_interval()
    assert (count, errors, latency.p50_ms) == (3, 1, 2.0)
    stats.observe("m", 10.0)
    count, errors, latency = stats.take_interval()
    assert (count, errors, latency.max_ms) == (1, 0, 10.0)
    assert stats.inferences_total == 4 and stats.errors_total == 1
    assert stats.errors_by_kind == {"bad_input": 1}


def test_reservoir_bounds_memory_and_keeps_the_count() -> None:
    stats = InferenceStats()
    n = RESERVOIR * 3
    for i in range(n):
        stats.observe("m", float(i % 100))
    assert len(stats._samples) == RESERVOIR
    count, _, latency = stats.take_interval()
    assert count == n and latency.count == n
    assert latency.p50_ms is not None and 40 <= latency.p50_ms <= 60


def test_host_probe_reads_this_process() -> None:
    reading = HostProbe().read()
    assert reading.memory_rss_bytes and reading.memory_rss_bytes > 10 * 2**20
    assert reading.cpu_percent is not None and reading.cpu_percent >= 0
    assert reading.memory_percent is not None


def test_host_probe_reads_the_data_directory_disk(tmp_path: Path) -> None:
    reading = HostProbe(tmp_path).read()
    assert reading.disk_free_bytes is not None and reading.disk_free_bytes > 0
    assert reading.disk_used_percent is not None and 0 <= reading.disk_used_percent <= 100


def test_disk_usage_of_a_missing_path_is_unknown(tmp_path: Path) -> None:
    assert disk_usage(tmp_path / "gone") == (None, None)


@pytest.mark.parametrize(
    ("content", "expected"),
    [("0x0\n", False), ("50000\n", False), ("50005\n", True), ("4", True), ("junk", None)],
)
def test_throttled_reads_the_firmware_now_bits(
    tmp_path: Path, content: str, expected: bool | None
) -> None:
    flags = tmp_path / "get_throttled"
    flags.write_text(content)
    assert throttled(flags) is expected
    assert throttled(tmp_path / "absent") is None
