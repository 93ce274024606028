"""Range headers (pure): table-driven."""

from __future__ import annotations

import pytest

from controlplane.errors import RangeNotSatisfiable
from controlplane.registry.api import parse_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=90-", 100, (90, 99)),
        ("bytes=90-500", 100, (90, 99)),
        ("bytes=-10", 100, (90, 99)),
        ("bytes=-500", 100, (0, 99)),
        ("bytes=99-99", 100, (99, 99)),
        (" bytes=5-6 ", 100, (5, 6)),
        ("bytes=0-1,4-5", 100, None),  # several ranges: the whole file
        ("items=0-9", 100, None),  # another unit: ignored
        ("bytes=9-0", 100, None),  # invalid: ignored
        ("bytes=-", 100, None),
        ("bytes=a-b", 100, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=100-", 100), ("bytes=150-200", 100), ("bytes=-0", 100), ("bytes=0-", 0),
     ("bytes=-5", 0)],
)  # fmt: skip
def test_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, size)
    assert info.value.size == size and info.value.status == 416
