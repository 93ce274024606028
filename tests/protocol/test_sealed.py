"""Sealed blobs and keyrings (pure): the round trip, the layout, and every way a blob is refused:
altered bytes in each part, another identity, a key the keyring does not hold."""

from __future__ import annotations

import pytest

from protocol.sealed import (
    HEADER_BYTES,
    KEY_ID_BYTES,
    NONCE_BYTES,
    OVERHEAD,
    DataKey,
    Keyring,
    KeyringError,
    NotSealed,
    Tampered,
    UnknownKey,
    identity,
    is_sealed,
    key_id_of,
    open_sealed,
    seal,
)

SECRET = bytes(range(32))
KEY_ID = "0123456789abcdef"
CONTEXT = identity("sample", "cam-1", "r1")


@pytest.mark.parametrize("plaintext", [b"", b"x", b"\x89PNG\r\n\x1a\n" + b"p" * 1000, bytes(2**20)])
def test_a_blob_opens_to_what_was_sealed(plaintext: bytes) -> None:
    blob = seal(SECRET, KEY_ID, plaintext, CONTEXT)
    assert len(blob) == len(plaintext) + OVERHEAD
    assert blob[:4] == b"EFSB" and blob[4] == 1 and key_id_of(blob) == KEY_ID
    assert open_sealed(SECRET, blob, CONTEXT) == plaintext


def test_each_blob_has_its_own_nonce() -> None:
    one, two = (seal(SECRET, KEY_ID, b"same input", CONTEXT) for _ in range(2))
    assert one != two
    assert (
        one[HEADER_BYTES : HEADER_BYTES + NONCE_BYTES]
        != two[HEADER_BYTES : HEADER_BYTES + NONCE_BYTES]
    )


def test_the_plaintext_is_not_in_the_blob() -> None:
    marker = b"MARKER-do-not-store-in-clear" * 4
    assert marker not in seal(SECRET, KEY_ID, marker, CONTEXT)


BLOB = seal(SECRET, KEY_ID, b"an input worth protecting", CONTEXT, nonce=bytes(NONCE_BYTES))


def _flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1 :]


@pytest.mark.parametrize(
    ("altered", "error", "words"),
    [
        (_flip(BLOB, 0), NotSealed, "no EFSB header"),  # magic
        (_flip(BLOB, 4), NotSealed, "format"),  # version
        (_flip(BLOB, 5), Tampered, "does not authenticate"),  # key id (the same secret tried)
        (_flip(BLOB, HEADER_BYTES), Tampered, "does not authenticate"),  # nonce
        (_flip(BLOB, HEADER_BYTES + NONCE_BYTES), Tampered, "altered"),  # ciphertext
        (_flip(BLOB, len(BLOB) - 1), Tampered, "altered"),  # tag
        (BLOB[:-1], Tampered, "altered"),  # cut short
        (BLOB[: OVERHEAD - 1], NotSealed, "no EFSB header"),  # shorter than any blob
        (b"\x89PNG\r\n\x1a\n" + b"p" * 100, NotSealed, "before encryption"),  # plaintext
    ],
)
def test_an_altered_blob_is_refused(altered: bytes, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        open_sealed(SECRET, altered, CONTEXT)


@pytest.mark.parametrize(
    "other",
    [
        identity("sample", "cam-1", "r2"),  # another result of the same device
        identity("sample", "cam-2", "r1"),  # the same result id of another device
        identity("deferred", "cam-1", "r1"),  # another kind of input
        identity("sample", "cam-1r1"),  # the same characters split otherwise
    ],
)
def test_a_blob_does_not_open_as_another_input(other: bytes) -> None:
    with pytest.raises(Tampered, match="belongs to another input"):
        open_sealed(SECRET, BLOB, other)


def test_identity_refuses_parts_that_could_run_together() -> None:
    with pytest.raises(ValueError, match="NUL"):
        identity("sample", "a\x00b")
    with pytest.raises(ValueError):
        identity("")


def test_a_wrong_secret_is_refused() -> None:
    with pytest.raises(Tampered):
        open_sealed(bytes(32), BLOB, CONTEXT)


def test_is_sealed() -> None:
    assert is_sealed(BLOB)
    assert not is_sealed(b"plain bytes of an input before encryption, long enough to look")


# -- keyrings --------------------------------------------------------------------------------------


def test_a_rotated_keyring_opens_old_and_new_blobs_and_seals_with_the_new_key() -> None:
    ring = Keyring.new(1000.0)
    old = ring.seal(b"sealed under key 1", CONTEXT)
    rotated = ring.rotated(2000.0)
    new = rotated.seal(b"sealed under key 2", CONTEXT)
    assert key_id_of(old) == ring.current_id != rotated.current_id == key_id_of(new)
    assert rotated.open(old, CONTEXT) == b"sealed under key 1"
    assert rotated.open(new, CONTEXT) == b"sealed under key 2"
    retired = rotated.without({ring.current_id})
    assert retired.ids == [rotated.current_id]
    assert retired.open(new, CONTEXT) == b"sealed under key 2"
    with pytest.raises(UnknownKey, match="does not hold") as caught:
        retired.open(old, CONTEXT)
    assert caught.value.key_id == ring.current_id


def test_the_current_key_cannot_be_retired() -> None:
    ring = Keyring.new(1.0)
    with pytest.raises(KeyringError, match="current key"):
        ring.without({ring.current_id})


def test_a_keyring_survives_its_document_and_never_shows_a_key() -> None:
    ring = Keyring.new(1.0).rotated(2.0)
    again = Keyring.from_json(ring.to_json())
    assert again == ring
    for key in ring.keys:
        assert key.secret.hex() not in repr(ring) and str(key.secret) not in repr(key)
    assert len(bytes.fromhex(ring.current_id)) == KEY_ID_BYTES


@pytest.mark.parametrize(
    ("document", "words"),
    [
        (b"not json", "does not parse"),
        (b'{"format": "something-else"}', "not an edgefleet keyring"),
        (b'{"format": "edgefleet-keyring", "version": 9}', "version 9"),
        (b'{"format": "edgefleet-keyring", "version": 1, "current": "x", "keys": []}',
         "not in it"),
        (b'{"format": "edgefleet-keyring", "version": 1, "current": "0011223344556677",'
         b' "keys": [{"id": "0011223344556677", "created_at": 1, "secret": "c2hvcnQ="}]}',
         "not 32 bytes"),
        (b'{"format": "edgefleet-keyring", "version": 1, "current": "0011223344556677",'
         b' "keys": [{"id": "0011223344556677", "created_at": 1, "secret": "!!"}]}',
         "does not parse"),
    ],
)  # fmt: skip
def test_a_bad_keyring_document_is_refused(document: bytes, words: str) -> None:
    with pytest.raises(KeyringError, match=words):
        Keyring.from_json(document)


def test_data_keys_are_32_random_bytes() -> None:
    one, two = DataKey.generate(1.0), DataKey.generate(1.0)
    assert len(one.secret) == 32 and one.secret != two.secret and one.id != two.id
    with pytest.raises(ValueError, match="32 bytes"):
        DataKey.generate(1.0, secret=b"short")
