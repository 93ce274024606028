"""The uploader against a real control plane (uvicorn on a free port, real store): inputs arrive
and leave the spool, a refusal is dropped and counted, a dead control plane keeps them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest

from agent.samples.store import KeptInput, SampleSpool
from agent.samples.uploader import Answer, Uploader, outcome, wait_s
from controlplane.settings import Settings
from tests.live import headers, live_control_plane
from tests.mosquitto import free_port

PNG = b"\x89PNG\r\n\x1a\n" + b"p" * 40


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, "uploaded"), (201, "uploaded"), (400, "rejected"), (404, "rejected"),
        (409, "rejected"), (413, "rejected"), (408, "retry"), (429, "retry"), (500, "retry"),
        (503, "retry"), (None, "retry"),
        (401, "retry"),  # a signature not taken: the device's clock, a renewal (signer.py)
        (403, "rejected"),  # a revoked device, or one that uploads as another
    ],
)  # fmt: skip
def test_outcome(status: int | None, verdict: str) -> None:
    assert outcome(status) == verdict


@pytest.mark.parametrize(
    ("failures", "rand", "retry_after", "expected"),
    [
        (1, 0.0, None, 0.5),  # never a tight loop
        (1, 1.0, None, 0.5),
        (4, 1.0, None, 4.0),
        (20, 1.0, None, 60.0),  # capped
        (1, 0.0, 7.0, 7.0),  # Retry-After is a floor
    ],
)
def test_wait(failures: int, rand: float, retry_after: float | None, expected: float) -> None:
    assert wait_s(failures, rand, retry_after) == pytest.approx(expected)


@pytest.fixture
def control_plane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    def settings(listen: str) -> Settings:
        return Settings(
            broker="mqtt://127.0.0.1:1", data_dir=tmp_path / "cp", listen=listen,
            max_sample_bytes=100,
        )  # fmt: skip

    with live_control_plane(settings, monkeypatch) as url:
        yield url


def kept(result_id: str, data: bytes = PNG) -> KeptInput:
    return KeptInput(result_id, "digits-edge", "1.0.0", "low_confidence", "image/png", 1.5e9, data)


async def drained(spool: SampleSpool) -> None:
    for _ in range(1500):
        if not (await spool.stats()).depth:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the spool did not drain")


async def test_inputs_are_uploaded_and_a_refused_one_is_dropped(
    tmp_path: Path, control_plane: str
) -> None:
    spool = SampleSpool(tmp_path / "samples.db", max_rows=100, max_bytes=10_000)
    await spool.open()
    uploader = Uploader(spool, base_url=control_plane, device_id="cam-1")
    task = asyncio.create_task(uploader.run())
    try:
        await spool.put(kept("r1"))
        await spool.put(kept("big", b"x" * 101))  # over max_sample_bytes: refused for good
        await spool.put(kept("r2"))
        uploader.wake()
        await drained(spool)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    stats = await spool.stats()
    await spool.close()
    assert (stats.uploaded_total, stats.rejected_total) == (2, 1)
    async with httpx.AsyncClient(base_url=control_plane, headers=headers()) as client:
        got = await client.get("/api/v1/samples/cam-1/r1")
        assert got.status_code == 200 and got.content == PNG
        assert (await client.get("/api/v1/samples/cam-1/big")).status_code == 404


async def test_a_dead_control_plane_keeps_the_input_for_a_retry(tmp_path: Path) -> None:
    spool = SampleSpool(tmp_path / "samples.db", max_rows=100, max_bytes=10_000)
    await spool.open()
    try:
        await spool.put(kept("r1"))
        uploader = Uploader(spool, base_url=f"http://127.0.0.1:{free_port()}", device_id="cam-1")
        async with aiohttp.ClientSession() as session:
            answer = await uploader.upload(session, (await spool.oldest(1))[0])
        assert answer == Answer(None, None, answer.detail) and outcome(answer.status) == "retry"
        assert (await spool.stats()).depth == 1
    finally:
        await spool.close()
