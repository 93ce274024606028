"""The control plane's Ed25519 release key: created on first use, kept in the data directory.

The private key is a PEM (PKCS8) file, ``DATA_DIR/keys/release-ed25519.pem``, mode 0600 in a 0700
directory. It is written to a temporary file first and linked into place, so a crash never leaves a
half-written key and two processes starting at once end up with the same key. A key file that
group or others may read is refused rather than used: a key that may have leaked must not sign.
The private key is never served and never logged (it is left out of the ``repr``).
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from controlplane.errors import ConfigError
from protocol.signing import (
    SignatureError,
    generate_private_key,
    key_id,
    private_key_from_pem,
    private_key_to_pem,
    public_key_text,
)

KEY_DIR = "keys"
KEY_FILE = "release-ed25519.pem"


@dataclass(frozen=True)
class ReleaseKey:
    private: Ed25519PrivateKey = field(repr=False)
    path: Path

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def public_text(self) -> str:
        """``ed25519:...``: what a device's configuration trusts."""
        return public_key_text(self.public)

    @property
    def key_id(self) -> str:
        return key_id(self.public)

    @classmethod
    def load_or_create(cls, data_dir: Path) -> ReleaseKey:
        """The key in ``data_dir``, created there if there is none; ConfigError on a bad one."""
        directory = data_dir / KEY_DIR
        path = directory / KEY_FILE
        try:
            if not directory.is_dir():
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(directory, 0o700)  # mkdir's mode is masked by the umask
            if not path.exists():
                _create(path)
            return cls(private=_load(path), path=path)
        except OSError as exc:
            raise ConfigError(f"release key {path}: {exc.strerror or exc}") from None


def _load(path: Path) -> Ed25519PrivateKey:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"release key {path} may be read by group or others (mode {mode:04o}): "
            f"run `chmod 600 {path}` (and replace the key if it may have leaked)"
        )
    try:
        return private_key_from_pem(path.read_bytes())
    except SignatureError as exc:
        raise ConfigError(f"release key {path}: {exc}") from None


def _create(path: Path) -> None:
    """Write a new key to a temporary file (0600, fsynced), then link it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, private_key_to_pem(generate_private_key()))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process got there first: keep its key
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
