"""What the benchmarks share: a server process started, waited for and stopped; the offload
benchmarks' models, their load-generator run and its summary.

Processes and waits are the end-to-end tests' (``tests/e2e/processes.py``): a benchmark differs
only in how it fails, with one line naming what it waited for (and the process's log tail), not
an assertion traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.processes import Process, wait_until

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    # name: (path, input, output, shape of one request)
    "convnet224": (ROOT / "models/bench/convnet224.onnx", "input", "logits", [1, 224, 224, 3]),
    "digits": (ROOT / "models/digits/cloud.onnx", "input", "probabilities", [1, 8, 8, 1]),
}


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60, *procs: Process) -> Any:
    """``check()``'s first true value (an HTTP error counts as not yet); the benchmark exits
    when ``timeout`` passes or one of ``procs`` dies first."""
    try:
        return wait_until(what, check, timeout, *procs)
    except AssertionError as exc:
        raise SystemExit(f"{Path(sys.argv[0]).stem}: {exc}") from None


def answers(url: str) -> Callable[[], bool]:
    """A check for :func:`wait_for`: ``GET url`` answers 200."""
    return lambda: httpx.get(url, timeout=2).status_code == 200


@contextmanager
def serving(name: str, argv: list[str], workdir: Path, ready_url: str) -> Iterator[Process]:
    """Run ``argv`` (output in ``workdir/NAME.log``) until ``ready_url`` answers 200, for the
    block; stopped (SIGTERM, then killed) at its end."""
    proc = Process(name, argv, workdir)
    proc.start()
    try:
        wait_for(f"{name} at {ready_url}", answers(ready_url), 60, proc)
        yield proc
    finally:
        proc.stop()


def add_load_flags(p: argparse.ArgumentParser) -> None:
    """The flags of an offload benchmark: model, load, batching and ONNX Runtime threads."""
    p.add_argument("--model", choices=sorted(MODELS), default="convnet224")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--delay-ms", type=float, default=2.0, help="max queue delay")
    p.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime intra-op threads"
    )


def load(url: str, metrics_url: str, model: str, clients: int, seconds: float) -> dict[str, Any]:
    """Load an OIP server with ``bench/loadgen.py`` in its own process; its result, with the
    server's ``inferences`` and ``executions`` of ``model`` from its Triton-named metrics."""
    _, name, output, shape = MODELS[model]
    done = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", url, model,
         "--clients", str(clients), "--seconds", str(seconds),
         "--input", name, "--output", output,
         "--shape", ",".join(map(str, shape)), "--datatype", "FP32"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout)
    metrics = httpx.get(metrics_url, timeout=10).text
    result["inferences"] = metric(metrics, "nv_inference_count", model)
    result["executions"] = metric(metrics, "nv_inference_exec_count", model)
    return result


def metric(text: str, name: str, model: str) -> float:
    """A counter's value for ``model`` (Triton labels it ``model="..."``, as ours does)."""
    for match in re.finditer(rf"^{name}{{([^}}]*)}} (\S+)$", text, re.MULTILINE):
        if f'model="{model}"' in match.group(1):
            return float(match.group(2))
    return float("nan")


def summary(result: dict[str, Any]) -> dict[str, float]:
    """Rate, p50/p99 latency (ms), failures and mean batch of one :func:`load`."""
    latencies = sorted(result["latencies_ms"])
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
    return {
        "rate": result["answered"] / result["seconds"],
        "p50": statistics.median(latencies) if latencies else 0.0,
        "p99": p99,
        "failures": result["failures"],
        "mean_batch": result["inferences"] / max(result["executions"], 1),
    }
