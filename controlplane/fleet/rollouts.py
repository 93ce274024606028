"""``edgefleet rollout start|list|status|pause|resume|abort|rollback``.

``start`` sends the flags as they are to ``POST /api/v1/rollouts``: the control plane parses
them (one parser for the CLI and the API, so both refuse the same mistakes the same way), and
``--wait`` follows the rollout on stderr until it is over (exit 0 only when it completed).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from controlplane.fleet.client import FleetClient, FleetError, add_client_flags
from controlplane.fleet.output import Progress, emit, table, when

FINAL = ("completed", "aborted", "rolled_back", "halted")
POLL_S = 1.0


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("start", help="roll a release out to the fleet in waves")
    p.add_argument("release", metavar="NAME:VERSION", help="the release, e.g. digits:1.1.0")
    p.add_argument(
        "--select", action="append", default=[], metavar="TAG=VALUE",
        help="only devices with this tag (repeatable; all must match)",
    )  # fmt: skip
    p.add_argument("--waves", help="shares of the selection per wave (default 1%%,10%%,50%%,100%%)")
    p.add_argument("--bake", help="time to watch each wave after it finished (default 10m)")
    p.add_argument(
        "--gate", action="append", default=[], metavar="METRIC<OP>VALUE",
        help="a condition each wave must meet, e.g. 'error_rate<0.02' (repeatable)",
    )  # fmt: skip
    p.add_argument("--min-sample", type=int, help="results needed before judging (default 50)")
    p.add_argument("--on-halt", choices=["pause", "rollback"], help="default rollback")
    p.add_argument("--device-timeout", help="time a device may take (default 30m)")
    p.add_argument("--max-per-minute", type=int, help="devices sent the release per minute")
    p.add_argument("--shadow", type=int, metavar="N", help="run N samples in shadow first")
    p.add_argument("--shadow-share", type=float, metavar="F", help="share of traffic (0.2)")
    p.add_argument("--wait", action="store_true", help="follow it until it is over")
    p.add_argument(
        "--require-eval",
        action="store_true",
        help="refuse unless `models evaluate` found it no worse than the incumbent",
    )
    add_client_flags(p)
    p.set_defaults(handler=start)
    p = sub.add_parser("list", help="rollouts, newest first")
    p.add_argument("--state", help="only rollouts in this state")
    add_client_flags(p)
    p.set_defaults(handler=list_rollouts)
    p = sub.add_parser("status", help="one rollout: its waves, gates and devices")
    p.add_argument("id", help="the rollout id")
    add_client_flags(p)
    p.set_defaults(handler=status)
    for action, text in (
        ("pause", "stop sending the release and advancing waves"),
        ("resume", "carry on (after a halt: accept the wave and go on)"),
        ("abort", "stop here, leaving devices as they are"),
        ("rollback", "move every device of the rollout back to its previous release"),
    ):
        p = sub.add_parser(action, help=text)
        p.add_argument("id", help="the rollout id")
        add_client_flags(p)
        p.set_defaults(handler=act, verb=action)


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    """The API body for ``rollout start``'s flags (only the flags given)."""
    name, sep, version = args.release.partition(":")
    if not sep or not name or not version:
        raise FleetError(f"release {args.release!r}: expected NAME:VERSION, like digits:1.1.0")
    body: dict[str, Any] = {"model": name, "version": version}
    if args.select:
        body["select"] = list(args.select)
    optional = {
        "waves": args.waves, "bake": args.bake, "min_sample": args.min_sample,
        "on_halt": args.on_halt, "device_timeout": args.device_timeout,
        "max_per_minute": args.max_per_minute,
    }  # fmt: skip
    body.update({k: v for k, v in optional.items() if v is not None})
    if args.gate:
        body["gates"] = list(args.gate)
    if getattr(args, "require_eval", False):
        body["require_eval"] = True
    if args.shadow is not None or args.shadow_share is not None:
        body["shadow"] = {"samples": args.shadow or 100, "share": args.shadow_share or 0.2}
    return body


def start(args: argparse.Namespace) -> int:
    with FleetClient.from_args(args) as client:
        rollout = client.post("/api/v1/rollouts", request_body(args))
        if not args.wait:
            emit(args.json, rollout, _render_started)
            return 0
        print(f"rollout {rollout['id']} started", file=sys.stderr)
        rollout = follow(client, rollout["id"])
    emit(args.json, rollout, _render_status)
    return 0 if rollout["state"] == "completed" else 1


