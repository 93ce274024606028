"""Notifications: the retry policy as tables, and delivery to a real local HTTP receiver that
refuses the first attempts with 503 + Retry-After: each alert arrives once per webhook, in both
shapes, and a notifier (or a whole store) restarted mid-way resumes the queue."""

from __future__ import annotations

import asyncio
import logging
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from controlplane.alerts import queries
from controlplane.alerts.config import AlertConfig
from controlplane.alerts.engine import AlertEngine
from controlplane.alerts.notify import Notifier, backoff, outcome, parse_retry_after, verdict
from controlplane.alerts.queries import Queued
from controlplane.alerts.webhook import Webhook, alert_payload, slack_body
from controlplane.metrics import Metrics
from controlplane.records import Incoming
from controlplane.settings import Settings
from controlplane.store import Store
from tests.controlplane import messages as m
from tests.controlplane.alerts.receiver import receiver

T0 = 1_700_000_000.0


# -- the policy (pure) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "retry_after", "jitter", "seconds"),
    [
        (1, None, 1.0, 2.0), (1, None, 0.0, 1.0), (2, None, 1.0, 4.0), (5, None, 1.0, 32.0),
        (20, None, 1.0, 300.0), (20, None, 0.0, 150.0), (3, 7.0, 0.0, 7.0), (3, 0.0, 1.0, 0.0),
        (3, 99999.0, 0.5, 3600.0), (3, -5.0, 0.5, 0.0),
    ],
)  # fmt: skip
def test_backoff(attempts: int, retry_after: float | None, jitter: float, seconds: float) -> None:
    assert backoff(attempts, retry_after, jitter) == seconds


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None), ("30", 30.0), (" 5 ", 5.0), ("soon", None), ("-3", None),
        (formatdate(T0 + 90, usegmt=True), 90.0), (formatdate(T0 - 90, usegmt=True), 0.0),
    ],
)  # fmt: skip
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, T0) == seconds


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, "retry"), (200, "delivered"), (204, "delivered"), (301, "failed"), (400, "failed"),
        (404, "failed"), (408, "retry"), (429, "retry"), (500, "retry"), (503, "retry"),
        (599, "retry"),
    ],
)  # fmt: skip
def test_verdict(status: int | None, expected: str) -> None:
    assert verdict(status) == expected


ITEM = Queued(1, 9, "firing", "k", {}, attempts=2)

OUTCOMES = [
    # (status, retry_after, max_attempts, state, next_at)
    (200, None, 8, "delivered", T0),
    (503, 10.0, 8, "pending", T0 + 10),  # Retry-After honoured on 503
    (429, 10.0, 8, "pending", T0 + 10),  # and on 429
    (500, 10.0, 8, "pending", T0 + 8),  # not on others: 2 * 2**2 with jitter 1
    (None, None, 8, "pending", T0 + 8),
    (503, 10.0, 3, "failed", T0),  # the third attempt was the last
    (404, None, 8, "failed", T0),
]


@pytest.mark.parametrize(("status", "retry_after", "max_attempts", "state", "next_at"), OUTCOMES)
def test_outcome(
    status: int | None, retry_after: float | None, max_attempts: int, state: str, next_at: float
) -> None:
    o = outcome(ITEM, status, "e", retry_after, T0, max_attempts, jitter=1.0)
    assert (o.state, o.next_at, o.attempts) == (state, next_at, 3)


# -- bodies ----------------------------------------------------------------------------------------

ALERT = {
    "id": 12, "rule": "device_offline", "device_id": "cam-7", "severity": "warning",
    "state": "resolved", "reason": "offline, last seen 12m ago (threshold 10m)",
    "resolution": "online", "value": 720.0, "threshold": 600.0, "since": T0 - 720,
    "started_at": T0 - 720, "resolved_at": T0,
}  # fmt: skip


def test_generic_body() -> None:
    body = alert_payload(ALERT, "https://docs.example/ops.md")
    assert body == {
        "alert_id": 12, "rule": "device_offline", "device_id": "cam-7", "severity": "warning",
        "state": "resolved", "reason": ALERT["reason"], "resolution": "online", "value": 720.0,
        "threshold": 600.0, "unit": "s", "started_at": T0 - 720, "resolved_at": T0,
        "runbook_url": "https://docs.example/ops.md#device_offline", "source": "edgefleet",
    }  # fmt: skip


