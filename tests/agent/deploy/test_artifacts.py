"""agent/deploy/artifacts.py: which files a slot needs, where the fallback comes from, and a
complete slot checked again (real signed releases, real files on disk)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.deploy import DeployError
from agent.deploy.artifacts import (
    check_slot,
    fallback_target,
    holds_fallback,
    install,
    missing,
)
from agent.deploy.slots import ModelSlots, slot_name
from protocol.release import Release, seal_release
from tests.agent.deploy.releases import FP32, MODEL
from tests.agent.deploy.test_fallback import EDGETPU_SHA, GOOD, GOOD_SHA, SWAP, edgetpu_release

WITH_CPU = edgetpu_release(cpu=GOOD)
SLOT = slot_name(2, EDGETPU_SHA)
URL = f"https://cp.example:8443/api/v1/artifacts/{EDGETPU_SHA}"
CPU_URL = f"https://cp.example:8443/api/v1/artifacts/{GOOD_SHA}"


def cpu_only() -> Release:
    return WITH_CPU.model_copy(update={"artifacts": {"cpu": WITH_CPU.artifacts["cpu"]}})


@pytest.mark.parametrize(
    ("release", "target", "expected"),
    [
        (WITH_CPU, "edgetpu", "cpu"),
        (edgetpu_release(cpu=None), "edgetpu", None),  # no cpu artifact: as before
        (cpu_only(), "cpu", None),  # a CPU device runs the cpu artifact itself
        (WITH_CPU, "cpu", None),
        (WITH_CPU, "onnx", None),  # an onnx target runs on the CPU too
    ],
)
def test_fallback_target(release: Release, target: str, expected: str | None) -> None:
    assert fallback_target(release, target) == expected


@pytest.fixture
def slots(tmp_path: Path) -> ModelSlots:
    return ModelSlots(tmp_path, MODEL)


def put(slots: ModelSlots, name: str, source: Path) -> None:
    slots.slot_dir(SLOT).mkdir(parents=True, exist_ok=True)
    (slots.slot_dir(SLOT) / name).write_bytes(source.read_bytes())


def test_an_empty_slot_wants_the_fallback_first_then_the_artifact(slots: ModelSlots) -> None:
    wanted = missing(slots, SLOT, WITH_CPU, "edgetpu", URL, CPU_URL)
    assert [(w.target, w.primary, w.url.rsplit("/", 1)[1]) for w in wanted] == [
        ("cpu", False, GOOD_SHA),
        ("edgetpu", True, EDGETPU_SHA),
    ]
    assert [w.part.name for w in wanted] == ["fallback.tflite.part", "model.tflite.part"]
    assert wanted[0].what == "cpu fallback artifact" and wanted[1].what == "artifact"


def test_a_complete_slot_without_its_fallback_wants_only_the_fallback(slots: ModelSlots) -> None:
    put(slots, "model.tflite", FP32)
    put(slots, "release.json", FP32)  # only its presence counts here
    assert [w.target for w in missing(slots, SLOT, WITH_CPU, "edgetpu", URL, CPU_URL)] == ["cpu"]
    put(slots, "fallback.tflite", GOOD)
    assert missing(slots, SLOT, WITH_CPU, "edgetpu", URL, CPU_URL) == []
    assert holds_fallback(slots, SLOT)


def test_no_url_for_a_missing_artifact_is_an_error(slots: ModelSlots) -> None:
    with pytest.raises(DeployError, match="the document gives no artifact URL"):
        missing(slots, SLOT, WITH_CPU, "edgetpu", None)


def test_a_document_without_a_fallback_url_installs_without_the_fallback(
    slots: ModelSlots, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        wanted = missing(slots, SLOT, WITH_CPU, "edgetpu", URL)
    assert [w.target for w in wanted] == ["edgetpu"]
    assert "installing it without a CPU fallback" in caplog.text


def test_check_slot_returns_both_files_and_drops_a_bad_fallback(
    slots: ModelSlots, caplog: pytest.LogCaptureFixture
) -> None:
    key = Ed25519PrivateKey.generate()
    sealed = seal_release(key, WITH_CPU)
    wanted = missing(slots, SLOT, WITH_CPU, "edgetpu", URL, CPU_URL)
    for w, source in zip(wanted, (GOOD, FP32), strict=True):
        w.part.parent.mkdir(parents=True, exist_ok=True)
        w.part.write_bytes(source.read_bytes())
    install(slots, SLOT, wanted, sealed)
    files = check_slot(slots, SLOT, key.public_key())
    assert files.target == "edgetpu" and files.sha256 == EDGETPU_SHA
    assert files.path.name == "model.tflite" and files.fallback is not None
    assert files.fallback.read_bytes() == GOOD.read_bytes()

    # a fallback that no longer matches its release is never run (the model still is)
    files.fallback.write_bytes(SWAP.read_bytes())
    with caplog.at_level(logging.ERROR):
        again = check_slot(slots, SLOT, key.public_key())
    assert again.fallback is None and again.path == files.path
    assert "does not match its release: serving without a CPU fallback" in caplog.text

    # the artifact itself not matching is the slot's failure, as before
    files.path.write_bytes(GOOD.read_bytes())
    with pytest.raises(DeployError, match="does not match its release"):
        check_slot(slots, SLOT, key.public_key())
    with pytest.raises(DeployError, match="no release key configured"):
        check_slot(slots, SLOT, None)
