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
import os
import platform
import sys
import tempfile
from pathlib import Path

import onnxruntime as ort

from bench.harness import MODELS, add_load_flags, load, summary
from tests.compat.stacks import Batching, foreign_server, offload_server


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
        return summary(load(server.url, server.metrics_url, args.model, args.clients, args.seconds))
    finally:
        server.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_load_flags(p)
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
