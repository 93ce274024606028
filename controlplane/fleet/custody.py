"""``edgefleet data delete`` and ``edgefleet data rotate-key`` / ``keys``: the custody of kept
inputs on the control plane (docs/data.md).

``delete`` deletes the kept inputs of a device and/or a time range (``--all`` for every input,
alone). On a terminal it shows what the selection holds and asks first; elsewhere it needs
``--yes``, so a script never deletes by accident and never hangs on a question.

``rotate-key`` makes a new key current on the control plane, then follows the sealing of every
input under it (``GET /api/v1/data/keys``) until the old keys are retired; ``--no-wait`` returns
at once. ``keys`` lists the keyring: ids, times and the inputs sealed under each, never a key.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from controlplane.fleet.client import FleetClient, FleetError, add_client_flags
from controlplane.fleet.output import Progress, emit, size, table, when

POLL_S = 0.5


def configure(sub: Any) -> None:
    """Add ``delete``, ``rotate-key`` and ``keys`` to the ``data`` group's subparsers."""
    p = sub.add_parser("delete", help="delete kept inputs by device and time range")
    p.add_argument("--device", metavar="ID", help="the device whose inputs are deleted")
    p.add_argument("--since", help="inputs of results made at or after (ISO 8601 or Unix s)")
    p.add_argument("--until", help="inputs of results made before (ISO 8601 or Unix s)")
    p.add_argument(
        "--all", action="store_true", help="every kept input of every device (given alone)"
    )
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation (scripts)")
    add_client_flags(p)
    p.set_defaults(handler=delete)

    p = sub.add_parser(
        "rotate-key", help="seal every kept input under a new key and retire the old one"
    )
    p.add_argument("--no-wait", action="store_true", help="return once the new key is current")
    p.add_argument(
        "--wait-timeout", type=float, default=3600.0, metavar="S",
        help="seconds to wait for the old keys to retire (default 3600)",
    )  # fmt: skip
    add_client_flags(p)
    p.set_defaults(handler=rotate_key)

    p = sub.add_parser("keys", help="the keys that seal kept inputs, and the inputs under each")
    add_client_flags(p)
    p.set_defaults(handler=keys)


# -- delete ----------------------------------------------------------------------------------------


def selection(args: argparse.Namespace) -> dict[str, str]:
    """The query of ``DELETE /api/v1/data``; FleetError for no selection or ``--all`` with one."""
    params = {
        name: value
        for name, value in (("device_id", args.device), ("since", args.since),
                            ("until", args.until))
        if value is not None
    }  # fmt: skip
    if args.all and params:
        raise FleetError("--all selects every kept input: give it alone")
    if args.all:
        return {"all": "true"}
    if not params:
        raise FleetError(
            "no selection: name --device and/or --since/--until, or --all for every kept input"
        )
    return params


def describe(params: dict[str, str]) -> str:
    if params.get("all") == "true":
        return "of every device"
    parts = [f"of device {params['device_id']}" if "device_id" in params else "of every device"]
    if "since" in params:
        parts.append(f"made from {params['since']}")
    if "until" in params:
        parts.append(f"made before {params['until']}")
    return " ".join(parts)


def confirm(question: str, stdin: TextIO, stderr: TextIO) -> bool:
    stderr.write(f"{question} [y/N] ")
    stderr.flush()
    return stdin.readline().strip().lower() in ("y", "yes")


def delete(args: argparse.Namespace) -> int:
    params = selection(args)
    with FleetClient.from_args(args) as client:
        if not args.yes:
            if not sys.stdin.isatty():
                raise FleetError(
                    "refusing to delete without confirmation: stdin is not a terminal; "
                    "pass --yes to delete from a script"
                )
            held = client.get("/api/v1/data", params)
            if held["inputs"] == 0:
                print(f"no kept input {describe(params)}: nothing to delete", file=sys.stderr)
                return 0
            question = (
                f"Delete {held['inputs']} kept inputs ({size(held['bytes'])}) "
                f"{describe(params)}? This cannot be undone."
            )
            if not confirm(question, sys.stdin, sys.stderr):
                print("nothing deleted", file=sys.stderr)
                return 1
        done = client.request("DELETE", "/api/v1/data", params=params)
    emit(args.json, done, lambda d: f"deleted {d['deleted']} kept inputs ({size(d['bytes'])})")
    return 0


# -- keys ------------------------------------------------------------------------------------------


def rotate_key(args: argparse.Namespace) -> int:
    with FleetClient.from_args(args) as client:
        before = {k["id"] for k in client.get("/api/v1/data/keys")["keys"]}
        started = client.post("/api/v1/data/keys/rotate")
        summary: dict[str, Any] = {"key_id": started["key_id"], "retired": [], "done": False}
        if not args.no_wait:
            status = follow(client, started["key_id"], args.wait_timeout)
            summary["retired"] = sorted(before - {k["id"] for k in status["keys"]})
            summary["done"] = True
    emit(args.json, summary, _render_rotation)
    return 0


def follow(client: FleetClient, key_id: str, timeout: float) -> dict[str, Any]:
    """Wait until every input is sealed under ``key_id`` and the older keys are retired."""
    progress = Progress("rotate-key")
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = client.get("/api/v1/data/keys")
        if status["current"] != key_id:
            raise FleetError(f"key {key_id} is no longer current: another rotation started")
        if status["pending"] == 0 and len(status["keys"]) == 1:
            progress.done(f"every kept input is sealed under {key_id}")
            return status
        if time.monotonic() > deadline:
            raise FleetError(
                f"{status['pending']} kept inputs are still not sealed under {key_id} after "
                f"{timeout:g} s; the control plane goes on (see its log, and `edgefleet data keys`)"
            )
        progress.update(f"{status['pending']} kept inputs to seal again")
        time.sleep(POLL_S)


def _render_rotation(summary: dict[str, Any]) -> str:
    if not summary["done"]:
        return (
            f"key {summary['key_id']} is current; the kept inputs are being sealed again under "
            "it (follow with `edgefleet data keys`)"
        )
    retired = ", ".join(summary["retired"]) or "none"
    return f"key {summary['key_id']} is current; retired: {retired}"


def keys(args: argparse.Namespace) -> int:
    with FleetClient.from_args(args) as client:
        status = client.get("/api/v1/data/keys")
    emit(args.json, status, _render_keys)
    return 0


def _render_keys(status: dict[str, Any]) -> str:
    rows = [
        (k["id"], when(k["created_at"]), "yes" if k["current"] else "", k["inputs"])
        for k in status["keys"]
    ]
    text = table(rows, ["key", "created", "current", "inputs"])
    if status["unsealed"]:
        text += f"\n{status['unsealed']} inputs stored before encryption wait to be sealed"
    return text
