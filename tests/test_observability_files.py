"""The Prometheus rules and the Grafana dashboard name only metrics the control plane serves,
and every rule has a runbook section in docs/operations.md."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from controlplane.app import create_app
from controlplane.records import Incoming
from controlplane.settings import Settings
from controlplane.store import Store
from tests.controlplane import messages as m
from tests.controlplane.test_fleet_metrics import rollouts

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "edgefleet-rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "edgefleet-dashboard.json"
RUNBOOK = ROOT / "docs" / "operations.md"

NAME = re.compile(r"\b(edgefleet_[a-z0-9_]+)\b")
MATCHERS = re.compile(r"\b(edgefleet_[a-z0-9_]+)\{([^}]*)\}")
LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def panel_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    panels = [p for top in doc["panels"] for p in [top, *top.get("panels", [])]]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def exprs() -> list[str]:
    return [str(r["expr"]) for r in rules()] + panel_exprs()


@pytest.fixture
async def scraped(tmp_path: Path) -> dict[str, set[str]]:
    """Each sample name on a real app's ``/metrics`` with its label names, after a small fleet
    (births, telemetry with an outbox age, results, rollouts) was stored."""
    store = Store(tmp_path / "cp.db")
    store.open()
    try:
        now = time.time()
        stuck = m.telemetry("cam-2", backend="cpu", fallback="edgetpu missing")
        stuck = stuck.model_copy(update={"outbox_oldest_age_s": 120.0})
        await store.write(
            *[Incoming(d, now, m.birth(d)) for d in ("cam-1", "cam-2", "cam-3")],
            Incoming("cam-2", now, stuck),
            Incoming("cam-1", now, m.batch("cam-1", [m.result(), m.result()])),
        )
        await store.transact(rollouts)
        settings = Settings(broker="mqtt://127.0.0.1:1", data_dir=tmp_path)
        app = create_app(settings, store=store, mqtt=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            response = await client.get("/metrics")
    finally:
        store.close()
    assert response.status_code == 200
    series: dict[str, set[str]] = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            name = name.split(" ")[0]
            labels = set(LABEL.findall(rest.rpartition("}")[0])) if rest else set()
            series.setdefault(name, set()).update(labels)
    return series


def test_the_files_name_metrics() -> None:
    assert len(rules()) >= 7 and len(panel_exprs()) >= 10
    assert all(NAME.search(e) for e in exprs())


async def test_every_metric_named_exists_on_metrics(scraped: dict[str, set[str]]) -> None:
    missing = sorted({n for e in exprs() for n in NAME.findall(e)} - scraped.keys())
    assert not missing, f"not on /metrics: {missing}"


async def test_every_label_matched_exists(scraped: dict[str, set[str]]) -> None:
    for expr in exprs():
        for name, matchers in MATCHERS.findall(expr):
            for label in LABEL.findall(matchers):
                assert label in scraped[name], f"{name} has no label {label!r} ({expr})"


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^a-z0-9 _-]", "", text).replace(" ", "-"))
    return out


@pytest.mark.parametrize("rule", rules(), ids=lambda r: str(r["alert"]))
def test_every_rule_is_complete_with_a_runbook(rule: dict[str, Any]) -> None:
    assert rule.get("for") and rule["labels"]["severity"] in {"info", "warning", "critical"}
    assert rule["annotations"]["summary"]
    path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
    assert path == "docs/operations.md"
    assert anchor in anchors(RUNBOOK.read_text()), f"no section #{anchor} in {path}"
