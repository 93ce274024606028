"""Key and certificate files: private keys written 0600 and atomically, refused when others may
read them; PEM parsing with errors that name the file.

A private key is written to a temporary file in the same directory (mode 0600 from the start,
fsynced) and renamed into place, so a crash never leaves half a key and a key is never readable by
others, not even for a moment. A key file that group or others may read is refused rather than
used, as the release key is (``controlplane/registry/keys.py``): a key that may have leaked must
not sign.
"""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from protocol import files
from provisioning.errors import PKIError


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (readers see old or new)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_atomic(path, data, mode)
    except OSError as exc:
        raise PKIError(f"cannot write {path}: {exc.strerror or exc}") from None


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write a private key, PKCS8 PEM, mode 0600."""
    write_atomic(path, key_pem(key), 0o600)


def read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """An EC private key from a 0600 PEM file; PKIError naming the file and the fix."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        data = path.read_bytes()
    except OSError as exc:
        raise PKIError(f"cannot read the key {path}: {exc.strerror or exc}") from None
    if mode & 0o077:
        raise PKIError(
            f"the key {path} may be read by group or others (mode {mode:04o}): run "
            f"`chmod 600 {path}` (and replace the key if it may have leaked)"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PKIError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError(f"{path} is not an EC private key")
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def read_cert(path: Path) -> x509.Certificate:
    """The first certificate of a PEM file; PKIError naming the file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PKIError(f"cannot read the certificate {path}: {exc.strerror or exc}") from None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise PKIError(f"{path} is not a PEM certificate: {exc}") from None
