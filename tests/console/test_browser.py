"""The console in a real headless chromium, against a real control plane (``edgefleet serve``)
fed by the simulator (real agents) over the real Mosquitto.

One fleet serves the module: six simulated devices tagged with the module's own token, two
releases pushed with the CLI. The tests start rollouts, pause them and give feedback through the
pages, as an operator would, and save a screenshot of each page to docs/screenshots/.
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.console.browser import SCREENSHOTS, chromium
from tests.e2e.processes import ROOT, ControlPlane, Simulator, cli, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slow]

MODEL = "digits-edge"
GOOD = ROOT / "models" / "rollout" / "good"
DEVICES = 6
PAGES = ("/fleet", "/devices", "/models", "/rollouts", "/alerts", "/results")


OPERATOR = ("olga", "an operator's long passphrase")


@dataclass
class Console:
    cp: ControlPlane
    sim: Simulator
    token: str
    browser: Browser
    login: bool = False  # the control plane runs with auth on: each browser logs in first

    @property
    def url(self) -> str:
        return self.cp.url

    @property
    def ids(self) -> list[str]:
        return [f"con-{self.token}-{i:03d}" for i in range(DEVICES)]

    def api(self, path: str, **params: Any) -> Any:
        response = self.cp.get(path, **params)
        response.raise_for_status()
        return response.json()

    def page(self, path: str = "", *, width: int = 1280, javascript: bool = True) -> Page:
        context = self.browser.new_context(
            viewport={"width": width, "height": 900}, java_script_enabled=javascript
        )
        page = context.new_page()
        page.set_default_timeout(30_000)
        if self.login:
            page.goto(self.url + "/login")
            page.fill("input[name=user]", OPERATOR[0])
            page.fill("input[name=password]", OPERATOR[1])
            with page.expect_navigation():
                page.click("button[type=submit]")
        remote: list[str] = []
        page.on(
            "request",
            lambda r: None if r.url.startswith((self.url, "data:")) else remote.append(r.url),
        )
        page.on("pageerror", lambda e: remote.append(f"script error: {e}"))
        page.remote = remote  # type: ignore[attr-defined]
        if path:
            page.goto(self.url + path)
        return page


def no_remote(page: Page) -> None:
    """Nothing but the control plane was asked for, and no script failed."""
    assert page.remote == [], page.remote  # type: ignore[attr-defined]


def shot(page: Page, name: str) -> None:
    """With EDGEFLEET_SCREENSHOTS=1, refresh docs/screenshots/ from this run (the tests never
    write into the checkout otherwise)."""
    if os.environ.get("EDGEFLEET_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)


def push(cp: ControlPlane, version: str) -> None:
    done = cli(cp.url, "models", "push", MODEL, version, "--artifact", f"cpu={GOOD}.tflite",
               "--manifest", f"{GOOD}.json")  # fmt: skip
    assert done.returncode == 0, done.stderr


def keep_an_input(console: Console, device_id: str) -> None:
    """File a kept input (a digit image) for one of the device's results, as its uploader does."""
    results = console.api("/api/v1/results", device_id=device_id, limit=5)["results"]
    result = results[0]
    with np.load(ROOT / "models" / "digits" / "testset.npz") as data:
        image = np.asarray(data["images"][0], dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image, mode="L").resize((32, 32)).save(buf, format="PNG")
    response = httpx.put(
        f"{console.url}/api/v1/samples/{device_id}/{result['result_id']}",
        params={"model": result["model"], "model_version": result["model_version"],
                "reason": "low_confidence", "created_at": result["created_at"]},
        content=buf.getvalue(), headers={**console.cp.headers, "content-type": "image/png"},
        timeout=10,
    )  # fmt: skip
    assert response.status_code in (200, 201), response.text


