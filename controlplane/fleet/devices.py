"""``edgefleet devices list|show|tag|exec`` (``exec``: :mod:`controlplane.fleet.remote`)."""

from __future__ import annotations

import argparse
from typing import Any

from controlplane.fleet import remote
from controlplane.fleet.client import FleetClient, FleetError, add_client_flags
from controlplane.fleet.output import cell, emit, table, when


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("list", help="the devices the control plane knows")
    p.add_argument("--state", choices=["online", "offline"], help="only devices in this state")
    add_client_flags(p)
    p.set_defaults(handler=list_devices)
    p = sub.add_parser("show", help="one device")
    p.add_argument("id", help="the device id")
    add_client_flags(p)
    p.set_defaults(handler=show_device)
    p = sub.add_parser("tag", help="set or remove tags on a device (over those it reports)")
    p.add_argument("id", help="the device id")
    p.add_argument("tags", nargs="*", metavar="KEY=VALUE", help="tags to set")
    p.add_argument(
        "--remove", action="append", default=[], metavar="KEY", help="a tag to remove (repeatable)"
    )
    add_client_flags(p)
    p.set_defaults(handler=tag_device)
    remote.configure(sub)


def list_devices(args: argparse.Namespace) -> int:
    params = {"state": args.state} if args.state else None
    with FleetClient.from_args(args) as client:
        body = client.get("/api/v1/devices", params)
    emit(args.json, body, _render_list)
    return 0


def _render_list(body: dict[str, Any]) -> str:
    rows = [
        (
            d["id"], d["state"], _models(d), d.get("backend"), d.get("tags"),
            when(d.get("last_seen")),
        )
        for d in body["devices"]
    ]  # fmt: skip
    if not rows:
        return "no devices yet: start an agent (edgefleet-agent) or the simulator"
    return table(rows, ["id", "state", "models", "backend", "tags", "last seen"])


def _models(device: dict[str, Any]) -> str:
    return ",".join(f"{m['name']}:{m['version']}" for m in device.get("models") or []) or "-"


def show_device(args: argparse.Namespace) -> int:
    with FleetClient.from_args(args) as client:
        body = client.get(f"/api/v1/devices/{args.id}")
    emit(args.json, body, _render_device)
    return 0


def _render_device(d: dict[str, Any]) -> str:
    pairs = [
        ("id", d["id"]), ("state", d["state"]), ("models", _models(d)),
        ("backend", d.get("backend")), ("fallback", d.get("fallback_reason")),
        ("tags", d.get("tags")), ("agent", d.get("agent_version")), ("api", d.get("api_url")),
        ("first seen", when(d.get("first_seen"))), ("last seen", when(d.get("last_seen"))),
    ]  # fmt: skip
    return table(pairs, ["field", "value"])


def tag_device(args: argparse.Namespace) -> int:
    """Set and remove the control plane's tags; a running rollout picks the device up if it now
    matches the rollout's selection."""
    tags: dict[str, str] = {}
    for item in args.tags:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise FleetError(f"tag {item!r}: expected KEY=VALUE, like site=lab")
        tags[key] = value
    if not tags and not args.remove:
        raise FleetError("nothing to do: give KEY=VALUE tags to set or --remove KEY")
    with FleetClient.from_args(args) as client:
        body = client.patch(f"/api/v1/devices/{args.id}/tags", {"set": tags, "remove": args.remove})
    emit(args.json, body, lambda d: f"{d['id']}: tags {cell(d['tags'])}")
    return 0
