"""``python -m agent.evaluate``: the metrics as tables, and real runs of the digits releases (the
good edge model and the broken one) over a data set in the export layout."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.evaluate import agreement, classification_figures, latency_summary, main
from agent.offload.deferred import pack_inputs
from protocol.manifest import ModelManifest
from protocol.release import Release, ReleaseArtifact
from tests.e2e.processes import ROOT, digit_pngs

DIGITS = ROOT / "models" / "digits"
ROLLOUT = ROOT / "models" / "rollout"


def test_classification_figures() -> None:
    got = classification_figures(["1", "1", "2", "3"], ["1", "2", "2", None])
    assert got["accuracy"] == 0.5 and got["correct"] == 2 and got["samples"] == 4
    assert got["per_class"]["1"] == {"support": 2, "predicted": 1, "precision": 1.0, "recall": 0.5}
    assert got["per_class"]["2"] == {"support": 1, "predicted": 2, "precision": 0.5, "recall": 1.0}
    assert got["per_class"]["3"] == {"support": 1, "predicted": 0, "precision": None, "recall": 0.0}
    assert list(got["per_class"]) == ["1", "2", "3"]
    assert classification_figures([], [])["accuracy"] is None
    with pytest.raises(ValueError):
        classification_figures(["1"], [])


@pytest.mark.parametrize(
    ("a", "b", "share"),
    [
        (["1", "2"], ["1", "2"], 1.0),
        (["1", "2"], ["1", "3"], 0.5),
        (["1", None], ["1", "3"], 1.0),  # a failed input is not compared
        ([None], ["1"], None),
    ],
)
def test_agreement(a: list[str | None], b: list[str | None], share: float | None) -> None:
    assert agreement(a, b) == share


def test_latency_summary() -> None:
    got = latency_summary([float(i) for i in range(1, 101)])
    assert (got["p50"], got["p95"], got["p99"], got["max"], got["mean"]) == (50, 95, 99, 100, 50.5)
    assert latency_summary([])["p50"] is None


def release_file(tmp_path: Path, manifest: Path, artifact: Path) -> Path:
    m = ModelManifest.load(manifest)
    release = Release(
        name=m.name, version=m.version, seq=1, created_at=0.0, inputs=m.inputs, outputs=m.outputs,
        preprocess=m.preprocess, postprocess=m.postprocess, labels=m.labels,
        artifacts={"cpu": ReleaseArtifact(sha256="0" * 64, size=1, format="tflite")},
    )  # fmt: skip
    path = tmp_path / f"{m.version}.json"
    path.write_text(release.model_dump_json())
    return path


def dataset(root: Path, count: int) -> None:
    """The export layout: images/<label>/..., labels.csv; one input as tensors (.npz)."""
    rows = []
    for n, (png, label) in enumerate(digit_pngs(count)):
        relative = f"images/{label}/cam_{n}.png"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(png)
        rows.append({"path": relative, "label": str(label)})
    with np.load(DIGITS / "testset.npz") as data:
        image, label = data["images"][0], int(data["labels"][0])
    tensor = (image.astype(np.float32) / 255.0).reshape(1, 8, 8, 1)
    (root / "images" / "t.npz").write_bytes(pack_inputs({"input": tensor}))
    rows.append({"path": "images/t.npz", "label": str(label)})
    rows.append({"path": "images/none.png", "label": ""})  # unlabelled: skipped
    with (root / "labels.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["path", "label"])
        writer.writeheader()
        writer.writerows(rows)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any] | None, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, (json.loads(out.out) if code == 0 else None), out.err


def test_a_broken_release_evaluates_worse_than_the_good_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset(tmp_path / "data", 60)
    good = release_file(tmp_path, DIGITS / "edge_fp32.json", DIGITS / "edge_fp32.tflite")
    bad = release_file(tmp_path, ROLLOUT / "broken.json", ROLLOUT / "broken.tflite")
    code, report, err = run(
        capsys, "--data", str(tmp_path / "data"),
        "--release", str(bad), "--artifact", str(ROLLOUT / "broken.tflite"),
        "--against-release", str(good), "--against-artifact", str(DIGITS / "edge_fp32.tflite"),
    )  # fmt: skip
    assert code == 0, err
    assert report is not None
    assert report["samples"] == 61 and report["errors"] == 0
    assert report["version"] == "2.2.0-broken" and report["against"]["version"] == "1.0.0"
    assert report["against"]["accuracy"] > 0.9
    assert report["accuracy"] < 0.4
    assert report["agreement"] < 0.5
    assert report["latency_ms"]["p50"] > 0
    assert set(report["per_class"]) <= {str(i) for i in range(10)}


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = release_file(tmp_path, DIGITS / "edge_fp32.json", DIGITS / "edge_fp32.tflite")
    artifact = str(DIGITS / "edge_fp32.tflite")
    code, _, err = run(
        capsys, "--data", str(tmp_path / "nope"), "--release", str(good), "--artifact", artifact
    )
    assert code == 2 and "cannot read the data set" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "labels.csv").write_text("path,label\n")
    code, _, err = run(
        capsys, "--data", str(tmp_path / "empty"), "--release", str(good), "--artifact", artifact
    )
    assert code == 2 and "no labelled input" in err
    dataset(tmp_path / "data", 2)
    code, _, err = run(
        capsys, "--data", str(tmp_path / "data"), "--release", str(tmp_path / "missing.json"),
        "--artifact", artifact,
    )  # fmt: skip
    assert code == 2 and "cannot read" in err
