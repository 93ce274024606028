"""Debian's chromium, driven headless by Playwright, for the console's browser tests.

Playwright never downloads a browser here: it is pointed at ``/usr/bin/chromium`` (``apt-get
install chromium``; ``.ci/run`` installs it). Without chromium (or without the playwright package)
the browser tests are skipped with the reason, except under CI (``CI`` set), where they fail: a
CI run that silently tests no browser would pass for the wrong reason.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = Path(os.environ.get("EDGEFLEET_CHROMIUM", "/usr/bin/chromium"))
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the browser tests must run)")
    pytest.skip(reason)


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless chromium (Debian's), closed at the end of the block."""
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install playwright)")
    if not CHROMIUM.exists() and shutil.which(str(CHROMIUM)) is None:
        unavailable(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()
