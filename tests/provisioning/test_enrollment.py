"""Enrollment tokens: what a stored token allows, at a given time (a table)."""

from __future__ import annotations

import pytest

from provisioning.enrollment import (
    MAX_TTL_S,
    TOKEN_PREFIX,
    TokenRow,
    check_token,
    check_ttl,
    new_token,
    token_hash,
)
from provisioning.errors import TokenExpired, TokenRefused, TokenUnknown, TokenUsed

NOW = 1_000_000.0


@pytest.mark.parametrize(
    ("row", "outcome", "status"),
    [
        (TokenRow("cam-1", NOW + 60, None), "cam-1", None),
        (None, TokenUnknown, 401),
        (TokenRow("cam-1", NOW, None), TokenExpired, 401),  # expiry is exclusive
        (TokenRow("cam-1", NOW - 1, None), TokenExpired, 401),
        (TokenRow("cam-1", NOW + 60, NOW - 5), TokenUsed, 403),
        (TokenRow("cam-1", NOW - 60, NOW - 90), TokenUsed, 403),  # used, then expired: used
    ],
)
def test_check_token(row: TokenRow | None, outcome: object, status: int | None) -> None:
    if isinstance(outcome, str):
        assert check_token(row, NOW) == outcome
        return
    assert isinstance(outcome, type)
    with pytest.raises(outcome) as info:
        check_token(row, NOW)
    assert isinstance(info.value, TokenRefused) and info.value.status == status
    assert "ask an operator for a new one" in str(info.value)


def test_tokens_are_random_and_stored_as_a_hash() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    token = tokens.pop()
    assert token.startswith(TOKEN_PREFIX) and len(token) > 40
    assert token_hash(token) == token_hash(token) and token not in token_hash(token)
    assert len(token_hash(token)) == 64


@pytest.mark.parametrize("ttl", [0, -1, MAX_TTL_S + 1])
def test_a_token_lifetime_is_bounded(ttl: float) -> None:
    with pytest.raises(ValueError, match="at most 30 days"):
        check_ttl(ttl)
    assert check_ttl(3600) == 3600
