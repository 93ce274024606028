"""The release key: created once with tight modes, reused, refused when others may read it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from controlplane.errors import ConfigError
from controlplane.registry.keys import ReleaseKey
from protocol.release import Release, open_release, seal_release
from protocol.signing import public_key_from_text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_created_on_first_use_with_0600_in_0700_and_reused(tmp_path: Path) -> None:
    key = ReleaseKey.load_or_create(tmp_path / "data")
    path = tmp_path / "data" / "keys" / "release-ed25519.pem"
    assert key.path == path and path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temporary file left"
    again = ReleaseKey.load_or_create(tmp_path / "data")
    assert again.key_id == key.key_id and again.public_text == key.public_text
    assert public_key_from_text(key.public_text) is not None


def test_the_private_key_is_not_in_the_repr(tmp_path: Path) -> None:
    key = ReleaseKey.load_or_create(tmp_path)
    text = repr(key) + str(key)
    assert text.startswith("ReleaseKey(path=") and "Ed25519PrivateKey" not in text
    assert key.path.read_text().splitlines()[1] not in text


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_key_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    key = ReleaseKey.load_or_create(tmp_path)
    os.chmod(key.path, mode)
    with pytest.raises(ConfigError, match="chmod 600") as info:
        ReleaseKey.load_or_create(tmp_path)
    assert str(key.path) in str(info.value) and f"{mode:04o}" in str(info.value)


def test_a_broken_key_file_is_a_clear_error(tmp_path: Path) -> None:
    key = ReleaseKey.load_or_create(tmp_path)
    key.path.write_bytes(b"not a key")
    with pytest.raises(ConfigError, match="not a PEM private key"):
        ReleaseKey.load_or_create(tmp_path)


def test_an_unwritable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="release key"):
        ReleaseKey.load_or_create(tmp_path / "file")


def test_it_signs_what_its_public_key_verifies(tmp_path: Path) -> None:
    key = ReleaseKey.load_or_create(tmp_path)
    release = Release.model_validate(
        {"name": "m", "version": "1", "seq": 1, "created_at": 1.0,
         "inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}],
         "outputs": [{"name": "y", "shape": [1], "datatype": "FP32"}],
         "artifacts": {"cpu": {"sha256": "a" * 64, "size": 1, "format": "tflite"}}}
    )  # fmt: skip
    assert open_release(seal_release(key.private, release), key.public).release == release
