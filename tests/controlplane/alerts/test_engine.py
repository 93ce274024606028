"""The engine on the real SQLite store: devices written through the ingestion records fire,
deduplicate, resolve; ``for`` durations survive a restart; overrides per selection apply;
model drift follows the rollouts' deployments."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from controlplane.alerts import queries
from controlplane.alerts.config import AlertConfig, Override
from controlplane.alerts.decisions import NOT_EVALUATED
from controlplane.alerts.engine import AlertEngine
from controlplane.alerts.queries import AlertQuery
from controlplane.records import Incoming
from controlplane.rollouts.tags import set_tags
from controlplane.settings import Settings
from controlplane.store import Store
from protocol.messages import Status, Telemetry
from tests.controlplane import messages as m

T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def engine(
    store: Store, tmp_path: Path, clock: Clock, *overrides: dict[str, Any], hooks: int = 1
) -> AlertEngine:
    settings = Settings(
        broker="mqtt://127.0.0.1:1",
        data_dir=tmp_path,
        alert_webhooks=[{"url": f"http://127.0.0.1:9/hook{i}"} for i in range(hooks)],
    )
    config = AlertConfig(tuple(Override.model_validate(o) for o in overrides))
    return AlertEngine(settings, store, config, store.metrics, clock=clock)


def birth(device_id: str, **tags: str) -> Status:
    return m.birth(device_id).model_copy(update={"tags": tags or {"site": "test"}})


def hot(device_id: str, sent_at: float, **fields: Any) -> Telemetry:
    return m.telemetry(device_id, sent_at=sent_at).model_copy(update=fields)


async def alerts(store: Store, state: str = "all", **filters: Any) -> list[dict[str, Any]]:
    page = await store.read(queries.list_alerts, AlertQuery(state=state, **filters))  # type: ignore[arg-type]
    return page.alerts


async def test_fires_once_keeps_its_value_and_resolves(store: Store, tmp_path: Path) -> None:
    clock = Clock()
    eng = engine(store, tmp_path, clock, hooks=2)
    await store.write(Incoming("cam-1", T0 - 700, birth("cam-1")))
    await store.write(Incoming("cam-2", T0 - 5, birth("cam-2")))

    first = await eng.tick()
    assert (first.devices, first.fired, first.resolved) == (2, 1, 0)
    assert first.notifications == 2  # one per webhook
    [alert] = await alerts(store, "open")
    assert (alert["rule"], alert["device_id"]) == ("device_offline", "cam-1")
    assert alert["state"] == "firing"
    assert alert["value"] == 700 and "last seen 11m40s ago" in alert["reason"]

    clock.now += 60
    second = await eng.tick()
    assert (second.fired, second.resolved, second.notifications) == (0, 0, 0)
    [kept] = await alerts(store, "open")
    assert kept["id"] == alert["id"] and kept["value"] == 760  # deduplicated, value updated

    await store.write(Incoming("cam-1", clock.now, birth("cam-1")))  # it comes back
    clock.now += 1
    third = await eng.tick()
    assert (third.fired, third.resolved, third.notifications) == (0, 1, 2)
    assert await alerts(store, "open") == []
    [resolved] = await alerts(store, "resolved")
    assert resolved["id"] == alert["id"] and resolved["resolved_at"] == clock.now
    assert resolved["resolution"] == "online"

    events = await store.read(queries.notifications, alert["id"])
    assert [(n["event"], n["state"]) for n in events] == [("firing", "pending")] * 2 + [
        ("resolved", "pending")
    ] * 2
    assert "127.0.0.1" not in str(events)  # the store never holds webhook URLs

    # It goes away again: a new alert (history keeps the first).
    clock.now += 700
    await eng.tick()
    assert [a["state"] for a in await alerts(store, device_id="cam-1")] == ["firing", "resolved"]


async def test_no_offline_verdicts_until_the_fleet_could_have_reported(
    store: Store, tmp_path: Path
) -> None:
    """A control plane started after a long stop does not call its whole fleet offline: devices
    not heard from since it started are judged once offline_after_s has passed."""
    clock = Clock()
    await store.write(Incoming("cam-1", T0 - 3600, birth("cam-1")))  # before the stop
    await store.write(Incoming("cam-2", T0 - 3600, birth("cam-2")))
    await store.write(Incoming("cam-2", T0 - 3600, hot("cam-2", T0 - 3600, disk_used_percent=99)))
    eng = engine(store, tmp_path, clock)
    eng.listening_since = clock.now  # as start() sets it
    await store.write(Incoming("cam-2", T0 + 5, birth("cam-2")))  # its retained birth arrives
    clock.now += 10
    await eng.tick()
    assert [(a["rule"], a["device_id"]) for a in await alerts(store)] == [("disk_full", "cam-2")]
    clock.now += 50  # offline_after_s (60) after the start: silence now means offline
    await eng.tick()
    assert {(a["rule"], a["device_id"]) for a in await alerts(store, "open")} == {
        ("disk_full", "cam-2"), ("device_offline", "cam-1"),
    }  # fmt: skip


async def test_for_duration_survives_a_restart(store: Store, tmp_path: Path) -> None:
    clock = Clock()
    await store.write(Incoming("cam-1", T0, birth("cam-1")))
    await store.write(Incoming("cam-1", T0, hot("cam-1", T0, temperature_c=91.0)))
    assert (await engine(store, tmp_path, clock).tick()).fired == 0  # thermal: for 120 s
    assert await store.read(queries.pending) == {("thermal", "cam-1"): T0}

    clock.now += 60  # a restart: a new engine, the same store
    await store.write(Incoming("cam-1", clock.now, hot("cam-1", clock.now, temperature_c=92.0)))
    assert (await engine(store, tmp_path, clock).tick()).fired == 0
    clock.now += 60
    await store.write(Incoming("cam-1", clock.now, hot("cam-1", clock.now, temperature_c=93.0)))
    assert (await engine(store, tmp_path, clock).tick()).fired == 1
    [alert] = await alerts(store, "open")
    assert alert["since"] == T0 and alert["started_at"] == T0 + 120 and alert["value"] == 93.0
    assert await store.read(queries.pending) == {}


async def test_a_condition_that_clears_while_pending_never_fires(
    store: Store, tmp_path: Path
) -> None:
    clock = Clock()
    eng = engine(store, tmp_path, clock)
    await store.write(Incoming("cam-1", T0, birth("cam-1")))
    await store.write(Incoming("cam-1", T0, hot("cam-1", T0, temperature_c=91.0)))
    await eng.tick()
    clock.now += 30
    await store.write(Incoming("cam-1", clock.now, hot("cam-1", clock.now, temperature_c=50.0)))
    await eng.tick()
    clock.now += 300
    await store.write(Incoming("cam-1", clock.now, hot("cam-1", clock.now, temperature_c=50.0)))
    await eng.tick()
    assert await alerts(store) == [] and await store.read(queries.pending) == {}


async def test_overrides_per_selection_apply(store: Store, tmp_path: Path) -> None:
    clock = Clock()
    eng = engine(
        store, tmp_path, clock,
        {"rule": "device_offline", "select": {"site": "north"}, "threshold": 120,
         "severity": "critical"},
        {"rule": "device_offline", "select": {"site": "lab"}, "enabled": False},
    )  # fmt: skip
    for device, site in (("n-1", "north"), ("s-1", "south"), ("l-1", "lab"), ("t-1", "south")):
        await store.write(Incoming(device, T0 - 300, birth(device, site=site)))
    # The operator moves t-1 north: the effective tags are what selections match.
    await store.transact(set_tags, "t-1", {"site": "north"}, [])
    await eng.tick()
    fired = {a["device_id"]: a["severity"] for a in await alerts(store, "open")}
    assert fired == {"n-1": "critical", "t-1": "critical"}

    clock.now += 400  # past the default 10 minutes: south fires too, the lab never
    await eng.tick()
    fired = {a["device_id"]: a["severity"] for a in await alerts(store, "open")}
    assert fired == {"n-1": "critical", "t-1": "critical", "s-1": "warning"}


async def test_disabling_a_rule_resolves_its_open_alerts(store: Store, tmp_path: Path) -> None:
    clock = Clock()
    await store.write(Incoming("cam-1", T0 - 900, birth("cam-1")))
    await engine(store, tmp_path, clock).tick()
    assert len(await alerts(store, "open")) == 1
    off = engine(store, tmp_path, clock, {"rule": "device_offline", "enabled": False})
    assert (await off.tick()).resolved == 1
    [alert] = await alerts(store, "resolved")
    assert alert["resolution"] == NOT_EVALUATED


async def test_stale_data_keeps_an_alert_open(store: Store, tmp_path: Path) -> None:
    """A device that goes offline keeps its telemetry alerts: its last report proves nothing."""
    clock = Clock()
    eng = engine(store, tmp_path, clock)
    await store.write(Incoming("cam-1", T0, birth("cam-1")))
    await store.write(Incoming("cam-1", T0, hot("cam-1", T0, disk_used_percent=97.0)))
    await eng.tick()
    await store.write(Incoming("cam-1", T0 + 1, m.will("cam-1")))
    clock.now += 2
    await eng.tick()
    assert [a["rule"] for a in await alerts(store, "open")] == ["disk_full"]
    clock.now += 700
    await eng.tick()
    assert sorted(a["rule"] for a in await alerts(store, "open")) == ["device_offline", "disk_full"]


async def test_error_rate_over_the_telemetry_window(store: Store, tmp_path: Path) -> None:
    clock = Clock()
    eng = engine(store, tmp_path, clock, {"rule": "error_rate", "for_s": 0})
    await store.write(Incoming("cam-1", T0, birth("cam-1")))
    await store.write(Incoming("cam-2", T0, birth("cam-2")))
    for i in range(6):  # one telemetry interval every 10 s: 4 errors in 60 requests each
        sent = T0 - 50 + i * 10
        for device, errors in (("cam-1", 4), ("cam-2", 0)):
            tele = m.telemetry(device, sent_at=sent, inferences=56).model_copy(
                update={"errors": errors}
            )
            await store.write(Incoming(device, T0, tele))
    # An old interval outside the window does not count.
    old = m.telemetry("cam-2", sent_at=T0 - 900, inferences=0).model_copy(update={"errors": 999})
    await store.write(Incoming("cam-2", T0 - 900, old))
    await eng.tick()
    [alert] = await alerts(store, "open")
    assert alert["device_id"] == "cam-1" and alert["rule"] == "error_rate"
    assert abs(alert["value"] - 24 / 360) < 1e-9 and "24 of 360 requests" in alert["reason"]


def _drift_rollout(conn: sqlite3.Connection, dispatched_at: float) -> None:
    conn.execute(
        "INSERT INTO rollouts (id, model, version, seq, selector, waves, bake_s, gates, "
        "min_sample, on_halt, device_timeout_s, state, current_wave, created_at, updated_at) "
        "VALUES ('r1', 'digits-edge', '2', 2, '{}', '[1.0]', 0, '[]', 0, 'rollback', 60, "
        "'running', 0, ?, ?)",
        [dispatched_at, dispatched_at],
    )
    for device, state in (("cam-1", "active"), ("cam-2", "failed"), ("cam-3", "pending")):
        conn.execute(
            "INSERT INTO deployments (rollout_id, device_id, wave, state, attempts, updated_at, "
            "dispatched_at, previous_version) VALUES ('r1', ?, 0, ?, 1, ?, ?, '1')",
            [device, state, dispatched_at, None if state == "pending" else dispatched_at],
        )


async def test_model_drift_follows_the_rollout(store: Store, tmp_path: Path) -> None:
    clock = Clock()
    eng = engine(store, tmp_path, clock)
    two = m.birth("cam-1")
    two = two.model_copy(update={"models": [two.models[0].model_copy(update={"version": "2"})]})
    await store.write(
        Incoming("cam-1", T0, two), Incoming("cam-2", T0, m.birth("cam-2")),
        Incoming("cam-3", T0, m.birth("cam-3")),
    )  # fmt: skip
    await store.transact(_drift_rollout, T0 - 1000)
    await eng.tick()
    assert await alerts(store) == []  # cam-2 has drifted for 1000 s of 1800

    clock.now += 800
    for device in ("cam-2", "cam-3"):
        await store.write(Incoming(device, clock.now, m.telemetry(device, sent_at=clock.now)))
    await store.write(Incoming("cam-1", clock.now, m.telemetry("cam-1", sent_at=clock.now)))
    await eng.tick()
    [alert] = await alerts(store, "open")
    assert (alert["rule"], alert["device_id"]) == ("model_drift", "cam-2")
    assert "reports digits-edge:1 but rollout r1 says digits-edge:2" in alert["reason"]

    # The rollout is rolled back for cam-2: version 1 is what it should run now.
    await store.transact(
        lambda c: c.execute(
            "UPDATE deployments SET rollback_at = ? WHERE device_id = 'cam-2'", [clock.now]
        )
    )
    clock.now += 1
    await store.write(Incoming("cam-2", clock.now, m.telemetry("cam-2", sent_at=clock.now)))
    await eng.tick()
    assert await alerts(store, "open") == []


async def test_the_open_alerts_gauge(store: Store, tmp_path: Path) -> None:
    from controlplane.fleet_metrics import apply, snapshot

    clock = Clock()
    await store.write(Incoming("cam-1", T0 - 900, birth("cam-1")))
    await engine(store, tmp_path, clock).tick()
    apply(store.metrics, await store.read(snapshot, clock.now, 60.0))
    assert store.metrics.alerts.value("device_offline", "warning") == 1
    assert store.metrics.alerts.value("thermal", "warning") == 0
    assert 'edgefleet_alerts{rule="disk_full",severity="critical"} 0' in store.metrics.render()
