"""Writing a file whole or not at all, with its mode from the first byte (keys, certificates).

The data goes to a temporary file beside the target, created with ``mode`` (set again with
``fchmod``, since ``os.open`` masks it with the umask), fsynced, and renamed over the target:
readers see the old file or the new one, a crash never leaves half a key, and a private key is
never readable by others, not even for a moment. Both the agent and the provisioning code use it;
each translates the ``OSError`` into its own error.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` (see the module docstring); OSError on failure, with no
    temporary file left behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
