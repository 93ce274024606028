"""A 4-wave rollout of a 2 MB release to 1,000 simulated devices: seconds until all run it.

Everything is real and on this machine: a private Mosquitto, ``edgefleet serve``, and
``edgefleet simulate`` with 1,000 agents (each its own MQTT connection, outbox and model slots; each
downloads and verifies its own copy of the artifact). The rollout has waves 1 %, 10 %, 50 %, 100 %,
zero bake time, no minimum sample, and the failure-rate gate only (the 2 MB model is slower than the
incumbent by design, so the latency gate would rightly stop it).

The baseline, measured in the same run: the transfer floor, i.e. the time the control plane takes to
serve the artifact 1,000 times to 50 concurrent HTTP clients with nothing else to do. The target is
under 60 s; the figure also prints as a ratio to that floor. The control plane's CPU (share of one
core) and memory are sampled every half second during the rollout.

    .venv/bin/python -m bench.bench_rollout [--devices 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from bench.harness import answers, wait_for
from controlplane.broker import start_mosquitto
from controlplane.cli import serve_argv
from controlplane.demo import free_port
from tests.e2e.processes import Process

ROOT = Path(__file__).resolve().parents[1]
BIG = ROOT / "models" / "rollout" / "big"
INCUMBENT = ROOT / "models" / "digits" / "edge_fp32.tflite"
TARGET_S = 60.0


async def transfer_floor(url: str, count: int, concurrency: int = 50) -> float:
    """Seconds to GET the artifact ``count`` times with ``concurrency`` clients."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker(client: httpx.AsyncClient) -> None:
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            async with client.stream("GET", url) as response:
                response.raise_for_status()
                async for _ in response.aiter_bytes(256 * 1024):
                    pass

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0.05, help="inferences/s per device")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        return run(Path(tmp), args.devices, args.rate)


def run(workdir: Path, devices: int, rate: float) -> int:
    (workdir / "broker").mkdir()
    broker_port, cp_port = free_port(), free_port()
    broker_url = f"mqtt://127.0.0.1:{broker_port}"
    url = f"http://127.0.0.1:{cp_port}"
    procs: list[Process] = []

    def spawn(name: str, argv: list[str]) -> Process:
        proc = Process(name, argv, workdir)
        proc.start()
        procs.append(proc)
        return proc

    broker = start_mosquitto(workdir / "broker", broker_port)
    try:
        cp = spawn("controlplane", serve_argv(broker_url, f"127.0.0.1:{cp_port}", workdir / "cp"))
        wait_for("the control plane", answers(url + "/healthz"), 60, cp)
        key = workdir / "release.pub"
        key.write_text(httpx.get(url + "/api/v1/keys/release").json()["public_key"])
        push = subprocess.run(
            [
                sys.executable, "-m", "controlplane", "models", "push", "digits-edge", "3.0.0",
                "--artifact", f"cpu={BIG}.tflite", "--manifest", f"{BIG}.json",
                "--server", url, "--json",
            ],
            capture_output=True, text=True, cwd=ROOT, check=False,
        )  # fmt: skip
        if push.returncode != 0:
            raise SystemExit(f"bench_rollout: push failed: {push.stderr}")
        sha = json.loads(push.stdout)["artifacts"]["cpu"]["sha256"]
        floor = asyncio.run(transfer_floor(f"{url}/api/v1/artifacts/{sha}", devices))

        simulator = spawn(
            "simulator",
            [
                sys.executable, "-m", "agent.simulator", "--broker", broker_url,
                "--devices", str(devices), "--rate", str(rate), "--model", str(INCUMBENT),
                "--data-dir", str(workdir / "sim"), "--id-prefix", "bench",
                "--release-key", str(key), "--tag", "fleet=bench",
                "--telemetry-interval", "30",
            ],
        )  # fmt: skip
        wait_for(
            f"{devices} devices online",
            lambda: (
                httpx.get(url + "/api/v1/devices", params={"state": "online"}, timeout=30).json()[
                    "count"
                ]
                >= devices
            ),
            300,
            cp,
            simulator,
        )

        assert cp.proc is not None
        cp_proc = psutil.Process(cp.proc.pid)
        cp_proc.cpu_percent(None)
        started = time.monotonic()
        rollout = httpx.post(
            url + "/api/v1/rollouts",
            json={
                "model": "digits-edge", "version": "3.0.0", "select": {"fleet": "bench"},
                "waves": "1%,10%,50%,100%", "bake": 0, "min_sample": 0,
                "gates": ["failure_rate<=0.1"], "device_timeout": "5m",
            },
            timeout=60,
        )  # fmt: skip
        rollout.raise_for_status()
        rollout_id = rollout.json()["id"]
        cpu, rss = [], []
        state = "running"
        while state not in ("completed", "halted", "rolled_back", "aborted"):
            time.sleep(0.5)
            cpu.append(cp_proc.cpu_percent(None))
            rss.append(cp_proc.memory_info().rss)
            body = httpx.get(f"{url}/api/v1/rollouts/{rollout_id}", timeout=30).json()
            state = body["state"]
            if time.monotonic() - started > 600:
                raise SystemExit("bench_rollout: no final state in 10 minutes")
        elapsed = time.monotonic() - started
        counts = body.get("devices", {})
    finally:
        for proc in reversed(procs):
            proc.stop(timeout=30)
        broker.terminate()
        try:
            broker.wait(30)
        except subprocess.TimeoutExpired:
            broker.kill()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"devices: {devices}, artifact: {(BIG.with_suffix('.tflite')).stat().st_size} bytes")
    print(f"rollout {state}: devices by state {counts}")
    print(f"transfer floor ({devices:,} GETs, 50 at a time): {floor:.1f} s")
    print(f"time to 100 %: {elapsed:.1f} s (target < {TARGET_S:.0f} s: "
          f"{'met' if state == 'completed' and elapsed < TARGET_S else 'NOT met'}); "
          f"{elapsed / floor:.1f}x the transfer floor")  # fmt: skip
    mean_cpu = sum(cpu) / len(cpu) if cpu else 0.0
    print(f"control plane CPU: mean {mean_cpu:.0f} %, max {max(cpu, default=0):.0f} % of one core; "
          f"RSS max {max(rss, default=0) / 2**20:.0f} MiB")  # fmt: skip
    return 0 if state == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
