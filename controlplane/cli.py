"""``edgefleet``: the control plane's command line (``serve``) and the fleet CLI.

Subcommands live in one registry, :data:`COMMANDS`, so that later ones (models, rollout,
devices) are one entry each. ``edgefleet simulate ...`` hands its arguments, untouched, to
``python -m agent.simulator`` by exec: the control plane never imports the agent.

Errors a user can make (a bad flag, a bad config file, a busy port, an unusable data directory)
end with one line on stderr naming the problem and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from controlplane.errors import ControlPlaneError
from controlplane.offload import command as offload_command
from controlplane.settings import Settings, load_settings

log = logging.getLogger("controlplane")

EXIT_USAGE = 2


@dataclass(frozen=True)
class Command:
    help: str
    run: Callable[[argparse.Namespace], int]
    configure: Callable[[argparse.ArgumentParser], None] | None = None
    passthrough: bool = False  # takes the rest of the command line as it is (args.rest)


# -- serve -----------------------------------------------------------------------------------------


def _configure_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file of settings (flags win over it)")
    for name, field in Settings.model_fields.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            metavar="VALUE",
            help=field.description,
        )


def serve(args: argparse.Namespace) -> int:
    """Run the control plane until SIGINT or SIGTERM; exit 0 after a clean stop."""
    # Imported here: only `serve` needs the server (the parser and `simulate` stay light).
    import uvicorn

    from controlplane.app import create_app
    from controlplane.identities.tls import check_tls_files, https_options, scheme
    from controlplane.store import Store

    overrides = {name: getattr(args, name) for name in Settings.model_fields}
    settings = load_settings(args.config, overrides)
    configure_logging(settings.log_level)
    check_tls_files(settings)  # ConfigError naming a TLS file that cannot be used
    sock = bind(*settings.listen_address)
    store = Store(settings.store_path, synchronous=settings.synchronous)
    stops: list[int] = []
    previous = _catch_stop_signals(stops)
    try:
        store.open()
        where = f"{scheme(settings)}://{settings.listen}"
        log.info("store %s open; serving %s", settings.store_path, where)
        config = uvicorn.Config(
            create_app(settings, store=store),
            log_config=None,
            log_level=settings.log_level.lower(),
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=10,
            **https_options(settings),
        )
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
        return 0 if server.started else 1
    finally:
        sock.close()
        store.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a busy port is a clear error, not a traceback."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise ControlPlaneError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _catch_stop_signals(stops: list[int]) -> dict[int, Any]:
    """Own SIGINT and SIGTERM around uvicorn, which re-raises a captured signal after its graceful
    shutdown: the re-raised signal lands here and the process exits 0 instead of dying of it."""

    def note(signum: int, _frame: FrameType | None) -> None:
        stops.append(signum)

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, note)
    return previous


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )


# -- simulate --------------------------------------------------------------------------------------


def simulate(args: argparse.Namespace) -> int:
    """Replace this process with ``python -m agent.simulator ARGS`` (which owns the flags)."""
    argv = [sys.executable, "-m", "agent.simulator", *args.rest]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, argv)
    except OSError as exc:
        raise ControlPlaneError(f"cannot start the simulator: {exc}") from None
    return 1  # not reached


# -- fleet command groups ----------------------------------------------------------------------


def _group(configure: Callable[[argparse.ArgumentParser], None]) -> Callable[..., None]:
    """Wrap a group's ``configure`` so that a missing ACTION prints the group's help."""

    def setup(parser: argparse.ArgumentParser) -> None:
        configure(parser)
        parser.set_defaults(handler=None, group_parser=parser)

    return setup


def run_group(args: argparse.Namespace) -> int:
    if getattr(args, "handler", None) is None:
        args.group_parser.print_help(sys.stderr)
        return EXIT_USAGE
    code: int = args.handler(args)
    return code


def _fleet_groups() -> dict[str, Command]:
    from controlplane.fleet import alerts as alerts_group
    from controlplane.fleet import audit as audit_group
    from controlplane.fleet import data as data_group
    from controlplane.fleet import devices
    from controlplane.fleet import models as models_group
    from controlplane.fleet import provision as provision_group
    from controlplane.fleet import rollouts as rollout_group
    from controlplane.fleet import tokens as tokens_group
    from controlplane.fleet import users as users_group

    return {
        "devices": Command("list, show and tag devices", run_group, _group(devices.configure)),
        "models": Command(
            "push, list and show model releases", run_group, _group(models_group.configure)
        ),
        "rollout": Command(
            "start, follow, pause and roll back rollouts",
            run_group,
            _group(rollout_group.configure),
        ),
        "data": Command(
            "export the fleet's kept inputs as a data set; delete them; rotate their key",
            run_group,
            _group(data_group.configure),
        ),
        "alerts": Command(
            "list alerts and show the alert rules", run_group, _group(alerts_group.configure)
        ),
        "provision": Command(
            "the fleet CA, device bundles, enrollment tokens, revocation",
            run_group,
            _group(provision_group.configure),
        ),
        "users": Command(
            "operator accounts (the first admin: users create NAME --admin --data-dir DIR)",
            run_group,
            _group(users_group.configure),
        ),
        "tokens": Command(
            "API tokens for the CLI and scripts", run_group, _group(tokens_group.configure)
        ),
        "audit": Command("the audit log: list, export", run_group, _group(audit_group.configure)),
    }


COMMANDS: dict[str, Command] = {
    "serve": Command("run the control plane (MQTT ingestion, store, API)", serve, _configure_serve),
    "simulate": Command(
        "run a simulated fleet of real agents (see `edgefleet simulate --help`)",
        simulate,
        passthrough=True,
    ),
    **_fleet_groups(),
    "offload": Command(
        "the default offload server (`edgefleet offload serve --model NAME=path.onnx`)",
        run_group,
        _group(offload_command.configure),
    ),
}


# -- entry point -----------------------------------------------------------------------------------


def serve_argv(broker: str, listen: str, data_dir: Path | str, *extra: str) -> list[str]:
    """The command line of ``edgefleet serve`` under this interpreter (demo, tests, benchmarks)."""
    return [
        sys.executable,
        "-m",
        "controlplane",
        "serve",
        "--broker",
        broker,
        "--listen",
        listen,
        "--data-dir",
        str(data_dir),
        *extra,
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgefleet", description="The edgefleet control plane and fleet CLI."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, add_help=not command.passthrough)
        if command.passthrough:
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        elif command.configure is not None:
            command.configure(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS and COMMANDS[argv[0]].passthrough:
        args = argparse.Namespace(command=argv[0], rest=argv[1:])  # flags are not ours to parse
    else:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # argparse has printed the usage or the error
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
    try:
        return COMMANDS[args.command].run(args)
    except ControlPlaneError as exc:
        print(f"edgefleet {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
