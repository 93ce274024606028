"""Which device goes in which wave, and which artifact it gets: pure, deterministic functions.

Waves are drawn by a stable hash of the rollout id and the device id, so the same rollout always
picks the same canaries (also after a restart) while two rollouts pick different ones. They are
stratified by accelerator kind, so the first wave holds every kind of hardware in the selection.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

# Artifact targets in order of preference for each accelerator kind.
TARGET_PREFERENCE: dict[str, tuple[str, ...]] = {
    "edgetpu": ("edgetpu", "cpu"),
    "gpu": ("onnx", "cpu"),
    "cpu": ("cpu", "onnx"),
}


def stable_hash(rollout_id: str, device_id: str) -> int:
    """A 64-bit number from SHA-256 of both ids: the same on every run, host and Python version
    (``hash()`` is salted per process)."""
    digest = hashlib.sha256(f"{rollout_id}\x00{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def accelerator_kind(accelerators: Sequence[Mapping[str, Any]]) -> str:
    """The birth message's accelerator list -> ``edgetpu``, ``gpu`` or ``cpu``.

    Only accelerators reported ``present`` count: a configured Coral that is unplugged is a CPU
    device for the purpose of choosing an artifact.
    """
    present = {a.get("kind") for a in accelerators if a.get("present") is True}
    if "edgetpu" in present:
        return "edgetpu"
    if "gpu" in present:
        return "gpu"
    return "cpu"


def choose_target(kind: str, available: Collection[str]) -> str | None:
    """The release artifact a device of this accelerator ``kind`` should run, or ``None`` when the
    release has none it can use. An unknown kind is treated as a CPU."""
    preference = TARGET_PREFERENCE.get(kind, TARGET_PREFERENCE["cpu"])
    return next((target for target in preference if target in available), None)


def wave_sizes(n: int, waves: Sequence[float]) -> list[int]:
    """How many of ``n`` devices are in waves ``<= k``, for each k: ``ceil(waves[k] * n)``.

    Rounded first so that float noise (``0.07 * 100 == 7.000000000000001``) cannot add a device;
    the last wave always holds all ``n``.
    """
    sizes = [min(n, math.ceil(round(share * n, 9))) for share in waves]
    if sizes:
        sizes[-1] = n
    return sizes


def assign_waves(
    devices: Mapping[str, str], rollout_id: str, waves: Sequence[float]
) -> dict[str, int]:
    """``{device id: accelerator kind}`` -> ``{device id: wave index}``.

    Within each kind, devices are ordered by :func:`stable_hash` (then id, for the astronomically
    rare tie) and the first ``ceil(waves[k] * n_kind)`` are in waves ``<= k``. Each share is
    above 0, so every kind present has a device in wave 0; the result does not depend on the
    order of ``devices``. A small selection can leave later waves empty.
    """
    if not waves:
        raise ValueError("waves: at least one wave is needed")
    by_kind: dict[str, list[str]] = {}
    for device_id, kind in devices.items():
        by_kind.setdefault(kind, []).append(device_id)
    assignment: dict[str, int] = {}
    for ids in by_kind.values():
        ids.sort(key=lambda d: (stable_hash(rollout_id, d), d))
        cutoffs = wave_sizes(len(ids), waves)
        wave = 0
        for position, device_id in enumerate(ids):
            while position >= cutoffs[wave]:
                wave += 1
            assignment[device_id] = wave
    return assignment


def newcomer_wave(current_wave: int) -> int:
    """The wave of a device that joins the selection after the rollout started: the current one,
    so it is watched with the wave that is baking now and gets the release without waiting."""
    return current_wave
