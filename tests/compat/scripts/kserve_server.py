"""Serve models/digits/cloud.onnx as ``digits-cloud`` with KServe's Python model server.

Runs inside the KServe virtual environment (tests/compat/requirements/kserve.txt), never in the
project's own (KServe generates a protobuf package named ``inference``, as tritonclient and
MLServer do). The model is what a KServe user writes: a ``kserve.Model`` whose ``predict`` runs
ONNX Runtime, with no input checks of its own, so a bad request meets KServe's own handling.

    python tests/compat/scripts/kserve_server.py \
        --model digits-cloud=models/digits/cloud.onnx --http_port 8080 --grpc_port 8081

KServe parses its own flags (``--http_port``, ``--grpc_port``, ``--workers`` ...) when it is
imported, so this script only adds ``--model``. It binds 0.0.0.0 (KServe's choice, not ours).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class OnnxModel(Model):  # type: ignore[misc]
    """An ONNX model behind KServe's V2 REST routes."""

    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.session: ort.InferenceSession | None = None

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.ready = True
        return True

    def _tensors(self, nodes: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": n.name,
                "datatype": "FP32",
                "shape": [d if isinstance(d, int) else -1 for d in n.shape],
            }
            for n in nodes
        ]

    def get_input_types(self) -> list[dict[str, Any]]:
        assert self.session is not None
        return self._tensors(self.session.get_inputs())

    def get_output_types(self) -> list[dict[str, Any]]:
        assert self.session is not None
        return self._tensors(self.session.get_outputs())

    async def predict(
        self,
        payload: InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse:
        assert self.session is not None
        feeds = {tensor.name: tensor.as_numpy() for tensor in payload.inputs}
        names = [o.name for o in self.session.get_outputs()]
        results = self.session.run(names, feeds)
        outputs = []
        for name, value in zip(names, results, strict=True):
            out = InferOutput(name=name, shape=list(value.shape), datatype="FP32")
            out.set_data_from_numpy(np.asarray(value, dtype=np.float32), binary_data=False)
            outputs.append(out)
        return InferResponse(
            model_name=self.name,
            infer_outputs=outputs,
            response_id=payload.id,
            use_binary_outputs=payload.use_binary_outputs,
        )


def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--model", required=True, help="NAME=path.onnx")
    args, _ = parser.parse_known_args()
    name, _, path = args.model.partition("=")
    model = OnnxModel(name, path)
    model.load()
    ModelServer(workers=1, enable_grpc=False).start([model])


if __name__ == "__main__":
    main()
