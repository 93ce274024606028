"""``GET /api/v1/alerts`` (filters, paging, errors), one alert, a device's alerts, the effective
rules, and ``edgefleet alerts ...`` against a real control plane."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.alerts.config import AlertConfig, load_alert_config
from controlplane.alerts.engine import AlertEngine
from controlplane.app import create_app
from controlplane.errors import ConfigError
from controlplane.records import Incoming
from controlplane.settings import Settings
from controlplane.store import Store
from tests.controlplane import messages as m
from tests.controlplane.auth_helpers import authorize
from tests.live import live_control_plane, run_cli

RULES_FILE = {
    "overrides": [
        {"rule": "device_offline", "threshold": 60},
        {"rule": "device_offline", "select": {"site": "north"}, "severity": "critical"},
        {"rule": "thermal", "select": {"site": "north"}, "enabled": False},
    ]
}


async def seed(store: Store, config: AlertConfig, settings: Settings, devices: int = 5) -> None:
    """Devices silent for 15 minutes (north ones among them), one of them back: alerts fired,
    one resolved, through the real engine."""
    now = time.time()
    for i in range(devices):
        status = m.birth(f"cam-{i}").model_copy(
            update={"tags": {"site": "north" if i % 2 else "south"}}
        )
        await store.write(Incoming(f"cam-{i}", now - 900, status))
    engine = AlertEngine(settings, store, config, store.metrics)
    await engine.tick()
    await store.write(Incoming("cam-0", now, m.birth("cam-0")))
    await engine.tick()


def make_settings(data_dir: Path, **extra: Any) -> Settings:
    return Settings(broker="mqtt://127.0.0.1:1", data_dir=data_dir, **extra)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    path = tmp_path / "alerts.json"
    path.write_text(json.dumps(RULES_FILE))
    settings = make_settings(tmp_path, alerts_file=path)
    store = Store(settings.store_path)
    store.open()
    try:
        await seed(store, load_alert_config(path), settings)
        app = create_app(settings, store=store, mqtt=False)
        transport = httpx.ASGITransport(app=app)
        http = httpx.AsyncClient(transport=transport, base_url="http://cp")
        async with authorize(http, store) as c:
            yield c
    finally:
        store.close()


async def test_list_open_resolved_all(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/alerts")).json()
    assert body["count"] == body["total"] == 4 and body["next_cursor"] is None
    assert {a["device_id"] for a in body["alerts"]} == {"cam-1", "cam-2", "cam-3", "cam-4"}
    assert all(a["state"] == "firing" for a in body["alerts"])
    ids = [a["id"] for a in body["alerts"]]
    assert ids == sorted(ids, reverse=True)  # newest first
    severities = {a["device_id"]: a["severity"] for a in body["alerts"]}
    assert severities == {"cam-1": "critical", "cam-3": "critical", "cam-2": "warning",
                          "cam-4": "warning"}  # fmt: skip
    assert body["alerts"][0]["runbook_url"] == "docs/operations.md#device_offline"

    resolved = (await client.get("/api/v1/alerts", params={"state": "resolved"})).json()
    [cam0] = resolved["alerts"]
    assert cam0["device_id"] == "cam-0" and cam0["resolution"] == "online"
    assert (await client.get("/api/v1/alerts", params={"state": "all"})).json()["total"] == 5


async def test_filters_and_paging(client: httpx.AsyncClient) -> None:
    one = (await client.get("/api/v1/alerts", params={"device": "cam-2"})).json()
    assert [a["device_id"] for a in one["alerts"]] == ["cam-2"]
    none = (await client.get("/api/v1/alerts", params={"rule": "thermal"})).json()
    assert none["alerts"] == [] and none["total"] == 0
    seen: list[int] = []
    params: dict[str, Any] = {"state": "all", "limit": 2, "rule": "device_offline"}
    while True:
        page = (await client.get("/api/v1/alerts", params=params)).json()
        assert page["total"] == 5 and page["count"] <= 2
        seen += [a["id"] for a in page["alerts"]]
        if not page["next_cursor"]:
            break
        params["cursor"] = page["next_cursor"]
    assert len(seen) == len(set(seen)) == 5


@pytest.mark.parametrize(
    ("params", "parameter", "message"),
    [
        ({"state": "firing"}, "state", "expected open (firing), resolved or all"),
        ({"rule": "latency"}, "rule", "unknown rule 'latency'"),
        ({"device": "bad id!"}, "device", "device"),
        ({"limit": "0"}, "limit", "positive integer"),
        ({"cursor": "zzz"}, "cursor", "not a cursor"),
        ({"severity": "critical"}, "severity", "unknown parameter"),
    ],
)
async def test_bad_parameters_are_400(
    client: httpx.AsyncClient, params: dict[str, str], parameter: str, message: str
) -> None:
    response = await client.get("/api/v1/alerts", params=params)
    assert response.status_code == 400
    assert response.json()["parameter"] == parameter and message in response.json()["error"]


async def test_one_alert_with_its_notifications(client: httpx.AsyncClient) -> None:
    [first] = (await client.get("/api/v1/alerts", params={"limit": 1})).json()["alerts"]
    alert = (await client.get(f"/api/v1/alerts/{first['id']}")).json()
    assert alert["id"] == first["id"] and alert["notifications"] == []  # no webhooks configured
    missing = await client.get("/api/v1/alerts/99999")
    assert missing.status_code == 404 and "no alert 99999" in missing.json()["error"]
    bad = await client.get("/api/v1/alerts/latest")
    assert bad.status_code == 400 and bad.json()["parameter"] == "id"


async def test_a_devices_alerts(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/devices/cam-0/alerts", params={"state": "all"})).json()
    assert [a["state"] for a in body["alerts"]] == ["resolved"]
    assert (await client.get("/api/v1/devices/nobody/alerts")).status_code == 404
    bad = await client.get("/api/v1/devices/cam-0/alerts", params={"device": "cam-1"})
    assert bad.status_code == 400


async def test_the_effective_rules(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/alerts/rules")).json()
    assert body["file"].endswith("alerts.json") and len(body["overrides"]) == 3
    rules = {r["rule"]: r for r in body["rules"]}
    assert rules["device_offline"]["threshold"] == 600  # the defaults, before overrides
    assert rules["thermal"]["runbook_url"] == "docs/operations.md#thermal"
    north = (await client.get("/api/v1/alerts/rules", params={"device": "cam-1"})).json()
    rules = {r["rule"]: r for r in north["rules"]}
    assert north["device"] == {"id": "cam-1", "tags": {"site": "north"}}
    assert rules["device_offline"]["threshold"] == 60
    assert rules["device_offline"]["severity"] == "critical"
    assert rules["thermal"]["enabled"] is False
    assert (await client.get("/api/v1/alerts/rules", params={"device": "x"})).status_code == 404


async def test_open_alerts_on_metrics(client: httpx.AsyncClient) -> None:
    text = (await client.get("/metrics")).text
    assert 'edgefleet_alerts{rule="device_offline",severity="critical"} 2' in text
    assert 'edgefleet_alerts{rule="device_offline",severity="warning"} 2' in text
    assert 'edgefleet_alert_notifications_total{outcome="delivered"} 0' in text


def test_a_bad_alerts_file_stops_the_app_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text('[[overrides]]\nrule = "thermal"\nthreshhold = 70\n')
    with pytest.raises(ConfigError, match=r"overrides\[0\]\.threshhold"):
        create_app(make_settings(tmp_path, alerts_file=path), mqtt=False)


def test_serve_refuses_a_bad_alerts_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "alerts.json"
    path.write_text('{"overrides": [{"rule": "thermal", "sevrity": "info"}]}')
    code, _, err = run_cli(
        capsys, "serve", "--broker", "mqtt://127.0.0.1:1", "--data-dir", str(tmp_path / "d"),
        "--listen", "127.0.0.1:0", "--alerts-file", str(path),
    )  # fmt: skip
    assert code == 1
    assert "unknown key `overrides[0].sevrity` (did you mean `severity`?)" in err


def test_webhooks_from_a_flag_and_errors(tmp_path: Path) -> None:
    from controlplane.settings import load_settings

    base = {"broker": "mqtt://h:1", "data_dir": str(tmp_path)}
    s = load_settings(
        None, {**base, "alert_webhooks": '[{"url": "https://h/x", "format": "slack"}]'}
    )
    assert s.alert_webhooks[0].format == "slack" and "h/x" not in repr(s)
    with pytest.raises(ConfigError, match="expected a JSON list"):
        load_settings(None, {**base, "alert_webhooks": "https://h/x"})
    with pytest.raises(ConfigError, match=r"alert_webhooks\.0\.format"):
        load_settings(None, {**base, "alert_webhooks": '[{"url": "https://h", "format": "x"}]'})


# -- the CLI against a real server -----------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(logging, "raiseExceptions", False)
    data_dir = tmp_path / "data"
    path = tmp_path / "alerts.json"
    path.write_text(json.dumps(RULES_FILE))

    async def seed_store() -> None:
        settings = make_settings(data_dir)
        store = Store(settings.store_path)
        store.open()
        try:
            await seed(store, load_alert_config(path), settings)
        finally:
            store.close()

    asyncio.run(seed_store())
    with live_control_plane(
        lambda listen: make_settings(data_dir, listen=listen, alerts_file=path), monkeypatch
    ) as url:
        yield url


def test_cli(capsys: pytest.CaptureFixture[str], server: str) -> None:
    code, out, err = run_cli(capsys, "alerts", "list", "--server", server)
    assert code == 0, err
    header, *lines = out.splitlines()
    assert header.split() == ["ID", "STATE", "SEVERITY", "RULE", "DEVICE", "STARTED", "FOR",
                              "REASON"]  # fmt: skip
    assert len(lines) == 4 and all("device_offline" in line for line in lines)
    assert "offline, last seen" in out

    code, out, _ = run_cli(capsys, "alerts", "list", "--server", server, "--state", "resolved",
                           "--device", "cam-0")  # fmt: skip
    assert code == 0 and "resolved" in out and "cam-0" in out and "online" in out
    code, out, _ = run_cli(capsys, "alerts", "list", "--server", server, "--rule", "thermal")
    assert code == 0 and out.strip() == "no open alerts"
    code, out, _ = run_cli(capsys, "alerts", "list", "--server", server, "--limit", "1")
    assert "(showing 1 of 4" in out

    code, out, _ = run_cli(capsys, "alerts", "list", "--server", server, "--json", "--state", "all")
    assert code == 0 and json.loads(out)["total"] == 5
    first = json.loads(out)["alerts"][0]["id"]
    code, out, _ = run_cli(capsys, "alerts", "show", str(first), "--server", server)
    assert code == 0 and "runbook" in out and "docs/operations.md#device_offline" in out

    code, out, _ = run_cli(capsys, "alerts", "rules", "--server", server, "--device", "cam-1")
    assert code == 0 and "as they apply to cam-1 (tags site=north)" in out
    assert "3 override(s) from" in out
    [offline] = [line for line in out.splitlines() if line.startswith("device_offline")]
    assert offline.split()[:4] == ["device_offline", "True", "critical", "60"]


def test_cli_errors(capsys: pytest.CaptureFixture[str], server: str) -> None:
    code, out, err = run_cli(capsys, "alerts", "list", "--server", server, "--rule", "nope")
    assert code == 1 and out == ""
    assert "rule: unknown rule 'nope'" in err and "HTTP 400" in err
    code, _, err = run_cli(capsys, "alerts", "show", "12345", "--server", server)
    assert code == 1 and "no alert 12345" in err
    code, _, err = run_cli(capsys, "alerts", "list", "--state", "firing", "--server", server)
    assert code == 2 and "invalid choice" in err
    code, _, err = run_cli(capsys, "alerts", "list", "--server", "http://127.0.0.1:1")
    assert code == 1 and "cannot reach the control plane" in err
