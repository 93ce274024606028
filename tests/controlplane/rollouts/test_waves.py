from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest

from controlplane.rollouts.waves import (
    accelerator_kind,
    assign_waves,
    choose_target,
    newcomer_wave,
    stable_hash,
    wave_sizes,
)

WAVES = [0.01, 0.1, 0.5, 1.0]


def test_stable_hash_is_fixed_64_bit_and_depends_on_both_ids() -> None:
    # A fixed value: a change of the hash would reshuffle the waves of running rollouts.
    # (the first 8 bytes of sha256(b"r1\x00dev-1"), big-endian)
    assert stable_hash("r1", "dev-1") == 0xC6A3A4DEE0AF6DA7
    values = {stable_hash(r, d) for r in ("r1", "r2") for d in ("dev-1", "dev-2")}
    assert len(values) == 4
    assert all(0 <= v < 2**64 for v in values)
    # the separator keeps ("ab", "c") and ("a", "bc") apart
    assert stable_hash("ab", "c") != stable_hash("a", "bc")


@pytest.mark.parametrize(
    ("accelerators", "kind"),
    [
        pytest.param([], "cpu", id="none"),
        pytest.param([{"kind": "cpu", "present": True}], "cpu", id="cpu"),
        pytest.param([{"kind": "edgetpu", "present": True}], "edgetpu", id="edgetpu"),
        pytest.param([{"kind": "edgetpu", "present": False}], "cpu", id="edgetpu-unplugged"),
        pytest.param([{"kind": "gpu", "present": True, "detail": "orin"}], "gpu", id="gpu"),
        pytest.param([{"kind": "gpu", "present": False}], "cpu", id="gpu-absent"),
        pytest.param([{"kind": "gpu"}], "cpu", id="present-missing"),
        pytest.param(
            [{"kind": "gpu", "present": True}, {"kind": "edgetpu", "present": True}],
            "edgetpu",
            id="edgetpu-before-gpu",
        ),
        pytest.param(
            [{"kind": "edgetpu", "present": False}, {"kind": "gpu", "present": True}],
            "gpu",
            id="gpu-when-edgetpu-absent",
        ),
        pytest.param([{"kind": "npu", "present": True}], "cpu", id="unknown-kind"),
    ],
)
def test_accelerator_kind(accelerators: list[dict[str, Any]], kind: str) -> None:
    assert accelerator_kind(accelerators) == kind


ALL = {"cpu", "edgetpu", "onnx"}


@pytest.mark.parametrize(
    ("kind", "available", "target"),
    [
        pytest.param("edgetpu", ALL, "edgetpu", id="edgetpu-all"),
        pytest.param("edgetpu", {"cpu", "onnx"}, "cpu", id="edgetpu-falls-back-to-cpu"),
        pytest.param("edgetpu", {"onnx"}, None, id="edgetpu-onnx-only"),
        pytest.param("gpu", ALL, "onnx", id="gpu-all"),
        pytest.param("gpu", {"cpu", "edgetpu"}, "cpu", id="gpu-falls-back-to-cpu"),
        pytest.param("gpu", {"edgetpu"}, None, id="gpu-edgetpu-only"),
        pytest.param("cpu", ALL, "cpu", id="cpu-all"),
        pytest.param("cpu", {"onnx", "edgetpu"}, "onnx", id="cpu-onnx"),
        pytest.param("cpu", {"edgetpu"}, None, id="cpu-edgetpu-only"),
        pytest.param("cpu", set(), None, id="nothing"),
        pytest.param("npu", ALL, "cpu", id="unknown-kind-as-cpu"),
    ],
)
def test_choose_target(kind: str, available: set[str], target: str | None) -> None:
    assert choose_target(kind, available) == target


