"""End to end, with the real broker, the real agent process and the real control plane:
every result a client was answered for is stored exactly once, through outages and crashes."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.load import Load
from tests.e2e.processes import EDGE_MODEL, AgentProcess, ControlPlane, wait_until
from tests.mosquitto import Mosquitto

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _all_stored(cp: ControlPlane, device_id: str, answered: list[str]) -> list[dict[str, object]]:
    want = set(answered)

    def check() -> list[dict[str, object]] | None:
        rows = cp.results(device_id)
        return rows if want <= {r["result_id"] for r in rows} else None

    rows: list[dict[str, object]] = wait_until(f"{len(want)} results stored", check, 90, cp)
    return rows


def _assert_exactly_once(rows: list[dict[str, object]], answered: list[str]) -> None:
    counts = Counter(str(r["result_id"]) for r in rows)
    duplicates = {k: v for k, v in counts.items() if v > 1}
    assert not duplicates, f"duplicate rows: {list(duplicates)[:5]}"
    assert set(counts) >= set(answered)
    assert len(answered) == len(set(answered)), "the agent answered two requests with one id"


def _outbox_depth(agent: AgentProcess) -> int:
    db = sqlite3.connect(f"file:{agent.data_dir / 'outbox.db'}?mode=ro", uri=True, timeout=5)
    try:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        table = next(t for t in tables if "outbox" in t or t == "results")
        (n,) = db.execute(f"select count(*) from {table}").fetchone()
        return int(n)
    finally:
        db.close()


def test_every_answered_result_arrives_exactly_once(
    broker_url: str, tmp_path: Path, unique: str
) -> None:
    cp = ControlPlane(broker_url, tmp_path)
    agent = AgentProcess(broker_url, f"e2e-{unique}", tmp_path)
    cp.start()
    agent.start()
    try:
        answered = Load(agent.url, clients=6, limit=400).start().wait()
        assert len(answered) >= 400
        rows = _all_stored(cp, f"e2e-{unique}", answered)
        _assert_exactly_once(rows, answered)
        sha = hashlib.sha256(EDGE_MODEL.read_bytes()).hexdigest()
        assert {r["model"] for r in rows} == {"digits-edge"}
        assert {r["artifact_sha256"] for r in rows} == {sha}
        wait_until("outbox drained", lambda: _outbox_depth(agent) == 0, 30, agent)
    finally:
        agent.stop()
        cp.stop()


def test_broker_outage_under_load(private_broker: Mosquitto, tmp_path: Path, unique: str) -> None:
    device = f"outage-{unique}"
    cp = ControlPlane(private_broker.url, tmp_path)
    agent = AgentProcess(private_broker.url, device, tmp_path)
    cp.start()
    agent.start()
    load = Load(agent.url, clients=4).start()
    try:
        wait_until("some results", lambda: load.count() > 50, 30, agent)
        private_broker.stop()
        before = load.count()
        wait_until("answers during the outage", lambda: load.count() > before + 200, 60, agent)
        depth_during = _outbox_depth(agent)
        assert depth_during > 100, "results must wait in the outbox while the broker is down"
        time.sleep(1)
        private_broker.start()
        wait_until("more answers after the outage", lambda: load.count() > before + 400, 60, agent)
        answered = load.stop()
        rows = _all_stored(cp, device, answered)
        _assert_exactly_once(rows, answered)
        wait_until("outbox drained", lambda: _outbox_depth(agent) == 0, 60, agent)
    finally:
        load.stop()
        agent.stop()
        cp.stop()


def test_agent_sigkill_under_load_loses_nothing_answered(
    broker_url: str, tmp_path: Path, unique: str
) -> None:
    device = f"kill-{unique}"
    cp = ControlPlane(broker_url, tmp_path)
    agent = AgentProcess(broker_url, device, tmp_path)
    cp.start()
    agent.start()
    load = Load(agent.url, clients=6).start()
    try:
        wait_until("load running", lambda: load.count() > 300, 60, agent)
        agent.kill()
        answered = load.stop()
        agent.start()  # same data dir: the outbox is reopened and drained
        rows = _all_stored(cp, device, answered)
        _assert_exactly_once(rows, answered)
    finally:
        load.stop()
        agent.stop()
        cp.stop()
