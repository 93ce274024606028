"""Which file each backend of a model's chain opens: the model's own, or its fallback artifact.

A model compiled for the Edge TPU (``*_edgetpu.tflite``) runs only with the delegate: LiteRT on
the CPU does not know its ``edgetpu-custom-op``, so falling back to the next backend with the same
file fails. A model may therefore come with a **fallback artifact**: the same model built for the
CPU (a deployed release's ``cpu`` artifact, or a configured model's ``fallback_path``). With one,
the accelerator backends open the model's own file and every other backend of the priority list
opens the fallback artifact instead: the ones the supervisor falls back to after a crash or a
demotion, and the one that serves when the accelerator is absent at load. Without one, every
backend opens the model's file, as before.

Pure functions over names and paths (no I/O); :func:`check_fallback` only compares file types.
"""

from __future__ import annotations

from pathlib import Path

from agent.errors import ModelLoadError
from agent.supervisor.decisions import ACCELERATORS


def opens_primary(backend: str) -> bool:
    """Whether ``backend`` runs the model's own file even when there is a fallback artifact: the
    accelerators the file is compiled for, and the test backends that stand in for them."""
    return backend in ACCELERATORS or backend.startswith("test-")


def artifact_for(backend: str, path: Path, fallback: Path | None) -> Path:
    """The file ``backend`` opens: ``fallback`` for a non-accelerator backend when there is one,
    else the model's ``path``."""
    if fallback is None or opens_primary(backend):
        return path
    return fallback


def check_fallback(path: Path, fallback: Path) -> None:
    """ModelLoadError unless ``fallback`` is a file type the model's backends load (the same as
    ``path``'s: one priority list serves both) and another file than ``path``."""
    if fallback.suffix.lower() != path.suffix.lower():
        raise ModelLoadError(
            f"fallback artifact {fallback.name}: a {path.suffix or 'extensionless'} model needs "
            f"a {path.suffix or 'extensionless'} fallback (the same backends load both), "
            f"not {fallback.suffix or 'an extensionless file'}"
        )
    if fallback == path:
        raise ModelLoadError(
            f"fallback artifact {fallback}: it is the model's own file (leave the fallback out "
            "to fall back on the same file)"
        )
