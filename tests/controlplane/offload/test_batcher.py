"""The dynamic batcher on the real digits-cloud model (ONNX Runtime)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from controlplane.offload.batcher import Batcher, BatchPolicy, split
from controlplane.offload.errors import DeadlineExceeded, InvalidRequest, Unavailable
from controlplane.offload.metrics import OffloadMetrics
from controlplane.offload.runtime import OnnxModel

LABELS = ("digits-cloud", "1")


def make(model: OnnxModel, **policy: float) -> tuple[Batcher, OffloadMetrics]:
    metrics = OffloadMetrics()
    batcher = Batcher(model, BatchPolicy(**policy), metrics)  # type: ignore[arg-type]
    batcher.start()
    return batcher, metrics


async def test_concurrent_requests_are_merged_and_each_gets_its_own_rows(
    cloud_model: OnnxModel, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = digits
    # A long delay: the batch runs when it is full, so the 15 requests share three executions.
    batcher, metrics = make(cloud_model, max_batch=8, max_delay=30.0)
    sizes = [1, 2, 1, 3, 1] * 3  # 15 requests, 24 rows: three full batches of 8 rows
    starts = np.cumsum([0, *sizes])
    try:
        answers = await asyncio.gather(
            *(
                batcher.infer({"input": images[a:b]}, b - a)
                for a, b in zip(starts[:-1], starts[1:], strict=True)
            )
        )
    finally:
        await batcher.stop()
    alone = cloud_model.run({"input": images[: starts[-1]]})["probabilities"]
    for (a, b), answer in zip(zip(starts[:-1], starts[1:], strict=True), answers, strict=True):
        np.testing.assert_allclose(answer["probabilities"], alone[a:b], rtol=1e-5, atol=1e-6)
    assert metrics.inference_count.value(*LABELS) == 24
    assert metrics.exec_count.value(*LABELS) == 3
    assert metrics.pending_request_count.value(*LABELS) == 0


async def test_a_lone_request_runs_after_the_queue_delay(
    cloud_model: OnnxModel, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    batcher, metrics = make(cloud_model, max_batch=32, max_delay=0.001)
    try:
        answer = await batcher.infer({"input": digits[0][:1]}, 1)
    finally:
        await batcher.stop()
    assert answer["probabilities"].shape == (1, 10)
    assert metrics.exec_count.value(*LABELS) == 1


async def test_a_full_queue_refuses_at_once_with_retry_after(
    cloud_model: OnnxModel, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    batcher, metrics = make(cloud_model, max_batch=32, max_delay=60.0, max_queue=2)
    one = {"input": digits[0][:1]}
    waiting = [asyncio.ensure_future(batcher.infer(one, 1)) for _ in range(2)]
    await asyncio.sleep(0)
    assert batcher.pending == 2
    assert metrics.pending_request_count.value(*LABELS) == 2
    with pytest.raises(Unavailable, match="queue .* is full") as caught:
        await batcher.infer(one, 1)
    assert caught.value.status == 503 and caught.value.retry_after == 1
    await batcher.stop()  # the drain runs the queued two without waiting out the delay
    assert [w.result()["probabilities"].shape for w in waiting] == [(1, 10), (1, 10)]
    assert metrics.exec_count.value(*LABELS) == 1


async def test_a_request_past_its_deadline_is_refused_and_never_runs(
    cloud_model: OnnxModel, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    batcher, metrics = make(cloud_model, max_batch=32, max_delay=60.0)
    try:
        with pytest.raises(DeadlineExceeded, match="did not run") as caught:
            await batcher.infer({"input": digits[0][:1]}, 1, timeout=0.01)
        assert caught.value.status == 504
        assert batcher.pending == 0
    finally:
        await batcher.stop()
    assert metrics.exec_count.value(*LABELS) == 0


async def test_draining_refuses_new_requests(
    cloud_model: OnnxModel, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    batcher, _ = make(cloud_model)
    await batcher.drain()
    with pytest.raises(Unavailable, match="shutting down"):
        await batcher.infer({"input": digits[0][:1]}, 1)
    await batcher.stop()


async def test_more_rows_than_a_batch_is_a_bad_request(
    cloud_model: OnnxModel, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    batcher, _ = make(cloud_model, max_batch=4)
    try:
        with pytest.raises(InvalidRequest, match="5 rows .* at most 4"):
            await batcher.infer({"input": digits[0][:5]}, 5)
    finally:
        await batcher.stop()


@pytest.mark.parametrize(
    ("rows", "expected"), [([1], [[0]]), ([1, 2], [[0], [1, 2]]), ([2, 1, 1], [[0, 1], [2], [3]])]
)
def test_split_gives_each_request_its_rows(rows: list[int], expected: list[list[int]]) -> None:
    total = np.arange(sum(rows))
    parts = split({"y": total}, rows)
    assert [p["y"].tolist() for p in parts] == expected


def test_split_refuses_outputs_without_a_batch_axis() -> None:
    with pytest.raises(Exception, match="does not batch"):
        split({"y": np.zeros(3)}, [1, 1])
