"""protocol.files.write_atomic: whole or nothing, with its mode from the start."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from protocol.files import write_atomic


def test_it_writes_with_the_mode_despite_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "ca.pem", b"public", 0o644)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "ca.pem").stat().st_mode) == 0o644


def test_it_replaces_a_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    key = tmp_path / "device.key"
    key.write_bytes(b"old")
    write_atomic(key, b"new", 0o600)
    assert key.read_bytes() == b"new" and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["device.key"]


def test_a_failed_write_raises_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()  # a rename over a directory fails
    with pytest.raises(OSError):
        write_atomic(target, b"data", 0o600)
    assert target.is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
