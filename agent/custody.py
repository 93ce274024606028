"""Custody of the inputs the agent keeps on disk: their key, its rotation, their retention.

Two files hold inputs: the sample spool (``samples.db``: waiting for upload) and the deferred
queue (``deferred.db``: offload cases waiting for the cloud). Both seal every input under the
data directory's keyring (``keys/data-keyring.json``, :mod:`agent.sealing`). This module:

- **purges** the inputs of results made more than ``samples.retention_days`` ago, from both
  files, when the agent starts and every hour after (a log line with the counts, never content);
- **rotates** the key: a new key becomes current (every new input is sealed under it), the
  inputs sealed under the old ones are sealed again under it, then the old keys are retired
  (removed from the keyring). The running agent does it by itself when
  ``samples.key_rotation_days`` is set and the current key is older; ``edgefleet-agent
  rotate-key`` does it with the agent stopped. A rotation cut short (a crash, a power cut) is
  finished the next time the agent starts: old keys still open what they sealed until then.

The running agent holds a shared lock on ``keys/keyring.lock``; ``rotate-key`` takes it
exclusively, so it refuses to run beside an agent that would keep sealing under the old key.
The decisions (the cutoff, whether a rotation is due) are pure functions.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from agent.errors import AgentError, ConfigError
from agent.sealing import keyring_of, load_keys
from protocol.errors import ProtocolError
from protocol.keyring import KeyringFile

log = logging.getLogger(__name__)

DAY_S = 86_400.0
PURGE_INTERVAL_S = 3600.0
RESEAL_BATCH = 64
LOCK_FILE = "keyring.lock"


# -- decisions (pure) ------------------------------------------------------------------------------


def retention_cutoff(now: float, retention_days: float) -> float | None:
    """Inputs of results made before this time are due for deletion; None keeps them (0 days)."""
    if retention_days <= 0:
        return None
    return now - retention_days * DAY_S


def rotation_due(key_created_at: float, now: float, rotation_days: float) -> bool:
    """Whether the current key is old enough to be replaced (never with 0 days)."""
    return rotation_days > 0 and now - key_created_at >= rotation_days * DAY_S


# -- custody ---------------------------------------------------------------------------------------


class KeptInputs(Protocol):
    """A file of sealed inputs (:class:`~agent.samples.store.SampleSpool`,
    :class:`~agent.offload.deferred.DeferredQueue`)."""

    kind: ClassVar[str]

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def purge(self, before: float) -> int: ...

    async def reseal(self, limit: int) -> tuple[int, int]: ...

    async def key_ids(self) -> set[str]: ...


@dataclass
class Rotation:
    key_id: str | None = None  # the new key (None: only an unfinished rotation was finished)
    resealed: dict[str, int] = field(default_factory=dict)  # by file kind
    unreadable: int = 0
    retired: list[str] = field(default_factory=list)


class Custody:
    """``open()`` (loads the keyring, takes the shared lock), ``run()`` as a task, ``close()``."""

    def __init__(
        self,
        keys: KeyringFile,
        files: Sequence[KeptInputs],
        *,
        retention_days: float,
        rotation_days: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.files = list(files)
        self.retention_days = retention_days
        self.rotation_days = rotation_days
        self._clock = clock
        self._lock_fd: int | None = None
        self.purged_total = 0

    @property
    def lock_path(self) -> Path:
        return self.keys.path.parent / LOCK_FILE

    async def open(self, *, exclusive: bool = False) -> None:
        await load_keys(self.keys)
        self._lock_fd = await asyncio.to_thread(hold_lock, self.lock_path, exclusive)

    async def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    async def run(self) -> None:
        """Purge and finish or start rotations now, then every :data:`PURGE_INTERVAL_S`."""
        while True:
            try:
                await self.maintain()
            except (AgentError, ProtocolError) as exc:
                log.error("kept inputs: maintenance failed: %s", exc)
            await asyncio.sleep(PURGE_INTERVAL_S)

    async def maintain(self) -> None:
        now = self._clock()
        await self.purge(now)
        ring = self.keys.ring
        if rotation_due(ring.current.created_at, now, self.rotation_days):
            done = await self.rotate()
            log.info(
                "kept inputs: rotated the key (older than %g days): %s", self.rotation_days,
                describe(done),
            )  # fmt: skip
        elif len(ring.keys) > 1:
            done = await self.finish_rotation()
            log.info("kept inputs: finished a rotation: %s", describe(done))

    async def purge(self, now: float) -> dict[str, int]:
        """Delete the inputs past the retention period from every file; counts by file."""
        cutoff = retention_cutoff(now, self.retention_days)
        if cutoff is None:
            return {}
        counts = {f.kind: await f.purge(cutoff) for f in self.files}
        total = sum(counts.values())
        self.purged_total += total
        if total:
            detail = ", ".join(f"{n} from the {kind}" for kind, n in counts.items() if n)
            log.info(
                "kept inputs: deleted %d past %g days of retention (%s)",
                total, self.retention_days, detail,
            )  # fmt: skip
        return counts

    async def rotate(self) -> Rotation:
        """A new current key; everything sealed again under it; the old keys retired."""
        key = await asyncio.to_thread(self.keys.rotate)
        done = await self.finish_rotation()
        done.key_id = key.id
        return done

    async def finish_rotation(self) -> Rotation:
        """Seal again under the current key whatever an older one sealed; retire the keys that
        then seal nothing."""
        done = Rotation()
        for f in self.files:
            count = 0
            while True:
                resealed, unreadable = await f.reseal(RESEAL_BATCH)
                count += resealed
                done.unreadable += unreadable
                if resealed + unreadable < RESEAL_BATCH:
                    break
            done.resealed[f.kind] = count
        in_use: set[str] = set()
        for f in self.files:
            in_use |= await f.key_ids()
        ring = self.keys.ring
        old = {k for k in ring.ids if k != ring.current_id and k not in in_use}
        done.retired = await asyncio.to_thread(self.keys.retire, old)
        return done


def describe(done: Rotation) -> str:
    parts = []
    if done.key_id is not None:
        parts.append(f"new key {done.key_id}")
    for kind, n in done.resealed.items():
        parts.append(f"{n} inputs sealed again in the {kind}")
    if done.unreadable:
        parts.append(f"{done.unreadable} unreadable deleted")
    parts.append("retired " + (", ".join(done.retired) or "no key"))
    return "; ".join(parts)


def hold_lock(path: Path, exclusive: bool) -> int:
    """Take the keyring lock (shared: an agent runs; exclusive: a rotation from the command
    line) without waiting; return its file descriptor, closed to release it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot open {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        if exclusive:
            raise AgentError(
                f"an agent is running on {path.parent.parent} (it holds {path}): stop it first "
                "(systemctl stop edgefleet-agent), or set samples.key_rotation_days and let it "
                "rotate by itself"
            ) from None
        raise AgentError(
            f"`edgefleet-agent rotate-key` is running on {path.parent.parent} (it holds {path}): "
            "start the agent when it is done"
        ) from None
    return fd


# -- edgefleet-agent rotate-key --------------------------------------------------------------------


async def rotate_offline(data_dir: Path, *, max_rows: int, max_bytes: int) -> Rotation:
    """Rotate the key of the agent whose data directory is ``data_dir`` (the agent stopped)."""
    from agent.offload.deferred import DeferredQueue
    from agent.samples.store import SampleSpool

    keys = keyring_of(data_dir)
    files: list[KeptInputs] = []
    if (data_dir / "samples.db").exists():
        files.append(SampleSpool(data_dir / "samples.db", max_rows=max_rows, max_bytes=max_bytes,
                                 keys=keys))  # fmt: skip
    if (data_dir / "deferred.db").exists():
        files.append(DeferredQueue(data_dir / "deferred.db", keys=keys))
    custody = Custody(keys, files, retention_days=0)
    await custody.open(exclusive=True)
    try:
        for f in files:
            await f.open()
        try:
            return await custody.rotate()
        finally:
            for f in files:
                await f.close()
    finally:
        await custody.close()


def main(argv: Sequence[str]) -> int:
    """``edgefleet-agent rotate-key [--config FILE] [flags]``: with the agent stopped."""
    from agent.config import add_flags, load_settings

    parser = argparse.ArgumentParser(
        prog="edgefleet-agent rotate-key",
        description="Rotate the key that seals the inputs kept on this device: a new key becomes "
        "current, every kept input is sealed again under it, the old key is retired. Stop the "
        "agent first. Takes the agent's own flags (--config, --data-dir, ...).",
    )
    add_flags(parser)
    args = parser.parse_args(list(argv))
    try:
        settings = load_settings(args)
        done = asyncio.run(
            rotate_offline(
                settings.data_dir,
                max_rows=settings.samples.max_rows,
                max_bytes=settings.samples.max_bytes,
            )
        )
    except (AgentError, ProtocolError) as exc:
        print(f"edgefleet-agent rotate-key: error: {exc}", file=sys.stderr)
        return 1
    print(f"rotated: {describe(done)}")
    return 0
