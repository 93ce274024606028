"""The planner: one tick of a rollout as a pure function, table by table."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from controlplane.rollouts.planner import (
    Change,
    Deployment,
    Device,
    Measured,
    Rollout,
    initial_members,
    plan_tick,
)
from controlplane.rollouts.spec import DEFAULT_GATES, Gate

NOW = 10_000.0
RETRIES = 2


def rollout(**change: Any) -> Rollout:
    base = Rollout(
        id="r1", model="digits", version="2", state="running", waves=[0.5, 1.0], selector={},
        gates=list(DEFAULT_GATES), targets=frozenset({"cpu"}), bake_s=0.0, min_sample=0,
        device_timeout_s=60.0,
    )  # fmt: skip
    return replace(base, **change)


def device(id: str, version: str = "1", kind: str = "cpu", **tags: str) -> Device:
    return Device(id, tags, kind, {"digits": version})


def dep(id: str, state: str = "pending", wave: int = 0, **change: Any) -> Deployment:
    return replace(Deployment(id, wave, state), **change)


NO_DATA = Measured(samples=0, values={})


# -- reconcile and timeouts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deployment", "running", "expected"),
    [
        (dep("a", "downloading", dispatched_at=NOW - 10, attempts=1), "2", "active"),
        (dep("a", "failed", dispatched_at=NOW - 10, attempts=1), "2", "active"),
        (dep("a", "downloading", dispatched_at=NOW - 10, attempts=1), "1", None),
        (dep("a", "downloading", dispatched_at=NOW - 60, attempts=1), "1", "timed_out"),
        (dep("a", "verifying", dispatched_at=NOW - 59.9, attempts=1), "1", None),
        (dep("a", "pending"), "2", None),
        (dep("a", "active", dispatched_at=NOW - 100, attempts=1), "1", None),
        (
            dep("a", "queued", dispatched_at=NOW, rollback_at=NOW - 5, attempts=1),
            "1",
            "rolled_back",
        ),
        (dep("a", "queued", dispatched_at=NOW, rollback_at=NOW - 5, attempts=1), "2", None),
        (dep("a", "queued", dispatched_at=NOW, rollback_at=NOW - 60, attempts=1), "2", "timed_out"),
    ],  # fmt: skip
    ids=[
        "birth-shows-new-version",
        "birth-beats-a-failure",
        "still-downloading",
        "timeout-exactly",
        "just-before-timeout",
        "pending-not-touched",
        "active-stays",
        "rollback-confirmed-by-birth",
        "rollback-waiting",
        "rollback-timeout",
    ],
)
def test_reconcile_from_births_and_timeouts(
    deployment: Deployment, running: str, expected: str | None
) -> None:
    state = "rolling_back" if deployment.rollback_at is not None else "paused"
    plan = plan_tick(
        rollout(state=state), [deployment], [device("a", running)], None, now=NOW,
        max_retries=RETRIES,
    )  # fmt: skip
    changes = [c.state for c in plan.changes]
    assert changes == ([expected] if expected else [])
    if expected:
        assert plan.changes[0] == Change("a", expected, deployment.state, plan.changes[0].detail)


# -- membership and dispatch -----------------------------------------------------------------------


def test_initial_members_are_the_matching_devices_stratified_by_kind() -> None:
    devices = [
        *(device(f"c{i}", site="lab") for i in range(4)),
        device("tpu", kind="edgetpu", site="lab"),
        device("away", site="home"),
    ]
    members = initial_members("r1", devices, {"site": "lab"}, [0.25, 1.0])
    assert sorted(m.device_id for m in members) == ["c0", "c1", "c2", "c3", "tpu"]
    first = {m.device_id for m in members if m.wave == 0}
    assert "tpu" in first and len(first) == 2, "each kind has a canary"
    assert all(m.state == "pending" for m in members)


@pytest.mark.parametrize(
    ("deployments", "r", "expected"),
    [
        ([dep("a"), dep("b", wave=1)], rollout(), ["a"]),
        ([dep("a"), dep("b", wave=1)], rollout(current_wave=1), ["a", "b"]),
        ([dep("a"), dep("b"), dep("c")], rollout(max_per_minute=2), None),
        (
            [dep("a", "queued", dispatched_at=NOW - 59, attempts=1), dep("b"), dep("c")],
            rollout(max_per_minute=2),
            None,
        ),
        (
            [dep("a", "queued", dispatched_at=NOW - 60, attempts=1), dep("b"), dep("c")],
            rollout(max_per_minute=2),
            None,
        ),
        ([dep("a", "failed", attempts=1, dispatched_at=NOW - 5), dep("b")], rollout(), ["a", "b"]),
        ([dep("a", "failed", attempts=3, dispatched_at=NOW - 5), dep("b")], rollout(), ["b"]),
        ([dep("a", "timed_out", attempts=2, dispatched_at=NOW - 99)], rollout(), ["a"]),
        ([dep("a")], rollout(state="paused"), []),
        ([dep("a")], rollout(state="halted"), []),
    ],
    ids=[
        "current-wave-only",
        "waves-up-to-current",
        "rate-limit",
        "rate-counts-recent",
        "rate-window-passed",
        "retry-then-fresh",
        "retries-exhausted",
        "timed-out-retried",
        "paused-holds",
        "halted-holds",
    ],
)
def test_dispatch(deployments: list[Deployment], r: Rollout, expected: list[str] | None) -> None:
    devices = [device(d.device_id) for d in deployments]
    plan = plan_tick(r, deployments, devices, None, now=NOW, max_retries=RETRIES)
    sent = [d.device_id for d in plan.dispatches]
    if expected is None:  # the rate limit: how many, not which (the order is a stable hash)
        recent = sum(1 for d in deployments if d.dispatched_at and NOW - d.dispatched_at < 60)
        assert len(sent) == 2 - recent
    else:
        assert sorted(sent) == expected
    retried = {d.device_id for d in plan.dispatches if d.retry}
    assert retried == {d.device_id for d in deployments if d.state != "pending"} & set(sent)


def test_a_device_without_a_fitting_artifact_fails_for_good() -> None:
    r = rollout(targets=frozenset({"edgetpu"}))
    plan = plan_tick(r, [dep("a")], [device("a")], None, now=NOW, max_retries=RETRIES)
    assert [(d.device_id, d.target) for d in plan.dispatches] == [("a", None)]
    tpu = plan_tick(r, [dep("t", kind="edgetpu")], [device("t", kind="edgetpu")], None,
                    now=NOW, max_retries=RETRIES)  # fmt: skip
    assert [d.target for d in tpu.dispatches] == ["edgetpu"]


@pytest.mark.parametrize(
    ("tags", "current_wave", "joins"),
    [
        ({"site": "lab"}, 1, [("new", 1)]),
        ({"site": "home"}, 1, []),
        ({"site": "lab"}, 0, [("new", 0)]),
    ],
    ids=["joins-current-wave", "not-selected", "joins-canary"],
)
def test_a_device_that_matches_later_joins(
    tags: dict[str, str], current_wave: int, joins: list[tuple[str, int]]
) -> None:
    r = rollout(selector={"site": "lab"}, current_wave=current_wave)
    old = dep("old", "active", dispatched_at=NOW - 5, attempts=1)
    plan = plan_tick(r, [old], [device("old", "2", site="lab"), Device("new", tags, "cpu")],
                     None, now=NOW, max_retries=RETRIES)  # fmt: skip
    assert [(j.device_id, j.wave) for j in plan.joins] == joins
    assert [d.device_id for d in plan.dispatches] == [j for j, _ in joins]


# -- gates -----------------------------------------------------------------------------------------

ACTIVE = {"state": "active", "dispatched_at": NOW - 30, "attempts": 1}


@pytest.mark.parametrize(
    ("r", "deployments", "measured", "expected"),
    [
        (
            rollout(),
            [dep("a", **ACTIVE), dep("b", wave=1)],
            NO_DATA,
            {"current_wave": 1, "wave_started_at": NOW, "wave_finished_at": None},
        ),
        (
            rollout(current_wave=1),
            [dep("a", **ACTIVE), dep("b", wave=1, **ACTIVE)],
            NO_DATA,
            {"state": "completed", "wave_finished_at": NOW},
        ),
        (rollout(), [dep("a", **ACTIVE)], None, {"wave_finished_at": NOW}),
        (rollout(bake_s=30), [dep("a", **ACTIVE)], NO_DATA, {"wave_finished_at": NOW}),
        (
            rollout(bake_s=30, wave_finished_at=NOW - 30),
            [dep("a", **ACTIVE)],
            NO_DATA,
            {"current_wave": 1, "wave_started_at": NOW, "wave_finished_at": None},
        ),
        (rollout(min_sample=10), [dep("a", **ACTIVE)], Measured(9, {}), {"wave_finished_at": NOW}),
        (
            rollout(),
            [dep("a", **ACTIVE)],
            Measured(100, {"error_rate": 0.2}),
            {"state": "rolling_back", "wave_finished_at": NOW},
        ),
        (
            rollout(on_halt="pause"),
            [dep("a", **ACTIVE)],
            Measured(100, {"agreement": 0.5}),
            {"state": "halted", "wave_finished_at": NOW},
        ),
        (
            rollout(),
            [
                dep("a", "failed", attempts=3, dispatched_at=NOW - 5),
                dep("b", "downloading", attempts=1, dispatched_at=NOW - 5),
            ],
            None,
            {"state": "rolling_back"},
        ),
        (
            rollout(gates=[Gate("agreement", ">=", 0.9)]),
            [dep("a", **ACTIVE)],
            NO_DATA,
            {"wave_finished_at": NOW},
        ),
        (
            rollout(waves=[0.5, 0.9, 1.0]),
            [dep("a", **ACTIVE)],
            NO_DATA,
            {"current_wave": 1, "wave_started_at": NOW, "wave_finished_at": None},
        ),
    ],  # fmt: skip
    ids=[
        "pass-next-wave",
        "pass-last-wave-completes",
        "finished-measured-next-tick",
        "baking",
        "bake-exactly-over",
        "min-sample",
        "halt-rollback",
        "halt-pause",
        "failures-halt-before-the-wave-ends",
        "explicit-gate-waits-for-data",
        "empty-wave-next",
    ],
)
def test_gates_move_the_rollout(
    r: Rollout, deployments: list[Deployment], measured: Measured | None, expected: dict[str, Any]
) -> None:
    devices = [device(d.device_id, "2" if d.state == "active" else "1") for d in deployments]
    plan = plan_tick(r, deployments, devices, measured, now=NOW, max_retries=RETRIES)
    halt = plan.rollout.pop("halt", None)
    assert plan.rollout == expected
    assert (halt is not None) == (expected.get("state") in ("rolling_back", "halted"))
    if halt is not None:
        assert halt["wave"] == 0 and halt["gate"] and halt["reason"]


def test_a_wave_with_a_retry_pending_is_not_finished() -> None:
    failed = dep("a", "failed", attempts=1, dispatched_at=NOW - 5)
    plan = plan_tick(rollout(max_per_minute=1), [failed, dep("b", "queued", attempts=1,
                     dispatched_at=NOW - 1)], [device("a"), device("b")], NO_DATA, now=NOW,
                     max_retries=RETRIES)  # fmt: skip
    assert plan.dispatches == [] and plan.rollout == {}, "no budget: it waits, it is not a failure"


# -- rolling back ----------------------------------------------------------------------------------


def test_rolling_back_sends_every_dispatched_device_back_then_finishes() -> None:
    r = rollout(state="rolling_back")
    deployments = [
        dep("a", "active", dispatched_at=NOW - 30, attempts=1),
        dep("b", "failed", dispatched_at=NOW - 30, attempts=3),
        dep("never"),
    ]
    devices = [device("a", "2"), device("b", "1"), device("never")]
    plan = plan_tick(r, deployments, devices, None, now=NOW, max_retries=RETRIES)
    assert plan.rollbacks == ["a", "b"] and "state" not in plan.rollout
    after = [
        dep("a", "queued", dispatched_at=NOW - 30, attempts=1, rollback_at=NOW),
        dep("b", "rolled_back", dispatched_at=NOW - 30, attempts=3, rollback_at=NOW),
        dep("never"),
    ]
    plan = plan_tick(r, after, devices, None, now=NOW + 1, max_retries=RETRIES)
    assert plan.rollbacks == [] and "state" not in plan.rollout, "a still on the new release"
    back = [device("a", "1"), *devices[1:]]
    plan = plan_tick(r, after, back, None, now=NOW + 2, max_retries=RETRIES)
    assert [c.state for c in plan.changes] == ["rolled_back"]
    assert plan.rollout == {"state": "rolled_back"}


@pytest.mark.parametrize("state", ["completed", "aborted", "rolled_back"])
def test_a_finished_rollout_does_nothing(state: str) -> None:
    plan = plan_tick(rollout(state=state), [dep("a")], [device("a", "2")], NO_DATA, now=NOW,
                     max_retries=RETRIES)  # fmt: skip
    assert plan.empty
