"""The agent's hot path against a raw ``interpreter.invoke()`` loop, and the agent's memory.

``python -m bench.bench_agent`` runs, in one run on this machine:

1. the raw baseline: a LiteRT interpreter on the benchmark model
   (``models/bench/convnet224.tflite``) invoked in a tight loop with 1 thread and with 2
   threads: throughput and p50 latency;
2. the real agent process (``python -m agent``, interpreter on 1 thread, results going to the
   outbox with ``synchronous=FULL`` and up through a private Mosquitto into a real control plane
   process), loaded by a separate
   load-generator process (``bench/loadgen.py``) posting binary-extension requests from several
   concurrent connections: throughput and p50/p99;
3. the same agent at low load (one connection, one request at a time): p50 and what it adds to a
   raw invoke's p50;
4. the agent's resident memory (RSS now and peak) after the load.

Targets: >= 0.9x the raw 1-thread throughput; <= 1 ms added to p50 at low load; RSS <= 150 MB.
It always exits 0: it reports; tests assert correctness, not speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from ai_edge_litert.interpreter import Interpreter

from controlplane.broker import find_mosquitto, start_mosquitto
from controlplane.cli import serve_argv
from controlplane.demo import free_port
from protocol.manifest import ModelManifest

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "bench" / "convnet224.tflite"


def raw_loop(threads: int, seconds: float) -> dict[str, float]:
    interp = Interpreter(model_path=str(MODEL), num_threads=threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    data = np.random.default_rng(0).integers(0, 100, size=inp["shape"]).astype(inp["dtype"])
    for _ in range(5):
        interp.set_tensor(inp["index"], data)
        interp.invoke()
    latencies = []
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        interp.set_tensor(inp["index"], data)
        interp.invoke()
        interp.get_tensor(out["index"])
        latencies.append((time.perf_counter() - t0) * 1000)
    elapsed = time.perf_counter() - started
    return {"rate": len(latencies) / elapsed, "p50": statistics.median(latencies)}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def load(
    url: str, manifest: ModelManifest, clients: int, seconds: float, get: str | None = None
) -> dict[str, Any]:
    spec, out = manifest.inputs[0], manifest.outputs[0]
    cmd = [
        sys.executable,
        "-m",
        "bench.loadgen",
        url,
        manifest.name,
        "--clients",
        str(clients),
        "--seconds",
        str(seconds),
        "--input",
        spec.name,
        "--output",
        out.name,
        "--shape",
        ",".join(str(abs(d)) for d in spec.shape),
        "--datatype",
        spec.datatype,
        *(["--get", get] if get else []),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per phase")
    p.add_argument("--clients", type=int, default=4, help="concurrent connections under load")
    p.add_argument(
        "--synchronous",
        choices=["FULL", "NORMAL"],
        default="FULL",
        help="the agent's outbox durability (default FULL: survives power loss)",
    )
    args = p.parse_args()
    manifest = ModelManifest.load(MODEL.with_suffix(".json"))
    print(
        f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}; model {MODEL.name} ({manifest.inputs[0].shape} "
        f"{manifest.inputs[0].datatype})",
        flush=True,
    )

    raw1 = raw_loop(1, args.seconds)
    raw2 = raw_loop(2, args.seconds)
    print(
        f"raw invoke loop, 1 thread : {raw1['rate']:8.1f}/s  p50 {raw1['p50']:.2f} ms", flush=True
    )
    print(
        f"raw invoke loop, 2 threads: {raw2['rate']:8.1f}/s  p50 {raw2['p50']:.2f} ms", flush=True
    )

    if find_mosquitto() is None:
        print("mosquitto is not installed; cannot run the agent phase", file=sys.stderr)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        broker_port = free_port()
        broker = start_mosquitto(Path(tmp) / "broker", broker_port)
        broker_url = f"mqtt://127.0.0.1:{broker_port}"
        cp_port = free_port()
        controlplane = subprocess.Popen(
            serve_argv(
                broker_url, f"127.0.0.1:{cp_port}", Path(tmp) / "cp", "--log-level", "WARNING"
            ),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent",
                "--device-id",
                "bench",
                "--model",
                str(MODEL),
                "--threads",
                "1",
                "--listen",
                f"127.0.0.1:{port}",
                "--broker",
                broker_url,
                "--data-dir",
                str(Path(tmp) / "agent"),
                "--log-level",
                "WARNING",
                "--outbox-synchronous",
                args.synchronous,
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            loaded = load(url, manifest, args.clients, args.seconds)
            low = load(url, manifest, 1, args.seconds)
            floor = load(url, manifest, 1, min(args.seconds, 3.0), get="/v2/health/live")
            proc = psutil.Process(agent.pid)
            rss, hwm = proc.memory_info().rss, peak_rss(agent.pid)
        finally:
            agent.terminate()
            agent.wait(30)
            controlplane.terminate()
            controlplane.wait(30)
            broker.terminate()
            broker.wait(10)

    rate = loaded["answered"] / loaded["seconds"]
    lat, low_lat = loaded["latencies_ms"], low["latencies_ms"]
    low_p50 = percentile(low_lat, 50)
    print(
        f"agent, {args.clients} clients     : {rate:8.1f}/s  p50 {percentile(lat, 50):.2f} ms  "
        f"p99 {percentile(lat, 99):.2f} ms  failures {loaded['failures']}"
    )
    print(
        f"agent, 1 client (low load): {low['answered'] / low['seconds']:8.1f}/s  "
        f"p50 {low_p50:.2f} ms  p99 {percentile(low_lat, 99):.2f} ms"
    )
    print(f"throughput vs raw 1 thread : {rate / raw1['rate']:.2f}x  (target >= 0.90x)")
    print(f"throughput vs raw 2 threads: {rate / raw2['rate']:.2f}x")
    floor_p50 = percentile(floor["latencies_ms"], 50)
    print(f"p50 added at low load      : {low_p50 - raw1['p50']:+.2f} ms  (target <= 1 ms)")
    print(f"  of which the HTTP floor  : {floor_p50:.2f} ms  (GET /v2/health/live, same client)")
    print(
        f"agent RSS after load       : {rss / 2**20:.1f} MiB, peak {hwm / 2**20:.1f} MiB "
        f"(target <= 150 MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
