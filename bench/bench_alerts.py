"""One alert-engine tick over 10,000 devices, against reading the fleet alone, in one run.

A real store on this machine is filled through the ingestion records (births with tags, 26
telemetry messages per device of which 6 fall in the error-rate window, a rollout whose
deployments cover every device) with a mix of conditions: 10 % offline, 5 % hot, 5 % disk
full, 5 % slow, 2 % failing, 3 % off their rollout's release. The alerts file's overrides
select on the devices' site tag. Then the engine ticks:

1. cold: every condition is new (alerts fire, notifications are queued for one webhook);
2. steady: the same fleet again (every alert stays open, values updated), five times;
3. recovery: half of the offline devices come back (their alerts resolve).

Each tick is reported whole and split in its two steps (read + evaluate + decide on a reader
thread; the decisions written on the writer thread). The baseline, measured in the same run, is
``Store.devices()`` over the same 10,000 devices: what ``GET /api/v1/devices`` reads, the floor
of any evaluation that looks at every device. The target: a tick well inside the default
``alerts_interval_s`` of 15 s (under 1 s at 10,000 devices).

    .venv/bin/python -m bench.bench_alerts [--devices 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from controlplane.alerts import queries
from controlplane.alerts.config import AlertConfig, Override
from controlplane.alerts.engine import AlertEngine, plan
from controlplane.records import Incoming
from controlplane.settings import Settings
from controlplane.store import Store
from protocol.messages import LatencySummary, ModelInfo, Status, Telemetry

TARGET_S = 1.0
SITES = 10
WINDOW_MESSAGES = 6
OLD_MESSAGES = 20


def birth(device_id: str, i: int, version: str) -> Status:
    return Status(
        device_id=device_id, state="online", agent_version="0.1.0",
        models=[ModelInfo(name="digits-edge", version=version, artifact_sha256="ab" * 32,
                          backend="litert")],
        tags={"site": f"s{i % SITES}", "serial": f"{i:06d}"},
    )  # fmt: skip


def telemetry(device_id: str, i: int, sent_at: float) -> Telemetry:
    slow, hot, full, failing = i % 20 == 1, i % 20 == 2, i % 20 == 3, i % 50 == 4
    return Telemetry(
        device_id=device_id, sent_at=sent_at, interval_s=10.0, inferences=60,
        errors=20 if failing else 0,
        latency=LatencySummary(count=60, p50_ms=20.0, p95_ms=400.0 if slow else 40.0),
        backend="litert", outbox_depth=0, temperature_c=90.0 if hot else 50.0,
        disk_used_percent=97.0 if full else 40.0, disk_free_bytes=10**10,
    )  # fmt: skip


async def fill(store: Store, devices: int, now: float) -> None:
    batch: list[Incoming] = []

    async def flush() -> None:
        await store.write(*batch)
        batch.clear()

    for i in range(devices):
        device = f"dev-{i:05d}"
        offline = i % 10 == 0
        seen = now - 3600 if offline else now
        drifted = i % 33 == 5
        batch.append(Incoming(device, seen, birth(device, i, "1" if drifted else "2")))
        for k in range(OLD_MESSAGES + WINDOW_MESSAGES):
            sent = (
                seen
                - (OLD_MESSAGES + WINDOW_MESSAGES - 1 - k) * 10
                - (600 if k < OLD_MESSAGES else 0)
            )
            batch.append(Incoming(device, seen, telemetry(device, i, sent)))
        if len(batch) >= 5000:
            await flush()
    await flush()

    def rollout(conn: Any) -> None:
        conn.execute(
            "INSERT INTO rollouts (id, model, version, seq, selector, waves, bake_s, gates, "
            "min_sample, on_halt, device_timeout_s, state, current_wave, created_at, updated_at) "
            "VALUES ('r1', 'digits-edge', '2', 2, '{}', '[1.0]', 0, '[]', 0, 'rollback', 60, "
            "'completed', 0, ?, ?)",
            [now - 7200, now - 7200],
        )
        conn.executemany(
            "INSERT INTO deployments (rollout_id, device_id, wave, state, attempts, updated_at, "
            "dispatched_at, previous_version) VALUES ('r1', ?, 0, 'active', 1, ?, ?, '1')",
            [(f"dev-{i:05d}", now - 7200, now - 7200) for i in range(devices)],
        )

    await store.transact(rollout)


def overrides() -> AlertConfig:
    entries = [
        {"rule": "device_offline", "select": {"site": f"s{s}"}, "threshold": 300 + s}
        for s in range(SITES)
    ] + [
        {"rule": "error_rate", "for_s": 0},
        {"rule": "latency_p95", "for_s": 0},
        {"rule": "thermal", "for_s": 0},
    ]  # fmt: skip
    return AlertConfig(tuple(Override.model_validate(e) for e in entries))


async def timed_tick(
    engine: AlertEngine, store: Store, settings: Settings, now: float
) -> dict[str, Any]:
    started = time.perf_counter()
    p = await store.read(plan, now, settings.offline_after_s, engine.config)
    read_s = time.perf_counter() - started
    written = time.perf_counter()
    applied = queries.Applied(0, 0, 0)
    if not p.decisions.empty:
        applied = await store.transact(
            queries.apply, p.decisions, now, engine.webhook_keys, settings.alert_runbook_url
        )
    write_s = time.perf_counter() - written
    return {
        "total_ms": round((read_s + write_s) * 1000, 1),
        "read_evaluate_decide_ms": round(read_s * 1000, 1),
        "write_ms": round(write_s * 1000, 1),
        "evaluations": p.evaluations,
        "fired": applied.fired,
        "resolved": applied.resolved,
        "kept": len(p.decisions.keep),
        "notifications": applied.notifications,
    }


async def main_async(devices: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-alerts-") as tmp:
        settings = Settings(
            broker="mqtt://127.0.0.1:1", data_dir=Path(tmp),
            alert_webhooks=[{"url": "http://127.0.0.1:9/hook", "format": "json"}],
        )  # fmt: skip
        store = Store(settings.store_path)
        store.open()
        try:
            now = time.time()
            filled = time.perf_counter()
            await fill(store, devices, now)
            fill_s = time.perf_counter() - filled
            engine = AlertEngine(settings, store, overrides(), store.metrics, clock=lambda: now)

            floors = []
            for _ in range(5):
                started = time.perf_counter()
                listed = await store.devices(now=now, offline_after_s=settings.offline_after_s)
                floors.append(time.perf_counter() - started)
            assert len(listed) == devices

            cold = await timed_tick(engine, store, settings, now)
            steady = [
                await timed_tick(engine, store, settings, now + 15 * (k + 1)) for k in range(5)
            ]
            later = now + 90
            back = [
                Incoming(f"dev-{i:05d}", later, birth(f"dev-{i:05d}", i, "2"))
                for i in range(0, devices, 20)
            ]
            await store.write(*back)
            recovery = await timed_tick(engine, store, settings, later + 1)
            open_now = await store.read(queries.open_counts)
        finally:
            store.close()
    floor_ms = statistics.median(floors) * 1000
    steady_ms = statistics.median(t["total_ms"] for t in steady)
    return {
        "devices": devices,
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "fill_s": round(fill_s, 1),
        "baseline_store_devices_ms": round(floor_ms, 1),
        "cold_tick": cold,
        "steady_tick_median_ms": steady_ms,
        "steady_ticks": steady,
        "recovery_tick": recovery,
        "open_alerts_after": {f"{r}/{s}": n for (r, s), n in sorted(open_now.items())},
        "steady_vs_baseline": round(steady_ms / floor_ms, 2),
        "cold_vs_target": round(cold["total_ms"] / 1000 / TARGET_S, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    args = parser.parse_args(argv)
    report = asyncio.run(main_async(args.devices))
    json.dump(report, sys.stdout, indent=2)
    print()
    print(
        f"\n{args.devices} devices: cold tick {report['cold_tick']['total_ms']:.0f} ms "
        f"({report['cold_tick']['fired']} fired), "
        f"steady tick {report['steady_tick_median_ms']:.0f} ms "
        f"= {report['steady_vs_baseline']}x reading the devices alone "
        f"({report['baseline_store_devices_ms']:.0f} ms); target under {TARGET_S * 1000:.0f} ms",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
