"""The data loop's REST API in process on a real store: kept inputs, feedback, the results API,
data sets with the best label of each input, evaluations and the rollout gate."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from controlplane.api import Context
from controlplane.app import create_app
from controlplane.records import Incoming
from controlplane.settings import Settings
from controlplane.store import Store
from protocol.messages import ClassScore, CloudAnswer, InferenceResult, Offload
from tests.controlplane import messages as m
from tests.controlplane.auth_helpers import authorize
from tests.controlplane.rollouts.devices import PlayedDevice, add_release

DEVICE = "cam-1"
PNG = b"\x89PNG\r\n\x1a\n" + b"pixels" * 10


@pytest.fixture
def app(tmp_path: Path, store: Store) -> Starlette:
    settings = Settings(
        broker="mqtt://127.0.0.1:1", data_dir=tmp_path / "data", max_sample_bytes=1000
    )
    return create_app(settings, store=store, mqtt=False)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    http = httpx.AsyncClient(transport=transport, base_url="http://cp")
    async with authorize(http, app.state.ctx.store) as c:
        yield c


def error(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    for word in words:
        assert word in body["error"], (word, body["error"])
    return body


def cloud_result(edge: str, cloud: str, score: float = 0.95) -> InferenceResult:
    result = m.result(label=edge, score=0.55)
    answer = CloudAnswer(
        model="digits-cloud", classes=[ClassScore(index=int(cloud), label=cloud, score=score)],
        latency_ms=4.0,
    )  # fmt: skip
    offload = Offload(
        decision="offloaded", reason="low_confidence", cloud=answer, agree=edge == cloud
    )
    return result.model_copy(update={"offload": offload})


async def store_results(store: Store, *results: InferenceResult, device: str = DEVICE) -> None:
    await store.write(Incoming(device, time.time(), m.batch(device, list(results))))


async def put_sample(
    client: httpx.AsyncClient,
    result_id: str,
    data: bytes = PNG,
    device: str = DEVICE,
    **params: Any,
) -> httpx.Response:
    query = {"model": "digits-edge", "model_version": "1", "reason": "low_confidence", **params}
    return await client.put(
        f"/api/v1/samples/{device}/{result_id}", content=data, params=query,
        headers={"Content-Type": "image/png"},
    )  # fmt: skip


# -- kept inputs -----------------------------------------------------------------------------------


async def test_a_kept_input_is_filed_once_by_result_id(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    first = await put_sample(client, "r1")
    assert first.status_code == 201, first.text
    assert first.json()["sample_url"] == f"/api/v1/samples/{DEVICE}/r1"
    again = await put_sample(client, "r1")
    assert again.status_code == 200  # a retry stores nothing twice
    error(await put_sample(client, "r1", data=b"other"), 409, "another input")
    got = await client.get(f"/api/v1/samples/{DEVICE}/r1")
    assert got.status_code == 200
    assert got.content == PNG
    assert got.headers["content-type"] == "image/png"
    assert first.json()["sha256"] == hashlib.sha256(PNG).hexdigest()
    files = [p for p in (tmp_path / "data" / "samples").rglob("*") if p.is_file()]
    assert len(files) == 1  # one sealed file: the retry and the refused bytes left none
    assert b"pixels" not in files[0].read_bytes()  # and it does not hold the input in clear


async def test_an_input_past_the_limit_is_413_and_not_filed(client: httpx.AsyncClient) -> None:
    error(await put_sample(client, "big", data=b"x" * 1001), 413, "max_sample_bytes")
    error(await client.get(f"/api/v1/samples/{DEVICE}/big"), 404, "no input")


@pytest.mark.parametrize(
    ("device", "result_id", "params", "words"),
    [
        ("bad device", "r", {}, ["device_id"]),
        (DEVICE, "r" * 200, {}, ["result_id"]),
        (DEVICE, "r", {"model": None}, ["model", "required"]),
        (DEVICE, "r", {"model": "a/b"}, ["model"]),
        (DEVICE, "r", {"reason": "Because!"}, ["reason"]),
        (DEVICE, "r", {"created_at": "yesterday"}, ["created_at"]),
        (DEVICE, "r", {"colour": "red"}, ["colour", "unknown parameter"]),
    ],
)
async def test_bad_uploads_are_400_naming_the_problem(
    client: httpx.AsyncClient, device: str, result_id: str, params: dict[str, Any], words: list[str]
) -> None:
    query = {"model": "digits-edge", "model_version": "1", "reason": "sampled", **params}
    query = {k: v for k, v in query.items() if v is not None}
    response = await client.put(f"/api/v1/samples/{device}/{result_id}", content=PNG, params=query)
    error(response, 400, *words)


# -- feedback and the results API ------------------------------------------------------------------


async def test_results_show_their_input_and_feedback(
    client: httpx.AsyncClient, store: Store
) -> None:
    kept, other = m.result(label="7"), m.result(label="4")
    await store_results(store, kept, other)
    assert (await put_sample(client, kept.result_id)).status_code == 201
    url = f"/api/v1/results/{DEVICE}/{kept.result_id}/feedback"
    error(await client.get(url), 404, "no feedback")
    given = await client.put(url, json={"label": "1"})
    assert given.status_code == 200, given.text
    assert given.json()["label"] == "1"
    assert (await client.get(url)).json()["label"] == "1"
    confirmed = await client.put(
        f"/api/v1/results/{DEVICE}/{other.result_id}/feedback", json={"correct": True}
    )
    assert confirmed.json() == {**confirmed.json(), "label": "4", "correct": True}
    page = (await client.get("/api/v1/results", params={"order": "asc"})).json()["results"]
    by_id = {r["result_id"]: r for r in page}
    assert by_id[kept.result_id]["sample_url"] == f"/api/v1/samples/{DEVICE}/{kept.result_id}"
    assert by_id[kept.result_id]["feedback"]["label"] == "1"
    assert "sample_url" not in by_id[other.result_id]
    assert by_id[other.result_id]["feedback"]["correct"] is True


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({}, 400, ["body"]),
        ({"label": ""}, 400, ["label"]),
        ({"label": 3}, 400, ["label"]),
        ({"correct": False}, 400, ["right label"]),
        ({"correct": "yes"}, 400, ["correct"]),
        ({"label": "3", "why": "x"}, 400, ["body"]),
    ],
)
async def test_bad_feedback_is_refused(
    client: httpx.AsyncClient, store: Store, body: dict[str, Any], status: int, words: list[str]
) -> None:
    result = m.result()
    await store_results(store, result)
    url = f"/api/v1/results/{DEVICE}/{result.result_id}/feedback"
    error(await client.put(url, json=body), status, *words)


async def test_feedback_on_an_unknown_result_is_404(client: httpx.AsyncClient) -> None:
    error(await client.put(f"/api/v1/results/{DEVICE}/nope/feedback", json={"label": "1"}), 404)


# -- data sets -------------------------------------------------------------------------------------


async def test_a_data_set_carries_the_best_label_of_each_input(
    client: httpx.AsyncClient, store: Store
) -> None:
    with_feedback = cloud_result(edge="7", cloud="9")
    with_cloud = cloud_result(edge="3", cloud="8")
    edge_only = m.result(label="5")
    not_arrived = "r-late"  # the input came before its result
    await store_results(store, with_feedback, with_cloud, edge_only)
    for rid in (with_feedback.result_id, with_cloud.result_id, edge_only.result_id, not_arrived):
        assert (await put_sample(client, rid)).status_code == 201
    await client.put(
        f"/api/v1/results/{DEVICE}/{with_feedback.result_id}/feedback", json={"label": "2"}
    )
    items = await dataset(client, "digits-edge", limit=2)
    assert [(i["label"], i["label_source"]) for i in items] == [
        ("2", "feedback"), ("8", "cloud"), ("5", "edge"), (None, None),
    ]  # fmt: skip
    assert items[1]["confidence"] == pytest.approx(0.95)
    labelled = await dataset(client, "digits-edge", labelled="true")
    assert [i["label"] for i in labelled] == ["2", "8"]
    assert await dataset(client, "other-model") == []
    assert await dataset(client, "digits-edge", since=str(time.time() + 3600)) == []


async def dataset(client: httpx.AsyncClient, model: str, **params: Any) -> list[dict[str, Any]]:
    """Every item, following the cursor."""
    out: list[dict[str, Any]] = []
    while True:
        body = (await client.get(f"/api/v1/datasets/{model}", params=params)).json()
        out.extend(body["items"])
        if not body["next_cursor"]:
            return out
        params["cursor"] = body["next_cursor"]


async def test_bad_data_set_parameters(client: httpx.AsyncClient) -> None:
    error(await client.get("/api/v1/datasets/m", params={"labelled": "maybe"}), 400, "labelled")
    error(await client.get("/api/v1/datasets/m", params={"cursor": "zzz"}), 400, "cursor")
    error(await client.get("/api/v1/datasets/m", params={"page": "1"}), 400, "page")


# -- evaluations and the rollout gate --------------------------------------------------------------


def report(
    version: str, accuracy: float, against: tuple[str, float] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "dataset": {"model": "digits", "digest": "cd" * 32, "samples": 50},
        "model": "digits", "version": version, "samples": 50, "accuracy": accuracy,
        "per_class": {"1": {"precision": 1.0, "recall": 1.0, "support": 5}},
        "latency_ms": {"p50": 0.1}, "against": None, "agreement": None,
    }  # fmt: skip
    if against is not None:
        body["against"] = {"version": against[0], "accuracy": against[1], "samples": 50}
        body["agreement"] = 0.5
    return body


@pytest.fixture
async def releases(app: Starlette, store: Store) -> None:
    ctx: Context = app.state.ctx
    assert ctx.release_key is not None
    for version in ("1", "2", "3"):
        await add_release(store, ctx.release_key, version)
    birth = PlayedDevice("mqtt://127.0.0.1:1", "cam-9", ctx.release_key.public).status()
    await store.write(Incoming(birth.device_id, time.time(), birth))  # a fleet to roll out to


URL = "/api/v1/models/digits/releases/{}/evaluations"


async def test_evaluations_are_stored_and_listed(client: httpx.AsyncClient, releases: None) -> None:
    error(
        await client.post("/api/v1/models/digits/releases/9/evaluations", json=report("9", 0.9)),
        404,
    )
    error(await client.post(URL.format("2"), json=report("3", 0.9)), 400, "version")
    error(await client.post(URL.format("2"), json={"version": "2"}), 400, "dataset")
    error(
        await client.post(URL.format("2"), json={**report("2", 0.9), "accuracy": 2}),
        400,
        "accuracy",
    )
    first = await client.post(URL.format("2"), json=report("2", 0.9))
    assert first.status_code == 201, first.text
    second = await client.post(URL.format("2"), json=report("2", 0.8, ("1", 0.95)))
    listed = (await client.get(URL.format("2"))).json()
    assert [e["id"] for e in listed["evaluations"]] == [second.json()["id"], first.json()["id"]]
    assert listed["evaluations"][0]["per_class"]["1"]["support"] == 5


async def start(client: httpx.AsyncClient, version: str, **extra: Any) -> httpx.Response:
    return await client.post(
        "/api/v1/rollouts", json={"model": "digits", "version": version, **extra}
    )


async def test_require_eval_refuses_an_unevaluated_or_worse_release(
    client: httpx.AsyncClient, releases: None
) -> None:
    body = error(await start(client, "2", require_eval=True), 409, "no stored evaluation")
    assert body["evaluation"] is None
    await client.post(URL.format("2"), json=report("2", 0.10, ("1", 0.97)))
    body = error(await start(client, "2", require_eval=True), 409, "does worse", "0.1000", "0.9700")
    assert body["evaluation"]["accuracy"] == 0.10
    assert body["incumbent"]["version"] == "1"
    # An evaluation without --against is judged against another release's on the same data.
    await client.post(URL.format("1"), json=report("1", 0.97))
    await client.post(URL.format("3"), json=report("3", 0.50))
    error(await start(client, "3", require_eval=True), 409, "does worse", "version 1")
    await client.post(URL.format("2"), json=report("2", 0.99, ("1", 0.97)))
    started = await start(client, "2", require_eval=True)
    assert started.status_code == 201, started.text
    error(await start(client, "3", require_eval="yes"), 400, "require_eval")


async def test_without_the_flag_no_evaluation_is_needed(
    client: httpx.AsyncClient, releases: None
) -> None:
    assert (await start(client, "3")).status_code == 201
