"""The kept inputs' bytes on the control plane: sealed files under ``DATA_DIR/samples/sealed/``.

Each input is one file, sealed (AES-256-GCM, :mod:`protocol.sealed`) under the control plane's
keyring (``DATA_DIR/keys/data-keyring.json``, 0600 in a 0700 directory, created on first use)
and bound to its identity ``("sample", device id, result id)``: a file copied over another
input's does not open. A file has a random name (``sealed/ab/<32 hex>``), kept in the input's
row (``samples.blob``) with the key it is sealed under (``samples.key_id``); the plaintext never
touches the disk (a body is at most ``max_sample_bytes``, so it is sealed in memory). A write goes
to a temporary file, fsynced, renamed into place; a crash leaves at most a file that no row
names, which :meth:`Vault.orphans` finds for the keeper to remove.

Inputs stored before schema version 8 are plaintext files named by their SHA-256
(``DATA_DIR/samples/ab/<sha256>``, the registry's content-addressed layout) until the keeper
seals them: :meth:`Vault.read_legacy` reads those.

Everything here blocks (file I/O): callers run it in a thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from controlplane.errors import ConfigError, Refused
from controlplane.registry.artifacts import ArtifactStore
from protocol.keyring import KEYRING_FILE, KeyringFile, wrapping_key
from protocol.sealed import KeyringError, SealedError, identity, key_id_of

KEY_DIR = "keys"
SEALED_DIR = "sealed"
NAME = re.compile(r"^sealed/[0-9a-f]{2}/[0-9a-f]{32}$")
LEGACY = re.compile(r"^[0-9a-f]{64}$")


class Unreadable(Refused):
    """A stored input that cannot be read back: its file is gone, altered, or sealed under a
    key this control plane no longer holds (``lost``: it will not get better), or the disk
    failed. HTTP 500 with that message: the request was fine, the store is not."""

    status = 500

    def __init__(self, message: str, *, lost: bool) -> None:
        super().__init__(message)
        self.lost = lost


class KeyRetired(Exception):
    """The key an input was just sealed under was retired before its row was written: seal it
    again under the current key (within this package; never reaches a client)."""


@dataclass(frozen=True)
class SealedFile:
    name: str  # relative to the samples root: sealed/ab/<32 hex>
    key_id: str
    size: int  # of the sealed file


def context(device_id: str, result_id: str) -> bytes:
    """The identity an input is sealed for."""
    return identity("sample", device_id, result_id)


class Vault:
    """Sealed inputs under ``root`` (``DATA_DIR/samples``) with ``keys``."""

    def __init__(self, root: Path, keys: KeyringFile) -> None:
        self.root = Path(root)
        self.keys = keys
        self.legacy = ArtifactStore(self.root)

    @classmethod
    def load(cls, data_dir: Path) -> Vault:
        """The vault of ``data_dir`` with its keyring loaded (created if there is none)."""
        keys = KeyringFile(Path(data_dir) / KEY_DIR / KEYRING_FILE, wrap=wrapping_key)
        try:
            keys.load()
        except KeyringError as exc:
            raise ConfigError(str(exc)) from None
        return cls(Path(data_dir) / "samples", keys)

    # -- sealed files --

    def path(self, name: str) -> Path:
        if not NAME.match(name):
            raise ValueError(f"not the name of a sealed input: {name!r}")
        return self.root / name

    def write(self, device_id: str, result_id: str, data: bytes) -> SealedFile:
        """Seal ``data`` under the current key into a new file; return its name."""
        blob = self.keys.seal(data, context(device_id, result_id))
        token = uuid.uuid4().hex
        name = f"{SEALED_DIR}/{token[:2]}/{token}"
        final = self.root / name
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{token}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, blob)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        _fsync_dir(final.parent)
        return SealedFile(name, key_id_of(blob), len(blob))

    def read(self, device_id: str, result_id: str, name: str) -> bytes:
        """The input in file ``name``; :class:`Unreadable` saying why when it cannot be read."""
        where = f"the input of result {result_id} of device {device_id}"
        try:
            blob = self.path(name).read_bytes()
        except FileNotFoundError:
            raise Unreadable(f"{where} is filed but its file is gone", lost=True) from None
        except OSError as exc:
            raise Unreadable(f"{where} cannot be read: {exc.strerror}", lost=False) from None
        try:
            return self.keys.open(blob, context(device_id, result_id))
        except SealedError as exc:
            raise Unreadable(f"{where} cannot be opened: {exc}", lost=True) from None

    def read_legacy(self, device_id: str, result_id: str, sha256: str) -> bytes:
        """The plaintext file of an input stored before encryption (schema 8)."""
        where = f"the input of result {result_id} of device {device_id}"
        try:
            return self.legacy.path(sha256).read_bytes()
        except FileNotFoundError:
            raise Unreadable(f"{where} is filed but its file is gone", lost=True) from None
        except OSError as exc:
            raise Unreadable(f"{where} cannot be read: {exc.strerror}", lost=False) from None

    def remove(self, names: Iterable[str]) -> int:
        """Delete sealed files (those already gone are skipped); return how many were."""
        removed = 0
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                self.path(name).unlink()
                removed += 1
        return removed

    def remove_legacy(self, sha256s: Iterable[str]) -> int:
        """Delete plaintext files of before schema 8 that no row needs any more."""
        removed = 0
        for sha256 in sha256s:
            with contextlib.suppress(FileNotFoundError):
                self.legacy.path(sha256).unlink()
                removed += 1
        return removed

    # -- what no row names (after a crash) --

    def orphans(self, named: set[str], legacy_named: set[str], older_than: float) -> Iterator[Path]:
        """Files no row names, last changed before ``older_than`` (so that a write in flight,
        whose row is not committed yet, is left alone): sealed files, temporary files and
        plaintext files of before schema 8 that are sealed now."""
        sealed = self.root / SEALED_DIR
        if sealed.is_dir():
            for path in sealed.glob("*/*"):
                name = path.relative_to(self.root).as_posix()
                if name not in named and _older(path, older_than):
                    yield path
        for path in self.root.glob("[0-9a-f][0-9a-f]/*"):
            if LEGACY.match(path.name) and path.name not in legacy_named:
                if _older(path, older_than):
                    yield path
        tmp = self.root / "tmp"  # what ArtifactStore.write left of a cut-short upload
        if tmp.is_dir():
            yield from (p for p in tmp.iterdir() if _older(p, older_than))


def _older(path: Path, than: float) -> bool:
    try:
        return path.is_file() and path.stat().st_mtime < than
    except OSError:
        return False


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