@pytest.mark.parametrize(
    ("n", "waves", "sizes"),
    [
        pytest.param(0, WAVES, [0, 0, 0, 0], id="none"),
        pytest.param(1, WAVES, [1, 1, 1, 1], id="one"),
        pytest.param(10, WAVES, [1, 1, 5, 10], id="ten"),
        pytest.param(100, WAVES, [1, 10, 50, 100], id="hundred"),
        pytest.param(1000, WAVES, [10, 100, 500, 1000], id="thousand"),
        pytest.param(101, WAVES, [2, 11, 51, 101], id="rounds-up"),
        # 0.07 * 100 == 7.000000000000001 in floats: still 7, not 8
        pytest.param(100, [0.07, 1.0], [7, 100], id="float-noise"),
        pytest.param(3, [0.5, 0.9999999999], [2, 3], id="last-holds-all"),
    ],
)
def test_wave_sizes(n: int, waves: list[float], sizes: list[int]) -> None:
    assert wave_sizes(n, waves) == sizes


def _fleet(counts: dict[str, int]) -> dict[str, str]:
    return {f"{kind}-{i:04d}": kind for kind, n in counts.items() for i in range(n)}


@pytest.mark.parametrize(
    "counts",
    [
        pytest.param({"cpu": 1000}, id="one-kind"),
        pytest.param({"cpu": 900, "edgetpu": 90, "gpu": 10}, id="mixed"),
        pytest.param({"cpu": 3, "edgetpu": 1, "gpu": 1}, id="small"),
        pytest.param({"gpu": 1}, id="single"),
    ],
)
def test_assign_waves_is_stratified_with_the_sizes_of_each_kind(counts: dict[str, int]) -> None:
    devices = _fleet(counts)
    waves = assign_waves(devices, "rollout-1", WAVES)
    assert waves.keys() == devices.keys()
    for kind, n in counts.items():
        per_wave = Counter(w for d, w in waves.items() if devices[d] == kind)
        assert per_wave[0] >= 1, f"no {kind} device in the canary wave"
        cumulative = [sum(per_wave[j] for j in range(k + 1)) for k in range(len(WAVES))]
        assert cumulative == [math.ceil(round(s * n, 9)) for s in WAVES]


def test_assign_waves_orders_each_kind_by_the_stable_hash() -> None:
    devices = _fleet({"cpu": 50, "edgetpu": 20})
    waves = assign_waves(devices, "r", WAVES)
    for kind in ("cpu", "edgetpu"):
        ids = sorted((d for d in devices if devices[d] == kind), key=lambda d: stable_hash("r", d))
        assert [waves[d] for d in ids] == sorted(waves[d] for d in ids)


def test_assign_waves_is_deterministic_and_independent_of_input_order() -> None:
    devices = _fleet({"cpu": 200, "edgetpu": 30})
    reversed_devices = dict(reversed(list(devices.items())))
    first = assign_waves(devices, "r-42", WAVES)
    assert assign_waves(reversed_devices, "r-42", WAVES) == first
    assert assign_waves(dict(devices), "r-42", WAVES) == first


def test_assign_waves_picks_other_canaries_for_another_rollout() -> None:
    devices = _fleet({"cpu": 1000})
    canaries = {
        r: {d for d, w in assign_waves(devices, r, WAVES).items() if w == 0} for r in ("a", "b")
    }
    assert len(canaries["a"]) == len(canaries["b"]) == 10
    assert canaries["a"] != canaries["b"]


def test_assign_waves_a_device_keeps_its_wave_when_another_kind_grows() -> None:
    # Stratification: the cpu devices' waves do not depend on how many edgetpu devices there are.
    cpu = _fleet({"cpu": 100})
    alone = assign_waves(cpu, "r", WAVES)
    mixed = assign_waves({**cpu, **_fleet({"edgetpu": 37})}, "r", WAVES)
    assert {d: mixed[d] for d in cpu} == alone


def test_assign_waves_edge_cases() -> None:
    assert assign_waves({}, "r", WAVES) == {}
    assert assign_waves(_fleet({"cpu": 5}), "r", [1.0]) == dict.fromkeys(_fleet({"cpu": 5}), 0)
    with pytest.raises(ValueError, match="at least one wave"):
        assign_waves(_fleet({"cpu": 1}), "r", [])


@pytest.mark.parametrize("current", [0, 1, 3])
def test_newcomer_joins_the_current_wave(current: int) -> None:
    assert newcomer_wave(current) == current
