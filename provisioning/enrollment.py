"""One-time enrollment tokens: random, stored only as a hash, with an expiry; each works once.

An operator asks for a token for one device id (``edgefleet provision token ID --ttl 1h``) and
hands it to whoever installs the device; the device sends it with its CSR
(:mod:`protocol.enrollment`). The control plane keeps ``sha256(token)`` and never the token
itself, so a copy of its database enrolls nobody. 256 random bits make guessing hopeless and make
a plain hash enough (no salt or slow KDF is needed against a search of 2^256).

Whether a token works is a pure decision over its stored row and the clock
(:func:`check_token`, table-tested); consuming it is the caller's single transaction (the control
plane's store runs them one at a time on its writer thread, so of two concurrent uses exactly one
sees the token unused).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from provisioning.errors import TokenExpired, TokenUnknown, TokenUsed

TOKEN_PREFIX = "eft_"
TOKEN_BYTES = 32
MAX_TTL_S = 30 * 86400.0
"""The longest a token may live: a token is a credential in transit, not a standing one."""


def new_token() -> str:
    """A fresh token: ``eft_`` and 256 random bits, URL-safe base64."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """What is stored and looked up: the SHA-256 of the token, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_ttl(ttl_s: float) -> float:
    """``ttl_s`` when it is a usable lifetime for a token, else ValueError saying the range."""
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(
            f"a token lives more than 0 seconds and at most {MAX_TTL_S / 86400:g} days, "
            f"not {ttl_s:g} s"
        )
    return ttl_s


@dataclass(frozen=True)
class TokenRow:
    """A stored token, as the registry keeps it."""

    device_id: str
    expires_at: float
    used_at: float | None


def check_token(row: TokenRow | None, now: float) -> str:
    """The device id the token is for, when it works at ``now``; else the TokenRefused saying why.

    Used is checked before expired: a used token stays used, and the answer (403) tells an
    operator that someone did use it.
    """
    if row is None:
        raise TokenUnknown("unknown enrollment token: ask an operator for a new one")
    if row.used_at is not None:
        raise TokenUsed(
            f"this enrollment token for {row.device_id!r} has already been used: a token works "
            "once; ask an operator for a new one"
        )
    if now >= row.expires_at:
        raise TokenExpired(
            f"this enrollment token for {row.device_id!r} has expired: ask an operator for a "
            "new one"
        )
    return row.device_id
