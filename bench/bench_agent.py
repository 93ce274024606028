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

Phases 2-4 run for each ``--isolation`` (default both, in this run): ``thread`` (the interpreter
in the agent, as on a CPU-only device) and ``process`` (the interpreter in a supervised worker
process, as an accelerator runs: agent/supervisor). Both agents are up at once and each phase
takes turns between them (2 s each) so that load from elsewhere on the machine falls on both
alike; the two are compared at the end. Before
them, the served model alone (no HTTP, no outbox), one request at a time on each, shows what the
worker process adds to one inference.

Targets: >= 0.9x the raw 1-thread throughput; <= 1 ms added to p50 at low load; RSS <= 150 MB.
It always exits 0: it reports; tests assert correctness, not speed.
"""

from __future__ import annotations

import argparse
import asyncio
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

from agent.inference import ServedModel
from agent.supervisor.config import SupervisorConfig
from controlplane.broker import find_mosquitto, start_mosquitto
from controlplane.cli import serve_argv
from controlplane.demo import free_port
from protocol.manifest import ModelManifest

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "bench" / "convnet224.tflite"
ISOLATIONS = ("thread", "process")


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


def served_alone(seconds: float) -> dict[str, list[float]]:
    """The served model alone (no HTTP, no outbox), one request at a time, in this process:
    ``infer`` on the in-process thread and on the supervised worker, taking turns in blocks of
    100 so that a burst of load on the machine falls on both alike."""
    data = np.random.default_rng(0).integers(0, 100, size=(1, 224, 224, 3)).astype(np.int8)
    models = {
        mode: ServedModel.load(
            MODEL, priority=["litert"], threads=1, supervision=SupervisorConfig(isolation=mode)
        )
        for mode in ISOLATIONS
    }
    latencies: dict[str, list[float]] = {mode: [] for mode in ISOLATIONS}

    async def run() -> None:
        for served in models.values():
            for _ in range(20):
                await served.infer({served.inputs[0].name: data})
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            for mode, served in models.items():
                name = served.inputs[0].name
                for _ in range(100):
                    t0 = time.perf_counter()
                    await served.infer({name: data})
                    latencies[mode].append((time.perf_counter() - t0) * 1000)

    try:
        asyncio.run(run())
    finally:
        for served in models.values():
            served.close()
    return latencies


ROUND_S = 2.0
"""Seconds of one turn when several agents take turns under the same load phase."""


def start_agent(
    isolation: str, args: argparse.Namespace, broker_url: str, tmp: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """An agent process with ``--supervisor-isolation ISOLATION``, and its URL once ready."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent",
            "--device-id",
            f"bench-{isolation}",
            "--model",
            str(MODEL),
            "--threads",
            "1",
            "--listen",
            f"127.0.0.1:{port}",
            "--broker",
            broker_url,
            "--data-dir",
            str(tmp / f"agent-{isolation}"),
            "--log-level",
            "WARNING",
            "--outbox-synchronous",
            args.synchronous,
            "--supervisor-isolation",
            isolation,
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    return agent, url


def in_turns(
    urls: dict[str, str], manifest: ModelManifest, clients: int, seconds: float, get: str | None
) -> dict[str, dict[str, Any]]:
    """The same load phase on each agent, taking turns of ``ROUND_S`` until each had
    ``seconds``, so that a burst of load from elsewhere on the machine falls on all alike."""
    merged: dict[str, dict[str, Any]] = {
        m: {"answered": 0, "failures": 0, "seconds": 0.0, "latencies_ms": []} for m in urls
    }
    turn = min(ROUND_S, seconds) if len(urls) > 1 else seconds
    while any(r["seconds"] < seconds - 1e-6 for r in merged.values()):
        for mode, url in urls.items():
            got = load(url, manifest, clients, turn, get=get)
            into = merged[mode]
            into["answered"] += got["answered"]
            into["failures"] += got["failures"]
            into["seconds"] += got["seconds"]
            into["latencies_ms"] += got["latencies_ms"]
    return merged


