"""What the ``diag`` command answers: what an engineer asks first about a device it cannot reach.

Agent and runtime versions, each model's backend and why (the fallback reason, the demoted
backends, the worker restarts, the CPU fallback artifact and whether it serves now), the
accelerators found, model slots on disk with their hashes, the outbox's depth and oldest age, the
data directory's disk and the memory, the broker connection and its recent history, the log level.
The agent's clock travels in every reply (``agent_time``); the control plane computes the offset
from its own send and receive times.

Versions of runtimes are read from the installed packages' metadata, never by importing them (only
the runtime modules import LiteRT or ONNX Runtime).
"""

from __future__ import annotations

import asyncio
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from agent import __version__, logs
from agent.deploy.artifacts import holds_fallback
from agent.deploy.slots import ModelSlots, slot_name
from agent.inference import ServedModel
from agent.supervisor.artifacts import opens_primary

if TYPE_CHECKING:
    from agent.daemon import Agent

RUNTIME_PACKAGES = ("ai-edge-litert", "tflite-runtime", "onnxruntime", "onnxruntime-gpu", "numpy")
"""Installed packages whose versions ``diag`` reports (None: not installed)."""
EDGETPU_LIBRARY = "libedgetpu.so.1"


def package_versions(names: tuple[str, ...] = RUNTIME_PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def slot_listing(slots: ModelSlots) -> dict[str, Any]:
    """A model's slots on disk: which is active and previous, and each complete slot's release
    version and artifact SHA-256 (from its sealed release; None where unreadable), and whether
    it holds a CPU fallback artifact."""
    state = slots.state
    listed = []
    for slot in sorted(slots.complete_slots()):
        doc = slots.sealed_release(slot)
        version, sha = None, None
        try:
            body = doc["release"]
            version = str(body["version"])
            shas = [a["sha256"] for a in body["artifacts"].values()]
            sha = next((h for h in shas if slot_name(int(body["seq"]), h) == slot), None)
        except (KeyError, TypeError, ValueError, AttributeError):
            pass
        fallback = holds_fallback(slots, slot)
        listed.append({"slot": slot, "version": version, "sha256": sha, "fallback": fallback})
    return {"active": state.active, "previous": state.previous, "on_disk": listed}


def fallback_artifact(served: ServedModel) -> dict[str, Any] | None:
    """The model's CPU fallback artifact: its file, SHA-256, and whether it answers now (a CPU
    backend serves); None when the model has none."""
    if served.fallback_sha256 is None:
        return None
    return {
        "path": str(served.fallback_path) if served.fallback_path else None,
        "sha256": served.fallback_sha256,
        "serving": not opens_primary(served.backend),
    }


def host(data_dir: Path) -> dict[str, Any]:
    """Disk of the data directory, memory of the process and the machine (blocking: a thread)."""
    process = psutil.Process(os.getpid())
    vm = psutil.virtual_memory()
    try:
        usage = psutil.disk_usage(str(data_dir))
        disk: dict[str, Any] = {
            "path": str(data_dir),
            "total_bytes": int(usage.total),
            "free_bytes": int(usage.free),
            "used_percent": round(float(usage.percent), 2),
        }
    except OSError as exc:
        disk = {"path": str(data_dir), "error": exc.strerror or str(exc)}
    return {
        "disk": disk,
        "memory": {
            "rss_bytes": int(process.memory_info().rss),
            "total_bytes": int(vm.total),
            "available_bytes": int(vm.available),
            "used_percent": round(float(vm.percent), 2),
        },
    }


async def diagnose(agent: Agent, started_at: float) -> dict[str, Any]:
    """The ``diag`` answer: the agent's state read in the loop, files and the host in a thread."""
    from agent.daemon import accelerators  # the daemon imports this module's user

    now = time.time()
    models: list[dict[str, Any]] = []
    slots = []
    for name, served in list(agent.models.items()):
        models.append(
            {
                "name": name,
                "version": served.version,
                "artifact_sha256": served.artifact_sha256,
                "backend": served.backend,
                "fallback_reason": served.fallback_reason,
                "demoted_backends": served.demoted_backends,
                "backend_restarts_total": served.backend_restarts,
                "fallback_artifact": fallback_artifact(served),
                "seq": agent.deployer.seq_of(name),
                "serving_from": agent.deployer.slot_of(name) or "configured file",
            }
        )
        slots.append(agent.deployer.slots(name))
    box = agent.outbox.stats()
    oldest = box.oldest_created_at
    client = agent.client
    listings, machine = await asyncio.to_thread(
        lambda: ([slot_listing(s) for s in slots], host(agent.outbox.path.parent))
    )
    for model, listing in zip(models, listings, strict=True):
        model["slots"] = listing
    return {
        "agent": {
            "device_id": agent.device_id,
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(now - started_at, 1),
            "log_level": logs.current_level(),
        },
        "runtime": {
            "python": platform.python_version(),
            "os": platform.platform(),
            "machine": platform.machine(),
            "packages": package_versions(),
        },
        "models": models,
        "accelerators": [a.model_dump() for a in accelerators(agent.models)],
        "edgetpu_library": _find_library(EDGETPU_LIBRARY),
        "outbox": {
            "depth": box.depth,
            "size_bytes": box.size_bytes,
            "oldest_age_s": round(now - oldest, 3) if oldest else None,
            "evicted_total": box.evicted_total,
            "sent_total": agent.uplink.sent_total,
            "no_subscriber": agent.uplink.no_subscriber,
        },
        **machine,
        "mqtt": {
            "broker": str(client.url),
            "client_id": client.client_id,
            "connected": client.connected,
            "protocol_version": client.protocol_version,
            "history": [{"at": e.at, "event": e.event, "detail": e.detail} for e in client.history],
        },
    }


LIBRARY_DIRS = (
    "/usr/lib",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/local/lib",
)


def _find_library(name: str) -> str | None:
    """Where ``name`` lies in the usual library directories or ``LD_LIBRARY_PATH``, or None. It
    is looked for, never loaded: loading libedgetpu can abort the process."""
    extra = os.environ.get("LD_LIBRARY_PATH", "").split(":")
    for directory in (*LIBRARY_DIRS, *extra):
        if directory and Path(directory, name).exists():
            return str(Path(directory, name))
    return None
