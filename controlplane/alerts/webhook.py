"""Where notifications go and what they say: the ``alert_webhooks`` setting's entries and the two
body shapes, generic JSON and Slack-compatible (pure functions, no I/O).

A webhook URL often is the secret (Slack's incoming webhooks, tokens in the query): it is a
``SecretStr``, never logged, never stored. The store and the logs name a webhook by
:attr:`Webhook.key` (a digest of the URL) and :attr:`Webhook.name` (scheme and host only).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

from controlplane.alerts.rules import RULES, duration_text

Format = Literal["json", "slack"]
Event = Literal["firing", "resolved"]


class Webhook(BaseModel):
    """One ``alert_webhooks`` entry: ``{url, format}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: SecretStr
    format: Format = "json"

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL with a host")
        return value

    @property
    def key(self) -> str:
        """What the notification queue stores for it: a digest of the URL and the format."""
        text = f"{self.format} {self.url.get_secret_value()}".encode()
        return hashlib.sha256(text).hexdigest()[:16]

    @property
    def name(self) -> str:
        """What logs show: the scheme and host, never the path, query or credentials."""
        parts = urlsplit(self.url.get_secret_value())
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname}{port} ({self.format})"


def runbook_url(base: str, rule: str) -> str:
    """The rule's runbook section: ``{base}#{rule}`` (docs/operations.md has one per rule)."""
    return f"{base}#{rule}"


def alert_payload(alert: Mapping[str, Any], runbook_base: str) -> dict[str, Any]:
    """The generic JSON body for an alert row as it is after the event (fired or resolved)."""
    return {
        "alert_id": alert["id"],
        "rule": alert["rule"],
        "device_id": alert["device_id"],
        "severity": alert["severity"],
        "state": alert["state"],
        "reason": alert["reason"],
        "resolution": alert.get("resolution"),
        "value": alert["value"],
        "threshold": alert.get("threshold"),
        "unit": RULES[alert["rule"]].unit if alert["rule"] in RULES else None,
        "started_at": alert["started_at"],
        "resolved_at": alert.get("resolved_at"),
        "runbook_url": runbook_url(runbook_base, alert["rule"]),
        "source": "edgefleet",
    }


def _when(unix: float) -> str:
    return datetime.fromtimestamp(unix, timezone.utc).isoformat(timespec="seconds")


def slack_body(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Slack's incoming-webhook shape (``text`` for notifications, ``blocks`` for the message);
    Mattermost, Rocket.Chat and Teams' Slack-compatible hooks take it too."""
    firing = payload["state"] == "firing"
    mark = ":rotating_light:" if firing else ":white_check_mark:"
    head = (
        f"{'FIRING' if firing else 'RESOLVED'} [{payload['severity']}] {payload['rule']} on "
        f"{payload['device_id']}"
    )
    detail = payload["reason"]
    if not firing:
        lasted = (payload.get("resolved_at") or payload["started_at"]) - payload["started_at"]
        detail = f"{payload.get('resolution') or 'cleared'} (fired for {duration_text(lasted)}: "
        detail += f"{payload['reason']})"
    context = f"alert {payload['alert_id']} · started {_when(payload['started_at'])}"
    if payload.get("resolved_at"):
        context += f" · resolved {_when(payload['resolved_at'])}"
    context += f" · <{payload['runbook_url']}|runbook>"
    return {
        "text": f"{head}: {detail}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{mark} *{head}*\n{detail}"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }


def body(fmt: Format, payload: Mapping[str, Any]) -> dict[str, Any]:
    """What is POSTed to a webhook of format ``fmt``."""
    return slack_body(payload) if fmt == "slack" else dict(payload)
