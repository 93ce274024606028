"""Our offload server against a real Triton (PyTriton) on the same ONNX model, in one run.

``python -m bench.bench_offload_vs_triton`` serves the same model with the same dynamic batching
settings (max batch 32, 2 ms queue delay) and the same ONNX Runtime threads, first with
``edgefleet offload serve``, then with PyTriton (Triton 2.51 on the CPU, the model's Python
callable running ONNX Runtime, from its own venv: tests/compat/envs.py), and loads each in turn
from a separate load-generator process (``bench/loadgen.py``, aiohttp) posting binary-extension
requests of one image from 32 concurrent connections. It prints throughput, p50/p99, the mean
batch (``nv_inference_count`` / ``nv_inference_exec_count``, which both servers export) and the
ratio ours / Triton. ``--rounds 2`` alternates the servers twice to show the noise.

The model is ``models/bench/convnet224.onnx`` (MobileNetV2, random weights, FP32 input; the one
``bench/bench_offload.py`` uses), or ``--model digits`` for the small digits-cloud SVM. It
always exits 0: benchmarks report, tests assert correctness.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import onnxruntime as ort

from tests.compat.stacks import Batching, Server, foreign_server, offload_server

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    # name: (path, input, output, shape of one request)
    "convnet224": (ROOT / "models/bench/convnet224.onnx", "input", "logits", [1, 224, 224, 3]),
    "digits": (ROOT / "models/digits/cloud.onnx", "input", "probabilities", [1, 8, 8, 1]),
}


def load(server: Server, model: str, args: argparse.Namespace) -> dict[str, Any]:
    _, name, output, shape = MODELS[model]
    done = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", server.url, model,
         "--clients", str(args.clients), "--seconds", str(args.seconds),
         "--input", name, "--output", output,
         "--shape", ",".join(map(str, shape)), "--datatype", "FP32"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout)
    metrics = httpx.get(server.metrics_url, timeout=10).text
    result["inferences"] = _metric(metrics, "nv_inference_count", model)
    result["executions"] = _metric(metrics, "nv_inference_exec_count", model)
    return result


def _metric(text: str, name: str, model: str) -> float:
    """A counter's value for ``model`` (Triton labels it ``model="..."``, as ours does)."""
    for match in re.finditer(rf"^{name}{{([^}}]*)}} (\S+)$", text, re.MULTILINE):
        if f'model="{model}"' in match.group(1):
            return float(match.group(2))
    return float("nan")


def summary(result: dict[str, Any]) -> dict[str, float]:
    latencies = sorted(result["latencies_ms"])
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
    return {
        "rate": result["answered"] / result["seconds"],
        "p50": statistics.median(latencies) if latencies else 0.0,
        "p99": p99,
        "failures": result["failures"],
        "mean_batch": result["inferences"] / max(result["executions"], 1),
    }


def run_one(which: str, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    path = MODELS[args.model][0]
    batching = Batching(args.max_batch, args.delay_ms)
    if which == "ours":
        server = offload_server(workdir, path, batching, name=args.model, threads=args.threads)
    else:
        server = foreign_server(
            "pytriton", workdir, path, batching, name=args.model, threads=args.threads
        )
    server.start()
    try:
        return summary(load(server, args.model, args))
    finally:
        server.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="convnet224")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--delay-ms", type=float, default=2.0, help="max queue delay")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime threads")
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"onnxruntime {ort.__version__}; model {args.model}; {args.clients} clients, "
        f"{args.seconds:g} s each; max batch {args.max_batch}, delay {args.delay_ms:g} ms; "
        f"{args.threads} threads"
    )
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            runs = {}
            for which in ("ours", "pytriton"):
                runs[which] = s = run_one(which, args, Path(tmp))
                print(
                    f"round {round_ + 1} {which:>8}: {s['rate']:.1f}/s, p50 {s['p50']:.1f} ms, "
                    f"p99 {s['p99']:.1f} ms, mean batch {s['mean_batch']:.1f}, "
                    f"failures {s['failures']:.0f}"
                )
            ratios.append(runs["ours"]["rate"] / runs["pytriton"]["rate"])
            print(f"round {round_ + 1} ours / PyTriton: {ratios[-1]:.2f}x")
    if len(ratios) > 1:
        print(
            f"ours / PyTriton over {len(ratios)} rounds: " + ", ".join(f"{r:.2f}x" for r in ratios)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
