"""The results queries on a real store: the scan window of filters without an index, and the
accuracy per release from feedback and agreement."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from controlplane.console.results import ResultFilters, query_accuracy, query_results
from controlplane.records import Incoming
from controlplane.samples.queries import put_feedback
from controlplane.store import Store, decode_cursor
from protocol.messages import ResultBatch
from tests.console.fleetdata import result, seed


@pytest.fixture
async def conn(store: Store, tmp_path: Path) -> sqlite3.Connection:
    await seed(store, time.time())
    c = sqlite3.connect(store.path)
    c.row_factory = sqlite3.Row
    return c


def test_a_filter_without_an_index_scans_a_bounded_window(conn: sqlite3.Connection) -> None:
    # 40 results: ids 1..40; answers 0..9 repeating, so label 3 is at ids 4, 14, 24, 34
    page = query_results(conn, ResultFilters(label="3"), None, limit=50, scan_rows=15)
    assert [r["id"] for r in page.results] == [34]  # ids 26..40 searched
    assert page.searched == (26, 40) and page.next_cursor is not None
    older = query_results(conn, ResultFilters(label="3"), decode_cursor(page.next_cursor, "desc"),
                          limit=50, scan_rows=15)  # fmt: skip
    assert [r["id"] for r in older.results] == [24, 14] and older.searched == (11, 25)
    cursor = decode_cursor(older.next_cursor or "", "desc")
    last = query_results(conn, ResultFilters(label="3"), cursor, limit=50, scan_rows=15)
    assert [r["id"] for r in last.results] == [4] and last.next_cursor is None
    # an indexed filter alone pages through everything without a window
    whole = query_results(conn, ResultFilters(device_id="cam-000"), None, limit=50, scan_rows=15)
    assert len(whole.results) == 20 and whole.searched is None and whole.next_cursor is None


async def test_accuracy_counts_feedback_and_agreement_per_version(
    store: Store, conn: sqlite3.Connection
) -> None:
    now = time.time()
    before = query_accuracy(conn, "digits-edge", 3600, now)
    figures = {v["version"]: v for v in before.versions}
    assert figures["1.0.0"]["compared"] == 5 and figures["1.0.0"]["agreed"] == 2
    assert figures["2.0.0"]["judged"] == 0 and figures["2.0.0"]["accuracy"] is None
    ids = [
        r["result_id"]
        for r in query_results(conn, ResultFilters(device_id="cam-002"), None).results
    ]
    await store.transact(put_feedback, "cam-002", ids[0], None, True, now)
    await store.transact(put_feedback, "cam-002", ids[1], "wrong", None, now)
    after = {v["version"]: v for v in query_accuracy(conn, "digits-edge", 3600, now).versions}
    assert (after["2.0.0"]["judged"], after["2.0.0"]["correct"]) == (2, 1)
    assert after["2.0.0"]["accuracy"] == 0.5
    chart = query_accuracy(conn, "digits-edge", 3600, now).chart
    assert chart is not None
    labels = [s.label for s in chart.series]
    assert labels == ["1.0.0 agrees with cloud", "2.0.0 accuracy"]
    assert len(chart.x) <= 500 and all(len(s.values) == len(chart.x) for s in chart.series)
    # results received before the range do not count
    later = now + 100
    await store.write(Incoming("cam-000", later, ResultBatch(device_id="cam-000", results=[
        result(later, 1, 0.3, offload="offloaded", cloud=1)])))  # fmt: skip
    recent = query_accuracy(conn, "digits-edge", 10, later).versions
    assert {v["version"]: v["compared"] for v in recent} == {"1.0.0": 1, "2.0.0": 0}
