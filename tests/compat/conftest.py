"""Fixtures for the compatibility tests: the digits batch and ONNX Runtime's own answer to it."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from tests.compat.stacks import CLOUD_MODEL, ROOT


@pytest.fixture(scope="session")
def digits_batch() -> np.ndarray:
    """Eight test-set digits as cloud.json's preprocessing makes them: [8, 8, 8, 1] FP32 in 0..1."""
    with np.load(ROOT / "models" / "digits" / "testset.npz") as data:
        images = data["images"][:8]
    return (images.astype(np.float32) / 255.0).reshape(8, 8, 8, 1)


@pytest.fixture(scope="session")
def reference(digits_batch: np.ndarray) -> np.ndarray:
    """The probabilities ONNX Runtime gives for the batch when run directly, in this process."""
    session = ort.InferenceSession(str(CLOUD_MODEL), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"input": digits_batch})
    return np.asarray(probabilities)
