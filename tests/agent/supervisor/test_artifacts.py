"""agent/supervisor/artifacts.py: which file each backend opens, as a table."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ModelLoadError
from agent.supervisor.artifacts import artifact_for, check_fallback, opens_primary

MODEL = Path("/m/model_edgetpu.tflite")
CPU = Path("/m/model.tflite")


@pytest.mark.parametrize(
    ("backend", "primary"),
    [
        ("edgetpu", True),
        ("test-abort", True),
        ("test-hang", True),
        ("litert", False),
        ("tflite-runtime", False),
        ("onnxruntime", False),
    ],
)
def test_only_the_accelerators_open_the_model_file(backend: str, primary: bool) -> None:
    assert opens_primary(backend) is primary


@pytest.mark.parametrize(
    ("backend", "fallback", "opened"),
    [
        ("edgetpu", CPU, MODEL),
        ("litert", CPU, CPU),
        ("tflite-runtime", CPU, CPU),
        ("test-abort", CPU, MODEL),
        ("litert", None, MODEL),  # no fallback artifact: the same file, as before
        ("edgetpu", None, MODEL),
    ],
)
def test_artifact_for(backend: str, fallback: Path | None, opened: Path) -> None:
    assert artifact_for(backend, MODEL, fallback) == opened


@pytest.mark.parametrize(
    ("fallback", "error"),
    [
        (Path("/m/model.onnx"), r"a \.tflite model needs a \.tflite fallback .* not \.onnx"),
        (Path("/m/model"), r"not an extensionless file"),
        (MODEL, r"it is the model's own file"),
    ],
)
def test_check_fallback_refuses(fallback: Path, error: str) -> None:
    with pytest.raises(ModelLoadError, match=error):
        check_fallback(MODEL, fallback)


def test_check_fallback_accepts_the_same_file_type_in_any_case() -> None:
    check_fallback(MODEL, Path("/m/MODEL.TFLITE"))
