"""The supervisor's decisions (agent/supervisor/decisions.py): pure, table-driven."""

from __future__ import annotations

import signal

import pytest

from agent.supervisor.config import SupervisorConfig
from agent.supervisor.decisions import (
    Health,
    Policy,
    after_failure,
    after_start,
    describe,
    exit_description,
    inference_limit,
    is_due,
    isolation_for,
    retry_after,
    route,
)

P = Policy(
    timeout_s=5.0,
    timeout_p99_factor=20.0,
    timeout_floor_s=1.0,
    max_failures=3,
    failure_window_s=300.0,
    restart_backoff_s=0.5,
    retry_s=600.0,
    retry_max_s=3600.0,
)
UP = Health()


@pytest.mark.parametrize(
    ("backend", "mode", "gpu", "expected"),
    [
        ("edgetpu", "auto", False, "process"),
        ("litert", "auto", False, "thread"),
        ("tflite-runtime", "auto", True, "thread"),
        ("onnxruntime", "auto", False, "thread"),
        ("onnxruntime", "auto", True, "process"),
        ("test-abort", "auto", False, "process"),
        ("test-hang", "auto", False, "process"),
        ("litert", "process", False, "process"),
        ("edgetpu", "thread", False, "thread"),
    ],
)
def test_isolation_for(backend: str, mode: str, gpu: bool, expected: str) -> None:
    assert isolation_for(backend, mode, gpu) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("p99_s", "policy", "expected"),
    [
        (None, P, 5.0),  # not enough timed yet: the ceiling
        (0.004, P, 1.0),  # 20 x 4 ms = 80 ms, under the floor
        (0.1, P, 2.0),  # 20 x 100 ms
        (0.5, P, 5.0),  # 20 x 500 ms = 10 s, over the ceiling
        (0.1, Policy(timeout_s=5.0, timeout_p99_factor=0.0), 5.0),  # factor 0: always the ceiling
    ],
)
def test_inference_limit(p99_s: float | None, policy: Policy, expected: float) -> None:
    assert inference_limit(p99_s, policy) == pytest.approx(expected)


# --- failures: restart, demote ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "now", "state", "failures", "next_at"),
    [
        # the first failure: restart after the base backoff
        (UP, 100.0, "restarting", (100.0,), 100.5),
        # the second within the window: the backoff doubles
        (Health(failures=(100.0,)), 110.0, "restarting", (100.0, 110.0), 111.0),
        # the third within the window: demoted, retried after retry_s
        (Health(failures=(100.0, 110.0)), 120.0, "demoted", (100.0, 110.0, 120.0), 720.0),
        # old failures leave the window: only the recent one counts
        (Health(failures=(100.0, 110.0)), 500.0, "restarting", (500.0,), 500.5),
        (Health(failures=(100.0, 300.0)), 450.0, "restarting", (300.0, 450.0), 451.0),
        # a restart that failed (the state is restarting) counts like any failure
        (
            Health("restarting", (100.0, 110.0), 111.0),
            111.5,
            "demoted",
            (100.0, 110.0, 111.5),
            711.5,
        ),
    ],
)
def test_after_failure_restarts_then_demotes(
    before: Health, now: float, state: str, failures: tuple[float, ...], next_at: float
) -> None:
    after = after_failure(before, now, "worker killed by SIGABRT", P)
    assert (after.state, after.failures, after.next_attempt_at) == (state, failures, next_at)
    assert after.last_failure == "worker killed by SIGABRT"


def test_restart_backoff_is_capped() -> None:
    many = Policy(max_failures=100, restart_backoff_s=0.5)
    health = UP
    for i in range(20):
        health = after_failure(health, float(i), "hung", many)
    assert health.state == "restarting"
    assert health.next_attempt_at == pytest.approx(19.0 + 60.0)


@pytest.mark.parametrize(
    ("delay", "expected"),
    [(600.0, 1200.0), (1200.0, 2400.0), (2400.0, 3600.0), (3600.0, 3600.0), (None, 1200.0)],
)
def test_a_failed_retry_doubles_the_delay_up_to_the_cap(
    delay: float | None, expected: float
) -> None:
    demoted = Health("demoted", (1.0, 2.0, 3.0), 1000.0, delay, None, "hung")
    after = after_failure(demoted, 1000.0, "worker killed by SIGABRT", P)
    assert after.state == "demoted"
    assert (after.retry_delay_s, after.next_attempt_at) == (expected, 1000.0 + expected)


