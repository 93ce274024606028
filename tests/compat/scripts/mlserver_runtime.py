"""An MLServer custom runtime that runs an ONNX model with ONNX Runtime.

Loaded by MLServer from ``model-settings.json`` (``implementation``:
``mlserver_runtime.OnnxRuntime``, ``parameters.uri``: the .onnx file), inside the MLServer
virtual environment. Like a user's runtime, it does no input checks of its own.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntime(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(
            self.settings.parameters.uri, options, providers=["CPUExecutionProvider"]
        )
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {tensor.name: NumpyCodec.decode_input(tensor) for tensor in payload.inputs}
        results = self._session.run(self._outputs, feeds)
        return InferenceResponse(
            id=payload.id,
            model_name=self.name,
            model_version=self.version,
            outputs=[
                NumpyCodec.encode_output(name, np.asarray(value, dtype=np.float32))
                for name, value in zip(self._outputs, results, strict=True)
            ],
        )
