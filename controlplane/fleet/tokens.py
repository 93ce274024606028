"""``edgefleet tokens create|list|revoke``: API tokens for the CLI and scripts.

A token is shown once, when it is made; the control plane keeps only its digest. Send it as
``EDGEFLEET_TOKEN`` (or ``--token``). To make your first token, prove who you are with your
password: ``edgefleet tokens create --login NAME`` (asked on the terminal, or
``--password-stdin``); later ones can be made with a token. An admin makes tokens for others
(``--user NAME``), and on the control plane's host ``--data-dir DIR --user NAME`` makes one
without the API (bootstrapping, scripts that set up a fresh control plane).
"""

from __future__ import annotations

import argparse
import base64
import getpass
import sys
import time
from pathlib import Path
from typing import Any

from controlplane.auth import local
from controlplane.auth.roles import ROLES
from controlplane.fleet.client import FleetClient, FleetError, add_client_flags
from controlplane.fleet.output import emit, table, when
from controlplane.rollouts.spec import parse_duration


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("expected a duration longer than 0, like 30d")
    return seconds


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("create", help="make an API token (shown once)")
    p.add_argument("--role", choices=ROLES, help="its role (default: the most it may have)")
    p.add_argument("--name", help="a label to recognise it by (default USER-xxxx)")
    p.add_argument("--user", help="whose token (default: yours; others' need an admin)")
    p.add_argument("--expires", type=_duration, metavar="DURATION", help="e.g. 30d (default never)")
    p.add_argument(
        "--login", metavar="NAME", help="authenticate with NAME's password instead of a token"
    )
    p.add_argument(
        "--password-stdin", action="store_true", help="with --login: read the password from stdin"
    )
    p.add_argument(
        "--data-dir", type=Path, metavar="DIR",
        help="make it in the control plane's data directory (needs --user), not through the API",
    )  # fmt: skip
    add_client_flags(p)
    p.set_defaults(handler=create)
    p = sub.add_parser("list", help="your tokens (an admin: --user NAME or --all)")
    p.add_argument("--user", help="this user's tokens (admin)")
    p.add_argument("--all", action="store_true", help="everyone's tokens (admin)")
    add_client_flags(p)
    p.set_defaults(handler=list_tokens)
    p = sub.add_parser("revoke", help="revoke a token: it stops working at once")
    p.add_argument("id", help="the token's id (as `tokens list` shows it)")
    add_client_flags(p)
    p.set_defaults(handler=revoke)


def _login_header(name: str, from_stdin: bool) -> dict[str, str]:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"password of {name}: ")
    else:
        raise FleetError("--login: no terminal to ask for the password: pass --password-stdin")
    pair = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


def create(args: argparse.Namespace) -> int:
    if args.data_dir is not None:
        if not args.user:
            raise FleetError("--data-dir needs --user NAME: whose token it is")
        token, view = local.create_token(
            args.data_dir, args.user, args.role, args.name, args.expires
        )
        created: dict[str, Any] = {**view, "token": token}
    else:
        body: dict[str, Any] = {
            k: v
            for k, v in (
                ("role", args.role), ("name", args.name), ("user", args.user),
                ("expires_in_s", args.expires),
            )
            if v is not None
        }  # fmt: skip
        with FleetClient.from_args(args) as client:
            if args.login:
                headers = _login_header(args.login, args.password_stdin)
                created = client.request("POST", "/api/v1/tokens", json=body, headers=headers)
            else:
                created = client.post("/api/v1/tokens", body)
    if args.json:
        emit(True, created, str)
    else:
        print(
            f"token {created['id']} ({created['role']}) for {created['user']}:\n"
            f"{created['token']}\n"
            "shown once: keep it secret; use it as EDGEFLEET_TOKEN=... "
            f"(revoke: edgefleet tokens revoke {created['id']})"
        )
    return 0


def list_tokens(args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("user", args.user), ("all", "true" if args.all else None)) if v}
    with FleetClient.from_args(args) as client:
        body = client.get("/api/v1/tokens", params or None)
    emit(args.json, body, _render)
    return 0


def _state(t: dict[str, Any]) -> str:
    if t["revoked_at"] is not None:
        return "revoked"
    if t["expires_at"] is not None and t["expires_at"] <= time.time():
        return "expired"
    return "active"


def _render(body: dict[str, Any]) -> str:
    rows = [
        (
            t["id"], t["user"], t["name"], t["role"], _state(t), when(t["created_at"]),
            when(t["expires_at"]), when(t["last_used_at"]),
        )
        for t in body["tokens"]
    ]  # fmt: skip
    if not rows:
        return "no tokens: `edgefleet tokens create` makes one"
    return table(rows, ["id", "user", "name", "role", "state", "created", "expires", "last used"])


def revoke(args: argparse.Namespace) -> int:
    with FleetClient.from_args(args) as client:
        view = client.delete(f"/api/v1/tokens/{args.id}")
    emit(args.json, view, lambda t: f"token {t['id']} of {t['user']} revoked")
    return 0
