"""A push's checks (pure, table-driven) and the release rows (real SQLite)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from controlplane.db import migrate
from controlplane.errors import BadRequest, Conflict
from controlplane.registry import releases as rel
from controlplane.registry.artifacts import ModelIO, sniff
from controlplane.registry.keys import ReleaseKey
from protocol.manifest import Target, TensorSpec
from protocol.release import Release
from tests.controlplane.registry.conftest import golden, manifest


def spec(shape: list[int], datatype: str = "FP32", **extra: Any) -> TensorSpec:
    return TensorSpec.model_validate({"name": "x", "shape": shape, "datatype": datatype, **extra})


Q = {"scale": 0.5, "zero_point": -128}


@pytest.mark.parametrize(
    ("want", "got", "problem"),
    [
        (spec([1, 8]), spec([1, 8]), None),
        (spec([-1, 8]), spec([1, 8]), None),
        (spec([1, 8]), spec([-1, 8]), None),
        (spec([1, 8]), spec([1, 9]), "shape is [1, 9]"),
        (spec([1, 8]), spec([1, 8, 1]), "shape is [1, 8, 1]"),
        (spec([1, 8]), spec([1, 8], "INT8"), "takes INT8"),
        (spec([1], "INT8", quantization=Q), spec([1], "INT8", quantization=Q), None),
        (spec([1], "INT8"), spec([1], "INT8", quantization=Q), None),
        (
            spec([1], "INT8", quantization={"scale": 0.25, "zero_point": -128}),
            spec([1], "INT8", quantization=Q),
            "scale 0.5",
        ),
        (
            spec([1], "INT8", quantization={"scale": 0.5, "zero_point": 0}),
            spec([1], "INT8", quantization=Q),
            "zero point -128",
        ),
    ],
)
def test_tensor_mismatch(want: TensorSpec, got: TensorSpec, problem: str | None) -> None:
    found = rel.tensor_mismatch(want, got)
    assert (found is None) == (problem is None), found
    if problem is not None:
        assert found is not None and problem in found


@pytest.mark.parametrize(
    ("head", "format"),
    [
        (b"\x1c\x00\x00\x00TFL3\x00", "tflite"),
        (b"\x08\x08\x12\x09", "onnx"),
        (b"PK\x03\x04", "unknown"),
        (b"", "unknown"),
    ],
)
def test_sniff(head: bytes, format: str) -> None:
    assert sniff(head) == format


@pytest.mark.parametrize(
    ("targets", "formats", "words"),
    [
        ({"cpu": "a" * 64}, {"cpu": "tflite"}, None),
        ({"edgetpu": "a" * 64}, {"edgetpu": "tflite"}, None),
        ({"onnx": "a" * 64}, {"onnx": "onnx"}, None),
        ({"cpu": "a" * 64}, {"cpu": "onnx"}, ["artifacts.cpu", "onnx file", "tflite model"]),
        ({"onnx": "a" * 64}, {"onnx": "tflite"}, ["artifacts.onnx", "onnx model"]),
        ({"cpu": "a" * 64}, {"cpu": "unknown"}, ["not a model file"]),
    ],
)
def test_check_formats(targets: Any, formats: Any, words: list[str] | None) -> None:
    if words is None:
        rel.check_formats(targets, formats)
        return
    with pytest.raises(BadRequest) as info:
        rel.check_formats(targets, formats)
    for word in words:
        assert word in str(info.value)


def _push(**change: Any) -> rel.Push:
    body = {"version": "2", "artifacts": {"cpu": "a" * 64}, "manifest": manifest(), **change}
    return rel.parse_push(body)


def test_the_push_names_the_release_and_labels_override() -> None:
    labels = [f"digit-{i}" for i in range(10)]
    built = rel.build_manifest("dg", _push(labels=labels, description="new"), None)
    assert (built.name, built.version, built.labels, built.description) == (
        "dg", "2", labels, "new",
    )  # fmt: skip


def test_golden_labels_become_indexes_and_tolerance_defaults() -> None:
    built = rel.build_manifest("dg", _push(), None)
    cases = rel.build_golden(built, [rel.GoldenInput(**g) for g in golden()])
    assert [c.expected_index for c in cases] == [2, 5, 8]
    assert cases[0].tolerance == 0.15
    tight = rel.build_golden(
        built,
        [rel.GoldenInput(**{**golden()[0], "tolerance": 0.01, "expected_scores": [0.1] * 10})],
    )
    assert tight[0].tolerance == 0.01 and tight[0].expected_scores == [0.1] * 10


def _io() -> ModelIO:
    m = rel.build_manifest("dg", _push(), None)
    return ModelIO(list(m.inputs), list(m.outputs))


def _release(version: str = "1", description: str = "") -> Release:
    push = _push(version=version, description=description)
    facts: dict[Target, rel.ArtifactFacts] = {
        "cpu": rel.ArtifactFacts("a" * 64, 10, "tflite", _io())
    }
    return rel.check_push("dg", push, facts, created_at=1.0)


def test_insert_numbers_per_name_and_refuses_changed_content(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    conn.row_factory = sqlite3.Row
    migrate(conn)
    key = ReleaseKey.load_or_create(tmp_path)
    first, created = rel.insert_release(conn, _release("1"), key)
    assert created and first.seq == 1
    second, _ = rel.insert_release(conn, _release("2"), key)
    assert second.seq == 2
    same, created = rel.insert_release(conn, _release("1"), key)
    assert not created and same == first
    with pytest.raises(Conflict, match="new version"):
        rel.insert_release(conn, _release("1", description="other"), key)
    assert rel.query_release_by_seq(conn, "dg", 2) == second
    assert rel.query_release(conn, "dg", "1") == first
    assert rel.query_release(conn, "dg", "3") is None
    assert [r.version for r in rel.query_releases(conn, "dg")] == ["2", "1"]
    assert rel.query_models(conn)[0]["releases"] == 2
    with pytest.raises(sqlite3.IntegrityError):  # (name, seq) is unique
        conn.execute(
            "INSERT INTO releases (name, version, seq, created_at, sealed) VALUES "
            "('dg', 'x', 2, 0, '{}')"
        )
