"""The rollouts' REST API in process on a real store: validation, conflicts, actions, tags."""

from __future__ import annotations

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
from controlplane.rollouts import store as queries
from controlplane.rollouts.api import parse_start
from controlplane.settings import Settings
from controlplane.store import Store
from protocol.release import DeploymentReport, SmokeStats
from tests.controlplane.auth_helpers import authorize
from tests.controlplane.rollouts.devices import PlayedDevice, add_release

SITE = "lab"


@pytest.fixture
def app(tmp_path: Path, store: Store) -> Starlette:
    settings = Settings(broker="mqtt://127.0.0.1:1", data_dir=tmp_path / "data")
    return create_app(settings, store=store, mqtt=False)


@pytest.fixture
async def client(app: Starlette, store: Store) -> AsyncIterator[httpx.AsyncClient]:
    ctx: Context = app.state.ctx
    assert ctx.release_key is not None
    await add_release(store, ctx.release_key, "2")
    births = [
        PlayedDevice("mqtt://127.0.0.1:1", f"cam-{i}", ctx.release_key.public).status()
        for i in range(3)
    ]
    await store.write(*[Incoming(b.device_id, time.time(), b) for b in births])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with authorize(httpx.AsyncClient(transport=transport, base_url="http://cp"), store) as c:
        yield c


def error(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    message: str = response.json()["error"]
    for word in words:
        assert word in message, (word, message)
    return message


BODY = {"model": "digits", "version": "2", "select": {"site": SITE}}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"model": "no such/model"}, ["model"]),
        ({"version": 2}, ["version"]),
        ({"waves": "10%,5%,100%"}, ["waves", "does not grow"]),
        ({"waves": "10%,50%"}, ["waves", "100%"]),
        ({"waves": []}, ["waves"]),
        ({"bake": "ten minutes"}, ["bake", "duration"]),
        ({"bake": -1}, ["bake", ">= 0"]),
        ({"gates": ["speed<3"]}, ["gates", "unknown metric"]),
        ({"gates": "error_rate<0.1"}, ["gates", "list"]),
        ({"min_sample": -1}, ["min_sample"]),
        ({"min_sample": "50"}, ["min_sample"]),
        ({"on_halt": "panic"}, ["on_halt", "pause, rollback"]),
        ({"device_timeout": "0"}, ["device_timeout", "longer than 0"]),
        ({"max_per_minute": 0}, ["max_per_minute"]),
        ({"shadow": {"share": 2}}, ["shadow.share"]),
        ({"shadow": {"samples": 0}}, ["shadow.samples"]),
        ({"shadow": {"rate": 1}}, ["shadow"]),
        ({"select": ["site"]}, ["select", "TAG=VALUE"]),
        ({"select": {"site": 1}}, ["select"]),
        ({"colour": "blue"}, ["colour", "unknown field"]),
    ],
    ids=lambda v: str(v)[:40],
)
async def test_a_bad_start_is_a_400_naming_the_field(
    client: httpx.AsyncClient, change: dict[str, Any], words: list[str]
) -> None:
    error(await client.post("/api/v1/rollouts", json={**BODY, **change}), 400, *words)


def test_the_request_defaults_mirror_the_cli() -> None:
    spec = parse_start({"model": "digits", "version": "2"})
    assert spec.waves == [0.01, 0.1, 0.5, 1.0] and spec.bake_s == 600 and spec.min_sample == 50
    assert spec.on_halt == "rollback" and spec.device_timeout_s == 1800
    assert [str(g) for g in spec.gates] == [
        "failure_rate<=0.1", "error_rate<=0.05", "agreement>=0.9", "confidence_shift<=0.3",
        "latency_ratio<=2",
    ]  # fmt: skip
    assert all(not g.required for g in spec.gates), "defaults are skipped without data"
    explicit = parse_start({**BODY, "gates": ["agreement>=0.95"], "waves": [0.5, 1]})
    assert [(str(g), g.required) for g in explicit.gates] == [
        ("failure_rate<=0.1", False),  # kept beside explicit gates
        ("agreement>=0.95", True),
    ]
    own = parse_start({**BODY, "gates": ["failure_rate<0.5"]})
    assert [str(g) for g in own.gates] == ["failure_rate<0.5"]
    assert explicit.waves == [0.5, 1.0] and explicit.selector == {"site": SITE}


async def test_start_list_show_and_the_actions(client: httpx.AsyncClient) -> None:
    error(await client.post("/api/v1/rollouts", json={**BODY, "version": "9"}), 404, "digits:9")
    error(
        await client.post("/api/v1/rollouts", json={**BODY, "select": {"site": "mars"}}),
        400, "select", "no device matches",
    )  # fmt: skip
    started = await client.post("/api/v1/rollouts", json={**BODY, "waves": "34%,100%"})
    assert started.status_code == 201, started.text
    rollout = started.json()
    rid = rollout["id"]
    assert rollout["state"] == "running" and rollout["devices"] == {"pending": 3}
    assert rollout["seq"] == 1 and rollout["gates"][0] == "failure_rate<=0.1"
    error(await client.post("/api/v1/rollouts", json=BODY), 409, rid, "one rollout per model")

    listed = (await client.get("/api/v1/rollouts", params={"state": "running"})).json()
    assert [r["id"] for r in listed["rollouts"]] == [rid]
    assert (await client.get("/api/v1/rollouts", params={"state": "aborted"})).json()["count"] == 0
    error(await client.get("/api/v1/rollouts", params={"state": "sleepy"}), 400, "state")
    detail = (await client.get(f"/api/v1/rollouts/{rid}")).json()
    assert [w["devices"] for w in detail["waves_detail"]] == [2, 1]
    assert {d["state"] for d in detail["deployments"]} == {"pending"}
    error(await client.get("/api/v1/rollouts/nope"), 404, "nope")

    error(await client.post(f"/api/v1/rollouts/{rid}/resume"), 409, "running")
    assert (await client.post(f"/api/v1/rollouts/{rid}/pause")).json()["state"] == "paused"
    error(await client.post(f"/api/v1/rollouts/{rid}/pause"), 409, "paused")
    assert (await client.post(f"/api/v1/rollouts/{rid}/resume")).json()["state"] == "running"
    assert (await client.post(f"/api/v1/rollouts/{rid}/abort")).json()["state"] == "aborted"
    error(await client.post(f"/api/v1/rollouts/{rid}/rollback"), 409, "aborted")
    error(await client.post(f"/api/v1/rollouts/{rid}/explode"), 404, "explode")
    error(await client.post("/api/v1/rollouts/nope/pause"), 404, "nope")
    history = (await client.get(f"/api/v1/rollouts/{rid}")).json()["history"]
    assert [h["action"] for h in history] == ["pause", "resume", "abort"]
    again = await client.post("/api/v1/rollouts", json=BODY)
    assert again.status_code == 201, "an aborted rollout frees the model"


