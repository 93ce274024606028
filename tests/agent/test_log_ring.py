"""agent.logs.RingBuffer: the last log records kept in memory for the ``logs`` command."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from agent import logs


@pytest.fixture
def root() -> Iterator[logging.Logger]:
    """The root logger, put back as it was (handlers and level) after the test."""
    logger = logging.getLogger()
    handlers, level = logger.handlers[:], logger.level
    for handler in handlers:
        if isinstance(handler, logs.RingBuffer):
            logger.removeHandler(handler)  # a fresh ring for the test
    yield logger
    for handler in logger.handlers[:]:
        if handler not in handlers:
            logger.removeHandler(handler)
    for handler in handlers:
        if handler not in logger.handlers:
            logger.addHandler(handler)
    logger.setLevel(level)


def test_keeps_the_newest_records_up_to_its_capacity(root: logging.Logger) -> None:
    ring = logs.RingBuffer(capacity=5, device_id="dev-1")
    root.addHandler(ring)
    root.setLevel(logging.INFO)
    log = logging.getLogger("edgefleet.ring")
    for i in range(12):
        log.info("line %d", i, extra={"n": i})
    assert [line["msg"] for line in ring.tail(100)] == [f"line {i}" for i in range(7, 12)]
    assert [line["n"] for line in ring.tail(2)] == [10, 11]
    assert ring.tail(0) == []
    last = ring.tail(1)[0]
    assert last["level"] == "INFO" and last["logger"] == "edgefleet.ring"
    assert last["device_id"] == "dev-1" and last["ts"].endswith("+00:00")


def test_long_fields_are_cut(root: logging.Logger) -> None:
    ring = logs.RingBuffer(capacity=3)
    root.addHandler(ring)
    logging.getLogger("edgefleet.ring").error("x" * 10_000)
    [line] = ring.tail(1)
    assert len(line["msg"]) == logs.MAX_FIELD_CHARS and line["msg"].endswith("\u2026")


def test_keeps_only_what_passes_the_level(root: logging.Logger) -> None:
    ring = logs.ring_buffer()
    root.setLevel(logging.WARNING)
    log = logging.getLogger("edgefleet.ring")
    log.info("quiet")
    log.warning("loud")
    logs.set_level("DEBUG")
    log.debug("now kept")
    assert [line["msg"] for line in ring.tail(10)] == ["loud", "now kept"]


def test_configure_installs_one_ring_and_keeps_it(
    root: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("INFO", "json", device_id="dev-2")
    first = logs.ring_buffer()
    logging.getLogger("edgefleet.ring").info("before")
    logs.configure("DEBUG", "text", device_id="dev-2")
    assert logs.ring_buffer() is first
    assert sum(isinstance(h, logs.RingBuffer) for h in root.handlers) == 1
    assert first.tail(1)[0]["msg"] == "before" and first.device_id == "dev-2"
    capsys.readouterr()


def test_tail_is_safe_while_other_threads_log(root: logging.Logger) -> None:
    ring = logs.RingBuffer(capacity=50)
    root.addHandler(ring)
    root.setLevel(logging.INFO)
    stop = threading.Event()

    def chatter() -> None:
        log = logging.getLogger("edgefleet.ring.thread")
        while not stop.is_set():
            log.info("busy")

    threads = [threading.Thread(target=chatter) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(2000):
            assert len(ring.tail(50)) <= 50
    finally:
        stop.set()
        for t in threads:
            t.join()
