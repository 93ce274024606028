"""The local API's deadline header: parsed, refused with 400 when wrong."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from agent.api import DEADLINE_HEADER, create_app, parse_deadline
from agent.errors import InputError
from agent.inference import ServedModel
from agent.telemetry import InferenceStats
from protocol.messages import InferenceResult
from tests.e2e.processes import EDGE_MODEL


@pytest.mark.parametrize(("value", "ms"), [(None, None), ("250", 250.0), ("0.5", 0.5)])
def test_parse_deadline(value: str | None, ms: float | None) -> None:
    assert parse_deadline(value) == ms


@pytest.mark.parametrize("value", ["0", "-5", "soon", "nan", "inf", ""])
def test_bad_deadlines_are_refused(value: str) -> None:
    with pytest.raises(InputError, match=DEADLINE_HEADER):
        parse_deadline(value)


@pytest.fixture(scope="module")
def edge() -> Iterator[ServedModel]:
    served = ServedModel.load(EDGE_MODEL)
    yield served
    served.close()


@pytest.fixture
async def url(edge: ServedModel) -> AsyncIterator[str]:
    kept: list[InferenceResult] = []

    async def record(result: InferenceResult) -> None:
        kept.append(result)

    app = create_app({edge.name: edge}, record=record, stats=InferenceStats())
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}/v2/models/{edge.name}/infer"
    finally:
        await server.close()


async def test_a_bad_header_is_a_400_naming_it(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"inputs": []}, headers={DEADLINE_HEADER: "x"}) as r:
            assert r.status == 400
            assert DEADLINE_HEADER in (await r.json())["error"]