def test_slack_body() -> None:
    body = slack_body(alert_payload(ALERT, "https://docs.example/ops.md"))
    assert body["text"].startswith("RESOLVED [warning] device_offline on cam-7: online")
    assert "fired for 12m" in body["text"]
    assert [b["type"] for b in body["blocks"]] == ["section", "context"]
    assert "<https://docs.example/ops.md#device_offline|runbook>" in str(body["blocks"][1])


def test_a_webhook_url_is_a_secret() -> None:
    hook = Webhook.model_validate({"url": "https://user:pw@hooks.example:8443/T0/B1/XyZsecret?t=1"})
    assert "XyZsecret" not in repr(hook) and "pw" not in hook.name
    assert hook.name == "https://hooks.example:8443 (json)"
    with pytest.raises(ValueError, match="http:// or https://"):
        Webhook.model_validate({"url": "ftp://x"})
    with pytest.raises(ValueError):
        Webhook.model_validate({"url": "https://x", "format": "teams"})


# -- delivery to a real receiver -------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def settings(tmp_path: Path, base: str, *paths: tuple[str, str], **extra: Any) -> Settings:
    hooks = [{"url": f"{base}/{path}?token=s3cr3t", "format": fmt} for path, fmt in paths]
    return Settings(
        broker="mqtt://127.0.0.1:1", data_dir=tmp_path, alert_webhooks=hooks,
        alert_runbook_url="https://docs.example/operations.md", **extra,
    )  # fmt: skip


async def fire_one(store: Store, s: Settings, clock: Clock) -> int:
    """An offline device, and the engine's tick that fires its alert (and queues its notes)."""
    await store.write(Incoming("cam-7", T0 - 900, m.birth("cam-7")))
    report = await AlertEngine(s, store, AlertConfig(), store.metrics, clock=clock).tick()
    assert report.fired == 1
    [alert] = (await store.read(queries.list_alerts, queries.AlertQuery())).alerts
    return int(alert["id"])


def notifier(store: Store, s: Settings, clock: Clock, metrics: Metrics | None = None) -> Notifier:
    return Notifier(
        store, s.alert_webhooks, metrics or store.metrics, max_attempts=s.alert_max_attempts,
        clock=clock, jitter=lambda: 1.0,
    )  # fmt: skip


async def states(store: Store, alert_id: int) -> list[tuple[str, int]]:
    return [(n["state"], n["attempts"]) for n in await store.read(queries.notifications, alert_id)]


