"""Model slots on disk and their crash-safe state file.

Layout under ``DATA_DIR/models``::

    desired.json                      {"generation": G}: the highest desired generation accepted
    {model}/state.json                active slot, previous slot, generation, last report
    {model}/{seq}-{sha256[:12]}/      one slot: release.json (the sealed release, as signed)
                                      and model.tflite | model.onnx (the artifact), plus
                                      fallback.tflite for an edgetpu release's cpu artifact
                                      (:mod:`.artifacts`)

Every JSON file is written atomically: a temporary file, fsync, rename over the old one, fsync
of the directory. A slot is *complete* once its artifact exists under its final name; that rename
is the last step of filling a slot (``release.json`` is written before it, the artifact arrives as
``model.EXT.part``), so a SIGKILL at any moment leaves either a complete slot or a partial
download that resumes, never a half-written model under the final name.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
RELEASE_FILE = "release.json"
DEVICE_FILE = "desired.json"


def atomic_write_json(path: Path, document: Any) -> None:
    """Write ``document`` as JSON to ``path`` so that a crash leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    data = json.dumps(document, separators=(",", ":")).encode()
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable (logged)."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("ignoring unreadable %s: %s", path, exc)
        return None


def slot_name(seq: int, sha256: str) -> str:
    return f"{seq}-{sha256[:12]}"


def slot_seq(name: str) -> int:
    head, _, _ = name.partition("-")
    return int(head) if head.isdigit() else -1


@dataclass
class ModelState:
    """What ``{model}/state.json`` holds."""

    active: str | None = None
    """The slot serving now; None: the model from the agent's configuration."""
    previous: str | None = None
    """The slot that served before (kept on disk for an instant rollback); None: configured."""
    generation: int = 0
    """The desired generation this model last acted on."""
    report: dict[str, Any] | None = None
    """The latest state-change report (a DeploymentReport as JSON)."""
    unsent: bool = False
    """Whether ``report`` still has to reach the broker."""

    def to_json(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "previous": self.previous,
            "generation": self.generation,
            "report": self.report,
            "unsent": self.unsent,
        }

    @classmethod
    def from_json(cls, doc: Any) -> ModelState:
        if not isinstance(doc, dict):
            return cls()
        return cls(
            active=_str_or_none(doc.get("active")),
            previous=_str_or_none(doc.get("previous")),
            generation=int(doc.get("generation") or 0),
            report=doc.get("report") if isinstance(doc.get("report"), dict) else None,
            unsent=bool(doc.get("unsent")),
        )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass
class ModelSlots:
    """The slots of one model: ``root/{model}/``."""

    root: Path
    model: str
    state: ModelState = field(default_factory=ModelState)

    @property
    def dir(self) -> Path:
        return self.root / self.model

    def load(self) -> ModelState:
        self.state = ModelState.from_json(read_json(self.dir / STATE_FILE))
        return self.state

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.dir / STATE_FILE, self.state.to_json())

    def slot_dir(self, slot: str) -> Path:
        return self.dir / slot

    def artifact(self, slot: str, fmt: str) -> Path:
        return self.slot_dir(slot) / f"model.{fmt}"

    def partial(self, slot: str, fmt: str) -> Path:
        return self.slot_dir(slot) / f"model.{fmt}.part"

    def sealed_release(self, slot: str) -> Any:
        return read_json(self.slot_dir(slot) / RELEASE_FILE)

    def complete(self, slot: str) -> Path | None:
        """The artifact of a complete slot, or None."""
        for fmt in ("tflite", "onnx"):
            path = self.artifact(slot, fmt)
            if path.is_file() and (self.slot_dir(slot) / RELEASE_FILE).is_file():
                return path
        return None

    def complete_slots(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return [p.name for p in self.dir.iterdir() if p.is_dir() and self.complete(p.name)]

    def finish(self, slot: str, fmt: str, sealed: dict[str, Any]) -> Path:
        """Make a fully downloaded, verified ``.part`` the slot's artifact (the last step)."""
        part, final = self.partial(slot, fmt), self.artifact(slot, fmt)
        atomic_write_json(self.slot_dir(slot) / RELEASE_FILE, sealed)
        os.replace(part, final)
        fsync_dir(self.slot_dir(slot))
        return final

    def prune(self, keep: int, also: set[str]) -> list[str]:
        """Delete slots but the active, the previous, ``also`` and the newest complete up to
        ``keep`` in all. Returns the names deleted."""
        if not self.dir.is_dir():
            return []
        pinned = {s for s in (self.state.active, self.state.previous, *also) if s}
        slots = sorted(
            (p.name for p in self.dir.iterdir() if p.is_dir()), key=slot_seq, reverse=True
        )
        kept = len({s for s in pinned if self.complete(s)})
        removed = []
        for name in slots:
            if name in pinned:
                continue
            if kept < keep and self.complete(name):
                kept += 1
                continue
            shutil.rmtree(self.slot_dir(name), ignore_errors=True)
            removed.append(name)
        return removed


def read_generation(root: Path) -> int:
    doc = read_json(root / DEVICE_FILE)
    try:
        return int(doc["generation"]) if isinstance(doc, dict) else 0
    except (KeyError, TypeError, ValueError):
        return 0


def write_generation(root: Path, generation: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / DEVICE_FILE, {"generation": generation})
