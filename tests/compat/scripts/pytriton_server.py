"""Serve an ONNX model (cloud.onnx as ``digits-cloud``) on a real Triton, via PyTriton, on the CPU.

Runs inside the PyTriton virtual environment (tests/compat/requirements/pytriton.txt), never in
the project's own: Triton's client and KServe's and MLServer's servers each generate a protobuf
package named ``inference``, and two of them in one process fail.

    python tests/compat/scripts/pytriton_server.py \
        --model digits-cloud=models/digits/cloud.onnx --http-port 8000 --grpc-port 8001 \
        --metrics-port 8002 [--max-batch-size 32 --max-queue-delay-us 2000 --threads 1]

The dynamic batcher's settings are the ones our offload server takes, so the benchmark can give
both the same. Prints ``READY`` on stdout once Triton answers; SIGTERM or SIGINT stop it.
"""

from __future__ import annotations

import argparse
import os
import sysconfig

import numpy as np
import onnxruntime as ort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="NAME=path.onnx")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    args = parser.parse_args()
    name, _, path = args.model.partition("=")

    # Triton starts a stub process per model that links libpython: under pyenv that library is
    # not on the loader's path unless we put it there (before Triton spawns anything).
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    os.environ["LD_LIBRARY_PATH"] = ":".join(
        p for p in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p
    )

    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    (out,) = session.get_outputs()

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        (result,) = session.run([out.name], {inp.name: inputs[inp.name]})
        return {out.name: result}

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_address="127.0.0.1",
        metrics_port=args.metrics_port,
        allow_gpu_metrics=False,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=name,
            infer_func=infer,
            inputs=[Tensor(name=inp.name, dtype=np.float32, shape=tuple(inp.shape[1:]))],
            outputs=[Tensor(name=out.name, dtype=np.float32, shape=tuple(out.shape[1:]))],
            config=ModelConfig(
                max_batch_size=args.max_batch_size,
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us),
            ),
            strict=True,
        )
        print("READY", flush=True)
        triton.serve()


if __name__ == "__main__":
    main()
