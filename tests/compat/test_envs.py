"""The compat venv cache key: a pin, the Python version or the platform changes it; nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compat import envs

BASE = ("kserve==0.21.0\nonnxruntime==1.32.0\n", "3.11.7", "linux-x86_64")


@pytest.mark.parametrize(
    ("changed", "same"),
    [
        (("kserve==0.21.1\nonnxruntime==1.32.0\n", "3.11.7", "linux-x86_64"), False),
        (("kserve==0.21.0\nonnxruntime==1.32.0\n", "3.12.1", "linux-x86_64"), False),
        (("kserve==0.21.0\nonnxruntime==1.32.0\n", "3.11.7", "linux-aarch64"), False),
        (BASE, True),
    ],
)
def test_env_key(changed: tuple[str, str, str], same: bool) -> None:
    assert (envs.env_key(*changed) == envs.env_key(*BASE)) is same
    assert len(envs.env_key(*changed)) == 12


def test_every_stack_has_pinned_requirements() -> None:
    for stack in envs.STACKS:
        lines = [
            line
            for line in envs.requirements(stack).read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        assert lines and all("==" in line for line in lines), stack


def test_an_unknown_stack_is_named() -> None:
    with pytest.raises(envs.EnvError, match="unknown stack 'nope'"):
        envs.python("nope")


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEFLEET_COMPAT_DIR", str(tmp_path))
    assert envs.env_path("kserve").parent == tmp_path
    assert envs.env_path("kserve").name.startswith("kserve-")