async def test_retried_after_503_then_delivered_once_in_both_shapes(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    with receiver(fail=2, status=503, retry_after="30") as rx:
        s = settings(tmp_path, rx.url, ("generic", "json"), ("chat", "slack"))
        alert_id = await fire_one(store, s, clock)
        n = notifier(store, s, clock)
        try:
            assert await n.run_once() == 2  # both refused: 503, Retry-After 30
            assert await states(store, alert_id) == [("pending", 1), ("pending", 1)]
            assert await n.run_once() == 0  # nothing is due before Retry-After has passed
            clock.now += 29
            assert await n.run_once() == 0
            clock.now += 1
            assert await n.run_once() == 2  # refused again
            clock.now += 30
            assert await n.run_once() == 2  # accepted
            clock.now += 3600
            assert await n.run_once() == 0  # nothing left: each arrived once
        finally:
            await n.stop()
        assert await states(store, alert_id) == [("delivered", 3), ("delivered", 3)]
        assert rx.count("/generic") == 3 and rx.count("/chat") == 3
        [generic] = rx.accepted("/generic")
        [chat] = rx.accepted("/chat")
    assert generic["alert_id"] == alert_id and generic["state"] == "firing"
    assert generic["rule"] == "device_offline" and generic["device_id"] == "cam-7"
    assert generic["runbook_url"] == "https://docs.example/operations.md#device_offline"
    assert set(chat) == {"text", "blocks"} and "FIRING [warning] device_offline" in chat["text"]
    assert store.metrics.alert_notifications.value("retried") == 4
    assert store.metrics.alert_notifications.value("delivered") == 2
    assert "s3cr3t" not in caplog.text and "/generic" not in caplog.text
    assert "notified alert" in caplog.text


async def test_a_restarted_notifier_and_store_resume_the_queue(
    tmp_path: Path,
) -> None:
    clock = Clock()
    path = tmp_path / "cp.db"
    with receiver(fail=1, status=503, retry_after="5") as rx:
        s = settings(tmp_path, rx.url, ("hook", "json"))
        store = Store(path)
        store.open()
        try:
            alert_id = await fire_one(store, s, clock)
            first = notifier(store, s, clock)
            assert await first.run_once() == 1
            await first.stop()
        finally:
            store.close()  # the control plane stops with the notification pending
        assert rx.count("/hook") == 1 and rx.accepted("/hook") == []

        clock.now += 5
        store = Store(path)
        store.open()
        try:
            second = notifier(store, s, clock)
            assert await second.run_once() == 1
            assert await second.run_once() == 0
            await second.stop()
            assert await states(store, alert_id) == [("delivered", 2)]
        finally:
            store.close()
        assert len(rx.accepted("/hook")) == 1


async def test_the_running_task_delivers_when_woken(store: Store, tmp_path: Path) -> None:
    with receiver(fail=1, status=429, retry_after="0") as rx:
        s = settings(tmp_path, rx.url, ("hook", "slack"))
        clock = Clock()
        await fire_one(store, s, clock)
        n = Notifier(store, s.alert_webhooks, store.metrics)  # the real clock
        await n.start()
        try:
            n.wake()
            for _ in range(200):
                if rx.accepted("/hook"):
                    break
                await asyncio.sleep(0.05)
        finally:
            await n.stop()
        assert len(rx.accepted("/hook")) == 1 and rx.count("/hook") == 2


async def test_gives_up_after_max_attempts_and_on_a_refusal(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    with receiver(fail=99, status=500, retry_after=None) as rx:
        s = settings(tmp_path, rx.url, ("down", "json"), alert_max_attempts=3)
        alert_id = await fire_one(store, s, clock)
        n = notifier(store, s, clock)
        for _ in range(5):
            await n.run_once()
            clock.now += 1000
        await n.stop()
        assert rx.count("/down") == 3
        assert await states(store, alert_id) == [("failed", 3)]
    assert store.metrics.alert_notifications.value("failed") == 1
    assert "gave up notifying alert" in caplog.text and "s3cr3t" not in caplog.text

    with receiver(fail=99, status=404) as rx:
        s = settings(tmp_path, rx.url, ("gone", "json"))
        await store.transact(queries.enqueue, [_alert(alert_id)], [s.alert_webhooks[0].key],
                             "docs/operations.md", clock.now)  # fmt: skip
        n = notifier(store, s, clock)
        await n.run_once()
        await n.stop()
        assert rx.count("/gone") == 1


def _alert(alert_id: int) -> dict[str, Any]:
    return {**ALERT, "id": alert_id, "state": "firing"}


async def test_an_unreachable_webhook_is_retried(store: Store, tmp_path: Path) -> None:
    from tests.mosquitto import free_port

    clock = Clock()
    s = settings(tmp_path, f"http://127.0.0.1:{free_port()}", ("nobody", "json"))
    alert_id = await fire_one(store, s, clock)
    n = notifier(store, s, clock)
    await n.run_once()
    await n.stop()
    [note] = await store.read(queries.notifications, alert_id)
    assert (note["state"], note["attempts"]) == ("pending", 1)
    assert note["last_error"].startswith("ConnectError") and "s3cr3t" not in note["last_error"]


async def test_a_webhook_removed_from_the_settings_fails_its_notes(
    store: Store, tmp_path: Path
) -> None:
    clock = Clock()
    s = settings(tmp_path, "http://127.0.0.1:9", ("old", "json"))
    alert_id = await fire_one(store, s, clock)
    n = notifier(store, settings(tmp_path, "http://127.0.0.1:9", ("new", "json")), clock)
    await n.run_once()
    await n.stop()
    [note] = await store.read(queries.notifications, alert_id)
    assert (note["state"], note["last_error"]) == ("failed", "webhook not configured")
