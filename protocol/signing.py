"""Ed25519 signatures over canonical JSON: releases and desired states (see docs/protocol.md).

The control plane signs; devices verify with the release public key they were given at
provisioning. What is signed is the canonical JSON of a document (keys sorted, no spaces,
UTF-8), so a signature survives any re-serialisation that keeps the values: the signed object
travels as ordinary JSON next to its :class:`Signature`.

The private key never leaves the control plane's data directory (``controlplane/keys.py``); this
module only turns keys into bytes and back, signs and verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from protocol.errors import ProtocolError

PUBLIC_KEY_PREFIX = "ed25519:"


class SignatureError(ProtocolError):
    """A signature that does not verify, a key that does not parse, or a key we do not know."""


class Signature(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    algorithm: Literal["ed25519"] = "ed25519"
    key_id: str = Field(description="The first 16 hex digits of SHA-256 over the raw public key.")
    value: str = Field(description="The 64-byte signature, base64.")


def canonical_json(document: Any) -> bytes:
    """The bytes that are signed: sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_to_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def private_key_from_pem(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"not an Ed25519 private key: {type(key).__name__}")
    return key


def public_key_text(key: Ed25519PublicKey) -> str:
    """``ed25519:`` and the raw 32-byte key in base64: one line for a config file."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode()


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """Parse what :func:`public_key_text` wrote (surrounding whitespace allowed)."""
    text = text.strip()
    if not text.startswith(PUBLIC_KEY_PREFIX):
        raise SignatureError(f"a release public key starts with {PUBLIC_KEY_PREFIX!r}")
    try:
        raw = base64.b64decode(text[len(PUBLIC_KEY_PREFIX) :], validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"not an Ed25519 public key: {exc}") from None


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, document: Any) -> Signature:
    """Sign the canonical JSON of ``document`` (a JSON-able value)."""
    value = key.sign(canonical_json(document))
    return Signature(key_id=key_id(key.public_key()), value=base64.b64encode(value).decode())


def verify(key: Ed25519PublicKey, document: Any, signature: Signature) -> None:
    """Return if ``signature`` is ``key``'s over ``document``, else raise SignatureError."""
    expected = key_id(key)
    if signature.key_id != expected:
        raise SignatureError(
            f"signed with key {signature.key_id}, but this device trusts key {expected}"
        )
    try:
        value = base64.b64decode(signature.value, validate=True)
        key.verify(value, canonical_json(document))
    except (binascii.Error, ValueError, _CryptoInvalidSignature):
        raise SignatureError("the signature does not match the document (tampered?)") from None
