"""A keyring in a file: the data keys of one agent or one control plane (docs/data.md).

The file is JSON (:meth:`protocol.sealed.Keyring.to_json`), mode 0600 in a 0700 directory,
created on first use. It is replaced as a whole: written to a temporary file (0600, fsynced),
then renamed over the old one, so a crash leaves the old keyring or the new one, never half of
one; the first creation links the file into place, so two processes starting at once end up
with the same keys. A file that group or others may read is refused with the ``chmod`` that
fixes it (and a hint to rotate: keys that may have leaked protect nothing). Both sides use this
class; each translates :class:`~protocol.sealed.KeyringError` into its own error.

Rotation is two steps that the callers put around their own data: :meth:`KeyringFile.rotate`
adds a key and makes it current (every new blob is sealed under it, the old keys still open old
blobs); once nothing is sealed under an old key any more, :meth:`KeyringFile.retire` removes it.

Optionally the file is itself sealed under a **wrapping key** that is not on the same disk:
a systemd credential (``LoadCredentialEncrypted=edgefleet-data-key:...``, which a TPM can bind
to the machine) or the ``EDGEFLEET_DATA_KEY`` environment variable (:func:`wrapping_key`).
Then a copy of the data directory, keys included, opens nothing without it. A plain keyring
found while a wrapping key is given is wrapped in place; a wrapped one without it is refused.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from protocol.sealed import (
    KEY_BYTES,
    DataKey,
    Keyring,
    KeyringError,
    SealedError,
    identity,
    is_sealed,
    open_sealed,
    seal,
)

KEYRING_FILE = "data-keyring.json"
WRAPPING_ENV = "EDGEFLEET_DATA_KEY"
WRAPPING_CREDENTIAL = "edgefleet-data-key"
_WRAPPED = identity("keyring")


def wrapping_key(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The key that wraps the keyring file, if one is given: the systemd credential
    ``edgefleet-data-key`` (``$CREDENTIALS_DIRECTORY``), else ``EDGEFLEET_DATA_KEY``; 32 bytes,
    raw or base64 (``openssl rand -base64 32``). None when neither is set."""
    env = os.environ if environ is None else environ
    raw: bytes | None = None
    where = WRAPPING_ENV
    credentials = env.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / WRAPPING_CREDENTIAL).is_file():
        where = str(Path(credentials) / WRAPPING_CREDENTIAL)
        try:
            raw = Path(where).read_bytes()
        except OSError as exc:
            raise KeyringError(f"cannot read the wrapping key {where}: {exc.strerror}") from None
    elif env.get(WRAPPING_ENV):
        raw = env[WRAPPING_ENV].encode()
    if raw is None:
        return None
    if len(raw) == KEY_BYTES:
        return raw
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except binascii.Error:
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyringError(
            f"the wrapping key in {where} is not {KEY_BYTES} bytes (raw, or base64 as "
            "`openssl rand -base64 32` prints them)"
        )
    return key


class KeyringFile:
    """The keyring at ``path``; :meth:`load` (creating it if missing) before use. Thread-safe:
    the file and the keyring in memory change together under a lock, and readers see one
    immutable :class:`Keyring` or the next."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        wrap: bytes | Callable[[], bytes | None] | None = None,
    ) -> None:
        """``wrap``: the key that wraps the file, or a function that finds it when the keyring
        is loaded (:func:`wrapping_key`), or None (a plain file)."""
        self.path = Path(path)
        self._clock = clock
        self._wrap_source = wrap
        self._wrap: bytes | None = None
        self._lock = threading.Lock()
        self._ring: Keyring | None = None

    def __repr__(self) -> str:
        return f"KeyringFile({str(self.path)!r})"

    @property
    def loaded(self) -> bool:
        return self._ring is not None

    @property
    def ring(self) -> Keyring:
        ring = self._ring
        if ring is None:
            raise KeyringError(f"the keyring {self.path} is not loaded")
        return ring

    def load(self) -> Keyring:
        """Read the keyring (once; later calls return it), creating it if there is none."""
        with self._lock:
            if self._ring is None:
                self._ring = self._read_or_create()
            return self._ring

    def reload(self) -> Keyring:
        """Read the file again (another process rotated it)."""
        with self._lock:
            self._ring = self._read_or_create()
            return self._ring

    # -- sealing with the current keyring --

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        return self.ring.seal(plaintext, context)

    def open(self, blob: bytes, context: bytes) -> bytes:
        return self.ring.open(blob, context)

    def holds(self, key_id: str) -> bool:
        return self.ring.get(key_id) is not None

    # -- rotation --

    def rotate(self, *, secret: bytes | None = None) -> DataKey:
        """Add a new key, current from now on; return it."""
        with self._lock:
            ring = self.ring.rotated(self._clock(), secret=secret)
            self._write(ring)
            self._ring = ring
            return ring.current

    def retire(self, ids: Collection[str]) -> list[str]:
        """Remove the keys ``ids`` (never the current one); return those that were held."""
        with self._lock:
            ring = self.ring
            gone = sorted(set(ids) & set(ring.ids))
            if gone:
                ring = ring.without(set(gone))
                self._write(ring)
                self._ring = ring
            return gone

    # -- the file --

    def _read_or_create(self) -> Keyring:
        source = self._wrap_source
        self._wrap = source() if callable(source) else source
        try:
            directory = self.path.parent
            if not directory.is_dir():
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(directory, 0o700)  # mkdir's mode is masked by the umask
            if not self.path.exists():
                self._create(Keyring.new(self._clock()))
            mode = stat.S_IMODE(self.path.stat().st_mode)
            if mode & 0o077:
                raise KeyringError(
                    f"keyring {self.path} may be read by group or others (mode {mode:04o}): run "
                    f"`chmod 600 {self.path}`, then rotate the key (it may have leaked)"
                )
            data = self.path.read_bytes()
        except OSError as exc:
            raise KeyringError(f"keyring {self.path}: {exc.strerror or exc}") from None
        try:
            ring = Keyring.from_json(self._unwrap(data))
        except KeyringError as exc:
            raise KeyringError(f"keyring {self.path}: {exc}") from None
        if self._wrap is not None and not is_sealed(data):
            self._write(ring)  # a plain keyring, and now a wrapping key: wrap it
        return ring

    def _unwrap(self, data: bytes) -> bytes:
        if not is_sealed(data):
            return data
        if self._wrap is None:
            raise KeyringError(
                f"it is wrapped: give its wrapping key (the systemd credential "
                f"{WRAPPING_CREDENTIAL}, or {WRAPPING_ENV})"
            )
        try:
            return open_sealed(self._wrap, data, _WRAPPED)
        except SealedError:
            raise KeyringError("the wrapping key given does not open it") from None

    def _document(self, ring: Keyring) -> bytes:
        if self._wrap is None:
            return ring.to_json()
        key_id = hashlib.sha256(self._wrap).hexdigest()[:16]
        return seal(self._wrap, key_id, ring.to_json(), _WRAPPED)

    def _create(self, ring: Keyring) -> None:
        tmp = self._tmp(ring)
        try:
            os.link(tmp, self.path)  # fails if another process got there first: keep its keys
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _fsync_dir(self.path.parent)

    def _write(self, ring: Keyring) -> None:
        try:
            tmp = self._tmp(ring)
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
        except OSError as exc:
            raise KeyringError(f"cannot write the keyring {self.path}: {exc.strerror}") from None

    def _tmp(self, ring: Keyring) -> Path:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, self._document(ring))
            os.fsync(fd)
        finally:
            os.close(fd)
        return tmp


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
