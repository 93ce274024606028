"""The files of a slot: the artifact the document targets and, beside it, its CPU fallback.

A slot (:mod:`.slots`) holds the release's artifact for the device's target, ``model.EXT``. When
that target runs only with its accelerator (``edgetpu``: LiteRT on the CPU does not know the
compiled ``edgetpu-custom-op``) and the release also has a ``cpu`` artifact, the slot holds that
one too, ``fallback.EXT``: the backends after the accelerator in the priority list open it, so the
model keeps answering on the CPU while the Edge TPU is absent or demoted
(:mod:`agent.supervisor.artifacts`). A release without a ``cpu`` artifact installs as before, and
its requests get 503 while the accelerator is demoted.

Here: which files a slot still lacks and where they come from (:func:`missing`), fetching them
(:func:`fetch`: resumable downloads, each checked against the release's size and SHA-256) and
putting them in place (:func:`install`), and checking a complete slot again before it is loaded
(:func:`check_slot`). The fallback's URL is the target artifact's with the other hash: the
registry serves every artifact at ``.../artifacts/{sha256}`` (docs/registry.md).

Crash safety: the fallback gets its final name before the model file does, and the model file's
rename is the slot's last step (:meth:`.slots.ModelSlots.finish`), so a complete slot holds its
fallback whenever the release has one (a partial download of either resumes).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.deploy import DeployError
from agent.deploy.download import Downloaded, download
from agent.deploy.slots import ModelSlots, fsync_dir, slot_name
from agent.inference import file_sha256
from protocol.manifest import Target
from protocol.release import Release, ReleaseArtifact, open_release

log = logging.getLogger(__name__)

FALLBACK_TARGET: Target = "cpu"
ACCELERATOR_TARGETS = frozenset({"edgetpu"})
"""Targets whose artifact runs only with their accelerator: they get the CPU fallback."""
FALLBACK_STEM = "fallback"


# --- decisions (pure) ---------------------------------------------------------------------------


def fallback_target(release: Release, target: str) -> Target | None:
    """The artifact a device installs beside ``target`` to fall back on: the release's ``cpu``
    one for an accelerator-only target, when the release has it; None otherwise."""
    if target in ACCELERATOR_TARGETS and FALLBACK_TARGET in release.artifacts:
        return FALLBACK_TARGET
    return None


def fallback_file(slots: ModelSlots, slot: str, fmt: str) -> Path:
    return slots.slot_dir(slot) / f"{FALLBACK_STEM}.{fmt}"


def holds_fallback(slots: ModelSlots, slot: str) -> bool:
    """Whether ``slot`` holds a (complete) fallback artifact, checked or not."""
    return any(fallback_file(slots, slot, fmt).is_file() for fmt in ("tflite", "onnx"))


# --- fetching into a slot -----------------------------------------------------------------------


@dataclass(frozen=True)
class Wanted:
    """One file a slot still lacks."""

    target: Target
    artifact: ReleaseArtifact
    url: str
    part: Path
    final: Path
    primary: bool
    """The artifact the document targets (its rename completes the slot)."""

    @property
    def what(self) -> str:
        return "artifact" if self.primary else f"{self.target} fallback artifact"


def missing(
    slots: ModelSlots, slot: str, release: Release, target: Target, url: str | None,
    fallback_url: str | None = None,
) -> list[Wanted]:  # fmt: skip
    """The files ``slot`` still needs for ``target`` of ``release``, the fallback first. A
    DeployError when the target's artifact is missing and the document gives no URL; a fallback
    the document gives no URL for is left out (logged): the model then installs without it."""
    artifact = release.artifacts[target]
    wanted: list[Wanted] = []
    fallback = fallback_target(release, target)
    if fallback is not None:
        extra = release.artifacts[fallback]
        final = fallback_file(slots, slot, extra.format)
        if final.is_file():
            pass
        elif fallback_url is None:
            log.warning(
                "%s: release %s: the document gives no URL for its %s artifact: installing it "
                "without a CPU fallback",
                slots.model,
                release.version,
                fallback,
            )
        else:
            part = final.with_name(final.name + ".part")
            wanted.append(Wanted(fallback, extra, fallback_url, part, final, primary=False))
    if slots.complete(slot) is None:
        if url is None:
            raise DeployError("the document gives no artifact URL")
        final = slots.artifact(slot, artifact.format)
        part = slots.partial(slot, artifact.format)
        wanted.append(Wanted(target, artifact, url, part, final, primary=True))
    return wanted


async def fetch(
    wanted: Sequence[Wanted],
    *,
    read_timeout: float,
    on_progress: Callable[[float], None],
    on_chunk: Callable[[], object] | None,
    verifying: Callable[[], Awaitable[None]],
) -> None:
    """Download each wanted file into its ``.part`` (resuming), then, after ``verifying()``,
    check each against the release: DeployError (that part discarded) for one that differs.
    ``on_progress`` gets the share of all their bytes on disk."""
    total = sum(w.artifact.size for w in wanted)
    got: list[Downloaded] = []
    done = 0
    for w in wanted:

        def progress(have: int, base: int = done) -> None:
            if total:
                on_progress((base + have) / total)

        got.append(
            await download(
                w.url,
                w.part,
                size=w.artifact.size,
                read_timeout=read_timeout,
                on_progress=progress,
                on_chunk=on_chunk,
            )
        )
        done += w.artifact.size
    await verifying()
    for w, d in zip(wanted, got, strict=True):
        if d.size != w.artifact.size or d.sha256 != w.artifact.sha256:
            w.part.unlink(missing_ok=True)
            raise DeployError(
                f"{w.what} check failed: the release says {w.artifact.size} bytes with SHA-256 "
                f"{w.artifact.sha256[:16]}..., the download has {d.size} bytes with "
                f"{d.sha256[:16]}... (tampered or corrupted; discarded)"
            )


def install(slots: ModelSlots, slot: str, wanted: Sequence[Wanted], sealed: dict[str, Any]) -> None:
    """Give the fetched, checked files their final names: the fallback first, the model file
    (with ``release.json`` before it) last. Blocking: run it in a thread."""
    for w in sorted(wanted, key=lambda w: w.primary):
        if w.primary:
            slots.finish(slot, w.artifact.format, sealed)
        else:
            os.replace(w.part, w.final)
            fsync_dir(w.final.parent)


# --- checking a complete slot -------------------------------------------------------------------


@dataclass(frozen=True)
class SlotFiles:
    """A complete slot, checked: its release, the target it holds, and the files to load."""

    release: Release
    target: Target
    path: Path
    sha256: str
    fallback: Path | None
    """The CPU fallback artifact, checked; None when the slot has none (or a bad one: logged)."""


def check_slot(slots: ModelSlots, slot: str, key: Ed25519PublicKey | None) -> SlotFiles:
    """Check a complete slot: the release's signature, the artifact's size and SHA-256, and the
    fallback's; DeployError (or a ProtocolError) when the slot cannot be served. Blocking (it
    hashes the files): run it in a thread."""
    path = slots.complete(slot)
    if path is None:
        raise DeployError(f"slot {slot} is incomplete")
    if key is None:
        raise DeployError("no release key configured to check it")
    release = open_release(slots.sealed_release(slot), key).release
    target = next(
        (t for t, a in release.artifacts.items() if slot_name(release.seq, a.sha256) == slot),
        None,
    )
    if target is None:
        raise DeployError(f"release {release.version} has no artifact for slot {slot}")
    artifact = release.artifacts[target]
    if not _matches(path, artifact):
        raise DeployError(f"the artifact in slot {slot} does not match its release")
    return SlotFiles(
        release, target, path, artifact.sha256, _fallback(slots, slot, release, target)
    )


def _fallback(slots: ModelSlots, slot: str, release: Release, target: Target) -> Path | None:
    fallback = fallback_target(release, target)
    if fallback is None:
        return None
    artifact = release.artifacts[fallback]
    path = fallback_file(slots, slot, artifact.format)
    if not path.is_file():
        return None
    if not _matches(path, artifact):  # never run a file the release does not vouch for
        log.error(
            "%s: the %s fallback artifact in slot %s does not match its release: serving "
            "without a CPU fallback",
            slots.model,
            fallback,
            slot,
        )
        return None
    return path


def _matches(path: Path, artifact: ReleaseArtifact) -> bool:
    return path.stat().st_size == artifact.size and file_sha256(path) == artifact.sha256
