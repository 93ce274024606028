"""A model's chain of backends (agent/supervisor/chain.py): what is read off the slots' states.

In-process engines here are the in-memory runtime; the worker-process side is in
test_supervised.py."""

from __future__ import annotations

import pytest

from agent.runtimes.memory import MemoryRuntime
from agent.supervisor.chain import Chain
from agent.supervisor.decisions import Health, Policy
from protocol.manifest import TensorSpec

X = TensorSpec(name="x", shape=[1], datatype="FP32")
POLICY = Policy(timeout_s=5.0, timeout_p99_factor=20.0, timeout_floor_s=1.0, max_failures=3)
CRASHED = Health("restarting", (10.0,), 10.5, None, None, "worker killed by SIGABRT")
DEMOTED = Health("demoted", (1.0, 2.0, 3.0), 603.0, 600.0, None, "inference hung")


def engine() -> MemoryRuntime:
    return MemoryRuntime([X], [X], lambda inputs: dict(inputs))


def chain(*states: tuple[Health, bool]) -> Chain:
    """A chain edgetpu, litert, tflite-runtime with these (health, open) states."""
    built = Chain(
        [("edgetpu", True), ("litert", False), ("tflite-runtime", False)][: len(states)], POLICY
    )
    for slot, (health, opened) in zip(built, states, strict=True):
        slot.health = health
        slot.engine = engine() if opened else None
    return built


UP = (Health(), True)
CLOSED = (Health(), False)


@pytest.mark.parametrize(
    ("states", "serving", "reason"),
    [
        ((UP, CLOSED), "edgetpu", None),
        (
            ((CRASHED, False), UP),
            "litert",
            "edgetpu: restarting after worker killed by SIGABRT (1 of 3 failures within 300 s); "
            "using litert",
        ),
        (
            ((DEMOTED, False), UP),
            "litert",
            "edgetpu: demoted after repeated failures (last: inference hung); using litert",
        ),
        (
            ((CRASHED, False), CLOSED),
            "edgetpu",
            "edgetpu: restarting after worker killed by SIGABRT (1 of 3 failures within 300 s); "
            "litert: not loaded; using none (requests get 503 until a worker restarts)",
        ),
    ],
)
def test_serving_and_fallback_reason(
    states: tuple[tuple[Health, bool], ...], serving: str, reason: str | None
) -> None:
    c = chain(*states)
    assert c.serving() == serving
    assert c.fallback_reason([]) == reason


def test_backends_skipped_at_load_come_first_in_the_reason() -> None:
    c = chain((DEMOTED, False), UP)
    assert c.fallback_reason([("onnxruntime", "not installed")]) == (
        "onnxruntime: not installed; edgetpu: demoted after repeated failures "
        "(last: inference hung); using litert"
    )


def test_an_unusable_fallback_says_why() -> None:
    c = chain((CRASHED, False), CLOSED, UP)
    c[1].unusable = "cannot load the file"
    reason = c.fallback_reason([]) or ""
    assert "litert: cannot load the file; using tflite-runtime" in reason


@pytest.mark.parametrize(
    ("now", "due", "wait"),
    [
        (10.0, None, 0.5),  # the restart is due at 10.5
        (10.2, None, pytest.approx(0.3)),
        (10.5, 0, 0.0),
        (11.0, 0, 0.0),
    ],
)
def test_due_and_wait(now: float, due: int | None, wait: float) -> None:
    c = chain((CRASHED, False), UP)
    assert c.due(now) == due
    assert c.wait(now, most=1.0) == wait


def test_nothing_due_waits_at_most_the_poll() -> None:
    c = chain(UP, CLOSED)
    assert c.due(1e9) is None and c.wait(0.0, most=1.0) == 1.0
    c[1].health, c[1].unusable = DEMOTED, "cannot load"  # never started again
    assert c.due(1e9) is None


def test_the_503_names_each_backend_and_the_retry() -> None:
    c = chain((CRASHED, False), CLOSED)
    error = c.unavailable(None, now=10.0)
    assert error.retry_after_s == 1
    assert str(error) == (
        "edgetpu: restarting after worker killed by SIGABRT (1 of 3 failures within 300 s); "
        "litert: not loaded; no fallback backend can answer; retry in 1 s"
    )
    assert str(c.unavailable("edgetpu: worker killed by SIGABRT", now=10.0)).startswith(
        "edgetpu: worker killed by SIGABRT; no fallback"
    )


def test_the_limit_follows_the_p99_once_enough_are_timed() -> None:
    c = chain(UP)
    slot = c[0]
    assert slot.limit == 5.0
    for _ in range(49):
        slot.timed(0.1, POLICY)
    assert slot.limit == 5.0  # 49 timed: not yet
    slot.timed(0.1, POLICY)
    assert slot.limit == pytest.approx(2.0)  # 20 x 100 ms
    for _ in range(50):
        slot.timed(0.001, POLICY)
    assert slot.limit == pytest.approx(2.0)  # the p99 of the last 100 is still 100 ms
    assert c.demoted() == [] and c.workers() == []
