"""The sampling decision as a table, the share draw, and each model's policy from the settings."""

from __future__ import annotations

import pytest

from agent.samples.config import ModelSamples, SamplesConfig
from agent.samples.policy import Policy, decide, draw
from agent.samples.sampler import content_type, encode_input, policies
from protocol.messages import ClassScore, InferenceResult, Offload

POLICY = Policy(share=0.1, low_confidence=0.6)


def result(
    score: float | None = 0.9, decision: str | None = None, agree: bool | None = None
) -> InferenceResult:
    return InferenceResult(
        model="digits-edge", model_version="1", artifact_sha256="0" * 64, backend="litert",
        latency_ms=1.0,
        classes=None if score is None else [ClassScore(index=7, label="7", score=score)],
        offload=None if decision is None else Offload(decision=decision, agree=agree),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("case", "draw_value", "expected"),
    [
        (result(0.9), 0.5, None),  # an easy case outside the share
        (result(0.9), 0.05, "sampled"),  # an easy case inside the share
        (result(0.5), 0.5, "low_confidence"),
        (result(0.6), 0.5, None),  # at the threshold is not under it
        (result(0.9, "offloaded", True), 0.5, "offloaded"),
        (result(0.5, "offloaded", False), 0.5, "disagreement"),
        (result(0.5, "deferred"), 0.5, "deferred"),
        (result(0.9, "local"), 0.5, None),
        (result(0.9, "local_only"), 0.05, "sampled"),
        (result(0.9, "local", False), 0.5, "disagreement"),  # a late answer that disagreed
        (result(None), 0.5, None),  # raw outputs: no confidence to judge
        (result(None), 0.0, "sampled"),
    ],
)
def test_decide(case: InferenceResult, draw_value: float, expected: str | None) -> None:
    assert decide(case, POLICY, draw_value) == expected


@pytest.mark.parametrize(("share", "kept"), [(0.0, 0), (1.0, 2000)])
def test_the_share_bounds(share: float, kept: int) -> None:
    policy = Policy(share=share, low_confidence=0.0)
    cases = [result() for _ in range(2000)]
    assert sum(decide(c, policy, draw(c.result_id)) is not None for c in cases) == kept


def test_the_draw_is_fixed_by_the_id_and_spread_evenly() -> None:
    ids = [result().result_id for _ in range(4000)]
    assert [draw(i) for i in ids] == [draw(i) for i in ids]
    share = sum(draw(i) < 0.25 for i in ids) / len(ids)
    assert 0.2 < share < 0.3


def test_a_model_s_own_settings_win_over_the_defaults() -> None:
    config = SamplesConfig(control_plane_url="http://cp:8080", share=0.02, low_confidence=0.5)
    got = policies(
        config, {"a": None, "b": ModelSamples(share=0.5), "c": ModelSamples(low_confidence=0.9)}
    )
    assert got == {
        "a": Policy(0.02, 0.5), "b": Policy(0.5, 0.5), "c": Policy(0.02, 0.9),
    }  # fmt: skip


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n....", "image/png"),
        (b"\xff\xd8\xff\xe0....", "image/jpeg"),
        (b"GIF89a", "image/gif"),
        (b"RIFF\0\0\0\0WEBPVP8", "image/webp"),
        (b"BM....", "image/bmp"),
        (b"hello", "application/octet-stream"),
    ],
)
def test_content_type(head: bytes, kind: str) -> None:
    assert content_type(head) == kind


def test_tensors_are_kept_as_npz() -> None:
    import numpy as np

    from agent.offload.deferred import unpack_inputs

    data, kind = encode_input({"input": np.arange(4, dtype=np.float32)})
    assert kind == "application/x-npz"
    assert unpack_inputs(data)["input"].tolist() == [0.0, 1.0, 2.0, 3.0]
