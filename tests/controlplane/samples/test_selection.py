"""Which kept inputs go (pure): the deletion's selection, refused when it would take everything
by accident, and the retention period's decision."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.errors import BadRequest
from controlplane.samples.selection import (
    DAY_S,
    Selection,
    is_due,
    parse_selection,
    retention_cutoff,
)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"device_id": "cam-1"}, Selection("cam-1")),
        ({"since": "100"}, Selection(since=100.0)),
        ({"until": "1970-01-01T00:01:40"}, Selection(until=100.0)),
        ({"device_id": "cam-1", "since": "10", "until": "20"}, Selection("cam-1", 10.0, 20.0)),
        ({"all": "true"}, Selection(everything=True)),
        ({"device_id": "cam-1", "all": "false"}, Selection("cam-1")),
    ],
)
def test_a_selection(query: dict[str, str], expected: Selection) -> None:
    assert parse_selection(query) == expected


@pytest.mark.parametrize(
    ("query", "parameter", "words"),
    [
        ({}, "device_id", "pass all=true"),  # everything, by accident
        ({"all": "false"}, "device_id", "no selection"),
        ({"all": "yes"}, "all", "true or false"),
        ({"all": "true", "device_id": "cam-1"}, "all", "alone"),
        ({"device_id": "cam/1"}, "device_id", "invalid device id"),
        ({"since": "yesterday"}, "since", "Unix seconds or an ISO 8601"),
        ({"until": "soon"}, "until", "Unix seconds or an ISO 8601"),
        ({"since": "20", "until": "20"}, "until", "after since"),
        ({"since": "nan"}, "since", "finite"),
    ],
)
def test_a_bad_selection_names_the_parameter(
    query: dict[str, str], parameter: str, words: str
) -> None:
    with pytest.raises(BadRequest, match=words) as caught:
        parse_selection(query)
    assert caught.value.parameter == parameter


@pytest.mark.parametrize(
    ("selection", "sql", "params"),
    [
        (Selection("cam-1"), "device_id = ?", ["cam-1"]),
        (Selection(since=1.0, until=2.0), "created_at >= ? AND created_at < ?", [1.0, 2.0]),
        (Selection(everything=True), "1", []),
    ],
)
def test_the_selection_in_sql(selection: Selection, sql: str, params: list[Any]) -> None:
    assert selection.where() == (sql, params)


@pytest.mark.parametrize(
    ("now", "days", "cutoff"),
    [(100 * DAY_S, 30, 70 * DAY_S), (100 * DAY_S, 0.5, 99.5 * DAY_S), (100 * DAY_S, 0, None)],
)
def test_retention_cutoff(now: float, days: float, cutoff: float | None) -> None:
    assert retention_cutoff(now, days) == cutoff


@pytest.mark.parametrize(
    ("created", "received", "cutoff", "due"),
    [
        (10.0, 11.0, 100.0, True),  # old
        (99.9, 99.9, 100.0, True),
        (100.0, 100.0, 100.0, False),  # exactly at the cutoff: kept
        (150.0, 151.0, 100.0, False),  # young
        (50.0, 150.0, 100.0, True),  # captured long ago, arrived late: its age counts
        (10**10, 50.0, 100.0, True),  # a device clock far ahead cannot keep it for ever
        (10.0, 11.0, None, False),  # no retention
    ],
)
def test_is_due(created: float, received: float, cutoff: float | None, due: bool) -> None:
    assert is_due(created, received, cutoff) is due
