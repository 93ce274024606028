"""Resumable artifact download over HTTP with ``Range`` (aiohttp client).

The bytes go to a ``.part`` file that survives a crash; the next attempt (or the next start of the
agent) asks for the rest with ``Range: bytes=N-``. A server that ignores the range (200) or no
longer has it (416) makes the download start over. The SHA-256 is computed while the bytes
arrive (the part already on disk is hashed once when resuming), and returned with the size for
the caller to check against the release: this module moves bytes, it does not judge them.

Each attempt is signed by the device's key when the agent has an identity (the signer in
:data:`agent.identity.signer.current`; docs/security.md), so a revoked device is refused (403:
not retried).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from yarl import URL

from agent.deploy import DownloadError
from agent.errors import AgentError
from agent.identity import signer
from protocol.mqtt import backoff_delay

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
ATTEMPTS = 5
RETRY_MIN_S = 0.5
RETRY_MAX_S = 10.0


@dataclass(frozen=True)
class Downloaded:
    size: int
    sha256: str
    resumed_from: int
    """Bytes that were already on disk when the last attempt began (0: from the start)."""


class _Retry(Exception):
    """An attempt that failed in a way another attempt may fix."""


Progress = Callable[[int], None]


async def download(
    url: str,
    part: Path,
    *,
    size: int,
    read_timeout: float = 60.0,
    attempts: int = ATTEMPTS,
    on_progress: Progress | None = None,
    on_chunk: Callable[[], object] | None = None,
) -> Downloaded:
    """Fetch ``url`` into ``part`` until it holds ``size`` bytes; DownloadError after
    ``attempts`` failed tries. ``on_progress(bytes_on_disk)`` is called after every chunk;
    ``on_chunk`` (awaitable or not) after the first chunk is on disk (a test hook)."""
    part.parent.mkdir(parents=True, exist_ok=True)
    last = "no attempt"
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(
                backoff_delay(attempt - 1, RETRY_MIN_S, RETRY_MAX_S, random.random())
            )
        try:
            return await _attempt(url, part, size, read_timeout, on_progress, on_chunk)
        except _Retry as exc:
            last = str(exc)
            log.info("download of %s: %s (attempt %d of %d)", url, last, attempt + 1, attempts)
    raise DownloadError(f"download of {url} failed after {attempts} attempts: {last}")


async def _attempt(
    url: str,
    part: Path,
    size: int,
    read_timeout: float,
    on_progress: Progress | None,
    on_chunk: Callable[[], object] | None,
) -> Downloaded:
    have = _size_on_disk(part)
    if have > size:
        have = _truncate(part)
    digest = await asyncio.to_thread(_hash_file, part, have) if have else hashlib.sha256()
    if have == size:
        return Downloaded(size, digest.hexdigest(), have)
    headers = {"Range": f"bytes={have}-"} if have else {}
    target = URL(url)
    sign = signer.current.get()
    if sign is not None:
        try:
            headers.update(await sign("GET", target, b""))
        except AgentError as exc:
            raise DownloadError(f"GET {url}: cannot sign the request: {exc}") from None
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=read_timeout, sock_read=read_timeout)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(target, headers=headers) as response,
        ):
            if response.status == 416:
                _truncate(part)
                raise _Retry("the server refused the range (416); starting over")
            if response.status == 200 and have:
                have = _truncate(part)
                digest = hashlib.sha256()
            elif response.status == 206:
                start = _range_start(response.headers.get("Content-Range"))
                if start != have:
                    _truncate(part)
                    raise _Retry(f"the server answered range start {start}, not {have}")
            elif response.status != 200:
                text = (await response.text(errors="replace"))[:200]
                if response.status >= 500 or response.status == 429:
                    raise _Retry(f"HTTP {response.status}: {text}")
                raise DownloadError(f"GET {url}: HTTP {response.status}: {text}")
            resumed_from = have
            first = True
            with part.open("ab") as f:
                async for chunk in response.content.iter_chunked(CHUNK):
                    if have + len(chunk) > size:
                        f.close()
                        _truncate(part)
                        raise DownloadError(
                            f"GET {url}: the server sent more than the release's {size} bytes"
                        )
                    f.write(chunk)
                    digest.update(chunk)
                    have += len(chunk)
                    if on_progress is not None:
                        on_progress(have)
                    if first and on_chunk is not None:
                        first = False
                        f.flush()
                        os.fsync(f.fileno())
                        maybe = on_chunk()
                        if asyncio.iscoroutine(maybe):
                            await maybe
                f.flush()
                await asyncio.to_thread(os.fsync, f.fileno())
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise _Retry(f"{type(exc).__name__}: {exc}") from None
    if have != size:
        raise _Retry(f"the connection ended after {have} of {size} bytes")
    return Downloaded(size, digest.hexdigest(), resumed_from)


def _range_start(content_range: str | None) -> int | None:
    # "bytes START-END/TOTAL"
    if not content_range or not content_range.startswith("bytes "):
        return None
    start, _, _ = content_range[6:].partition("-")
    return int(start) if start.isdigit() else None


def _size_on_disk(part: Path) -> int:
    try:
        return part.stat().st_size
    except FileNotFoundError:
        return 0


def _truncate(part: Path) -> int:
    with part.open("wb"):
        pass
    return 0


def _hash_file(path: Path, length: int) -> hashlib._Hash:
    digest = hashlib.sha256()
    left = length
    with path.open("rb") as f:
        while left > 0:
            chunk = f.read(min(1 << 20, left))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
    return digest
