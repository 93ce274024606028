"""What operators change from the console, in process on a real store: starting a rollout and
acting on it, each through a confirmation step, and feedback on results. The same code as the
REST API does it, so the API sees what the console did."""

from __future__ import annotations

import re
import time
from html import unescape

import httpx
import pytest
from starlette.applications import Starlette

from controlplane.api import Context
from controlplane.records import Incoming
from controlplane.store import Store
from tests.console.fleetdata import birth
from tests.controlplane.rollouts.devices import add_release

FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture
async def fleet(app: Starlette, store: Store) -> None:
    ctx: Context = app.state.ctx
    assert ctx.release_key is not None
    await add_release(store, ctx.release_key, "2")
    await store.write(*[
        Incoming(f"cam-{i}", time.time(), birth(f"cam-{i}", tags={"site": "lab"}))
        for i in range(10)
    ])  # fmt: skip


def words(response: httpx.Response) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", response.text)))


async def start(client: httpx.AsyncClient, **fields: str) -> httpx.Response:
    form = {"release": "digits:2", "select": "site=lab", "waves": "10%,100%", "bake": "0",
            **fields}  # fmt: skip
    return await client.post("/rollouts/new", data=form)


@pytest.mark.usefixtures("fleet")
async def test_a_rollout_starts_only_after_its_confirmation(empty: httpx.AsyncClient) -> None:
    client = empty
    form = html_form = (await client.get("/rollouts/new?release=digits:2")).text
    assert "<option selected>digits:2</option>" in form and '<form method="post"' in html_form
    review = await start(client)
    assert review.status_code == 200
    text = words(review)
    assert "Start this rollout?" in text and "wave 1: 1, wave 2: 9 (10 in all)" in text
    assert (await client.get("/api/v1/rollouts")).json()["count"] == 0  # nothing yet
    assert 'name="confirmed" value="yes"' in review.text
    done = await start(client, confirmed="yes")
    assert done.status_code == 303
    rollout_id = done.headers["location"].rsplit("/", 1)[1]
    api = (await client.get(f"/api/v1/rollouts/{rollout_id}")).json()
    assert api["state"] == "running" and api["waves"] == [0.1, 1.0]
    page = await client.get(f"/rollouts/{rollout_id}")
    assert page.status_code == 200
    assert "Wave 1" in page.text and "Wave 2" in page.text and "Pause…" in page.text
    listing = await client.get("/rollouts")
    assert rollout_id in listing.text


@pytest.mark.usefixtures("fleet")
@pytest.mark.parametrize(
    ("fields", "words_"),
    [
        ({"release": ""}, ["release:", "choose"]),
        ({"waves": "50%,10%"}, ["waves:"]),
        ({"bake": "ten"}, ["bake:", "duration"]),
        ({"gates": "speed<3"}, ["gates:", "unknown metric"]),
        ({"min_sample": "many"}, ["min_sample:", "whole number"]),
        ({"select": "site=mars", "confirmed": "yes"}, ["select:", "no device matches"]),
        ({"release": "digits:9", "confirmed": "yes"}, ["no release digits:9"]),
    ],
)
async def test_a_bad_start_form_comes_back_with_the_error_and_its_values(
    empty: httpx.AsyncClient, fields: dict[str, str], words_: list[str]
) -> None:
    response = await start(empty, **fields)
    assert response.status_code in (400, 404), response.text[:500]
    text = words(response)
    for word in words_:
        assert word in text, (word, text[:1500])
    assert "Start a rollout" in text  # the form again, filled in
    assert (await empty.get("/api/v1/rollouts")).json()["count"] == 0


@pytest.mark.usefixtures("fleet")
async def test_actions_need_confirmation_and_follow_the_rollout_states(
    empty: httpx.AsyncClient,
) -> None:
    client = empty
    done = await start(client, confirmed="yes")
    rollout_id = done.headers["location"].rsplit("/", 1)[1]
    confirm = await client.get(f"/rollouts/{rollout_id}/pause")
    assert confirm.status_code == 200 and "Pause rollout" in words(confirm)
    unconfirmed = await client.post(f"/rollouts/{rollout_id}/pause", data={})
    assert unconfirmed.status_code == 200  # the confirmation page again: nothing done
    assert (await client.get(f"/api/v1/rollouts/{rollout_id}")).json()["state"] == "running"
    paused = await client.post(f"/rollouts/{rollout_id}/pause", data={"confirmed": "yes"})
    assert paused.status_code == 303
    assert (await client.get(f"/api/v1/rollouts/{rollout_id}")).json()["state"] == "paused"
    again = await client.post(f"/rollouts/{rollout_id}/pause", data={"confirmed": "yes"})
    assert again.status_code == 409 and "cannot pause" in words(again)
    not_now = await client.get(f"/rollouts/{rollout_id}/pause")
    assert not_now.status_code == 409 and "cannot be paused" in words(not_now)
    for action, state in (("resume", "running"), ("abort", "aborted")):
        r = await client.post(f"/rollouts/{rollout_id}/{action}", data={"confirmed": "yes"})
        assert r.status_code == 303
        assert (await client.get(f"/api/v1/rollouts/{rollout_id}")).json()["state"] == state
    page = await client.get(f"/rollouts/{rollout_id}")
    assert "No action is possible in state aborted" in words(page)


