"""Chart series: a time range cut into at most :data:`MAX_POINTS` buckets, and the chart data a
page embeds (pure functions).

Downsampling happens in SQL, server-side: a query groups its rows by ``bucket(ts)`` and returns
one aggregate per bucket, so a chart never carries more than ``MAX_POINTS`` points whatever the
range or the fleet size. Bucket widths are round numbers (10 s, 1 min, 5 min, ...) so that a
bucket is the same across reloads and across charts of one page.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_POINTS = 500
STEPS = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
)  # fmt: skip


@dataclass(frozen=True)
class Timeline:
    """Buckets ``start + i * step`` for ``i`` in ``range(count)``."""

    start: float
    step: int
    count: int

    @property
    def end(self) -> float:
        return self.start + self.step * self.count

    def xs(self) -> list[float]:
        return [self.start + i * self.step for i in range(self.count)]


def timeline(end: float, span: float, max_points: int = MAX_POINTS, min_step: int = 1) -> Timeline:
    """The buckets covering ``[end - span, end]``: the smallest round step (at least ``min_step``
    seconds) that needs at most ``max_points`` buckets, aligned to multiples of the step."""
    if span <= 0 or max_points < 2:
        raise ValueError("span must be > 0 and max_points >= 2")
    step = next(
        (s for s in STEPS if s >= min_step and math.ceil(span / s) + 1 <= max_points),
        None,
    )
    if step is None:
        step = max(min_step, math.ceil(span / (max_points - 1)))
    start = math.floor((end - span) / step) * step
    count = min(max_points, math.floor((end - start) / step) + 1)
    return Timeline(float(start), step, count)


def fill(line: Timeline, points: Mapping[int, float | None]) -> list[float | None]:
    """One value per bucket from ``{bucket index: value}``; None where a bucket has no data (a gap
    in the chart, not a zero)."""
    return [_clean(points.get(i)) for i in range(line.count)]


def _clean(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 6)


@dataclass(frozen=True)
class Series:
    label: str
    unit: str
    values: list[float | None]

    def summary(self) -> dict[str, float | None]:
        """What the page shows without JavaScript: the latest value, the mean and the maximum."""
        present = [v for v in self.values if v is not None]
        if not present:
            return {"last": None, "mean": None, "max": None}
        return {"last": present[-1], "mean": sum(present) / len(present), "max": max(present)}


@dataclass(frozen=True)
class Chart:
    """One chart: a title, shared x values (bucket starts, Unix seconds, ascending) and its
    series, each with one value (or None) per x."""

    id: str
    title: str
    x: Sequence[float]
    series: Sequence[Series]
    note: str = ""
    empty_text: str = (
        "No data in this range yet: devices report telemetry every few seconds once they are "
        "online. Choose a longer range, or start an agent."
    )

    @property
    def empty(self) -> bool:
        return all(v is None for s in self.series for v in s.values)

    def data(self) -> dict[str, Any]:
        """What ``console.js`` gives uPlot (embedded as JSON in the page)."""
        return {
            "title": self.title,
            "x": list(self.x),
            "series": [{"label": s.label, "unit": s.unit, "values": s.values} for s in self.series],
        }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def points(rows: Iterable[Sequence[Any]], column: int) -> dict[int, float | None]:
    """``{bucket: row[column]}`` from rows whose first column is the bucket index."""
    return {int(r[0]): r[column] for r in rows}
