"""``edgefleet devices exec ID COMMAND``: a remote command on one device, and its answer for people.

``ping | diag | logs [--tail N] | resync | reload-model [MODEL] | set-log-level LEVEL``, each
with ``--timeout S`` (how long the device has to answer, default 10 s), ``--json`` (the API's
record as it is), ``--as USER`` (the sender's name, used only by a control plane with ``auth``
off; with auth on the token's user is recorded) and ``--token``.
A timeout, an unknown device, a refused argument or an error answer ends with one line on stderr
and exit status 1.
"""

from __future__ import annotations

import argparse
import getpass
from datetime import datetime, timezone
from typing import Any

from controlplane.fleet.client import TOKEN_ENV, FleetClient, FleetError, api_token, server_url
from controlplane.fleet.output import emit, size, when
from protocol.commands import COMMANDS, LOG_LEVELS, MAX_LOG_TAIL

DEFAULT_TIMEOUT_S = 10.0
HTTP_MARGIN_S = 15.0
"""The HTTP request waits this much longer than the device may take: the control plane answers."""


def configure(sub: Any) -> None:
    """Add ``exec`` to the ``devices`` subcommands (``sub`` is their subparsers action)."""
    p = sub.add_parser(
        "exec",
        help=f"run a remote command on a device: {', '.join(COMMANDS)}",
        description="Run one of the agent's remote commands and print its answer. Only these "
        f"commands exist: {', '.join(COMMANDS)}.",
    )
    p.add_argument("id", help="the device id")
    # dest "remote": the top-level parser's "command" is the CLI's own (devices)
    p.add_argument("remote", choices=COMMANDS, metavar="COMMAND", help=" | ".join(COMMANDS))
    p.add_argument(
        "arg", nargs="?", metavar="ARG",
        help="reload-model: the model (default: every model); set-log-level: "
        + "|".join(LOG_LEVELS),
    )  # fmt: skip
    p.add_argument(
        "--tail", type=int, metavar="N",
        help=f"logs: how many of the last lines (default 100, at most {MAX_LOG_TAIL})",
    )  # fmt: skip
    p.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
        help=f"seconds the device has to answer (default {DEFAULT_TIMEOUT_S:g})",
    )  # fmt: skip
    p.add_argument(
        "--as", dest="sender", default=None, metavar="USER",
        help="who sends it, recorded with the command (default: $USER; where the control plane "
        "requires a token, the token's user is recorded instead)",
    )  # fmt: skip
    p.add_argument(
        "--server", default=None, metavar="URL",
        help="the control plane (default: $EDGEFLEET_SERVER, else http://127.0.0.1:8080)",
    )  # fmt: skip
    p.add_argument(
        "--token", default=None, metavar="TOKEN",
        help=f"API token (default: ${TOKEN_ENV}; prefer the variable: flags show in `ps`)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the command's record as JSON")
    p.set_defaults(handler=exec_command)


def command_args(command: str, arg: str | None, tail: int | None) -> dict[str, Any]:
    """The API's ``args`` for a command line, or FleetError naming what does not fit."""
    if tail is not None and command != "logs":
        raise FleetError(f"--tail is for logs, not {command}")
    if command == "logs":
        if arg is not None:
            raise FleetError(f"logs takes no ARG ({arg!r}): use --tail N")
        return {} if tail is None else {"tail": tail}
    if command == "reload-model":
        return {} if arg is None else {"model": arg}
    if command == "set-log-level":
        if arg is None:
            raise FleetError(f"set-log-level needs LEVEL: one of {', '.join(LOG_LEVELS)}")
        return {"level": arg}
    if arg is not None:
        raise FleetError(f"{command} takes no ARG ({arg!r})")
    return {}


def exec_command(args: argparse.Namespace) -> int:
    body = {
        "command": args.remote,
        "args": command_args(args.remote, args.arg, args.tail),
        "timeout_s": args.timeout,
    }
    sender = args.sender or _user()
    client = FleetClient(
        server_url(args.server), timeout=args.timeout + HTTP_MARGIN_S, token=api_token(args.token)
    )
    with client:
        record = client.request(
            "POST",
            f"/api/v1/devices/{args.id}/commands",
            json=body,
            headers={"X-Edgefleet-User": sender},
        )
    emit(args.json, record, render)
    if record.get("status") != "ok":
        raise FleetError(
            f"{args.id} answered {args.remote} with an error: {record.get('error') or '?'}"
        )
    return 0


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no $USER and no passwd entry (a bare container)
        return "unknown"


# --- what people read ------------------------------------------------------------------------


def render(record: dict[str, Any]) -> str:
    if record.get("status") != "ok":
        return ""  # the error goes to stderr
    result = record.get("result") or {}
    renderer = RENDERERS.get(record["command"])
    return renderer(record, result) if renderer else str(result)


def _ping(record: dict[str, Any], result: dict[str, Any]) -> str:
    return f"pong from {record['device_id']}: {_timing(record)}"


def _timing(record: dict[str, Any]) -> str:
    rtt, offset = record.get("round_trip_s"), record.get("clock_offset_s")
    if rtt is None or offset is None:
        return "no timing"
    return f"round trip {rtt * 1000:.0f} ms, clock offset {offset:+.3f} s"