async def test_a_form_post_must_be_a_form(empty: httpx.AsyncClient) -> None:
    response = await empty.post("/results/feedback", content=b'{"correct": true}',
                                headers={"content-type": "application/json"})  # fmt: skip
    assert response.status_code == 400 and "Content-Type:" in words(response)


async def test_feedback_from_the_results_page_changes_the_accuracy(
    client: httpx.AsyncClient,
) -> None:
    page = (await client.get("/results?device=cam-002")).text
    result_ids = re.findall(r'name="result_id" value="([^"]+)"', page)
    assert len(result_ids) == 20

    def accuracy(page: str) -> str:
        row = re.search(r'data-version="2.0.0">(.*?)</tr>', page, re.S)
        assert row, page
        return words(httpx.Response(200, text=row.group(1)))

    assert "— 0 of 0" in accuracy(page)
    here = "/results?device=cam-002"
    marked = await client.post("/results/feedback", data={
        "device_id": "cam-002", "result_id": result_ids[0], "correct": "yes", "next": here,
    })  # fmt: skip
    assert marked.status_code == 303 and marked.headers["location"] == here
    assert "100.0 % 1 of 1" in accuracy((await client.get(here)).text)
    relabelled = await client.post("/results/feedback", data={
        "device_id": "cam-002", "result_id": result_ids[1], "label": "not-a-digit", "next": here,
    })  # fmt: skip
    assert relabelled.status_code == 303
    after = (await client.get(here)).text
    assert "50.0 % 1 of 2" in accuracy(after)
    api = await client.get(f"/api/v1/results/cam-002/{result_ids[1]}/feedback")
    assert api.json()["label"] == "not-a-digit"  # the data loop's own record
    assert "label not-a-digit" in words(httpx.Response(200, text=after))


@pytest.mark.parametrize(
    ("fields", "status", "word"),
    [
        ({"device_id": "cam-002", "result_id": "nope", "correct": "yes"}, 404, "no result"),
        ({"device_id": "cam-002", "result_id": "x"}, 400, "label:"),
        ({"device_id": "bad id", "result_id": "x", "correct": "yes"}, 400, "device_id:"),
        ({"device_id": "cam-002", "result_id": "a b", "correct": "yes"}, 400, "result_id:"),
        ({"device_id": "cam-002", "result_id": "x", "label": "a\x01"}, 400, "label:"),
    ],
)
async def test_bad_feedback_is_an_html_error(
    client: httpx.AsyncClient, fields: dict[str, str], status: int, word: str
) -> None:
    response = await client.post("/results/feedback", data=fields)
    assert response.status_code == status and word in words(response), words(response)[:800]


async def test_feedback_never_redirects_off_the_site(client: httpx.AsyncClient) -> None:
    page = (await client.get("/results?device=cam-002")).text
    result_id = re.findall(r'name="result_id" value="([^"]+)"', page)[0]
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil", "results"):
        r = await client.post("/results/feedback", data={
            "device_id": "cam-002", "result_id": result_id, "correct": "yes", "next": target,
        })  # fmt: skip
        assert r.status_code == 303 and r.headers["location"].startswith("/results?"), target


async def test_diagnostics_need_mqtt_and_a_known_command(client: httpx.AsyncClient) -> None:
    page = await client.get("/devices/cam-000")
    assert 'action="/devices/cam-000/diagnostics"' in page.text
    assert "No command sent to this device yet" in words(page)
    no_mqtt = await client.post("/devices/cam-000/diagnostics", data={"command": "ping"})
    assert no_mqtt.status_code == 503 and "need MQTT" in words(no_mqtt)
    wrong = await client.post("/devices/cam-000/diagnostics", data={"command": "resync"})
    assert wrong.status_code == 400 and "command:" in words(wrong)
    unknown = await client.post("/devices/cam-999/diagnostics", data={"command": "ping"})
    assert unknown.status_code == 404
