"""End-to-end ingestion: results/s from agents' outboxes, through Mosquitto, into the store.

``python -m bench.bench_ingest`` runs, in one run on this machine:

1. the ceiling: the same result batches published QoS 1 by as many MQTT clients as there are
   devices, through the same private Mosquitto, to a subscriber that only counts them (no store);
2. the real path: N devices, each a real outbox (SQLite, pre-filled with M encoded results) drained
   by a real :class:`agent.uplink.Uplink` over its own MQTT connection, into a real control plane
   process (``python -m controlplane serve``, store ``synchronous=FULL``), timed from the first
   publish until the control plane's ``edgefleet_results_ingested_total`` reaches N x M.

Target: at least 5,000 results/s on a 2-core machine. It always exits 0: it reports.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from agent.outbox import Outbox
from agent.uplink import Uplink, batch_payload, make_will
from bench.bench_outbox import make_rows
from controlplane.broker import start_mosquitto
from controlplane.cli import serve_argv
from controlplane.demo import free_port
from protocol.messages import Status, Telemetry
from protocol.mqtt import Message, MQTTClient
from protocol.topics import Channel, device_filter, device_topic

ROOT = Path(__file__).resolve().parents[1]
BATCH = 200


async def ceiling(broker: str, devices: int, per_device: int) -> float:
    """Results/s through the broker alone: pipelined QoS 1 publishers, one counting subscriber."""
    rows = make_rows(BATCH)
    payloads = {
        f"ceil-{d}": batch_payload(f"ceil-{d}", [payload for _, _, payload in rows])
        for d in range(devices)
    }
    expected = devices * (per_device // BATCH)
    received = 0
    done = asyncio.Event()

    def count(_: Message) -> None:
        nonlocal received
        received += 1
        if received >= expected:
            done.set()

    sub = MQTTClient(broker, "bench-ceiling-sub", on_message=count)
    await sub.start()
    await sub.wait_connected(10)
    await sub.subscribe(device_filter(Channel.RESULTS), qos=1)
    pubs = [MQTTClient(broker, f"bench-ceiling-{d}") for d in range(devices)]
    for p in pubs:
        await p.start()
        await p.wait_connected(10)

    async def publish(client: MQTTClient, device: str) -> None:
        topic = device_topic(device, Channel.RESULTS)
        pending: set[asyncio.Task[None]] = set()
        for _ in range(per_device // BATCH):
            pending.add(asyncio.create_task(client.publish(topic, payloads[device], qos=1)))
            if len(pending) >= 4:
                finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.gather(*pending)

    started = time.perf_counter()
    await asyncio.gather(*(publish(p, f"ceil-{d}") for d, p in enumerate(pubs)))
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - started
    for client in [*pubs, sub]:
        await client.stop()
    return expected * BATCH / elapsed


async def ingested(api: str, client: httpx.AsyncClient) -> int:
    text = (await client.get(f"{api}/metrics")).text
    for line in text.splitlines():
        if line.startswith("edgefleet_results_ingested_total "):
            return int(float(line.split()[1]))
    return 0


async def end_to_end(broker: str, api: str, workdir: Path, devices: int, per_device: int) -> float:
    boxes = []
    for d in range(devices):
        box = Outbox(workdir / f"dev-{d}.db", synchronous="NORMAL")
        await box.open()
        await box.put_many(make_rows(per_device))
        boxes.append(box)
    uplinks, clients, tasks = [], [], []
    async with httpx.AsyncClient(timeout=10) as http:
        before = await ingested(api, http)
        started = time.perf_counter()
        for d, box in enumerate(boxes):
            device = f"bench-{d}"
            client = MQTTClient(broker, f"edgefleet-agent-{device}", will=make_will(device))
            uplink = Uplink(
                device_id=device,
                client=client,
                outbox=box,
                batch_size=BATCH,
                birth=lambda device=device: Status(device_id=device, state="online"),  # type: ignore[misc]
                telemetry=lambda device=device: Telemetry(device_id=device, interval_s=10),  # type: ignore[misc]
            )
            tasks.append(asyncio.create_task(uplink.run()))
            await client.start()
            uplinks.append(uplink)
            clients.append(client)
        total = devices * per_device
        while await ingested(api, http) - before < total:  # noqa: ASYNC110 (a remote counter)
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    for uplink, client in zip(uplinks, clients, strict=True):
        await uplink.stop()
        await client.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for box in boxes:
        await box.close()
    return total / elapsed


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        port = free_port()
        broker = start_mosquitto(workdir / "broker", port)
        url = f"mqtt://127.0.0.1:{port}"
        http_port = free_port()
        api = f"http://127.0.0.1:{http_port}"
        cp = subprocess.Popen(  # noqa: ASYNC220 (started once, before timing)
            serve_argv(url, f"127.0.0.1:{http_port}", workdir / "cp", "--log-level", "WARNING"),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
        try:
            async with httpx.AsyncClient() as http:
                for _ in range(300):
                    try:
                        if (await http.get(f"{api}/healthz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.1)
            roof = await ceiling(url, args.devices, args.per_device)
            print(
                f"broker ceiling (publish -> counting subscriber): {roof:9.0f} results/s",
                flush=True,
            )
            rate = await end_to_end(url, api, workdir, args.devices, args.per_device)
            print(
                f"outboxes -> uplinks -> mosquitto -> control plane store (FULL): "
                f"{rate:9.0f} results/s",
                flush=True,
            )
            print(
                f"ratio to the broker ceiling: {rate / roof:.2f}x; target >= 5,000 results/s: "
                f"{'met' if rate >= 5000 else 'NOT met'}"
            )
        finally:
            cp.terminate()
            cp.wait(30)
            broker.terminate()
            broker.wait(10)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=20)
    p.add_argument("--per-device", type=int, default=5000, help="results in each outbox")
    args = p.parse_args()
    print(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{args.devices} devices x {args.per_device} results, batches of {BATCH}",
        flush=True,
    )
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