def run_agents(
    isolations: list[str],
    args: argparse.Namespace,
    manifest: ModelManifest,
    broker_url: str,
    tmp: Path,
) -> dict[str, dict[str, Any]]:
    """One agent per isolation, all up at once, measured in turns: loaded, low load, the HTTP
    floor; then each one's memory (with its worker's, when it has one)."""
    agents: dict[str, subprocess.Popen[bytes]] = {}
    urls: dict[str, str] = {}
    try:
        for isolation in isolations:
            agents[isolation], urls[isolation] = start_agent(isolation, args, broker_url, tmp)
        loaded = in_turns(urls, manifest, args.clients, args.seconds, None)
        low = in_turns(urls, manifest, 1, args.seconds, None)
        floor = in_turns(urls, manifest, 1, min(args.seconds, 3.0), "/v2/health/live")
        runs = {}
        for isolation, agent in agents.items():
            proc = psutil.Process(agent.pid)
            runs[isolation] = {
                "loaded": loaded[isolation],
                "low": low[isolation],
                "floor": floor[isolation],
                "rss": proc.memory_info().rss,
                "hwm": peak_rss(agent.pid),
                "worker_rss": sum(w.memory_info().rss for w in proc.children()),
            }
        return runs
    finally:
        for agent in agents.values():
            agent.terminate()
        for agent in agents.values():
            agent.wait(30)


def report(
    isolation: str,
    run: dict[str, Any],
    raw1: dict[str, float],
    raw2: dict[str, float],
    clients: int,
) -> None:
    loaded, low = run["loaded"], run["low"]
    rate = loaded["answered"] / loaded["seconds"]
    lat, low_lat = loaded["latencies_ms"], low["latencies_ms"]
    low_p50 = percentile(low_lat, 50)
    print(f"--- isolation = {isolation}")
    print(
        f"agent, {clients} clients     : {rate:8.1f}/s  p50 {percentile(lat, 50):.2f} ms  "
        f"p99 {percentile(lat, 99):.2f} ms  failures {loaded['failures']}"
    )
    print(
        f"agent, 1 client (low load): {low['answered'] / low['seconds']:8.1f}/s  "
        f"p50 {low_p50:.2f} ms  p99 {percentile(low_lat, 99):.2f} ms"
    )
    print(f"throughput vs raw 1 thread : {rate / raw1['rate']:.2f}x  (target >= 0.90x)")
    print(f"throughput vs raw 2 threads: {rate / raw2['rate']:.2f}x")
    floor_p50 = percentile(run["floor"]["latencies_ms"], 50)
    print(f"p50 added at low load      : {low_p50 - raw1['p50']:+.2f} ms  (target <= 1 ms)")
    print(f"  of which the HTTP floor  : {floor_p50:.2f} ms  (GET /v2/health/live, same client)")
    worker = f", its worker {run['worker_rss'] / 2**20:.1f} MiB" if run["worker_rss"] else ""
    print(
        f"agent RSS after load       : {run['rss'] / 2**20:.1f} MiB, peak "
        f"{run['hwm'] / 2**20:.1f} MiB{worker} (target <= 150 MB)",
        flush=True,
    )


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
    p.add_argument(
        "--isolation",
        default="thread,process",
        help="where the agent runs the model, comma-separated, each measured in this run: thread "
        "(in the agent) and/or process (a supervised worker); default both",
    )
    args = p.parse_args()
    isolations = [m.strip() for m in args.isolation.split(",") if m.strip()]
    if not isolations or any(m not in ISOLATIONS for m in isolations):
        p.error(f"--isolation takes {' and/or '.join(ISOLATIONS)}, comma-separated")
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
    alone = served_alone(args.seconds)
    p50 = {mode: percentile(values, 50) for mode, values in alone.items()}
    print(
        f"served model alone, 1 at a time: thread p50 {p50['thread']:.3f} ms, process p50 "
        f"{p50['process']:.3f} ms: the worker adds {p50['process'] - p50['thread']:+.3f} ms",
        flush=True,
    )

    if find_mosquitto() is None:
        print("mosquitto is not installed; cannot run the agent phase", file=sys.stderr)
        return 0
    runs: dict[str, dict[str, Any]] = {}
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
        try:
            runs = run_agents(isolations, args, manifest, broker_url, Path(tmp))
            for isolation, run in runs.items():
                report(isolation, run, raw1, raw2, args.clients)
        finally:
            controlplane.terminate()
            controlplane.wait(30)
            broker.terminate()
            broker.wait(10)

    if len(runs) == 2:
        thread, process = runs["thread"], runs["process"]
        rate = {m: r["loaded"]["answered"] / r["loaded"]["seconds"] for m, r in runs.items()}
        low = {m: percentile(r["low"]["latencies_ms"], 50) for m, r in runs.items()}
        print("--- process worker against in-process thread, same run")
        print(f"throughput, 4 clients      : {rate['process'] / rate['thread']:.2f}x")
        print(f"p50 at low load            : {low['process'] - low['thread']:+.2f} ms")
        print(
            f"memory                     : {process['rss'] / 2**20:.1f} + "
            f"{process['worker_rss'] / 2**20:.1f} MiB (worker) against "
            f"{thread['rss'] / 2**20:.1f} MiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