def _diag(record: dict[str, Any], d: dict[str, Any]) -> str:
    agent, runtime = d.get("agent") or {}, d.get("runtime") or {}
    packages = runtime.get("packages") or {}
    installed = ", ".join(f"{k} {v}" for k, v in packages.items() if v) or "none"
    missing = ", ".join(k for k, v in packages.items() if not v)
    about = (
        f"{record['device_id']} (agent {agent.get('version')}, pid {agent.get('pid')}, "
        f"up {_duration(agent.get('uptime_s'))}, log level {agent.get('log_level')})"
    )
    rows: list[tuple[str, str]] = [
        ("device", about),
        ("runtime", f"Python {runtime.get('python')} on {runtime.get('os')}"),
        ("packages", installed + (f" (not installed: {missing})" if missing else "")),
        ("clock", f"{_timing(record)} (positive: the device is ahead)"),
    ]
    for m in d.get("models") or []:
        rows += _model_rows(m)
    accelerators = [
        f"{a['kind']} {'present' if a['present'] else 'absent'}"
        + (f" ({a['detail']})" if a.get("detail") and not a["present"] else "")
        for a in d.get("accelerators") or []
    ]
    rows.append(("accelerators", "; ".join(accelerators) or "-"))
    rows.append(("edgetpu lib", d.get("edgetpu_library") or "not found"))
    rows.append(("outbox", _outbox(d.get("outbox") or {})))
    rows.append(("disk", _disk(d.get("disk") or {})))
    mem = d.get("memory") or {}
    rows.append(
        (
            "memory",
            f"agent {size(mem.get('rss_bytes') or 0)}; machine "
            f"{size(mem.get('available_bytes') or 0)} available of "
            f"{size(mem.get('total_bytes') or 0)} ({mem.get('used_percent')}% used)",
        )
    )
    mqtt = d.get("mqtt") or {}
    state = "connected" if mqtt.get("connected") else "DISCONNECTED"
    link = f"{mqtt.get('broker')} (MQTT {mqtt.get('protocol_version')})"
    rows.append(("mqtt", f"{state} to {link} as {mqtt.get('client_id')}"))
    for event in mqtt.get("history") or []:
        rows.append(("", f"{when(event['at'])} {event['event']}: {event['detail']}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}".rstrip() for k, v in rows)


def _model_rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    sha = str(m.get("artifact_sha256") or "")[:16]
    rows = [
        (
            "model",
            f"{m['name']} {m['version']} on {m['backend']} from {m['serving_from']}, "
            f"sha256 {sha}...",
        )
    ]
    if m.get("fallback_reason"):
        rows.append(("", f"fallback: {m['fallback_reason']}"))
    slots = m.get("slots") or {}
    on_disk = ", ".join(f"{s['slot']} ({s.get('version')})" for s in slots.get("on_disk", []))
    active, previous = slots.get("active") or "-", slots.get("previous") or "-"
    rows.append(("", f"slots: active {active}, previous {previous}; on disk: {on_disk or 'none'}"))
    return rows


def _outbox(box: dict[str, Any]) -> str:
    oldest = box.get("oldest_age_s")
    text = f"{box.get('depth')} waiting ({size(box.get('size_bytes') or 0)})"
    if oldest is not None:
        text += f", oldest {oldest:.1f} s"
    text += f"; {box.get('sent_total')} sent, {box.get('evicted_total')} evicted"
    if box.get("no_subscriber"):
        text += "; NOBODY SUBSCRIBES to the results (is the control plane running?)"
    return text


def _disk(disk: dict[str, Any]) -> str:
    if "error" in disk:
        return f"{disk.get('path')}: {disk['error']}"
    return (
        f"{disk.get('path')}: {size(disk.get('free_bytes') or 0)} free of "
        f"{size(disk.get('total_bytes') or 0)} ({disk.get('used_percent')}% used)"
    )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _logs(record: dict[str, Any], result: dict[str, Any]) -> str:
    out = []
    dropped = result.get("lines_dropped")
    if dropped:
        out.append(f"({dropped} older lines left out to fit the answer's size cap)")
    for line in result.get("lines") or []:
        out.append(
            f"{_short_time(line.get('ts'))} {str(line.get('level')):<7} "
            f"{line.get('logger')}: {line.get('msg')}"
        )
        if line.get("exc"):
            out.extend("    " + x for x in str(line["exc"]).splitlines())
    if not result.get("lines"):
        out.append(f"no log lines kept yet (the agent logs at {result.get('log_level')})")
    return "\n".join(out)


def _short_time(ts: Any) -> str:
    """An ISO 8601 UTC time from a log line, shown in local time to the millisecond."""
    try:
        moment = datetime.fromisoformat(str(ts))
    except ValueError:
        return str(ts)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone().isoformat(timespec="milliseconds")


def _resync(record: dict[str, Any], r: dict[str, Any]) -> str:
    steps = ", ".join(f"{name} {r.get(name)}" for name in ("birth", "telemetry", "desired"))
    return f"resync of {record['device_id']}: {steps}; uplink {r.get('uplink')} " \
           f"({r.get('outbox_depth')} results waiting)"  # fmt: skip


def _reload(record: dict[str, Any], r: dict[str, Any]) -> str:
    lines = []
    for m in r.get("reloaded") or []:
        fallback = f" (fallback: {m['fallback_reason']})" if m.get("fallback_reason") else ""
        lines.append(f"reloaded {m['name']} {m['version']} on {m['backend']} from "
                     f"{m['serving_from']}{fallback}")  # fmt: skip
    return "\n".join(lines) or "nothing to reload"


def _set_level(record: dict[str, Any], r: dict[str, Any]) -> str:
    return f"{record['device_id']}: log level {r.get('previous')} -> {r.get('level')}"


RENDERERS = {
    "ping": _ping,
    "diag": _diag,
    "logs": _logs,
    "resync": _resync,
    "reload-model": _reload,
    "set-log-level": _set_level,
}