def follow(client: FleetClient, rollout_id: str, poll_s: float = POLL_S) -> dict[str, Any]:
    """Poll until the rollout is over (or halted), showing progress on stderr."""
    progress = Progress(f"rollout {rollout_id}")
    while True:
        rollout: dict[str, Any] = client.get(f"/api/v1/rollouts/{rollout_id}")
        progress.update(_progress(rollout))
        if rollout["state"] in FINAL:
            progress.done(rollout["state"] + _halt_text(rollout))
            return rollout
        time.sleep(poll_s)


def _progress(r: dict[str, Any]) -> str:
    counts = r.get("devices") or {}
    total = sum(counts.values())
    states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    evaluation = r.get("evaluation") or {}
    reason = f"; {evaluation['reason']}" if evaluation.get("reason") else ""
    return (
        f"{r['state']}, wave {r['current_wave'] + 1} of {len(r['waves'])}, "
        f"{total} devices ({states}){reason}"
    )


def _halt_text(r: dict[str, Any]) -> str:
    halt = r.get("halt")
    return f": {halt['reason']} (wave {halt['wave'] + 1})" if halt else ""


def _render_started(r: dict[str, Any]) -> str:
    return (
        f"rollout {r['id']} started: {r['model']}:{r['version']} to "
        f"{sum(r['devices'].values())} devices in {len(r['waves'])} waves "
        f"(edgefleet rollout status {r['id']})"
    )


def list_rollouts(args: argparse.Namespace) -> int:
    params = {"state": args.state} if args.state else None
    with FleetClient.from_args(args) as client:
        body = client.get("/api/v1/rollouts", params)
    emit(args.json, body, _render_list)
    return 0


def _render_list(body: dict[str, Any]) -> str:
    rows = [
        (
            r["id"], f"{r['model']}:{r['version']}", r["state"],
            f"{r['current_wave'] + 1}/{len(r['waves'])}", r["devices"], when(r["created_at"]),
        )
        for r in body["rollouts"]
    ]  # fmt: skip
    if not rows:
        return "no rollouts yet: edgefleet rollout start NAME:VERSION"
    return table(rows, ["id", "release", "state", "wave", "devices", "started"])


def status(args: argparse.Namespace) -> int:
    with FleetClient.from_args(args) as client:
        body = client.get(f"/api/v1/rollouts/{args.id}")
    emit(args.json, body, _render_status)
    return 0


def _render_status(r: dict[str, Any]) -> str:
    selector = ",".join(f"{k}={v}" for k, v in sorted(r["selector"].items())) or "all devices"
    lines = [
        f"rollout {r['id']}: {r['model']}:{r['version']} (seq {r['seq']}) to {selector}",
        f"state {r['state']}, wave {r['current_wave'] + 1} of {len(r['waves'])}, "
        f"gates {', '.join(r['gates'])}, bake {r['bake_s']:g}s, min sample {r['min_sample']}, "
        f"on halt {r['on_halt']}",
    ]
    if r.get("halt"):
        lines.append(f"halted in wave {r['halt']['wave'] + 1}: {r['halt']['reason']}")
    lines.append("")
    waves = []
    for w in r.get("waves_detail", []):
        evaluation = w.get("evaluation") or {}
        values = (evaluation.get("metrics") or {}).get("values") or {}
        measured = ", ".join(f"{k}={v:.3g}" for k, v in sorted(values.items()) if v is not None)
        waves.append(
            (w["wave"] + 1, f"{w['share']:.0%}", w["devices"], w["states"],
             evaluation.get("decision"), evaluation.get("reason"), measured or None)
        )  # fmt: skip
    lines.append(table(waves, ["wave", "share", "devices", "states", "gates", "why", "metrics"]))
    devices = [
        (d["device_id"], d["wave"] + 1, d["state"], d["target"], d["attempts"], d["detail"])
        for d in r.get("deployments", [])
    ]
    if devices:
        lines += ["", table(devices, ["device", "wave", "state", "target", "attempts", "detail"])]
    return "\n".join(lines)


def act(args: argparse.Namespace) -> int:
    with FleetClient.from_args(args) as client:
        body = client.post(f"/api/v1/rollouts/{args.id}/{args.verb}")
    emit(args.json, body, lambda r: f"rollout {r['id']}: {r['state']}")
    return 0
