"""The fleet gauges' queries on a real store, and how a snapshot sets the gauges."""

from __future__ import annotations

import sqlite3
import time

from controlplane.fleet_metrics import FleetSnapshot, apply, snapshot
from controlplane.metrics import Metrics
from controlplane.records import Incoming
from controlplane.store import Store
from tests.controlplane import messages as m

OFFLINE_AFTER = 60.0


def rollouts(conn: sqlite3.Connection) -> None:
    """A running rollout with three devices, and a completed one (no per-device series)."""
    for rid, state in (("r1", "running"), ("r0", "completed")):
        conn.execute(
            "INSERT INTO rollouts (id, model, version, seq, selector, waves, bake_s, gates, "
            "min_sample, on_halt, device_timeout_s, state, current_wave, created_at, updated_at) "
            "VALUES (?, 'digits-edge', '2', 2, '{}', '[1.0]', 0, '[]', 0, 'rollback', 60, ?, 0, "
            "0, 0)",
            [rid, state],
        )
    for rid, device, state in (
        ("r1", "cam-1", "active"), ("r1", "cam-2", "downloading"), ("r1", "cam-3", "active"),
        ("r0", "cam-1", "active"),
    ):  # fmt: skip
        conn.execute(
            "INSERT INTO deployments (rollout_id, device_id, wave, state, attempts, updated_at) "
            "VALUES (?, ?, 0, ?, 1, 0)",
            [rid, device, state],
        )


async def fleet(store: Store, now: float) -> None:
    tele = m.telemetry("cam-2", backend="cpu", fallback="edgetpu missing")
    stuck = m.telemetry("cam-3").model_copy(update={"outbox_oldest_age_s": 900.0})
    await store.write(
        Incoming("cam-1", now - 30, m.birth("cam-1")),
        Incoming("cam-2", now - 30, m.birth("cam-2")),
        Incoming("cam-3", now - 30, m.birth("cam-3")),
        Incoming("cam-2", now - 20, tele),
        Incoming("cam-3", now - 10, stuck),
        Incoming("cam-1", now - 5, m.batch("cam-1", [m.result()])),
    )
    await store.transact(rollouts)


async def test_an_empty_store_has_no_lag_and_no_outbox_age(store: Store) -> None:
    snap = await store.read(snapshot, time.time(), OFFLINE_AFTER)
    assert snap == FleetSnapshot(devices={"online": 0, "offline": 0})


async def test_snapshot_of_a_fleet(store: Store) -> None:
    now = time.time()
    await fleet(store, now)
    snap = await store.read(snapshot, now, OFFLINE_AFTER)
    assert snap.devices == {"online": 3, "offline": 0}
    assert snap.by_release == {("digits-edge", "1"): 3}
    assert snap.by_backend == {("litert",): 2, ("cpu",): 1}
    assert snap.fallback == 1
    assert snap.rollouts == {"running": 1, "completed": 1}
    assert snap.rollout_devices == {
        ("r1", "digits-edge", "2", "active"): 2, ("r1", "digits-edge", "2", "downloading"): 1,
    }  # fmt: skip
    assert snap.ingest_lag_s is not None and 4.0 < snap.ingest_lag_s < 6.0
    assert snap.outbox_oldest_age_s == 900.0


async def test_offline_devices_count_for_the_inventory_only(store: Store) -> None:
    now = time.time()
    await fleet(store, now)
    await store.write(
        Incoming("cam-2", now, m.will("cam-2")), Incoming("cam-3", now, m.will("cam-3"))
    )
    snap = await store.read(snapshot, now, OFFLINE_AFTER)
    assert snap.devices == {"online": 1, "offline": 2}
    assert snap.by_backend == {("litert",): 2, ("cpu",): 1}  # still known
    assert (snap.fallback, snap.outbox_oldest_age_s) == (0, None)  # stale reports don't count


def test_apply_drops_series_that_are_gone() -> None:
    metrics = Metrics()
    apply(metrics, FleetSnapshot(by_release={("a", "1"): 2}, ingest_lag_s=3.0))
    text = metrics.render()
    assert 'edgefleet_devices_by_release{model="a",version="1"} 2' in text
    assert "edgefleet_ingest_lag_seconds 3" in text
    assert 'edgefleet_rollouts{state="halted"} 0' in text  # every state, even at zero
    apply(metrics, FleetSnapshot(by_release={("a", "2"): 2}))
    text = metrics.render()
    assert (
        'version="1"' not in text
        and 'edgefleet_devices_by_release{model="a",version="2"} 2' in text
    )
    assert "\nedgefleet_ingest_lag_seconds " not in text