async def test_resuming_a_halted_rollout_overrides_the_halt(
    client: httpx.AsyncClient, app: Starlette, store: Store
) -> None:
    rid = (await client.post("/api/v1/rollouts", json={**BODY, "waves": "34%,100%"})).json()["id"]

    def halt(conn: Any) -> None:
        conn.execute(
            'UPDATE rollouts SET state = \'halted\', halt = \'{"wave": 0, "reason": "x"}\' '
            "WHERE id = ?",
            [rid],
        )

    await store.transact(halt)
    resumed = (await client.post(f"/api/v1/rollouts/{rid}/resume")).json()
    assert (resumed["state"], resumed["current_wave"], resumed["halt"]) == ("running", 1, None)
    assert resumed["history"][-1]["override"] == {"wave": 0, "reason": "x"}


async def test_reports_of_an_older_generation_are_ignored(
    client: httpx.AsyncClient, store: Store
) -> None:
    rid = (await client.post("/api/v1/rollouts", json={**BODY, "waves": "100%"})).json()["id"]
    outcome = await store.transact(queries.tick, rid, time.time(), 2, "http://cp")
    assert outcome.changed
    (row,) = await store.read(
        lambda c: c.execute(
            "SELECT generation FROM deployments WHERE device_id = 'cam-0'"
        ).fetchall()
    )
    generation = row[0]

    def report(gen: int, state: str, **extra: Any) -> DeploymentReport:
        return DeploymentReport(
            device_id="cam-0", generation=gen, model="digits", rollout_id=rid, state=state, **extra
        )  # type: ignore[arg-type]

    now = time.time()
    assert not await store.transact(queries.apply_report, "cam-0", report(generation - 1,
                                    "failed"), now)  # fmt: skip
    smoke = SmokeStats(passed=1, total=1, candidate_ms=2.0, incumbent_ms=1.0)
    assert await store.transact(
        queries.apply_report, "cam-0", report(generation, "active", smoke=smoke), now
    )
    detail = (await client.get(f"/api/v1/rollouts/{rid}")).json()
    cam0 = next(d for d in detail["deployments"] if d["device_id"] == "cam-0")
    assert cam0["state"] == "active" and cam0["smoke"]["candidate_ms"] == 2.0
    assert cam0["activated_at"] is not None


async def test_device_tags_overlay_what_the_device_reports(client: httpx.AsyncClient) -> None:
    patched = await client.patch(
        "/api/v1/devices/cam-0/tags", json={"set": {"hw": "coral", "site": "roof"}}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["tags"] == {"hw": "coral", "site": "roof"}
    device = (await client.get("/api/v1/devices/cam-0")).json()
    assert device["tags"] == {"hw": "coral", "site": "roof"}
    assert device["reported_tags"] == {"site": SITE}
    removed = (await client.patch("/api/v1/devices/cam-0/tags", json={"remove": ["site"]})).json()
    assert removed["tags"] == {"hw": "coral"}, "remove hides a reported tag too"
    listed = (await client.get("/api/v1/devices")).json()["devices"]
    assert next(d for d in listed if d["id"] == "cam-0")["tags"] == {"hw": "coral"}
    started = (await client.post("/api/v1/rollouts", json=BODY)).json()
    assert started["devices"] == {"pending": 2}, "the selection uses the effective tags"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"set": {"bad key": "x"}}, 400, ["set.bad key", "tag"]),
        ({"set": {"k": "a/b"}}, 400, ["value"]),
        ({"set": {"k": ""}}, 400, ["value"]),
        ({"remove": "site"}, 400, ["remove", "list"]),
        ({"add": {"k": "v"}}, 400, ["body"]),
        ([], 400, ["body"]),
    ],
    ids=["bad-key", "bad-value", "empty-value", "remove-not-a-list", "unknown-field", "not-object"],
)
async def test_bad_tags_are_a_400(
    client: httpx.AsyncClient, body: Any, status: int, words: list[str]
) -> None:
    error(await client.patch("/api/v1/devices/cam-0/tags", json=body), status, *words)


async def test_tags_of_an_unknown_device_are_a_404(client: httpx.AsyncClient) -> None:
    error(await client.patch("/api/v1/devices/ghost/tags", json={"set": {"a": "b"}}), 404, "ghost")
    error(await client.patch("/api/v1/devices/bad id/tags", json={"set": {"a": "b"}}), 400, "id")
