"""The OIP client against a real aiohttp server running the real digits-cloud model, with
injected faults: what is retried, what is not, deadlines, Retry-After, the circuit breaker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from agent.offload.client import (
    HEADER_LENGTH,
    OIPClient,
    decode_response,
    encode_request,
    infer_url,
)
from agent.offload.errors import BreakerOpen, CloudRejected, CloudUnavailable
from agent.offload.retry import Backoff
from tests.agent.offload.cloud import FakeCloud, Fault, digit
from tests.mosquitto import free_port

FAST = Backoff(base_s=0.001, cap_s=0.01)


@pytest.fixture
async def cloud() -> AsyncIterator[FakeCloud]:
    c = FakeCloud()
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


@pytest.fixture
async def client() -> AsyncIterator[OIPClient]:
    c = OIPClient(backoff=FAST)
    try:
        yield c
    finally:
        await c.close()


async def call(client: OIPClient, cloud: FakeCloud, **kw: object) -> object:
    x, _ = digit(3)
    options: dict[str, object] = {"request_id": "r-1", "timeout_s": 5.0, **kw}
    return await client.infer(cloud.url, "digits-cloud", {"input": x}, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("binary", [False, True])
async def test_answers_with_the_cloud_models_outputs(
    cloud: FakeCloud, client: OIPClient, binary: bool
) -> None:
    x, label = digit(3)
    reply = await client.infer(
        cloud.url, "digits-cloud", {"input": x}, request_id="abc", timeout_s=5, binary=binary
    )
    probabilities = reply.outputs["probabilities"]
    assert probabilities.shape == (1, 10)
    assert int(np.argmax(probabilities)) == label
    assert reply.model_name == "digits-cloud" and reply.model_version == "1.0.0"
    assert reply.attempts == 1
    (seen,) = cloud.seen
    assert seen.doc["id"] == "abc"  # the idempotency key
    if binary:
        assert seen.headers["Content-Type"] == "application/octet-stream"
        assert HEADER_LENGTH in seen.headers
        assert seen.doc["inputs"][0]["parameters"]["binary_data_size"] == x.nbytes
    else:
        assert seen.headers["Content-Type"] == "application/json"
        assert HEADER_LENGTH not in seen.headers


async def test_a_version_goes_in_the_path(cloud: FakeCloud, client: OIPClient) -> None:
    await call(client, cloud, version="1.0.0")
    assert cloud.seen[0].path == "/v2/models/digits-cloud/versions/1.0.0/infer"


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_transient_statuses_are_retried(
    cloud: FakeCloud, client: OIPClient, status: int
) -> None:
    cloud.faults = [Fault(status), Fault(status)]
    reply = await call(client, cloud)
    assert reply.attempts == 3  # type: ignore[attr-defined]
    assert [s.doc["id"] for s in cloud.seen] == ["r-1"] * 3  # the same request each time


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_client_errors_are_not_retried(
    cloud: FakeCloud, client: OIPClient, status: int
) -> None:
    cloud.faults = [Fault(status)]
    with pytest.raises(CloudRejected, match=f"HTTP {status}: injected {status}") as info:
        await call(client, cloud)
    assert info.value.status == status
    assert len(cloud.seen) == 1


async def test_500_is_retried_once(cloud: FakeCloud, client: OIPClient) -> None:
    cloud.faults = [Fault(500)]
    assert (await call(client, cloud)).attempts == 2  # type: ignore[attr-defined]
    cloud.seen.clear()
    cloud.faults = [Fault(500), Fault(500)]
    with pytest.raises(CloudRejected, match="HTTP 500"):
        await call(client, cloud, max_attempts=5)
    assert len(cloud.seen) == 2


async def test_retry_after_is_honoured(cloud: FakeCloud) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    client = OIPClient(backoff=FAST, sleep=sleep)
    cloud.faults = [Fault(503, retry_after="0.3")]
    try:
        await call(client, cloud)
        assert waits == [0.3]
        cloud.seen.clear()
        # without Retry-After: the jittered backoff, within its cap
        cloud.faults = [Fault(503)]
        await call(client, cloud)
        assert 0 <= waits[1] <= FAST.base_s
    finally:
        await client.close()


async def test_a_retry_after_past_the_deadline_ends_the_call(
    cloud: FakeCloud, client: OIPClient
) -> None:
    # a Retry-After past the deadline ends the call at once, without a second try
    cloud.faults = [Fault(503, retry_after="30")]
    with pytest.raises(CloudUnavailable, match="HTTP 503"):
        await call(client, cloud, timeout_s=1.0)
    assert len(cloud.seen) == 1


async def test_a_slow_cloud_is_given_up_within_the_deadline(
    cloud: FakeCloud, client: OIPClient
) -> None:
    cloud.faults = [Fault(delay_s=2.0), Fault(delay_s=2.0), Fault(delay_s=2.0)]
    with pytest.raises(CloudUnavailable, match="no answer within") as info:
        await call(client, cloud, timeout_s=0.3)
    assert info.value.timed_out  # the client's deadline ended it, not the server's 2 s
    assert len(cloud.seen) == 3  # the deadline was split: 1/2, 1/4, then the rest


async def test_a_dead_endpoint_is_unavailable(client: OIPClient) -> None:
    x, _ = digit(0)
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CloudUnavailable, match="connection failed"):
        await client.infer(url, "digits-cloud", {"input": x}, request_id="r", timeout_s=0.5)


async def test_the_breaker_opens_then_probes(cloud: FakeCloud) -> None:
    client = OIPClient(backoff=FAST)
    breaker = client.breaker(cloud.url, failures=3, cooldown_s=0.2)
    try:
        cloud.down = True
        with pytest.raises(CloudUnavailable):
            await call(client, cloud, max_attempts=3)
        assert len(cloud.seen) == 3
        assert breaker.state(time.monotonic()) == "open"
        with pytest.raises(BreakerOpen):
            await call(client, cloud)
        assert len(cloud.seen) == 3  # not even tried
        await asyncio.sleep(0.25)  # cool-down: one probe goes through and succeeds
        cloud.down = False
        assert (await call(client, cloud)).attempts == 1  # type: ignore[attr-defined]
        assert breaker.state(time.monotonic()) == "closed"
    finally:
        await client.close()


def test_encode_and_decode_round_trip() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for binary in (False, True):
        request = encode_request({"x": x}, "id-1", binary=binary)
        header = request.headers.get(HEADER_LENGTH)
        # a reply has the same tensor layout as a request, under "outputs" (one byte longer)
        reply = request.body.replace(b'"inputs"', b'"outputs"', 1)
        length = None if header is None else str(int(header) + 1)
        doc, outputs = decode_response(reply, length)
        assert doc["id"] == "id-1"
        np.testing.assert_array_equal(outputs["x"], x)


def test_bytes_inputs_are_refused() -> None:
    with pytest.raises(CloudRejected, match="cannot be offloaded"):
        encode_request({"s": np.array([b"a"], dtype=object)}, "i", binary=False)


@pytest.mark.parametrize(
    ("endpoint", "model", "version", "url"),
    [
        ("http://h:8000", "m", None, "http://h:8000/v2/models/m/infer"),
        ("http://h:8000/", "m", "2", "http://h:8000/v2/models/m/versions/2/infer"),
        ("http://h/p", "a b", None, "http://h/p/v2/models/a%20b/infer"),
    ],
)
def test_infer_url(endpoint: str, model: str, version: str | None, url: str) -> None:
    assert infer_url(endpoint, model, version) == url
