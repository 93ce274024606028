"""Sealed blobs: the inputs kept at rest, encrypted and bound to what they are (docs/data.md).

AES-256-GCM (``cryptography``'s AESGCM) with a random 96-bit nonce per blob. A blob, format 1::

    offset  size    what
    0       4       magic ``EFSB``
    4       1       format version (1)
    5       8       key id: the keyring key it is sealed under
    13      12      nonce
    25      n + 16  ciphertext, then the GCM tag

The associated data is the 13-byte header followed by the blob's identity (:func:`identity`: what
it is and whose, e.g. ``sample``, a device id and a result id). A blob opened under another identity
fails exactly as a tampered one does, so a blob copied over another input's row or file cannot be
read as that input; the key id is authenticated too. A :class:`Keyring` holds several keys: the
current one seals, every one it holds opens (old blobs stay readable until they are sealed again
under the new key and the old key is retired). Keys never appear in a ``repr``.

Everything here is pure (the nonce and a new key come from ``os.urandom`` unless a test passes
them); :mod:`protocol.keyring` keeps a keyring in a file.

SealedError (a ProtocolError)
 ├── NotSealed     bytes that are not a sealed blob (too short, no magic, an unknown format)
 ├── UnknownKey    sealed under a key the keyring does not hold (retired, or another keyring's)
 ├── Tampered      authentication failed: altered bytes, or the blob of another identity
 └── KeyringError  a keyring that does not parse, or a keyring file that cannot be used
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from protocol.errors import ProtocolError

MAGIC = b"EFSB"
VERSION = 1
KEY_ID_BYTES = 8
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
HEADER_BYTES = len(MAGIC) + 1 + KEY_ID_BYTES
OVERHEAD = HEADER_BYTES + NONCE_BYTES + TAG_BYTES
"""Bytes a sealed blob has beyond its plaintext (41)."""
KEYRING_FORMAT = "edgefleet-keyring"


class SealedError(ProtocolError):
    """A blob that cannot be opened, or a keyring that cannot be used (the message says why)."""


class NotSealed(SealedError):
    pass


class UnknownKey(SealedError):
    def __init__(self, message: str, key_id: str) -> None:
        super().__init__(message)
        self.key_id = key_id


class Tampered(SealedError):
    pass


class KeyringError(SealedError):
    pass


# -- blobs (pure) ----------------------------------------------------------------------------------


def identity(kind: str, *parts: str) -> bytes:
    """The associated data naming a blob: ``kind`` and its parts, NUL-separated (none may hold a
    NUL, so two different identities never give the same bytes)."""
    fields = (kind, *parts)
    if any("\x00" in f for f in fields) or not kind:
        raise ValueError(f"an identity is a non-empty kind and parts without NUL, got {fields!r}")
    return "\x00".join(fields).encode()


def header(key_id: str) -> bytes:
    return MAGIC + bytes([VERSION]) + _key_id_bytes(key_id)


def seal(
    secret: bytes, key_id: str, plaintext: bytes, context: bytes, *, nonce: bytes | None = None
) -> bytes:
    """``plaintext`` sealed under ``secret`` (32 bytes, named ``key_id``) for ``context``."""
    if len(secret) != KEY_BYTES:
        raise ValueError(f"a data key is {KEY_BYTES} bytes, got {len(secret)}")
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"a nonce is {NONCE_BYTES} bytes, got {len(nonce)}")
    head = header(key_id)
    return head + nonce + AESGCM(secret).encrypt(nonce, plaintext, head + context)


def key_id_of(blob: bytes) -> str:
    """The id of the key a blob is sealed under; :class:`NotSealed` for other bytes."""
    if len(blob) < OVERHEAD or blob[: len(MAGIC)] != MAGIC:
        raise NotSealed("not a sealed blob (no EFSB header): stored before encryption, or damaged")
    if blob[len(MAGIC)] != VERSION:
        raise NotSealed(
            f"a sealed blob of format {blob[len(MAGIC)]}, which this version does not read "
            f"(it reads format {VERSION}): upgrade edgefleet"
        )
    return blob[len(MAGIC) + 1 : HEADER_BYTES].hex()


def is_sealed(blob: bytes) -> bool:
    try:
        key_id_of(blob)
    except NotSealed:
        return False
    return True


def open_sealed(secret: bytes, blob: bytes, context: bytes) -> bytes:
    """The plaintext of ``blob`` sealed under ``secret`` for ``context``; :class:`Tampered` when
    it was altered or sealed for another identity."""
    key_id_of(blob)
    head, nonce, body = (
        blob[:HEADER_BYTES],
        blob[HEADER_BYTES : HEADER_BYTES + NONCE_BYTES],
        blob[HEADER_BYTES + NONCE_BYTES :],
    )
    try:
        return AESGCM(secret).decrypt(nonce, body, head + context)
    except InvalidTag:
        raise Tampered(
            "the sealed blob does not authenticate: it was altered, or it belongs to another input"
        ) from None


def _key_id_bytes(key_id: str) -> bytes:
    try:
        raw = bytes.fromhex(key_id)
    except ValueError:
        raw = b""
    if len(raw) != KEY_ID_BYTES:
        raise ValueError(f"a key id is {2 * KEY_ID_BYTES} hex digits, got {key_id!r}")
    return raw


# -- keyrings (pure) -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataKey:
    """One AES-256 key of a keyring. ``secret`` is left out of the ``repr``."""

    id: str
    created_at: float
    secret: bytes = field(repr=False)

    @classmethod
    def generate(cls, now: float, *, secret: bytes | None = None) -> DataKey:
        secret = AESGCM.generate_key(bit_length=256) if secret is None else secret
        if len(secret) != KEY_BYTES:
            raise ValueError(f"a data key is {KEY_BYTES} bytes, got {len(secret)}")
        return cls(os.urandom(KEY_ID_BYTES).hex(), now, secret)


@dataclass(frozen=True)
class Keyring:
    """Keys by id; ``current_id`` seals, every key opens. Immutable: rotation makes a new one."""

    keys: tuple[DataKey, ...]
    current_id: str

    def __post_init__(self) -> None:
        ids = [k.id for k in self.keys]
        if len(set(ids)) != len(ids):
            raise KeyringError("a keyring names a key twice")
        if self.current_id not in ids:
            raise KeyringError(f"the keyring's current key {self.current_id} is not in it")
        for key in self.keys:
            _key_id_bytes(key.id)
            if len(key.secret) != KEY_BYTES:
                raise KeyringError(f"key {key.id} is not {KEY_BYTES} bytes")

    @classmethod
    def new(cls, now: float) -> Keyring:
        key = DataKey.generate(now)
        return cls((key,), key.id)

    @property
    def current(self) -> DataKey:
        return next(k for k in self.keys if k.id == self.current_id)

    @property
    def ids(self) -> list[str]:
        return [k.id for k in self.keys]

    def get(self, key_id: str) -> DataKey | None:
        return next((k for k in self.keys if k.id == key_id), None)

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        key = self.current
        return seal(key.secret, key.id, plaintext, context)

    def open(self, blob: bytes, context: bytes) -> bytes:
        key_id = key_id_of(blob)
        key = self.get(key_id)
        if key is None:
            raise UnknownKey(
                f"sealed under key {key_id}, which this keyring does not hold (it was retired, "
                "or the blob comes from another keyring)",
                key_id,
            )
        return open_sealed(key.secret, blob, context)

    def rotated(self, now: float, *, secret: bytes | None = None) -> Keyring:
        """A keyring with a new current key; the old keys stay, to open old blobs."""
        key = DataKey.generate(now, secret=secret)
        return Keyring((*self.keys, key), key.id)

    def without(self, ids: set[str]) -> Keyring:
        """The keyring less the keys ``ids`` (retired: what they sealed can no longer be read)."""
        if self.current_id in ids:
            raise KeyringError(f"key {self.current_id} is the current key: it cannot be retired")
        return Keyring(tuple(k for k in self.keys if k.id not in ids), self.current_id)

    # -- as a document --

    def to_json(self) -> bytes:
        document = {
            "format": KEYRING_FORMAT,
            "version": 1,
            "current": self.current_id,
            "keys": [
                {"id": k.id, "created_at": k.created_at,
                 "secret": base64.b64encode(k.secret).decode()}
                for k in self.keys
            ],
        }  # fmt: skip
        return (json.dumps(document, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> Keyring:
        try:
            document: Any = json.loads(data)
            if not isinstance(document, dict) or document.get("format") != KEYRING_FORMAT:
                raise KeyringError(f'not an edgefleet keyring (no "format": {KEYRING_FORMAT!r})')
            if document.get("version") != 1:
                raise KeyringError(
                    f"a keyring of version {document.get('version')!r}; this version reads 1"
                )
            keys = tuple(
                DataKey(str(k["id"]), float(k["created_at"]),
                        base64.b64decode(k["secret"], validate=True))
                for k in document["keys"]
            )  # fmt: skip
            return cls(keys, str(document["current"]))
        except KeyringError:
            raise
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            # The message names the problem, never a key's bytes.
            raise KeyringError(f"the keyring does not parse ({type(exc).__name__})") from None
