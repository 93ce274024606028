"""``edgefleet users create|list|show|disable|enable|set-role|passwd``.

Through the API with an admin's token, except with ``--data-dir DIR``: then on the control
plane's host, straight into its store (:mod:`controlplane.auth.local`). That is how the first
admin is made (nobody can authenticate before), and the way back in when admin passwords are lost.

A password is read from the terminal (twice, not echoed), from the first line of stdin
(``--password-stdin``, for scripts), or generated (``--generate-password``: printed once). It is
never a flag: flags show in ``ps`` and shell histories.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from controlplane.auth import local
from controlplane.auth.credentials import generate_password
from controlplane.auth.roles import ROLES, Role, parse_role
from controlplane.fleet.client import FleetClient, FleetError, add_client_flags
from controlplane.fleet.output import emit, table, when


def add_password_flags(parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin's first line"
    )
    group.add_argument(
        "--generate-password", action="store_true", help="make one up and print it once"
    )
    if optional:
        group.add_argument(
            "--no-password", action="store_true", help="no password: the user only uses tokens"
        )


def _data_dir_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--data-dir", type=Path, metavar="DIR",
        help=f"{what} directly in the control plane's data directory, not through the API",
    )  # fmt: skip


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("create", help="add an operator account")
    p.add_argument("name", help="the user name (1 to 64 of A-Z a-z 0-9 . _ @ -)")
    roles = p.add_mutually_exclusive_group()
    roles.add_argument("--role", choices=ROLES, help="viewer (default), operator or admin")
    roles.add_argument("--admin", action="store_true", help="the same as --role admin")
    add_password_flags(p, optional=True)
    _data_dir_flag(p, "create it")
    add_client_flags(p)
    p.set_defaults(handler=create)
    p = sub.add_parser("list", help="every account")
    _data_dir_flag(p, "read them")
    add_client_flags(p)
    p.set_defaults(handler=list_users)
    p = sub.add_parser("show", help="one account")
    p.add_argument("name")
    add_client_flags(p)
    p.set_defaults(handler=show)
    for action, text in (
        ("disable", "disable an account: its sessions and tokens stop working at once"),
        ("enable", "enable a disabled account again"),
    ):
        p = sub.add_parser(action, help=text)
        p.add_argument("name")
        add_client_flags(p)
        p.set_defaults(handler=change, disabled=action == "disable", role=None)
    p = sub.add_parser("set-role", help="change an account's role")
    p.add_argument("name")
    p.add_argument("role", choices=ROLES)
    add_client_flags(p)
    p.set_defaults(handler=change, disabled=None)
    p = sub.add_parser("passwd", help="set a password (your own, or anyone's as an admin)")
    p.add_argument("name")
    add_password_flags(p)
    _data_dir_flag(p, "set it")
    add_client_flags(p)
    p.set_defaults(handler=passwd)


def read_password(args: argparse.Namespace) -> tuple[str | None, bool]:
    """``(password, generated)``; None with ``--no-password``."""
    if getattr(args, "no_password", False):
        return None, False
    if args.generate_password:
        return generate_password(), True
    if args.password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise FleetError("--password-stdin: stdin gave no password")
        return line, False
    if not sys.stdin.isatty():
        raise FleetError(
            "no terminal to ask for a password: pass --password-stdin (and the password on "
            "stdin) or --generate-password"
        )
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise FleetError("the two passwords differ: nothing changed")
    return first, False


def create(args: argparse.Namespace) -> int:
    role: Role = "admin" if args.admin else parse_role(args.role or "viewer")
    password, generated = read_password(args)
    if args.data_dir is not None:
        user = local.create_user(args.data_dir, args.name, role, password)
    else:
        body: dict[str, Any] = {"name": args.name, "role": role}
        if password is not None:
            body["password"] = password
        with FleetClient.from_args(args) as client:
            user = client.post("/api/v1/users", body)
    _done(args, user, password if generated else None, f"created user {args.name} ({role})")
    return 0


def _done(args: argparse.Namespace, user: dict[str, Any], password: str | None, text: str) -> None:
    if args.json:
        emit(True, {**user, **({"password": password} if password else {})}, str)
        return
    print(text)
    if password:
        print(f"password: {password}\n(shown once: keep it in a password manager now)")


def list_users(args: argparse.Namespace) -> int:
    if args.data_dir is not None:
        body: dict[str, Any] = {"users": local.list_users(args.data_dir)}
    else:
        with FleetClient.from_args(args) as client:
            body = client.get("/api/v1/users")
    emit(args.json, body, _render_list)
    return 0


def _render_list(body: dict[str, Any]) -> str:
    rows = [
        (
            u["name"], u["role"], "disabled" if u["disabled"] else "enabled",
            "yes" if u["has_password"] else "no", when(u["created_at"]), u["created_by"],
        )
        for u in body["users"]
    ]  # fmt: skip
    if not rows:
        return "no users yet: `edgefleet users create NAME --admin --data-dir DIR` makes the first"
    return table(rows, ["name", "role", "state", "password", "created", "by"])


def show(args: argparse.Namespace) -> int:
    with FleetClient.from_args(args) as client:
        user = client.get(f"/api/v1/users/{args.name}")
    emit(args.json, user, lambda u: table(sorted(u.items()), ["field", "value"]))
    return 0


def change(args: argparse.Namespace) -> int:
    body = {k: v for k, v in (("role", args.role), ("disabled", args.disabled)) if v is not None}
    with FleetClient.from_args(args) as client:
        user = client.patch(f"/api/v1/users/{args.name}", body)
    state = "disabled" if user["disabled"] else "enabled"
    emit(args.json, user, lambda u: f"{u['name']}: {u['role']}, {state}")
    return 0


def passwd(args: argparse.Namespace) -> int:
    password, generated = read_password(args)
    assert password is not None
    if args.data_dir is not None:
        user = local.set_password(args.data_dir, args.name, password)
    else:
        with FleetClient.from_args(args) as client:
            user = client.put(f"/api/v1/users/{args.name}/password", {"password": password})
    shown = password if generated else None
    _done(args, user, shown, f"password of {args.name} set (their console sessions ended)")
    return 0
