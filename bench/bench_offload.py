"""The offload server's dynamic batching against batch size 1, in one run.

``python -m bench.bench_offload`` runs, on this machine and in this order:

1. the physical reference: the same ONNX model on a raw ONNX Runtime session in a tight loop, at
   batch 1 and at the server's max batch: images per second, and their ratio, which is all that
   batching can buy from the runtime on this hardware;
2. the real server (``edgefleet offload serve``, one process) with batching (``--max-batch 32``),
   loaded by a separate load-generator process (``bench/loadgen.py``, aiohttp) posting
   binary-extension requests of one image from 32 concurrent connections;
3. the same server with ``--max-batch 1`` under the same load;

and prints throughput, p50/p99, the mean batch size (``nv_inference_count`` over
``nv_inference_exec_count``) and the ratio batched / batch 1. Target: >= 3x. The model is
``models/bench/convnet224.onnx`` (MobileNetV2, random weights; ``--model digits`` for the small
digits-cloud SVM instead). It always exits 0: it reports; tests assert correctness.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from bench.harness import MODELS, add_load_flags, load, serving, summary
from controlplane.offload.command import offload_argv
from tests.mosquitto import free_port


def raw_loop(
    path: Path, name: str, shape: list[int], batch: int, threads: int, seconds: float
) -> float:
    """Images per second of a raw ONNX Runtime session at ``batch`` rows per run."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    data = np.random.default_rng(0).random([batch, *shape[1:]], dtype=np.float32)
    for _ in range(3):
        session.run(None, {name: data})
    runs = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(None, {name: data})
        runs += 1
    return runs * batch / (time.perf_counter() - started)


def serve_and_load(
    model: str, max_batch: int, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = offload_argv(
        f"127.0.0.1:{port}",
        {model: str(MODELS[model][0])},
        "--max-batch",
        str(max_batch),
        "--max-queue-delay-ms",
        str(args.delay_ms),
        "--threads",
        str(args.threads),
        "--log-level",
        "WARNING",
    )
    with serving(f"server-{max_batch}", argv, workdir, url + "/v2/health/ready"):
        return load(url, url + "/metrics", model, args.clients, args.seconds)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_load_flags(p)  # --threads: the server's and the raw loop's
    args = p.parse_args()
    path, name, _, shape = MODELS[args.model]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"onnxruntime {ort.__version__}; model {args.model}; {args.clients} clients, "
        f"{args.seconds:g} s each; {args.threads} threads"
    )
    raw1 = raw_loop(path, name, shape, 1, args.threads, args.seconds / 2)
    rawb = raw_loop(path, name, shape, args.max_batch, args.threads, args.seconds / 2)
    print(
        f"raw ONNX Runtime: batch 1 {raw1:.1f}/s, batch {args.max_batch} {rawb:.1f}/s "
        f"-> the runtime's own batching gain {rawb / raw1:.2f}x"
    )
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for max_batch in (args.max_batch, 1):
            runs[max_batch] = summary(serve_and_load(args.model, max_batch, args, Path(tmp)))
            s = runs[max_batch]
            print(
                f"server --max-batch {max_batch:>2}: {s['rate']:.1f}/s, p50 {s['p50']:.1f} ms, "
                f"p99 {s['p99']:.1f} ms, mean batch {s['mean_batch']:.1f}, "
                f"failures {s['failures']:.0f}"
            )
    ratio = runs[args.max_batch]["rate"] / runs[1]["rate"]
    verdict = "met" if ratio >= 3 else "not met"
    print(
        f"batching / batch 1: {ratio:.2f}x (target >= 3x: {verdict}); "
        f"the runtime alone gains {rawb / raw1:.2f}x from batch {args.max_batch}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
