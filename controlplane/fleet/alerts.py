"""``edgefleet alerts list|show|rules``: the control plane's alerts (docs/operations.md#alerts)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from controlplane.alerts.rules import duration_text
from controlplane.fleet.client import FleetClient, add_client_flags
from controlplane.fleet.output import cell, emit, table, when

STATES = ("open", "resolved", "all")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("list", help="alerts, newest first (open ones unless --state says else)")
    p.add_argument("--state", choices=STATES, default="open", help="open (default), resolved, all")
    p.add_argument("--device", metavar="ID", help="only this device's alerts")
    p.add_argument("--rule", metavar="RULE", help="only this rule's alerts (see `alerts rules`)")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N (default 100)")
    add_client_flags(p)
    p.set_defaults(handler=list_alerts)
    p = sub.add_parser("show", help="one alert with its notifications")
    p.add_argument("id", type=int, help="the alert id")
    add_client_flags(p)
    p.set_defaults(handler=show_alert)
    p = sub.add_parser("rules", help="the effective rules (defaults, the alerts file's overrides)")
    p.add_argument("--device", metavar="ID", help="the rules as they apply to this device")
    add_client_flags(p)
    p.set_defaults(handler=show_rules)


def list_alerts(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"state": args.state, "limit": args.limit}
    if args.device:
        params["device"] = args.device
    if args.rule:
        params["rule"] = args.rule
    with FleetClient.from_args(args) as client:
        body = client.get("/api/v1/alerts", params)
    emit(args.json, body, lambda b: _render_list(b, args.state))
    return 0


def _render_list(body: dict[str, Any], state: str) -> str:
    now = time.time()
    rows = [
        (
            a["id"], a["state"], a["severity"], a["rule"], a["device_id"], when(a["started_at"]),
            _lasted(a, now), a["resolution"] if a["state"] == "resolved" else a["reason"],
        )
        for a in body["alerts"]
    ]  # fmt: skip
    if not rows:
        return f"no {'' if state == 'all' else state + ' '}alerts"
    out = table(rows, ["id", "state", "severity", "rule", "device", "started", "for", "reason"])
    if body.get("next_cursor"):
        out += f"\n(showing {len(rows)} of {body['total']}: --limit N for more, or --json)"
    return out


def _lasted(alert: dict[str, Any], now: float) -> str:
    end = alert.get("resolved_at") or now
    return duration_text(end - alert["started_at"])


def show_alert(args: argparse.Namespace) -> int:
    with FleetClient.from_args(args) as client:
        body = client.get(f"/api/v1/alerts/{args.id}")
    emit(args.json, body, _render_alert)
    return 0


def _render_alert(a: dict[str, Any]) -> str:
    pairs = [
        ("id", a["id"]), ("rule", a["rule"]), ("device", a["device_id"]),
        ("severity", a["severity"]), ("state", a["state"]), ("reason", a["reason"]),
        ("value", a["value"]), ("threshold", a["threshold"]), ("since", when(a["since"])),
        ("started", when(a["started_at"])), ("resolved", when(a["resolved_at"])),
        ("resolution", a["resolution"]), ("runbook", a.get("runbook_url")),
    ]  # fmt: skip
    out = table(pairs, ["field", "value"])
    notes = [
        (n["id"], n["event"], n["webhook"], n["state"], n["attempts"], n["last_error"])
        for n in a.get("notifications", [])
    ]
    if notes:
        header = ["notification", "event", "webhook", "state", "attempts", "last error"]
        out += "\n\n" + table(notes, header)
    return out


def show_rules(args: argparse.Namespace) -> int:
    params = {"device": args.device} if args.device else None
    with FleetClient.from_args(args) as client:
        body = client.get("/api/v1/alerts/rules", params)
    emit(args.json, body, _render_rules)
    return 0


def _render_rules(body: dict[str, Any]) -> str:
    rows = [
        (
            r["rule"], r["enabled"], r["severity"], _threshold(r), f"{r['for_s']:g}",
            r["summary"],
        )
        for r in body["rules"]
    ]  # fmt: skip
    out = table(rows, ["rule", "enabled", "severity", "threshold", "for (s)", "what"])
    device = body.get("device")
    if device:
        out = f"as they apply to {device['id']} (tags {cell(device['tags'])})\n" + out
    overrides = body.get("overrides") or []
    source = body.get("file") or "no alerts file"
    out += f"\n\n{len(overrides)} override(s) from {source}"
    return out


def _threshold(rule: dict[str, Any]) -> str:
    if rule["threshold"] is None:
        return "-"
    text = f"{rule['threshold']:g} {rule['unit']}"
    if rule.get("min_count") is not None:
        text += f", min {rule['min_count']} requests"
    if rule.get("min_free_bytes") is not None:
        text += f", min {rule['min_free_bytes'] / 1e6:.0f} MB free"
    return text
