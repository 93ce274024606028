"""What to do with a desired-state document: pure functions over plain values, no I/O.

:func:`judge_document` decides about the document as a whole (is it for this device, is it newer
than what we accepted); :func:`plan_model` decides, for one model in it, whether there is nothing
to do, a refusal, a swap from disk, a return to the configured model, or a full deployment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from protocol.release import DesiredModel

DocKind = Literal["accept", "replay", "refuse"]
PlanKind = Literal["refuse", "current", "revert", "swap", "deploy"]


@dataclass(frozen=True)
class DocVerdict:
    kind: DocKind
    """accept: newer than any accepted; replay: the accepted one again (a reconnect); refuse."""
    reason: str | None = None


def judge_document(
    doc_device_id: str, generation: int, *, device_id: str, highest_generation: int
) -> DocVerdict:
    """Accept a document for this device whose generation is not lower than the highest seen."""
    if doc_device_id != device_id:
        return DocVerdict(
            "refuse", f"the document is for device {doc_device_id!r}, not {device_id!r}"
        )
    if generation < highest_generation:
        return DocVerdict(
            "refuse",
            f"generation {generation} is older than the accepted generation "
            f"{highest_generation} (a replayed document?)",
        )
    if generation == highest_generation:
        return DocVerdict("replay")
    return DocVerdict("accept")


@dataclass(frozen=True)
class Installed:
    """The release a model slot holds (or serves)."""

    seq: int
    sha256: str


@dataclass(frozen=True)
class Plan:
    kind: PlanKind
    reason: str | None = None


def plan_model(
    entry: DesiredModel,
    *,
    active: Installed | None,
    on_disk: frozenset[Installed],
    configured: bool,
) -> Plan:
    """What to do for one model of an accepted document.

    ``active`` is the release serving now (None: the model from the agent's own configuration),
    ``on_disk`` the complete, verified slots kept on disk, ``configured`` whether the agent's
    configuration has a model of that name to go back to.
    """
    if entry.release is None:
        if active is None:
            return Plan("current")
        if not configured:
            return Plan("refuse", f"there is no configured model {entry.model!r} to go back to")
        return Plan("revert")
    release = entry.release.release
    if release.name != entry.model:
        return Plan("refuse", f"the release is for model {release.name!r}, not {entry.model!r}")
    if entry.target is None:
        return Plan("refuse", "the document names no target artifact")
    artifact = release.artifacts.get(entry.target)
    if artifact is None:
        have = ", ".join(sorted(release.artifacts))
        return Plan(
            "refuse", f"release {release.version} has no {entry.target!r} artifact (has {have})"
        )
    wanted = Installed(release.seq, artifact.sha256)
    if active == wanted:
        return Plan("current")
    if active is not None and release.seq < active.seq and not entry.rollback:
        return Plan(
            "refuse",
            f"release {release.version} (seq {release.seq}) is older than the active seq "
            f"{active.seq} and the document is no rollback (a replayed manifest?)",
        )
    if entry.rollback and wanted in on_disk:
        return Plan("swap")
    if entry.artifact_url is None and wanted not in on_disk:
        return Plan("refuse", "the document gives no artifact URL")
    return Plan("deploy")


def due_progress(last_sent: float | None, now: float, interval: float = 1.0) -> bool:
    """Whether a download-progress report may go now (at most one per ``interval`` seconds)."""
    return last_sent is None or now - last_sent >= interval
