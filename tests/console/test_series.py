"""Chart buckets (pure): round steps, at most MAX_POINTS buckets, gaps as None."""

from __future__ import annotations

import pytest

from controlplane.console.series import MAX_POINTS, Chart, Series, Timeline, fill, timeline


@pytest.mark.parametrize(
    ("span", "min_step", "step"),
    [
        (900, 1, 2),  # 15 min: 451 buckets of 2 s
        (900, 10, 10),
        (3600, 10, 10),  # 1 h: 361 of 10 s
        (6 * 3600, 10, 60),
        (86400, 10, 300),
        (7 * 86400, 10, 1800),
        (30 * 86400, 10, 7200),
        (400 * 86400, 10, 86400),
        (600 * 86400, 10, 103888),  # past the round steps: span / (MAX_POINTS - 1), rounded up
    ],
)
def test_the_smallest_round_step_that_fits(span: float, min_step: int, step: int) -> None:
    line = timeline(1_000_000.0, span, min_step=min_step)
    assert line.step == step
    assert line.count <= MAX_POINTS
    assert line.start <= 1_000_000.0 - span and line.start % step == 0
    assert line.end > 1_000_000.0  # the bucket holding `end` is there


def test_a_bad_span_is_refused() -> None:
    with pytest.raises(ValueError):
        timeline(0, 0)


def test_fill_leaves_gaps_and_drops_nan() -> None:
    line = Timeline(0.0, 10, 4)
    assert fill(line, {0: 1.0, 2: float("nan"), 3: 2.123456789, 9: 5.0}) == [
        1.0,
        None,
        None,
        2.123457,
    ]
    assert line.xs() == [0.0, 10.0, 20.0, 30.0]


def test_a_chart_knows_when_it_is_empty_and_sums_itself_up() -> None:
    xs = Timeline(0.0, 10, 3).xs()
    empty = Chart("c", "C", xs, [Series("a", "ms", [None, None, None])])
    assert empty.empty
    full = Chart("c", "C", xs, [Series("a", "ms", [1.0, None, 3.0])])
    assert not full.empty
    assert full.series[0].summary() == {"last": 3.0, "mean": 2.0, "max": 3.0}
    assert full.data()["series"][0] == {"label": "a", "unit": "ms", "values": [1.0, None, 3.0]}
