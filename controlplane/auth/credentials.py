"""Secrets and how they are kept: API tokens, passwords, session ids.

**Passwords** are hashed with Argon2id (``argon2-cffi``'s :class:`argon2.PasswordHasher` with its
default parameters, RFC 9106's "low memory" profile: 64 MiB, 3 passes, 4 lanes, a 16-byte random
salt; about 0.1 s a hash here). The hash string carries its parameters, so a later change of
profile is picked up at the next login (:meth:`Passwords.needs_rehash`). A memory-hard KDF because
a stolen database must not give away passwords people reuse elsewhere.

**API tokens** look like ``eft_<id>_<secret>``: ``id`` (12 hex digits) is public (``tokens list``
shows it, the audit log records it), ``secret`` is 32 random bytes (URL-safe base64). Only the
SHA-256 of the secret is stored. A fast hash is right here, unlike for passwords: a 256-bit random
secret cannot be guessed from its hash, and a token is checked on every request.

**Session ids** (the console's cookie) are 32 random bytes, stored as their SHA-256 too, so that
a copy of the database does not hold live sessions.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

TOKEN_PREFIX = "eft_"
TOKEN_ID_HEX = 12
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # Argon2 takes any length; a megabyte "password" is a denial of service
_TOKEN = re.compile(r"^eft_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


def digest(secret: str) -> str:
    """The SHA-256 of a token secret or session id, as stored (hex)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same_digest(secret: str, stored: str) -> bool:
    """Whether ``secret`` hashes to ``stored``, in constant time."""
    return hmac.compare_digest(digest(secret), stored)


def new_token() -> tuple[str, str]:
    """A fresh token: ``(token_id, token)``; the token is shown once, its digest stored."""
    token_id = secrets.token_hex(TOKEN_ID_HEX // 2)
    return token_id, f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"


def parse_token(text: str) -> tuple[str, str] | None:
    """``(token_id, secret)`` of a well-formed token, else None."""
    match = _TOKEN.match(text)
    return (match.group(1), match.group(2)) if match else None


def token_digest(token: str) -> str:
    """The stored digest of a token (of its secret part)."""
    parsed = parse_token(token)
    if parsed is None:
        raise ValueError("not a token made by new_token()")
    return digest(parsed[1])


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def generate_password() -> str:
    """A password for people to copy once: 20 characters, about 119 bits."""
    return secrets.token_urlsafe(15)


def check_password(password: str) -> str:
    """``password`` if it is acceptable, else ValueError saying what is wrong."""
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"a password has at most {MAX_PASSWORD} characters")
    return password


class Passwords:
    """Argon2id hashing with the library's documented default parameters."""

    def __init__(self, hasher: argon2.PasswordHasher | None = None) -> None:
        self._hasher = hasher or argon2.PasswordHasher()
        self._dummy: str | None = None

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored``. With no stored hash (an unknown user, or a
        user without a password) a dummy hash is checked, so the answer takes as long either way
        and the timing does not tell which users exist."""
        if stored is None:
            if self._dummy is None:
                self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
            self._check(self._dummy, password)
            return False
        return self._check(stored, password)

    def _check(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True
