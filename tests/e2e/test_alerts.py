"""End to end: a real ``edgefleet serve`` with an alerts file and a webhook, Mosquitto and a real
agent process. Stopping the agent fires ``device_offline`` (a short threshold from the file), the
real ``edgefleet alerts list`` shows it, the webhook receives it, and it resolves when the agent
returns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.controlplane.alerts.receiver import receiver
from tests.e2e.processes import AgentProcess, ControlPlane, cli, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _alerts(cp: ControlPlane, device: str, state: str) -> list[dict[str, Any]]:
    done = cli(cp.url, "alerts", "list", "--state", state, "--device", device, "--json")
    assert done.returncode == 0, done.stderr
    alerts: list[dict[str, Any]] = json.loads(done.stdout)["alerts"]
    return [a for a in alerts if a["rule"] == "device_offline"]


def test_an_agent_that_stops_fires_device_offline_and_resolves_on_return(
    broker_url: str, tmp_path: Path, unique: str
) -> None:
    device = f"alert-{unique}"
    rules = tmp_path / "alerts.toml"
    rules.write_text(
        f'[[overrides]]\nrule = "device_offline"\nselect = {{ e2e = "{unique}" }}\nthreshold = 2\n'
    )
    with receiver() as rx:
        hooks = [{"url": f"{rx.url}/hook?token=secret", "format": "json"},
                 {"url": f"{rx.url}/chat", "format": "slack"}]  # fmt: skip
        cp = ControlPlane(broker_url, tmp_path)
        cp.argv += [
            "--alerts-file", str(rules), "--alerts-interval-s", "0.5", "--offline-after-s", "3",
            "--alert-webhooks", json.dumps(hooks),
        ]  # fmt: skip
        agent = AgentProcess(broker_url, device, tmp_path, "--tag", f"e2e={unique}")
        cp.start()
        agent.start()
        try:
            online = lambda: (cp.device(device) or {}).get("state") == "online"  # noqa: E731
            wait_until("the device online", online, 30, cp, agent)
            assert _alerts(cp, device, "all") == []

            agent.stop()
            [alert] = wait_until(
                "device_offline fired", lambda: _alerts(cp, device, "open"), 60, cp
            )
            assert alert["severity"] == "warning" and alert["threshold"] == 2
            assert "offline, last seen" in alert["reason"]
            table = cli(cp.url, "alerts", "list", "--device", device)
            assert table.returncode == 0 and "device_offline" in table.stdout
            assert device in table.stdout and "firing" in table.stdout
            wait_until("the firing notification", lambda: rx.accepted("/hook"), 30, cp)

            agent.start()  # the same data directory: the device returns
            [resolved] = wait_until(
                "device_offline resolved", lambda: _alerts(cp, device, "resolved"), 60, cp, agent
            )
            assert resolved["id"] == alert["id"] and resolved["resolution"] == "online"
            assert _alerts(cp, device, "open") == []
            wait_until("both notifications", lambda: len(rx.accepted("/hook")) == 2, 30, cp)
            wait_until("both on chat", lambda: len(rx.accepted("/chat")) == 2, 30, cp)
        finally:
            agent.stop()
            cp.stop()
        firing, cleared = rx.accepted("/hook")
        assert (firing["state"], cleared["state"]) == ("firing", "resolved")
        assert firing["alert_id"] == cleared["alert_id"] == alert["id"]
        assert firing["device_id"] == device
        assert rx.accepted("/chat")[0]["text"].startswith("FIRING [warning] device_offline")
        assert "token=secret" not in cp.log()
