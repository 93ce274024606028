"""Every console page in process on a real store: status codes, the data it shows, its empty
state, and bad parameters answered 400 with an HTML page naming the parameter."""

from __future__ import annotations

import re
import time
from html import unescape
from pathlib import Path

import httpx
import pytest

from controlplane.alerts import queries as alert_queries
from controlplane.alerts.decisions import Decisions, Fire
from controlplane.app import create_app
from controlplane.settings import Settings
from controlplane.store import Store
from tests.console.fleetdata import DEVICES, seed
from tests.controlplane.auth_helpers import authorize


def html(response: httpx.Response, status: int = 200) -> str:
    assert response.status_code == status, response.text[:2000]
    assert response.headers["content-type"].startswith("text/html"), response.headers
    assert "Traceback" not in response.text
    return response.text


def text(page: str) -> str:
    """The page's visible text, roughly (tags removed, entities decoded, whitespace squeezed)."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", page)))


async def test_the_root_goes_to_the_fleet(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 302 and response.headers["location"] == "/fleet"


async def test_fleet_counts_devices_by_health_release_and_accelerator(
    client: httpx.AsyncClient,
) -> None:
    page = html(await client.get("/fleet"))
    counts = dict(re.findall(r'data-count="(\w+)">([\d,]+)<', page))
    assert counts == {"total": "4", "online": "1", "degraded": "2", "offline": "1"}
    assert "/devices?release=digits-edge%3A2.0.0" in page  # by release, linked
    words = text(page)
    assert "cpu 4" in words  # by accelerator: no edgetpu present
    # needs attention, worst first: the offline one, then the one with errors and a full outbox
    attention = page[page.index('id="fleet-attention"') :]
    assert attention.index("cam-003") < attention.index("cam-002")
    assert "5000 results waiting in its outbox" in attention
    assert "cam-000" not in attention  # healthy
    for chart in ("rate", "p95", "offload", "errors"):
        assert f'id="chart-data-{chart}"' in page, chart


async def test_fleet_charts_carry_at_most_500_points(client: httpx.AsyncClient) -> None:
    for range_ in ("15m", "1h", "30d"):
        page = html(await client.get("/fleet", params={"range": range_}))
        for data in re.findall(
            r'<script type="application/json" id="chart-data-\w+">(.*?)</script>', page
        ):
            assert data.count(",") < 2 * 500 + 50, range_  # x and one series


async def test_devices_filter_sort_search_and_page(client: httpx.AsyncClient) -> None:
    page = html(await client.get("/devices"))
    assert all(f'id="device-{d}"' in page for d in DEVICES)
    assert "4 of 4 devices" in text(page)

    def ids(page: str) -> list[str]:
        return re.findall(r'<tr id="device-([\w.-]+)"', page)

    assert ids(html(await client.get("/devices", params={"health": "degraded"}))) == [
        "cam-001", "cam-002",
    ]  # fmt: skip
    assert ids(html(await client.get("/devices", params={"health": "offline"}))) == ["cam-003"]
    assert ids(html(await client.get("/devices", params={"release": "digits-edge:2.0.0"}))) == [
        "cam-002"
    ]
    assert ids(html(await client.get("/devices", params={"tag": "site=plant"}))) == ["cam-001"]
    assert ids(html(await client.get("/devices", params={"q": "row"}))) == ["cam-000"]  # a tag
    assert ids(html(await client.get("/devices", params={"q": "-00"}))) == list(DEVICES)
    assert ids(html(await client.get("/devices", params={"sort": "p95", "dir": "desc"})))[0] == (
        "cam-001"
    )
    assert ids(html(await client.get("/devices", params={"sort": "id", "dir": "desc"}))) == list(
        reversed(DEVICES)
    )
    by_offload = ids(html(await client.get("/devices", params={"sort": "offload", "dir": "desc"})))
    assert by_offload[0] == "cam-000"  # the only one that offloads
    second = html(await client.get("/devices", params={"per": "25", "page": "2"}))
    assert ids(second) == [] and "No device matches" in second
    # an empty filter field (a form left blank) is no filter
    assert len(ids(html(await client.get("/devices?q=&health=&release=&backend=&tag=")))) == 4


async def test_device_page_shows_charts_results_hard_cases_and_fallback(
    client: httpx.AsyncClient,
) -> None:
    page = html(await client.get("/devices/cam-001"))
    assert 'data-live="/events?device=cam-001"' in page
    for chart in ("rate", "latency", "errors", "outbox", "cpu", "memory", "temperature"):
        assert f'id="chart-data-{chart}"' in page, chart
    words = text(page)
    assert "demoted: edgetpu" in words and "1 backend restart" in words  # the fallback history
    assert "edgetpu: libedgetpu.so.1 missing" in words
    with_results = html(await client.get("/devices/cam-000"))
    assert "Recent results" in with_results and with_results.count("feedback-form") >= 20
    hard = with_results[with_results.index("Hard cases") :]
    assert "offloaded" in hard and "(cloud:" in hard
    assert "No rollout has included this device yet" in with_results


async def test_models_page_lists_what_devices_run(client: httpx.AsyncClient) -> None:
    page = html(await client.get("/models"))
    assert "The registry holds no release yet" in page
    assert "digits-edge 2.0.0" in text(page)  # running outside the registry


async def test_results_browse_filter_and_accuracy(client: httpx.AsyncClient) -> None:
    page = html(await client.get("/results"))
    assert "40 results stored" in text(page)
    assert page.count('<tr id="result-') == 40
    offloaded = html(await client.get("/results", params={"offloaded": "yes"}))
    assert offloaded.count('<tr id="result-') == 5
    low = html(await client.get("/results", params={"max_confidence": "0.5"}))
    assert low.count('<tr id="result-') == 10
    assert (
        html(await client.get("/results", params={"device": "cam-002"})).count('<tr id="result-')
        == 20
    )
    sevens = html(await client.get("/results", params={"label": "7", "version": "1.0.0"}))
    assert sevens.count('<tr id="result-') == 2
    # agreement per release: 5 offloaded results of 1.0.0 compared, 2 agree with the cloud
    accuracy = page[page.index('id="accuracy"') :]
    assert re.search(r'data-version="1.0.0">.*?40.0\s%.*?>5<', accuracy, re.S), accuracy[:800]


async def test_results_pages_by_cursor(client: httpx.AsyncClient) -> None:
    ids: list[str] = []
    url = "/results?device=cam-000"
    while True:
        page = html(await client.get(url))
        ids += re.findall(r'<tr id="result-(\d+)"', page)
        found = re.search(r'href="(\?[^"]*cursor=[^"]+)" rel="next"', page)
        if not found:
            break
        url = "/results" + found.group(1).replace("&amp;", "&")
        assert len(ids) < 1000
    assert len(ids) == 20 == len(set(ids))


@pytest.mark.parametrize(
    ("path", "words"),
    [
        (
            "/fleet",
            [
                "No device has reported yet",
                "edgefleet simulate",
                "start an agent",
                "an offload section",
            ],
        ),
        ("/devices", ["No device has reported yet"]),
        ("/models", ["The registry holds no release yet", "edgefleet models push"]),
        ("/rollouts", ["No rollout yet", "edgefleet rollout start"]),
        ("/rollouts/new", ["no release to roll out", "edgefleet models push"]),
        ("/results", ["No result stored yet"]),
    ],
)
async def test_empty_states_say_what_to_do(
    empty: httpx.AsyncClient, path: str, words: list[str]
) -> None:
    page = text(html(await empty.get(path)))
    for word in words:
        assert word in page, (word, page[:2000])


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/fleet?range=2h", "range"),
        ("/fleet?color=red", "color"),
        ("/devices?page=0", "page"),
        ("/devices?page=two", "page"),
        ("/devices?sort=name", "sort"),
        ("/devices?dir=up", "dir"),
        ("/devices?per=7", "per"),
        ("/devices?health=sick", "health"),
        ("/devices?release=digits-edge", "release"),
        ("/devices?tag=site", "tag"),
        ("/devices?backend=a%20b", "backend"),
        ("/devices/bad%20id", "id"),
        ("/devices/cam-000?range=1y", "range"),
        ("/results?min_confidence=2", "min_confidence"),
        ("/results?min_confidence=0.9&max_confidence=0.1", "min_confidence"),
        ("/results?offloaded=maybe", "offloaded"),
        ("/results?cursor=nonsense", "cursor"),
        ("/results?device=a/b", "device"),
        ("/rollouts?state=sleeping", "state"),
        ("/rollouts/abc?page=-1", "page"),
        ("/rollouts/new?release=nothing", "release"),
        ("/rollouts/abc/explode", "action"),
        ("/models?x=1", "x"),
    ],
)
async def test_a_bad_parameter_is_a_400_page_naming_it(
    client: httpx.AsyncClient, path: str, parameter: str
) -> None:
    page = html(await client.get(path), 400)
    assert f"{parameter}:" in text(page), text(page)[:1000]


async def test_unknown_things_are_404_pages(client: httpx.AsyncClient) -> None:
    assert "no device 'cam-999'" in text(html(await client.get("/devices/cam-999"), 404))
    assert "no rollout 'abc'" in text(html(await client.get("/rollouts/abc"), 404))
    assert "no rollout 'abc'" in text(html(await client.get("/rollouts/abc/pause"), 404))


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("", "fleet"),
        ("?fleet=yes", "fleet"),
        ("?devices=a,b%20c", "devices"),
        ("?rollouts=sleeping", "rollouts"),
        ("?state=active", "state"),
        ("?fleet=1&everything=1", "everything"),
    ],
)
async def test_the_event_stream_answers_bad_parameters_as_json(
    client: httpx.AsyncClient, query: str, parameter: str
) -> None:
    response = await client.get("/events" + query)
    assert response.status_code == 400
    body = response.json()
    assert body["parameter"] == parameter and body["error"].startswith(parameter), body


async def test_static_files_are_served(client: httpx.AsyncClient) -> None:
    for path in ("console.js", "console.css", "vendor/uplot/uPlot.iife.min.js"):
        response = await client.get(f"/static/{path}")
        assert response.status_code == 200, path
    assert (await client.get("/static/nothing.js")).status_code == 404


async def test_pages_render_times_for_the_browser_and_read_without_javascript(
    client: httpx.AsyncClient,
) -> None:
    page = html(await client.get("/devices"))
    stamp = r"\d{4}-\d\d-\d\d"
    assert re.search(rf'<time datetime="{stamp}T[\d:]{{8}}Z">{stamp} [\d:]{{8}} UTC</time>', page)
    assert "None" not in text(page)
    device = html(await client.get("/devices/cam-000"))
    assert '<table class="chart-summary">' in device  # each chart's figures as a table too


async def fire(store: Store, device_id: str, rule: str = "accelerator_fallback") -> None:
    """An alert fired by the alerts' own transaction (as their engine's tick does)."""
    decision = Fire(rule, device_id, "warning", 1.0, f"{rule} on {device_id}", None, time.time())
    await store.transact(alert_queries.apply, Decisions(fire=[decision]), time.time(), [],
                         "https://runbooks.example/operations")  # fmt: skip


async def test_alerts_fleet_wide_and_on_the_device_page(
    client: httpx.AsyncClient, store: Store
) -> None:
    empty = html(await client.get("/alerts"))
    assert "No alert is firing" in empty
    await fire(store, "cam-001")
    await fire(store, "cam-002", "error_rate")
    page = html(await client.get("/alerts"))
    assert "2 open alerts" in text(page)
    assert 'id="alert-' in page and "accelerator_fallback on cam-001" in page
    # the runbook is a path in the repository by default: shown, not linked
    assert "<code" in page and "docs/operations.md#error_rate" in page
    only = html(await client.get("/alerts", params={"rule": "error_rate"}))
    assert "cam-002" in only and "cam-001" not in text(only).split("open alert")[1]
    device = html(await client.get("/devices/cam-001"))
    section = device[device.index("<h2>Alerts</h2>") :]
    assert "accelerator_fallback on cam-001" in section[: section.index("</section>")]
    assert "No alert has fired" in html(await client.get("/devices/cam-000"))
    bad = html(await client.get("/alerts", params={"rule": "sunburn"}), 400)
    assert "rule:" in text(bad)


async def test_runbook_links_when_the_runbook_is_published(tmp_path: Path, store: Store) -> None:
    settings = Settings(broker="mqtt://127.0.0.1:1", data_dir=tmp_path / "d",
                        alert_runbook_url="https://runbooks.example/operations")  # fmt: skip
    app = create_app(settings, store=store, mqtt=False)
    await seed(store, time.time())
    await fire(store, "cam-001")
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with authorize(httpx.AsyncClient(transport=transport, base_url="http://cp"), store) as c:
        page = html(await c.get("/alerts"))
    assert 'href="https://runbooks.example/operations#accelerator_fallback"' in page