@pytest.fixture(scope="module")
def console(broker_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    with chromium() as browser:
        workdir = tmp_path_factory.mktemp("console")
        token = workdir.name.replace("_", "")[-6:] + str(int(time.time()) % 10_000)
        cp = ControlPlane(broker_url, workdir)
        cp.start()
        key = workdir / "release.pub"
        key.write_text(cp.get("/api/v1/keys/release").json()["public_key"] + "\n")
        sim = Simulator(broker_url, f"con-{token}", DEVICES, workdir, key, "--tag",
                        f"run={token}")  # fmt: skip
        sim.start()
        c = Console(cp, sim, token, browser)
        if httpx.get(cp.url + "/fleet", timeout=10).status_code != 200:  # auth on: a login
            made = httpx.post(
                cp.url + "/api/v1/users", headers=cp.headers, timeout=10,
                json={"name": OPERATOR[0], "role": "operator", "password": OPERATOR[1]},
            )  # fmt: skip
            assert made.status_code == 201, made.text
            c.login = True
        try:
            wait_until(
                "every device online with results",
                lambda: all(
                    (d := cp.device(i)) and d["state"] == "online" and d.get("telemetry")
                    for i in c.ids
                ) and c.api("/api/v1/results", device_id=c.ids[0])["count"] > 0,
                90, cp, sim,
            )  # fmt: skip
            push(cp, "2.0.0")
            push(cp, "2.0.1")
            yield c
        finally:
            sim.stop()
            cp.stop()


def test_a_live_update_arrives_without_a_reload(console: Console) -> None:
    page = console.page("/devices?tag=" + f"run={console.token}")
    page.evaluate("window.__loaded = 'once'")
    row = f"#device-{console.ids[0]}"
    # the simulator reports every second: the row is swapped by the event stream, in place
    page.wait_for_selector(f"{row}[data-updated]", timeout=20_000)
    assert page.evaluate("window.__loaded") == "once"
    assert page.locator("#live-status").inner_text() == "live"
    fleet = console.page("/fleet")
    fleet.evaluate("window.__loaded = 'once'")
    fleet.wait_for_function(
        "document.querySelector('#fleet-counts')?.dataset.updated !== undefined"
        " || document.body.dataset.lastEvent !== undefined",
        timeout=20_000,
    )
    assert fleet.evaluate("window.__loaded") == "once"
    no_remote(page)
    no_remote(fleet)


def test_a_rollout_started_from_the_console_moves_through_its_waves(console: Console) -> None:
    page = console.page("/rollouts/new")
    page.select_option("select[name=release]", f"{MODEL}:2.0.0")
    page.fill("input[name=select]", f"run={console.token}")
    page.fill("input[name=waves]", "16%,50%,100%")
    page.fill("input[name=bake]", "0")
    page.fill("input[name=min_sample]", "3")
    page.fill("input[name=device_timeout]", "2m")
    with page.expect_navigation():
        page.click("button:has-text('Review')")
    summary = page.locator("table.summary").inner_text()
    assert "wave 1: 1, wave 2: 2, wave 3: 3 (6 in all)" in summary, summary
    assert console.api("/api/v1/rollouts")["count"] == 0  # only reviewed so far
    with page.expect_navigation():
        page.click("button:has-text('Start the rollout')")
    assert re.search(r"/rollouts/\w+$", page.url), page.url
    rollout_id = page.url.rsplit("/", 1)[1]
    page.evaluate("window.__loaded = 'once'")
    # the waves move on the page by themselves: the current wave's mark moves down the list
    page.wait_for_selector("#rollout-progress .wave.current:nth-child(2)", timeout=90_000)
    page.wait_for_selector("#rollout-progress .badge.state-completed", timeout=120_000)
    assert page.evaluate("window.__loaded") == "once"
    bars = page.locator("#rollout-progress .wave .seg-done").count()
    assert bars == 3, bars
    assert page.locator("#rollout-devices .badge.state-active").count() == DEVICES
    shot(page, "rollout")
    rollout = console.api(f"/api/v1/rollouts/{rollout_id}")
    assert rollout["state"] == "completed" and rollout["devices"] == {"active": DEVICES}
    no_remote(page)


def test_a_pause_from_the_console_stops_the_rollout(console: Console) -> None:
    page = console.page("/rollouts/new?release=" + f"{MODEL}:2.0.1")
    page.fill("input[name=select]", f"run={console.token}")
    page.fill("input[name=waves]", "16%,100%")
    page.fill("input[name=bake]", "20s")
    page.fill("input[name=min_sample]", "0")
    page.fill("input[name=device_timeout]", "2m")
    with page.expect_navigation():
        page.click("button:has-text('Review')")
    with page.expect_navigation():
        page.click("button:has-text('Start the rollout')")
    rollout_id = page.url.rsplit("/", 1)[1]

    def canary_active() -> bool:
        r = console.api(f"/api/v1/rollouts/{rollout_id}")
        return r["waves_detail"][0]["states"] == {"active": 1}

    wait_until("the canary active", canary_active, 60, console.cp, console.sim)
    with page.expect_navigation():
        page.click("a:has-text('Pause')")
    assert "Pause rollout" in page.locator("h1").inner_text()
    with page.expect_navigation():
        page.click("button:has-text('Pause it')")
    page.wait_for_selector("#rollout-progress .badge.state-paused")
    time.sleep(25)  # longer than the bake: a running rollout would have started wave 2 by now
    rollout = console.api(f"/api/v1/rollouts/{rollout_id}")
    assert rollout["state"] == "paused" and rollout["current_wave"] == 0, rollout
    assert rollout["waves_detail"][1]["states"] == {"pending": DEVICES - 1}, rollout["waves_detail"]
    # and resuming it from the console lets it finish
    with page.expect_navigation():
        page.click("a:has-text('Resume')")
    with page.expect_navigation():
        page.click("button:has-text('Resume it')")
    page.wait_for_selector("#rollout-progress .badge.state-completed", timeout=120_000)
    no_remote(page)


def accuracy_of(page: Page, version: str) -> str:
    return page.locator(f"#accuracy tr[data-version='{version}']").inner_text()


def test_feedback_on_a_result_changes_the_accuracy_shown(console: Console) -> None:
    device = console.ids[1]
    page = console.page(f"/results?device={device}&model={MODEL}")
    first = page.locator("table.results tbody tr").first
    version = first.locator("td").nth(3).inner_text().split()[-1]
    before = accuracy_of(page, version)
    with page.expect_navigation():
        first.locator("button:has-text('correct')").click()
    after_correct = accuracy_of(page, version)
    assert after_correct != before, (before, after_correct)
    judged = re.search(r"(\d+) of (\d+)", after_correct)
    assert judged and judged.group(1) == judged.group(2), after_correct  # all judged right so far
    rows = page.locator("table.results tbody tr")
    other = next(
        rows.nth(i) for i in range(1, rows.count())
        if rows.nth(i).locator("td").nth(3).inner_text().split()[-1] == version
    )  # fmt: skip
    other.locator("input[name=label]").fill("not-a-digit")
    with page.expect_navigation():
        other.locator("button:has-text('set')").click()
    after_wrong = accuracy_of(page, version)
    judged = re.search(r"(\d+) of (\d+)", after_wrong)
    assert judged and int(judged.group(1)) < int(judged.group(2)), after_wrong
    assert after_wrong.split()[1] != after_correct.split()[1]  # the percentage moved
    no_remote(page)


def test_each_page_renders_with_data(console: Console) -> None:
    keep_an_input(console, console.ids[0])  # one of its newest results: on its page now
    kept = console.page(f"/devices/{console.ids[0]}")
    image = kept.locator("img.sample").first
    assert image.evaluate("img => img.complete && img.naturalWidth > 0")  # the kept input
    rollouts = [r["id"] for r in console.api("/api/v1/rollouts")["rollouts"]]
    device = f"/devices/{console.ids[0]}"
    expectations = [  # (path, screenshot, words the page shows)
        ("/fleet?range=15m", "fleet", ["online", "By release", MODEL, "Inference rate"]),
        ("/devices", "devices", [console.ids[0], console.ids[-1], "litert"]),
        (f"{device}?range=15m", "device", ["Telemetry", "Deployments", "Recent results",
                                           "Accelerator fallback", "Diagnostics", MODEL]),
        ("/models", "models", [MODEL, "2.0.0", "2.0.1", "Ed25519"]),
        ("/rollouts", "rollouts", ["Start a rollout", *rollouts]),  # those the tests started
        ("/alerts?state=all", "alerts", ["Alerts"]),
        (f"/results?model={MODEL}", "results",
         [MODEL, "Accuracy per release", f"con-{console.token}"]),
    ]  # fmt: skip
    for path, name, words in expectations:
        page = console.page(path)
        page.wait_for_load_state("networkidle")
        body = page.locator("main").inner_text()
        for word in words:
            assert word in body, (path, word, body[:1500])
        if name in ("fleet", "device"):
            page.wait_for_selector(".chart-plot.drawn canvas")  # uPlot drew the charts
        shot(page, name)
        no_remote(page)
    if rollouts:
        assert console.page("/rollouts").locator(".progress .seg-done").count() >= 1


def test_diagnostics_run_from_the_device_page(console: Console) -> None:
    page = console.page(f"/devices/{console.ids[2]}")
    with page.expect_navigation():
        page.click("#diagnostics button:has-text('ping')")
    first = page.locator("#diagnostics details.command").first
    assert "ping" in first.inner_text() and "ok" in first.locator(".badge").inner_text()
    with page.expect_navigation():
        page.click("#diagnostics button:has-text('logs')")
    answer = page.locator("#diagnostics details.command").first
    assert "logs" in answer.inner_text()
    assert answer.locator("pre.answer").count() == 1
    no_remote(page)


def test_a_narrow_viewport_has_no_horizontal_overflow(console: Console) -> None:
    rollouts = [f"/rollouts/{r['id']}" for r in console.api("/api/v1/rollouts")["rollouts"][:1]]
    for path in (*PAGES, f"/devices/{console.ids[0]}", *rollouts, "/rollouts/new"):
        page = console.page(path, width=360)
        page.wait_for_load_state("networkidle")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, (path, width)
        page.context.close()


def test_a_page_without_javascript_still_shows_its_data(console: Console) -> None:
    page = console.page("/devices", javascript=False)
    body = page.locator("main").inner_text()
    assert all(i in body for i in console.ids)
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", body)  # times readable as UTC
    device = console.page(f"/devices/{console.ids[0]}", javascript=False)
    summary = device.locator("#chart-rate .chart-summary").inner_text()
    assert re.search(r"inferences\s+[\d.]+\s/s", summary), summary  # the chart's figures
    fleet = console.page("/fleet", javascript=False)
    assert fleet.locator("[data-count=total]").inner_text() != "0"
    assert fleet.locator("#live-status").is_hidden()
