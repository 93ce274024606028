"""``edgefleet models push|list|show`` against a real control plane (uvicorn on a free port)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controlplane.registry.keys import ReleaseKey
from protocol.release import open_release
from protocol.signing import public_key_from_text
from tests.controlplane.registry.conftest import DIGITS, settings
from tests.live import headers, live_control_plane, run_cli
from tests.mosquitto import free_port


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with live_control_plane(lambda listen: settings(tmp_path, listen=listen), monkeypatch) as url:
        yield url


def digits_push(server: str, version: str, *extra: str) -> list[str]:
    return [
        "models", "push", "digits", version, "--server", server,
        "--artifact", f"cpu={DIGITS / 'edge_fp32.tflite'}",
        "--manifest", str(DIGITS / "edge_fp32.json"), "--labels", str(DIGITS / "labels.txt"),
        *extra,
    ]  # fmt: skip


def test_push_list_show(capsys: pytest.CaptureFixture[str], server: str) -> None:
    code, out, err = run_cli(capsys, *digits_push(server, "1.0.0"))
    assert code == 0, err
    assert "cpu edge_fp32.tflite: uploaded 63.4 KiB" in err
    assert "digits:1.0.0" in out and "probabilities FP32 [1, 10]" in out
    assert "metric test_accuracy" in out and "3d853684728c" in out

    code, out, err = run_cli(capsys, *digits_push(server, "1.1.0", "--json"))
    assert code == 0, err
    assert "already in the registry" in err, "the same bytes are not uploaded twice"
    body = json.loads(out)
    assert body["seq"] == 2 and body["version"] == "1.1.0"
    key = httpx.get(f"{server}/api/v1/keys/release").json()["public_key"]
    release = open_release(body["sealed"], public_key_from_text(key)).release
    assert [g.expected_index for g in release.golden] == [2, 5, 8]

    code, out, err = run_cli(capsys, *digits_push(server, "1.1.0", "--force"))
    assert code == 0 and "uploaded" in err, "--force uploads again; the same release is kept"

    code, out, _ = run_cli(capsys, "models", "list", "--server", server)
    assert code == 0
    header, line = out.splitlines()
    assert header.split() == ["NAME", "LATEST", "SEQ", "RELEASES", "PUSHED"]
    assert line.split()[:4] == ["digits", "1.1.0", "2", "2"]

    code, out, _ = run_cli(capsys, "models", "show", "digits", "--server", server)
    assert code == 0 and [ln.split()[0] for ln in out.splitlines()[1:]] == ["1.1.0", "1.0.0"]
    code, out, _ = run_cli(capsys, "models", "show", "digits:1.0.0", "--server", server, "--json")
    assert code == 0 and json.loads(out)["seq"] == 1

    code, _, err = run_cli(capsys, "models", "show", "digits:7", "--server", server)
    assert code == 1 and "no release digits 7" in err and "HTTP 404" in err


def test_an_onnx_artifact_with_golden_inputs_beside_the_manifest(
    capsys: pytest.CaptureFixture[str], server: str, tmp_path: Path
) -> None:
    work = tmp_path / "model"
    shutil.copytree(DIGITS, work)
    code, out, err = run_cli(
        capsys, "models", "push", "digits-cloud", "2", "--server", server, "--json",
        "--artifact", f"onnx={work / 'cloud.onnx'}", "--manifest", str(work / "cloud.json"),
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["targets"] == ["onnx"]


def _nothing_stored(server: str) -> None:
    assert httpx.get(f"{server}/api/v1/models", headers=headers()).json()["count"] == 0


def test_bad_inputs_fail_before_any_upload(
    capsys: pytest.CaptureFixture[str], server: str, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    model = str(DIGITS / "edge_fp32.tflite")
    cases = [
        (["--labels", str(empty)], "labels", "is empty"),
        (["--labels", str(tmp_path / "missing.txt")], "cannot read labels", "missing.txt"),
        (["--manifest", str(tmp_path / "nope.json")], "cannot read manifest", "nope.json"),
    ]
    for extra, *words in cases:
        argv = ["models", "push", "d", "1", "--server", server, "--artifact", f"cpu={model}"]
        code, _, err = run_cli(capsys, *argv, *extra)
        assert code == 1 and err.startswith("edgefleet models: error:"), err
        for word in words:
            assert word in err, (word, err)
        assert "uploaded" not in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"golden": [{"input": "missing.png", "expected_index": 1}]}))
    for argv, word in [
        (["--artifact", f"gpu={model}"], "unknown target 'gpu'"),
        (["--artifact", model], "expected TARGET=FILE"),
        ([], "give at least one --artifact"),
        (["--artifact", f"cpu={tmp_path / 'none.tflite'}"], "cannot read"),
        (["--artifact", f"cpu={model}", "--manifest", str(bad)], "golden[0]: no file"),
    ]:
        code, _, err = run_cli(capsys, "models", "push", "d", "1", "--server", server, *argv)
        assert code == 1 and word in err, err
    _nothing_stored(server)


def test_a_refused_push_prints_the_registry_s_reason(
    capsys: pytest.CaptureFixture[str], server: str, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"definitely not a model")
    code, _, err = run_cli(capsys, "models", "push", "d", "1", "--server", server,
                           "--artifact", f"cpu={junk}")  # fmt: skip
    assert code == 1 and "artifacts.cpu" in err and "not a model file" in err and "HTTP 400" in err
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    code, _, err = run_cli(capsys, *digits_push(server, "1")[:-2], "--labels", str(labels))
    assert code == 1 and "3 labels for an output of 10 classes" in err, err
    _nothing_stored(server)


def test_an_unreachable_server_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "models", "list", "--server", f"http://127.0.0.1:{free_port()}")
    assert code == 1 and "cannot reach the control plane" in err and len(err.splitlines()) == 1


def test_serve_refuses_a_release_key_others_may_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key = ReleaseKey.load_or_create(tmp_path)
    key.path.chmod(0o644)
    code, _, err = run_cli(capsys, "serve", "--broker", "mqtt://127.0.0.1:1", "--data-dir",
                           str(tmp_path), "--listen", f"127.0.0.1:{free_port()}")  # fmt: skip
    last = err.splitlines()[-1]  # after the log lines of the store opening
    assert code == 1 and last.startswith("edgefleet serve: error: release key"), err
    assert "chmod 600" in last
