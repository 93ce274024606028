from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocol.errors import InvalidMessage
from protocol.manifest import ClassificationPostprocess, ImagePreprocess, ModelManifest


def _manifest(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": "digits",
        "version": "1.0.0",
        "inputs": [{"name": "input", "shape": [1, 8, 8, 1], "datatype": "FP32"}],
        "outputs": [{"name": "probs", "shape": [1, 10], "datatype": "FP32"}],
        "preprocess": {"type": "image", "width": 8, "height": 8, "color": "L"},
        "postprocess": {"type": "classification", "top_k": 3},
        "labels": [str(i) for i in range(10)],
    }
    base.update(kw)
    return base


def test_manifest_round_trips(tmp_path: Path) -> None:
    m = ModelManifest.model_validate(_manifest())
    assert isinstance(m.preprocess, ImagePreprocess)
    assert isinstance(m.postprocess, ClassificationPostprocess)
    m.dump(tmp_path / "m.json")
    assert ModelManifest.load(tmp_path / "m.json") == m


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": ["a", "b"]}, "2 labels for an output of 10 classes"),
        ({"inputs": [{"name": "x", "shape": [1, 0], "datatype": "FP32"}]}, "positive size"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FLOAT"}]}, "datatype"),
        ({"preprocess": {"type": "image", "width": 8, "height": 8, "std": [0]}}, "std"),
        ({"name": "a/b"}, "name"),
        ({"postprocess": {"type": "classification", "output": "nope"}}, "is no output"),
    ],
)
def test_inconsistent_manifests_are_refused(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(_manifest(**change)))
    with pytest.raises(InvalidMessage, match=message):
        ModelManifest.load(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidMessage, match="cannot read manifest"):
        ModelManifest.load(tmp_path / "absent.json")
