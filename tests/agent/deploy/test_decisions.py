"""The deployer's pure decisions, table-driven."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.deploy.decisions import Installed, due_progress, judge_document, plan_model
from protocol.release import DesiredModel, SignedRelease, seal_release
from tests.agent.deploy.releases import FP32, make_release

KEY = Ed25519PrivateKey.generate()
REL = make_release(FP32, version="2.0.0", seq=5, golden=[])
SHA = REL.artifacts["cpu"].sha256
SEALED = SignedRelease.model_validate(seal_release(KEY, REL))
WANTED = Installed(5, SHA)
URL = "http://x/api/v1/artifacts/" + SHA


@pytest.mark.parametrize(
    ("doc_device", "generation", "highest", "kind", "why"),
    [
        ("dev-1", 10, 0, "accept", None),
        ("dev-1", 10, 9, "accept", None),
        ("dev-1", 10, 10, "replay", None),
        ("dev-1", 9, 10, "refuse", "older than the accepted generation 10"),
        ("dev-2", 10, 0, "refuse", "for device 'dev-2'"),
    ],
)
def test_judge_document(
    doc_device: str, generation: int, highest: int, kind: str, why: str | None
) -> None:
    verdict = judge_document(doc_device, generation, device_id="dev-1", highest_generation=highest)
    assert verdict.kind == kind
    if why is None:
        assert verdict.reason is None
    else:
        assert verdict.reason is not None and why in verdict.reason


def entry(**overrides: Any) -> DesiredModel:
    fields: dict[str, Any] = {
        "model": "digits-edge",
        "release": SEALED,
        "target": "cpu",
        "artifact_url": URL,
    }
    return DesiredModel.model_validate(fields | overrides)


@pytest.mark.parametrize(
    ("desired", "active", "on_disk", "configured", "kind", "why"),
    [
        # forward moves
        (entry(), None, set(), True, "deploy", None),
        (entry(), Installed(4, "a" * 64), set(), True, "deploy", None),
        (entry(), WANTED, set(), True, "current", None),
        # same seq, another artifact (another target): a deployment, not a refusal
        (entry(), Installed(5, "b" * 64), set(), True, "deploy", None),
        # a replayed older release
        (entry(), Installed(6, "c" * 64), set(), True, "refuse", "older than the active seq 6"),
        # ... allowed as an explicit rollback: from disk when there, else downloaded
        (entry(rollback=True), Installed(6, "c" * 64), {WANTED}, True, "swap", None),
        (entry(rollback=True), Installed(6, "c" * 64), set(), True, "deploy", None),
        # a forward release already on disk still goes through verification
        (entry(), Installed(4, "a" * 64), {WANTED}, True, "deploy", None),
        # back to the configured model
        (entry(release=None, target=None), Installed(6, "c" * 64), set(), True, "revert", None),
        (entry(release=None, target=None), None, set(), True, "current", None),
        (
            entry(release=None, target=None),
            Installed(6, "c" * 64),
            set(),
            False,
            "refuse",
            "no configured model",
        ),
        # malformed entries
        (entry(target=None), None, set(), True, "refuse", "names no target"),
        (entry(target="edgetpu"), None, set(), True, "refuse", "no 'edgetpu' artifact"),
        (entry(model="other"), None, set(), True, "refuse", "not 'other'"),
        (entry(artifact_url=None), None, set(), True, "refuse", "no artifact URL"),
    ],
)
def test_plan_model(
    desired: DesiredModel,
    active: Installed | None,
    on_disk: set[Installed],
    configured: bool,
    kind: str,
    why: str | None,
) -> None:
    plan = plan_model(desired, active=active, on_disk=frozenset(on_disk), configured=configured)
    assert plan.kind == kind, plan.reason
    if why is not None:
        assert plan.reason is not None and why in plan.reason


@pytest.mark.parametrize(
    ("last", "now", "due"),
    [(None, 0.0, True), (10.0, 10.5, False), (10.0, 11.0, True), (10.0, 30.0, True)],
)
def test_progress_at_most_every_second(last: float | None, now: float, due: bool) -> None:
    assert due_progress(last, now) is due