@pytest.mark.parametrize(
    ("promoted_at", "delay", "now", "expected"),
    [
        (None, None, 1000.0, 600.0),  # never demoted before: the base delay
        (1000.0, 1200.0, 1100.0, 2400.0),  # demoted again soon after its promotion: doubled
        (1000.0, 2400.0, 1100.0, 3600.0),  # ... up to the cap
        (1000.0, 1200.0, 1400.0, 600.0),  # after a whole window in service: the base delay again
    ],
)
def test_a_relapse_soon_after_promotion_doubles_the_delay(
    promoted_at: float | None, delay: float | None, now: float, expected: float
) -> None:
    health = Health("up", (now - 2, now - 1), None, delay, promoted_at, None)
    after = after_failure(health, now, "hung", P)
    assert after.state == "demoted"
    assert after.retry_delay_s == expected
    assert after.next_attempt_at == now + expected


# --- starts: restart done, promotion ---------------------------------------------------------


def test_after_start_of_a_restart_keeps_the_failures_in_the_window() -> None:
    restarting = Health("restarting", (100.0,), 100.5, None, None, "hung")
    after = after_start(restarting, 101.0)
    assert after.state == "up" and after.next_attempt_at is None
    assert after.failures == (100.0,)  # two more within the window still demote


def test_after_start_of_a_retry_promotes_with_a_clean_slate() -> None:
    demoted = Health("demoted", (1.0, 2.0, 3.0), 603.0, 600.0, None, "hung")
    after = after_start(demoted, 603.5)
    assert after == Health("up", (), None, 600.0, 603.5, None)


@pytest.mark.parametrize(
    ("health", "now", "due"),
    [
        (UP, 10.0, False),
        (Health("restarting", (1.0,), 1.5), 1.4, False),
        (Health("restarting", (1.0,), 1.5), 1.5, True),
        (Health("demoted", (1.0,), 601.0), 600.0, False),
        (Health("demoted", (1.0,), 601.0), 700.0, True),
    ],
)
def test_is_due(health: Health, now: float, due: bool) -> None:
    assert is_due(health, now) is due


# --- routing and the 503 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (["up", None], 0),  # the accelerator serves; the fallback is not loaded
        (["restarting", "up"], 1),  # the fallback answers during a restart
        (["demoted", "up"], 1),
        (["restarting", None], None),  # nothing loaded that can answer: 503
        (["demoted", "restarting", "up"], 2),
        (["up", "up"], 0),  # promoted back: the accelerator again
        ([], None),
    ],
)
def test_route(states: list[str | None], expected: int | None) -> None:
    assert route(states) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("healths", "now", "expected"),
    [
        ([Health("restarting", (1.0,), 10.2)], 10.0, 1),  # rounded up, at least 1 s
        ([Health("restarting", (1.0,), 13.5)], 10.0, 4),
        ([Health("demoted", (1.0,), 610.0), Health("restarting", (1.0,), 12.0)], 10.0, 2),
        ([Health("demoted", (1.0,), 610.0)], 10.0, 600),  # only a retry to wait for
        ([UP], 10.0, 1),
    ],
)
def test_retry_after(healths: list[Health], now: float, expected: int) -> None:
    assert retry_after(healths, now) == expected


def test_describe_says_why_without_times() -> None:
    assert describe(UP, P) is None
    restarting = Health("restarting", (1.0,), 1.5, None, None, "worker killed by SIGABRT")
    assert describe(restarting, P) == (
        "restarting after worker killed by SIGABRT (1 of 3 failures within 300 s)"
    )
    demoted = Health("demoted", (1.0, 2.0, 3.0), 603.0, 600.0, None, "inference hung")
    assert describe(demoted, P) == "demoted after repeated failures (last: inference hung)"


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (-signal.SIGABRT, "killed by SIGABRT"),
        (-signal.SIGKILL, "killed by SIGKILL"),
        (-200, "killed by signal 200"),
        (3, "exited with status 3"),
        (0, "exited with status 0"),
        (None, "connection lost"),
    ],
)
def test_exit_description(code: int | None, text: str) -> None:
    assert exit_description(code) == text


def test_policy_from_config() -> None:
    cfg = SupervisorConfig(max_failures=5, retry_s=60, retry_max_s=120, timeout_s=2.0)
    policy = Policy.from_config(cfg)
    assert (policy.max_failures, policy.retry_s, policy.retry_max_s, policy.timeout_s) == (
        5,
        60,
        120,
        2.0,
    )
