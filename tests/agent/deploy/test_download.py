"""Resumable download against a real HTTP server serving a real model file with Range."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.deploy import DownloadError
from agent.deploy.download import download
from tests.agent.deploy.releases import FP32, ArtifactServer


@pytest.fixture
async def server() -> AsyncIterator[ArtifactServer]:
    s = ArtifactServer()
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


async def test_full_download(server: ArtifactServer, tmp_path: Path) -> None:
    sha = server.add(FP32)
    part = tmp_path / "slot" / "model.tflite.part"
    seen: list[int] = []
    got = await download(
        f"{server.url}/artifacts/{sha}", part, size=FP32.stat().st_size, on_progress=seen.append
    )
    assert got.sha256 == sha and got.size == FP32.stat().st_size and got.resumed_from == 0
    assert part.read_bytes() == FP32.read_bytes()
    assert seen[-1] == got.size and seen == sorted(seen)
    assert server.ranges == [None]


async def test_resumes_with_range(server: ArtifactServer, tmp_path: Path) -> None:
    sha = server.add(FP32)
    data = FP32.read_bytes()
    part = tmp_path / "model.tflite.part"
    part.write_bytes(data[:20000])
    got = await download(f"{server.url}/artifacts/{sha}", part, size=len(data))
    assert server.ranges == ["bytes=20000-"]
    assert got.resumed_from == 20000 and got.sha256 == sha
    assert part.read_bytes() == data


async def test_an_interrupted_download_resumes(server: ArtifactServer, tmp_path: Path) -> None:
    """The server stalls mid-file; the attempt is abandoned and the next continues with Range."""
    sha = server.add(FP32)
    size = FP32.stat().st_size
    server.stall_after = 30000
    part = tmp_path / "model.tflite.part"
    got = await download(f"{server.url}/artifacts/{sha}", part, size=size, read_timeout=0.5)
    assert server.ranges == [None, "bytes=30000-"]
    assert got.sha256 == sha and got.resumed_from == 30000


async def test_a_complete_part_needs_no_request(server: ArtifactServer, tmp_path: Path) -> None:
    part = tmp_path / "model.tflite.part"
    part.write_bytes(FP32.read_bytes())
    got = await download("http://127.0.0.1:9/nowhere", part, size=FP32.stat().st_size)
    assert got.sha256 == hashlib.sha256(FP32.read_bytes()).hexdigest()


async def test_a_wrong_file_is_returned_with_its_real_hash(
    server: ArtifactServer, tmp_path: Path
) -> None:
    """download() moves bytes; the caller compares the hash (the tampered-artifact case)."""
    server.files["f" * 64] = FP32
    part = tmp_path / "model.tflite.part"
    got = await download(f"{server.url}/artifacts/{'f' * 64}", part, size=FP32.stat().st_size)
    assert got.sha256 != "f" * 64


async def test_too_many_bytes_is_an_error(server: ArtifactServer, tmp_path: Path) -> None:
    sha = server.add(FP32)
    with pytest.raises(DownloadError, match="more than the release"):
        await download(f"{server.url}/artifacts/{sha}", tmp_path / "p", size=100)


async def test_not_found_is_not_retried(server: ArtifactServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        await download(f"{server.url}/artifacts/{'0' * 64}", tmp_path / "p", size=100)
    assert len(server.ranges) == 1


async def test_no_server_fails_after_the_attempts(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="after 2 attempts"):
        await asyncio.wait_for(
            download("http://127.0.0.1:9/a", tmp_path / "p", size=10, attempts=2), 30
        )
