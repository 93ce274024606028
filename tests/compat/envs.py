"""One virtual environment per foreign stack, built once and cached by a hash of its pins.

Triton's client, KServe and MLServer each generate a protobuf package named ``inference``: two of
them in one process fail, and none belongs in the project's own environment. So each stack gets
a venv of its own, built from ``tests/compat/requirements/{stack}.txt`` (a full ``pip freeze``),
and its servers and drivers run as separate processes.

The venvs live under ``.venv-compat/`` at the repository root (git-ignored), or wherever
``EDGEFLEET_COMPAT_DIR`` points (``.ci/run`` points it outside the checkout so that CI's fresh
clones reuse them), in ``{stack}-{key}`` where the key hashes the requirements file, the Python
version and the platform: a second run, or CI with a warm cache, skips the install, and a changed
pin builds a new venv and removes the old one. pip's own download cache is left on, so a cold
build downloads nothing it has fetched before. A venv counts as built only once pip has succeeded
(a ``.complete`` stamp), and builds hold a file lock, so two test runs never share a half-built
venv.

    python -m tests.compat.envs            # build (or check) every stack, print where each is
    python -m tests.compat.envs kserve     # just one
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = Path(__file__).resolve().parent / "requirements"
STACKS = ("pytriton", "kserve", "mlserver", "tritonclient")
INSTALL_TIMEOUT_S = 900


class EnvError(RuntimeError):
    """A stack's environment could not be built; the message carries pip's last lines."""


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEFLEET_COMPAT_DIR") or ROOT / ".venv-compat")


def requirements(stack: str) -> Path:
    path = REQUIREMENTS / f"{stack}.txt"
    if not path.is_file():
        raise EnvError(f"unknown stack {stack!r}: no {path}")
    return path


def env_key(requirements_text: str, python: str, machine: str) -> str:
    """The cache key: changes when a pin, the Python version or the platform changes."""
    digest = hashlib.sha256()
    for part in (requirements_text, python, machine):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def env_path(stack: str) -> Path:
    key = env_key(
        requirements(stack).read_text(),
        ".".join(map(str, sys.version_info[:3])),
        f"{sys.platform}-{platform.machine()}",
    )
    return cache_dir() / f"{stack}-{key}"


def python(stack: str) -> Path:
    """The interpreter of the stack's venv, building the venv first if it is not cached."""
    path = env_path(stack)
    if not _complete(path):
        with _lock(cache_dir() / f".{stack}.lock"):
            if not _complete(path):
                _build(stack, path)
    return path / "bin" / "python"


def _complete(path: Path) -> bool:
    return (path / ".complete").is_file() and (path / "bin" / "python").exists()


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(stack: str, path: Path) -> None:
    started = time.monotonic()
    # venvs hard-code their own path in scripts and pyvenv.cfg: build where the venv will live,
    # marked incomplete until pip is done (the ``.complete`` stamp), instead of moving it later.
    shutil.rmtree(path, ignore_errors=True)
    log = path.with_name(f".{path.name}.log")
    with log.open("w") as out:
        for argv in (
            [sys.executable, "-m", "venv", str(path)],
            [str(path / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
             "--quiet", "--no-input", "-r", str(requirements(stack))],
        ):  # fmt: skip
            done = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                timeout=INSTALL_TIMEOUT_S, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                tail = _tail(log)
                raise EnvError(f"building the {stack} environment failed ({argv[-1]}):\n{tail}")
    (path / ".complete").write_text(f"built in {time.monotonic() - started:.0f} s\n")
    log.unlink(missing_ok=True)
    for old in cache_dir().glob(f"{stack}-*"):
        if old != path and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def _tail(log: Path, lines: int = 30) -> str:
    text = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if "is neither a file nor a directory" not in line  # a pip.conf's missing local index
    ]
    return "\n".join(text[-lines:])


def main(argv: list[str]) -> int:
    for stack in argv or STACKS:
        started = time.monotonic()
        try:
            where = python(stack)
        except EnvError as exc:
            print(f"compat envs: {exc}", file=sys.stderr)
            return 1
        print(f"{stack}: {where} ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
