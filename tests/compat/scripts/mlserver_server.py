"""Serve models/digits/cloud.onnx as ``digits-cloud`` with Seldon MLServer and a custom runtime.

Runs inside the MLServer virtual environment (tests/compat/requirements/mlserver.txt), never in
the project's own (MLServer generates a protobuf package named ``inference``, as tritonclient
and KServe do). Writes MLServer's ``settings.json`` and the model's ``model-settings.json`` into
``--workdir`` and then becomes ``mlserver start`` on that folder.

    python tests/compat/scripts/mlserver_server.py \
        --model digits-cloud=models/digits/cloud.onnx --workdir DIR \
        --http-port 8080 --grpc-port 8081 --metrics-port 8082
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import onnxruntime as ort

HERE = Path(__file__).resolve().parent


def _tensors(nodes: list[ort.NodeArg]) -> list[dict[str, object]]:
    return [
        {
            "name": n.name,
            "datatype": "FP32",
            "shape": [d if isinstance(d, int) else -1 for d in n.shape],
        }
        for n in nodes
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="NAME=path.onnx")
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    args = parser.parse_args()
    name, _, path = args.model.partition("=")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    model_dir = args.workdir / name
    model_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "host": "127.0.0.1",
        "http_port": args.http_port,
        "grpc_port": args.grpc_port,
        "metrics_port": args.metrics_port,
        # Inference in the server process itself: no worker pool to start on a 2-core machine.
        "parallel_workers": 0,
    }
    (args.workdir / "settings.json").write_text(json.dumps(settings))
    model_settings = {
        "name": name,
        "implementation": "mlserver_runtime.OnnxRuntime",
        "parameters": {"uri": str(Path(path).resolve()), "version": "1"},
        "inputs": _tensors(session.get_inputs()),
        "outputs": _tensors(session.get_outputs()),
    }
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings))

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
    mlserver = str(Path(sys.executable).parent / "mlserver")
    os.execve(mlserver, [mlserver, "start", str(args.workdir)], env)


if __name__ == "__main__":
    main()
