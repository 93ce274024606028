"""argparse ``type=`` converters the CLIs share (``edgefleet models export-triton``, ``edgefleet
offload serve``): a bad value is one line naming the flag (argparse prefixes ``argument
--flag:``) and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

N = TypeVar("N", int, float)


def whole_number(minimum: int = 0) -> Callable[[str], int]:
    """A whole number of at least ``minimum``."""
    return _at_least(int, "a whole number", minimum)


def number(minimum: float = 0.0) -> Callable[[str], float]:
    """A number of at least ``minimum`` (NaN is refused too)."""
    return _at_least(float, "a number", minimum)


def _at_least(convert: Callable[[str], N], what: str, minimum: N) -> Callable[[str], N]:
    def parse(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not value >= minimum:  # written so that NaN fails too
            raise argparse.ArgumentTypeError(f"expected {minimum:g} or more, got {text}")
        return value

    return parse
