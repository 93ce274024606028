"""Offload decisions and cloud answers in the store (schema version 4), the results API and the
agreement figures: a real SQLite store, the API in process."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.app import create_app
from controlplane.db import MIGRATIONS, migrate
from controlplane.records import Incoming, plan
from controlplane.settings import Settings
from controlplane.store import Store
from protocol.messages import ClassScore, CloudAnswer, InferenceResult, Offload, ResultBatch
from tests.controlplane.auth_helpers import authorize

DEVICE = "dev-offload"


def result(
    rid: str,
    *,
    version: str = "1",
    label: str = "8",
    offload: Offload | None = None,
) -> InferenceResult:
    return InferenceResult(
        result_id=rid,
        model="digits-edge",
        model_version=version,
        artifact_sha256="ab" * 32,
        backend="litert",
        latency_ms=1.0,
        classes=[ClassScore(index=int(label), label=label, score=0.5)],
        offload=offload,
    )


def cloud(label: str = "8", score: float = 0.97) -> CloudAnswer:
    return CloudAnswer(
        model="digits-cloud",
        model_version="1.0.0",
        classes=[ClassScore(index=int(label), label=label, score=score)],
        latency_ms=12.0,
        answered_at=1000.0,
    )


def batch(*results: InferenceResult) -> Incoming:
    return Incoming(DEVICE, time.time(), ResultBatch(device_id=DEVICE, results=list(results)))


@pytest.fixture
async def client(tmp_path: Path, store: Store) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(broker="mqtt://127.0.0.1:1", data_dir=tmp_path)
    app = create_app(settings, store=store, mqtt=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with authorize(httpx.AsyncClient(transport=transport, base_url="http://cp"), store) as c:
        yield c


async def results(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await client.get("/api/v1/results", params={"order": "asc"})
    assert response.status_code == 200, response.text
    return {r["result_id"]: r for r in response.json()["results"]}


def test_migration_adds_the_columns_to_an_existing_store(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    migrate(conn, MIGRATIONS[:3])
    conn.execute(
        "INSERT INTO results (device_id, result_id, created_at, received_at, model, body)"
        " VALUES ('d', 'r', 1, 1, 'm', '{}')"
    )
    assert migrate(conn) == 3
    row = conn.execute("SELECT offload_decision, cloud_body, agree FROM results").fetchone()
    assert row == (None, None, None)  # the old row is kept, its new columns empty
    conn.close()


def test_a_late_answer_is_planned_as_an_update_not_a_new_result() -> None:
    late = result("r1", offload=Offload(decision="deferred", cloud=cloud(), agree=True))
    first = result("r2", offload=Offload(decision="deferred", reason="low_confidence"))
    p = plan([batch(first, late)])
    assert [row[1] for row in p.results] == ["r2"]
    assert [row[1] for row in p.late_results] == ["r1"]
    assert p.cloud[0][-2:] == (DEVICE, "r1")


async def test_decisions_and_cloud_answers_reach_the_results_api(
    store: Store, client: httpx.AsyncClient
) -> None:
    deferred = Offload(decision="deferred", reason="low_confidence", cloud_error="timeout")
    await store.write(
        batch(
            result("local", offload=Offload(decision="local")),
            result(
                "off",
                offload=Offload(
                    decision="offloaded", reason="low_confidence", cloud=cloud(), agree=True
                ),
            ),
            result("def", label="3", offload=deferred),
            result("plain"),
        )
    )
    got = await results(client)
    assert got["local"]["offload"] == {"decision": "local"}
    assert got["off"]["offload"]["cloud"]["classes"][0]["label"] == "8"
    assert got["off"]["offload"]["agree"] is True
    assert "cloud" not in got["def"]["offload"]
    assert "offload" not in got["plain"]

    # the deferred case's cloud answer arrives later: the same result, sent again with it
    answered = deferred.model_copy(update={"cloud": cloud("8"), "agree": False})
    late = result("def", label="3", offload=answered)
    before = store.metrics.results_duplicate.value()
    await store.write(batch(late))
    got = await results(client)
    assert len(got) == 4  # no new row
    offload = got["def"]["offload"]
    assert offload["decision"] == "deferred" and offload["cloud_error"] == "timeout"
    assert offload["cloud"]["classes"][0]["label"] == "8" and offload["agree"] is False
    assert store.metrics.results_duplicate.value() == before  # not counted as a duplicate

    # a redelivered late answer changes nothing; a later different one does not overwrite
    other = result("def", label="3", offload=answered.model_copy(update={"cloud": cloud("5")}))
    await store.write(batch(late), batch(other))
    assert (await results(client))["def"]["offload"]["cloud"]["classes"][0]["label"] == "8"


async def test_a_late_answer_whose_first_copy_was_lost_is_stored(
    store: Store, client: httpx.AsyncClient
) -> None:
    late = result("lost", offload=Offload(decision="deferred", cloud=cloud(), agree=True))
    await store.write(batch(late))
    got = await results(client)
    assert got["lost"]["offload"]["agree"] is True


async def test_agreement_per_model_version(store: Store, client: httpx.AsyncClient) -> None:
    def off(rid: str, version: str, agree: bool) -> InferenceResult:
        o = Offload(decision="offloaded", reason="low_confidence", cloud=cloud(), agree=agree)
        return result(rid, version=version, offload=o)

    await store.write(
        batch(
            off("a", "1", True), off("b", "1", True), off("c", "1", False),
            result("d", version="1", offload=Offload(decision="local")),
            result("e", version="1", offload=Offload(decision="deferred", reason="backlog")),
            off("f", "2", True), result("g", version="2"),
        )
    )  # fmt: skip
    response = await client.get("/api/v1/results/agreement", params={"model": "digits-edge"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "digits-edge"
    v1, v2 = body["versions"]
    assert v1["model_version"] == "1"
    assert (v1["results"], v1["offloaded"], v1["deferred"], v1["compared"], v1["agreed"]) == (
        5, 3, 1, 3, 2,
    )  # fmt: skip
    assert v1["agreement"] == pytest.approx(2 / 3, abs=1e-6)
    assert v1["offload_rate"] == pytest.approx(4 / 5)
    assert (v2["results"], v2["with_offload_policy"], v2["agreement"]) == (2, 1, 1.0)

    # since: only results created at or after it
    later = await client.get(
        "/api/v1/results/agreement",
        params={"model": "digits-edge", "since": str(time.time() + 3600)},
    )
    assert later.json()["versions"] == []


@pytest.mark.parametrize(
    ("params", "parameter"),
    [({}, "model"), ({"model": ""}, "model"), ({"model": "m", "sincee": "1"}, "sincee")],
)
async def test_agreement_refuses_bad_parameters(
    client: httpx.AsyncClient, params: dict[str, str], parameter: str
) -> None:
    response = await client.get("/api/v1/results/agreement", params=params)
    assert response.status_code == 400
    assert response.json()["parameter"] == parameter
