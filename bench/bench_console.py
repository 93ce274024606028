"""Server time of the console's pages with 10,000 devices and 1,000,000 results.

A store is filled with rows shaped exactly as ingestion writes them (the SQL of
``controlplane.records``): 10,000 devices with their latest telemetry, an hour of telemetry
history (``--telemetry-per-device`` messages each), 1,000,000 results over the last day (10 %
offloaded with a cloud answer) and operator feedback on 2,000 of them. Each page is then rendered
by the real app in process (``httpx.ASGITransport``: the server's time, no network), once to warm
up and ``--repeat`` times measured; the median and the worst are printed. The peers, measured in
the same run on the same store: the JSON API's ``GET /api/v1/results?limit=50`` (the cheapest
read there is) and ``GET /api/v1/devices`` (every device as JSON, what a console without paging
would have to load).

    .venv/bin/python -m bench.bench_console [--devices 10000] [--results 1000000] [--keep DIR]

``--keep DIR`` keeps (and on a later run reuses) the filled store. Target: every page under
200 ms of server time on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from controlplane.app import create_app
from controlplane.records import BIRTH, DEVICE_TELEMETRY, RESULTS, TELEMETRY
from controlplane.settings import Settings
from controlplane.store import Store

TARGET_MS = 200.0
MODEL = "digits-edge"
SHA = "ab" * 32


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def fill(path: Path, devices: int, results: int, per_device: int, now: float) -> None:
    """Write the fleet into a new store at ``path`` (migrated by ``Store.open``)."""
    store = Store(path, synchronous="OFF")
    store.open()
    store.close()
    rng = random.Random(7)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    ids = [f"cam-{i:05d}" for i in range(devices)]
    conn.execute("BEGIN")
    births = []
    for i, device_id in enumerate(ids):
        edgetpu = i % 5 == 0
        version = "2.0.0" if i % 3 else "1.0.0"
        fallback = "edgetpu: libedgetpu.so.1 missing" if i % 50 == 0 else None
        models = [{"name": MODEL, "version": version, "artifact_sha256": SHA,
                   "backend": "edgetpu" if edgetpu and not fallback else "litert",
                   "fallback_reason": fallback}]  # fmt: skip
        births.append((
            device_id, now - 7200, now - rng.random() * 30, now - 7200, "0.1.0",
            _json({"machine": "aarch64"}), _json([{"kind": "edgetpu", "present": edgetpu}]),
            _json(models), _json({"site": f"plant-{i % 40}", "row": str(i % 7)}),
            None, models[0]["backend"], fallback,
        ))  # fmt: skip
    conn.executemany(BIRTH, births)
    telemetry, latest = [], []
    for k in range(per_device):
        at = now - 3600 + k * (3600 / per_device)
        for i, device_id in enumerate(ids):
            p95 = 3.0 + (i % 17) * 0.5 + rng.random()
            body = {
                "type": "telemetry", "device_id": device_id, "sent_at": at + i * 1e-4,
                "interval_s": 10.0, "inferences": 10, "errors": 1 if i % 97 == 0 else 0,
                "latency": {"count": 10, "p50_ms": p95 / 2, "p95_ms": p95, "p99_ms": p95 * 1.4},
                "backend": "litert", "outbox_depth": (i * 7) % 1500, "cpu_percent": 20.0,
                "memory_rss_bytes": 94_000_000, "temperature_c": 45.0 + i % 40,
            }  # fmt: skip
            text = _json(body)
            telemetry.append((device_id, body["sent_at"], at, 10, body["errors"], p95 / 2, p95,
                              p95 * 1.4, body["outbox_depth"], text))  # fmt: skip
            if k == per_device - 1:
                latest.append((device_id, at, at, text, body["sent_at"], "litert",
                               births[i][11]))  # fmt: skip
    conn.executemany(TELEMETRY, telemetry)
    conn.executemany(DEVICE_TELEMETRY, latest)
    conn.execute("COMMIT")
    batch: list[tuple[Any, ...]] = []
    step = 86400 / results
    conn.execute("BEGIN")
    for n in range(results):
        device_id = ids[n % devices]
        created = now - 86400 + n * step
        label = n % 10
        score = 0.35 + (n * 7919 % 650) / 1000
        version = "2.0.0" if (n % devices) % 3 else "1.0.0"
        offloaded = score < 0.45
        cloud = (label if n % 13 else (label + 1) % 10) if offloaded else None
        decision = "offloaded" if offloaded else "local"
        body = (
            f'{{"result_id":"r{n:08d}","created_at":{created},"model":"{MODEL}",'
            f'"model_version":"{version}","artifact_sha256":"{SHA}","backend":"litert",'
            f'"latency_ms":1.8,"classes":[{{"index":{label},"label":"{label}",'
            f'"score":{score}}}],"offload":{{"decision":"{decision}"}}}}'
        )
        cloud_body = None
        if cloud is not None:
            cloud_body = _json({"model": "digits-cloud", "classes": [
                {"index": cloud, "label": str(cloud), "score": 0.99}], "latency_ms": 9.0,
                "answered_at": created + 0.01})  # fmt: skip
        batch.append((
            device_id, f"r{n:08d}", created, created + 0.5, MODEL, version, SHA, "litert", 1.8,
            str(label), score, body, "offloaded" if offloaded else "local",
            "low_confidence" if offloaded else None,
            None if cloud is None else str(cloud), None if cloud is None else 0.99,
            None if cloud is None else int(cloud == label), None if cloud is None else created,
            cloud_body,
        ))  # fmt: skip
        if len(batch) >= 50_000:
            conn.executemany(RESULTS, batch)
            batch.clear()
    if batch:
        conn.executemany(RESULTS, batch)
    picks = rng.sample(range(results), min(2000, results))
    conn.executemany(
        "INSERT INTO feedback (device_id, result_id, label, correct, given_at) VALUES (?,?,?,?,?)",
        [(ids[n % devices], f"r{n:08d}", str(n % 10 if n % 9 else (n + 3) % 10), None, now)
         for n in picks],
    )  # fmt: skip
    conn.execute("COMMIT")
    conn.execute("PRAGMA optimize")
    conn.close()


PAGES = [
    ("devices table, first page", "/devices"),
    ("devices sorted by p95", "/devices?sort=p95&dir=desc"),
    ("devices sorted by offload rate", "/devices?sort=offload&dir=desc"),
    ("devices searched and filtered", "/devices?q=plant-3&health=online&release=digits-edge:2.0.0"),
    ("devices, a page near the end", "/devices?page={last_page}"),
    ("results, newest page", "/results"),
    ("results by device", "/results?device={device}"),
    ("results by label and confidence", "/results?label=7&min_confidence=0.9"),
    ("results offloaded, version 1.0.0", "/results?offloaded=yes&version=1.0.0"),
    ("results, a filter nothing matches", "/results?label=none"),
    ("results, 30 days of accuracy", "/results?range=30d"),
    ("fleet", "/fleet"),
    ("fleet, 24 h", "/fleet?range=24h"),
    ("device", "/devices/{device}"),
    ("models", "/models"),
    ("rollouts", "/rollouts"),
]
PEERS = [
    ("API: GET /api/v1/results?limit=50", "/api/v1/results?limit=50"),
    ("API: GET /api/v1/devices (all, JSON)", "/api/v1/devices"),
]


async def measure(
    path: Path, data_dir: Path, repeat: int, devices: int
) -> list[tuple[str, str, float, float]]:
    store = Store(path)
    store.open()
    settings = Settings(broker="mqtt://127.0.0.1:1", data_dir=data_dir)
    app = create_app(settings, store=store, mqtt=False)
    out = []
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cp", timeout=60) as c:
            for name, template in [*PAGES, *PEERS]:
                url = template.format(device=f"cam-{devices // 2:05d}", last_page=devices // 50)
                times = []
                for i in range(repeat + 1):
                    started = time.perf_counter()
                    response = await c.get(url)
                    elapsed = (time.perf_counter() - started) * 1000
                    if response.status_code != 200:
                        raise SystemExit(f"{url}: {response.status_code} {response.text[:500]}")
                    if i:
                        times.append(elapsed)
                out.append((name, url, statistics.median(times), max(times)))
    finally:
        store.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=10_000)
    p.add_argument("--results", type=int, default=1_000_000)
    p.add_argument("--telemetry-per-device", type=int, default=30)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--keep", type=Path, help="keep the filled store here (reused if present)")
    args = p.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-console-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "controlplane.db"
    if not db.exists():
        started = time.monotonic()
        fill(db, args.devices, args.results, args.telemetry_per_device, time.time())
        print(f"filled {db} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    rows = asyncio.run(measure(db, work / "data", args.repeat, args.devices))
    print(f"console pages, {args.devices:,} devices, {args.results:,} results "
          f"({platform.machine()}, Python {platform.python_version()}, "
          f"SQLite {sqlite3.sqlite_version}); median and worst of {args.repeat}")  # fmt: skip
    print(f"| page | URL | median | worst | target {TARGET_MS:.0f} ms |")
    print("|---|---|---|---|---|")
    for name, url, median, worst in rows:
        verdict = "met" if worst < TARGET_MS else "**not met**"
        if url.startswith("/api/"):
            verdict = "(peer)"
        print(f"| {name} | `{url}` | {median:.1f} ms | {worst:.1f} ms | {verdict} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
