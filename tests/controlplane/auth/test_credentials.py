"""Passwords (Argon2id), token and session secrets."""

from __future__ import annotations

import argon2
import pytest

from controlplane.auth.credentials import (
    Passwords,
    check_password,
    digest,
    generate_password,
    new_token,
    parse_token,
    same_digest,
    token_digest,
)


def test_argon2id_hash_verifies_the_password_and_nothing_else() -> None:
    passwords = Passwords()
    stored = passwords.hash("correct horse battery staple")
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$"), "RFC 9106 low-memory profile"
    assert "correct horse" not in stored
    assert passwords.verify(stored, "correct horse battery staple")
    assert not passwords.verify(stored, "correct horse battery stapl")
    assert not passwords.verify(stored, "")
    assert not passwords.verify("not a hash", "correct horse battery staple")
    assert stored != passwords.hash("correct horse battery staple"), "a fresh salt each time"
    assert not passwords.needs_rehash(stored)


def test_no_stored_hash_never_verifies() -> None:
    assert not Passwords().verify(None, "anything at all")


def test_a_hash_with_older_parameters_is_rehashed() -> None:
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    stored = weak.hash("correct horse battery staple")
    passwords = Passwords()
    assert passwords.verify(stored, "correct horse battery staple")
    assert passwords.needs_rehash(stored)


@pytest.mark.parametrize(
    ("password", "ok"), [("short", False), ("x" * 11, False), ("x" * 12, True), ("x" * 1025, False)]
)
def test_password_policy(password: str, ok: bool) -> None:
    if ok:
        assert check_password(password) == password
    else:
        with pytest.raises(ValueError, match="characters"):
            check_password(password)
    assert len(generate_password()) >= 20


def test_tokens_have_a_public_id_and_a_secret_kept_as_a_digest() -> None:
    token_id, token = new_token()
    assert token.startswith(f"eft_{token_id}_") and len(token_id) == 12
    parsed = parse_token(token)
    assert parsed is not None and parsed[0] == token_id
    assert token_digest(token) == digest(parsed[1]) and parsed[1] not in token_digest(token)
    assert same_digest(parsed[1], token_digest(token))
    assert not same_digest(parsed[1] + "x", token_digest(token))
    assert new_token()[1] != token
    for bad in ["", "eft_", f"eft_{token_id}", f"Bearer {token}", token + "x", token[:-1]]:
        assert parse_token(bad) is None, bad
