"""The keyring file: created on first use (0600 in a 0700 directory), refused when others may read
it, rotated and retired on disk, the same keys for two readers, and wrapped by a key that is not
on the disk (a systemd credential or the environment)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from protocol.keyring import KeyringFile, wrapping_key
from protocol.sealed import KeyringError, UnknownKey, identity, is_sealed

CONTEXT = identity("sample", "r1")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_created_on_first_use_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "data" / "keys" / "data-keyring.json"
    keys = KeyringFile(path)
    ring = keys.load()
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert keys.load() is ring  # loaded once
    again = KeyringFile(path).load()
    assert again == ring
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    assert "secret" not in repr(keys) and ring.current.secret.hex() not in repr(keys)


def test_a_keyring_others_may_read_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "data-keyring.json"
    KeyringFile(path).load()
    path.chmod(0o644)
    with pytest.raises(KeyringError, match=r"mode 0644.*chmod 600 .*data-keyring.json"):
        KeyringFile(path).load()


def test_a_damaged_keyring_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "data-keyring.json"
    KeyringFile(path).load()
    path.write_text("{")
    with pytest.raises(KeyringError, match=f"keyring {path}: the keyring does not parse"):
        KeyringFile(path).load()


def test_rotation_and_retirement_are_kept_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "data-keyring.json"
    keys = KeyringFile(path, clock=lambda: 5.0)
    first = keys.load().current
    old_blob = keys.seal(b"under the first key", CONTEXT)
    second = keys.rotate()
    assert second.id != first.id and second.created_at == 5.0
    new_blob = keys.seal(b"under the second key", CONTEXT)
    reader = KeyringFile(path)
    assert reader.load().current_id == second.id
    assert reader.open(old_blob, CONTEXT) == b"under the first key"
    assert reader.open(new_blob, CONTEXT) == b"under the second key"
    assert keys.retire({first.id, "ffffffffffffffff"}) == [first.id]
    assert [k["id"] for k in json.loads(path.read_text())["keys"]] == [second.id]
    assert mode(path) == 0o600
    fresh = KeyringFile(path)
    fresh.load()
    with pytest.raises(UnknownKey):
        fresh.open(old_blob, CONTEXT)  # retired: what it sealed is unreadable for good
    with pytest.raises(KeyringError, match="current key"):
        keys.retire({second.id})


def test_reload_sees_another_process_rotation(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "data-keyring.json"
    mine, theirs = KeyringFile(path), KeyringFile(path)
    mine.load()
    theirs.load()
    rotated = theirs.rotate()
    assert mine.ring.current_id != rotated.id
    assert mine.reload().current_id == rotated.id


def test_an_unloaded_keyring_says_so(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="not loaded"):
        KeyringFile(tmp_path / "k.json").seal(b"x", CONTEXT)


# -- a wrapping key off the disk (systemd credential or environment) -------------------------------

WRAP = bytes(range(100, 132))


def test_a_wrapped_keyring_opens_only_with_its_wrapping_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "data-keyring.json"
    ring = KeyringFile(path, wrap=WRAP).load()
    on_disk = path.read_bytes()
    assert is_sealed(on_disk) and b"secret" not in on_disk
    assert base64.b64encode(ring.current.secret) not in on_disk
    assert KeyringFile(path, wrap=lambda: WRAP).load() == ring
    with pytest.raises(KeyringError, match="it is wrapped: give its wrapping key"):
        KeyringFile(path).load()
    with pytest.raises(KeyringError, match="does not open it"):
        KeyringFile(path, wrap=bytes(32)).load()
    rotating = KeyringFile(path, wrap=WRAP)
    rotating.load()
    rotating.rotate()
    assert is_sealed(path.read_bytes())
    assert KeyringFile(path, wrap=WRAP).load().current_id == rotating.ring.current_id


def test_a_plain_keyring_is_wrapped_once_a_wrapping_key_is_given(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "data-keyring.json"
    ring = KeyringFile(path).load()
    assert KeyringFile(path, wrap=WRAP).load() == ring
    assert is_sealed(path.read_bytes()) and mode(path) == 0o600


@pytest.mark.parametrize(
    ("environ", "credential", "expected"),
    [
        ({}, None, None),
        ({"EDGEFLEET_DATA_KEY": base64.b64encode(WRAP).decode()}, None, WRAP),
        ({}, WRAP, WRAP),  # a raw credential
        ({}, base64.b64encode(WRAP) + b"\n", WRAP),  # `openssl rand -base64 32 > file`
        ({"EDGEFLEET_DATA_KEY": "ignored: the credential wins"}, WRAP, WRAP),
    ],
)
def test_the_wrapping_key_comes_from_a_credential_or_the_environment(
    tmp_path: Path, environ: dict[str, str], credential: bytes | None, expected: bytes | None
) -> None:
    if credential is not None:
        (tmp_path / "edgefleet-data-key").write_bytes(credential)
        environ = {**environ, "CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert wrapping_key(environ) == expected


def test_a_wrapping_key_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(KeyringError, match="EDGEFLEET_DATA_KEY is not 32 bytes"):
        wrapping_key({"EDGEFLEET_DATA_KEY": "c2hvcnQ="})
