"""``edgefleet models export-triton`` against a real control plane (uvicorn on a free port)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.controlplane.registry.conftest import DIGITS, settings
from tests.controlplane.registry.test_triton import PB2, parse
from tests.live import live_control_plane, run_cli

CLOUD_SHA = hashlib.sha256((DIGITS / "cloud.onnx").read_bytes()).hexdigest()


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with live_control_plane(lambda listen: settings(tmp_path, listen=listen), monkeypatch) as url:
        yield url


def push(capsys: pytest.CaptureFixture[str], server: str, version: str, *artifacts: str) -> None:
    code, _, err = run_cli(
        capsys, "models", "push", "digits", version, "--server", server,
        *(f"--artifact={a}" for a in artifacts),
        "--manifest", str(DIGITS / "edge_fp32.json"), "--labels", str(DIGITS / "labels.txt"),
    )  # fmt: skip
    assert code == 0, err


def test_export_a_release_as_a_triton_model(
    capsys: pytest.CaptureFixture[str], server: str, tmp_path: Path
) -> None:
    # One release for the edge (cpu) and the cloud (onnx); the manifest is the edge model's, so
    # it says [1, 8, 8, 1]: the export reads the ONNX file, which batches.
    push(capsys, server, "1.0.0", f"cpu={DIGITS / 'edge_fp32.tflite'}",
         f"onnx={DIGITS / 'cloud.onnx'}")  # fmt: skip
    repo = tmp_path / "repo"
    code, out, err = run_cli(
        capsys, "models", "export-triton", "digits:1.0.0", str(repo), "--server", server, "--json"
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["triton_version"] == 1 and summary["sha256"] == CLOUD_SHA
    model_file = repo / "digits" / "1" / "model.onnx"
    assert hashlib.sha256(model_file.read_bytes()).hexdigest() == CLOUD_SHA
    assert not list(repo.rglob("*.part")) and not list(repo.rglob("*.tmp"))
    config = parse((repo / "digits" / "config.pbtxt").read_text())
    assert config.name == "digits" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 32 and list(config.input[0].dims) == [8, 8, 1]
    assert config.output[0].label_filename == "labels.txt"
    assert config.instance_group[0].kind == PB2.ModelInstanceGroup.KIND_AUTO
    assert (repo / "digits" / "labels.txt").read_text().splitlines() == [str(i) for i in range(10)]

    # Again, with other settings and the latest release by default: the bytes are not fetched
    # twice, the config is rewritten.
    code, out, err = run_cli(
        capsys, "models", "export-triton", "digits", str(repo), "--server", server,
        "--max-batch-size", "8", "--max-queue-delay-us", "100", "--kind", "gpu",
        "--instances", "2", "--preferred-batch-size", "4", "--model-name", "digits",
    )  # fmt: skip
    assert code == 0, err
    assert "already there" in err and "triton_version  1" in out
    config = parse((repo / "digits" / "config.pbtxt").read_text())
    assert config.max_batch_size == 8 and list(config.dynamic_batching.preferred_batch_size) == [4]
    assert (config.instance_group[0].count, config.instance_group[0].kind) == (
        2, PB2.ModelInstanceGroup.KIND_GPU
    )  # fmt: skip

    # A damaged copy on disk is fetched again.
    model_file.write_bytes(b"not the model")
    code, _, err = run_cli(
        capsys, "models", "export-triton", "digits", str(repo), "--server", server
    )
    assert code == 0 and "downloaded" in err
    assert hashlib.sha256(model_file.read_bytes()).hexdigest() == CLOUD_SHA

    # A second release goes in its own version directory, beside the first.
    push(capsys, server, "1.1.0", f"cpu={DIGITS / 'edge_fp32.tflite'}",
         f"onnx={DIGITS / 'cloud.onnx'}")  # fmt: skip
    code, _, err = run_cli(
        capsys, "models", "export-triton", "digits", str(repo), "--server", server
    )
    assert code == 0, err
    assert sorted(p.name for p in (repo / "digits").iterdir() if p.is_dir()) == ["1", "2"]
    assert "(seq 2)" in (repo / "digits" / "config.pbtxt").read_text()


def test_export_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], server: str, tmp_path: Path
) -> None:
    push(capsys, server, "1.0.0", f"cpu={DIGITS / 'edge_fp32.tflite'}")
    repo = str(tmp_path / "repo")
    cases = [
        (["digits:1.0.0"], "has no onnx artifact (it has: cpu)"),
        (["digits:9"], "no release digits 9"),
        (["nothing"], "no model 'nothing'"),
        ([":1"], "expected NAME or NAME:VERSION"),
    ]
    for argv, words in cases:
        code, _, err = run_cli(capsys, "models", "export-triton", *argv, repo, "--server", server)
        assert code == 1 and err.startswith("edgefleet models: error:") and words in err, err
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "repo").exists()
    code, _, err = run_cli(
        capsys, "models", "export-triton", "digits", repo, "--server", server,
        "--max-batch-size", "-1",
    )  # fmt: skip
    assert code == 2 and "expected 0 or more" in err
    code, _, err = run_cli(
        capsys, "models", "export-triton", "digits", repo, "--server", "http://127.0.0.1:1"
    )
    assert code == 1 and "cannot reach the control plane" in err
